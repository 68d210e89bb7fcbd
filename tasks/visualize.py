"""Pictures of what the models see: feature maps as RGB (PCA) and labelled panels (OpenCV)."""
from __future__ import annotations

import os

import cv2
import numpy as np


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3)."""
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"Cannot read an image from {os.fspath(path)!r}.")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_rgb(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a uint8 RGB image (PNG by extension), creating the folder."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"Could not write {path!r}.")


def pca_rgb(features: np.ndarray) -> np.ndarray:
    """Map a (H, W, C) feature map to uint8 RGB by its first three principal components.

    Each component is scaled to [0, 255] from its 1st to 99th percentile.
    """
    h, w, c = features.shape
    if not np.all(np.isfinite(features)):
        raise ValueError(f"The feature map has {np.size(features) - np.isfinite(features).sum()} non-finite values "
                         "(the model's activations overflowed): no picture can be made of it.")
    flat = features.reshape(-1, c).astype(np.float64)
    flat -= flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    proj = flat @ vt[:3].T
    if proj.shape[1] < 3:
        proj = np.pad(proj, ((0, 0), (0, 3 - proj.shape[1])))
    lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
    proj = np.clip((proj - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)
    return (proj.reshape(h, w, 3) * 255.0).round().astype(np.uint8)


def titled(image: np.ndarray, title: str, height: int) -> np.ndarray:
    """`image` resized (nearest, so feature cells stay visible) to `height` with a title bar."""
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    body = cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)
    bar = np.full((28, width, 3), 255, np.uint8)
    cv2.putText(bar, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, body], axis=0)


def panel_row(images: list[np.ndarray], titles: list[str], height: int = 256, gap: int = 8) -> np.ndarray:
    """Images side by side, each scaled to `height` and titled, on a white background."""
    tiles = [titled(im, t, height) for im, t in zip(images, titles)]
    spacer = np.full((tiles[0].shape[0], gap, 3), 255, np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [spacer, tile]
    return np.concatenate(row, axis=1)


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (n, 3) uint8: label bits spread over the high bits of R, G, B."""
    labels = np.arange(n)
    palette = np.zeros((n, 3), np.int64)
    for shift in range(8):
        for channel in range(3):
            palette[:, channel] |= ((labels >> (3 * shift + channel)) & 1) << (7 - shift)
    return palette.astype(np.uint8)


def colorize(labels: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """An (H, W) label map as uint8 RGB (H, W, 3), by default with the VOC palette."""
    palette = voc_palette() if palette is None else np.asarray(palette, np.uint8)
    labels = np.asarray(labels)
    if labels.min() < 0 or labels.max() >= len(palette):
        raise ValueError(f"labels must lie in 0..{len(palette) - 1} for this palette; got {labels.min()}..{labels.max()}.")
    return palette[labels]


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    alpha: float = 0.5,
    palette: np.ndarray | None = None,
    ignore_label: int | None = 255,
) -> np.ndarray:
    """Blend the coloured label map over a uint8 RGB image: (1 - alpha) image + alpha colour.

    Pixels labelled `ignore_label` keep the image's colour.
    """
    image = np.asarray(image, np.uint8)
    if image.shape[:2] != np.shape(labels):
        raise ValueError(f"image {image.shape[:2]} and labels {np.shape(labels)} differ in size.")
    blended = cv2.addWeighted(image, 1.0 - alpha, colorize(labels, palette), alpha, 0.0)
    if ignore_label is not None:
        blended[np.asarray(labels) == ignore_label] = image[np.asarray(labels) == ignore_label]
    return blended


def _text(image: np.ndarray, text: str, xy: tuple[int, int], scale: float = 0.45) -> None:
    cv2.putText(image, text, xy, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


def plot_curves(history: dict[str, list[float]], width: int = 360, height: int = 240) -> np.ndarray:
    """Training curves as a uint8 RGB picture: one panel per metric, training (blue) and
    validation (orange, the `val_` entries) against the epoch."""
    names = [k for k in history if not k.startswith("val_")] or [k[4:] for k in history]
    panels = []
    for name in names:
        series = [(s, c) for s, c in ((name, (31, 119, 180)), (f"val_{name}", (255, 127, 14))) if history.get(s)]
        panel = np.full((height, width, 3), 255, np.uint8)
        values = np.concatenate([np.asarray(history[s], float) for s, _ in series])
        lo, hi = float(values.min()), float(values.max())
        hi = hi if hi > lo else lo + 1.0
        left, right, top, bottom = 48, width - 10, 30, height - 28
        cv2.rectangle(panel, (left, top), (right, bottom), (160, 160, 160), 1)
        n = max(len(history[s]) for s, _ in series)
        for s, colour in series:
            ys = np.asarray(history[s], float)
            xs = left + (right - left) * (np.arange(len(ys)) / max(n - 1, 1))
            pts = np.stack([xs, bottom - (bottom - top) * (ys - lo) / (hi - lo)], 1).round().astype(np.int32)
            cv2.polylines(panel, [pts], False, colour, 2, cv2.LINE_AA)
            for p in pts:
                cv2.circle(panel, tuple(int(v) for v in p), 3, colour, -1, cv2.LINE_AA)
        _text(panel, name + ("  (blue: train, orange: validation)" if len(series) > 1 else ""), (8, 18))
        _text(panel, f"{hi:.3g}", (4, top + 10), 0.4)
        _text(panel, f"{lo:.3g}", (4, bottom), 0.4)
        _text(panel, f"epoch 1..{n}", (left, height - 8), 0.4)
        panels.append(panel)
    return np.concatenate(panels, axis=1)


def pyramid_table(features: dict[str, np.ndarray]) -> str:
    """Level, stride, channels and H x W of each (H, W, C) feature map, as aligned text lines."""
    lines = [f"{'level':>5} {'stride':>6} {'channels':>8}  shape (H, W)"]
    for level, f in sorted(features.items(), key=lambda kv: int(kv[0])):
        lines.append(f"{level:>5} {2 ** int(level):>6} {f.shape[-1]:>8}  {f.shape[0]} x {f.shape[1]}")
    return "\n".join(lines)


def feature_picture(image: np.ndarray, features: dict[str, np.ndarray], height: int = 256) -> np.ndarray:
    """The image and each level's (H, W, C) map as RGB of its first three principal components."""
    levels = sorted(features, key=int)
    panels = [image] + [pca_rgb(features[level]) for level in levels]
    titles = ["input"] + [f"stride {2 ** int(level)}: {features[level].shape[1]}x{features[level].shape[0]}"
                          f"x{features[level].shape[2]}" for level in levels]
    return panel_row(panels, titles, height=height)


def stack_rows(rows: list[np.ndarray], gap: int = 8) -> np.ndarray:
    """Pictures one below the other, padded with white to the widest."""
    width = max(r.shape[1] for r in rows)
    padded = []
    for i, r in enumerate(rows):
        if i:
            padded.append(np.full((gap, width, 3), 255, np.uint8))
        padded.append(np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255))
    return np.concatenate(padded, axis=0)


def draw_boxes(
    image: np.ndarray, boxes: np.ndarray, classes, scores=None, names=None, min_score: float = 0.0,
) -> np.ndarray:
    """A copy of a uint8 RGB image with boxes ((N, 4) pixel [ymin, xmin, ymax, xmax]) drawn in
    the VOC colour of their class and labelled with the class name (and score)."""
    out = np.ascontiguousarray(image, np.uint8).copy()
    palette = voc_palette()
    scores = np.ones(len(boxes)) if scores is None else np.asarray(scores)
    for (y1, x1, y2, x2), c, s in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(classes).ravel(), scores):
        if s < min_score:
            continue
        colour = tuple(int(v) for v in palette[int(c) % 256])
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)) - 1, int(round(y2)) - 1)
        cv2.rectangle(out, p1, p2, colour, 2)
        text = f"{names[int(c)] if names is not None else int(c)}{'' if s == 1 else f' {s:.2f}'}"
        cv2.putText(out, text, (p1[0] + 2, max(p1[1] - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return out
