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
