"""A generated dataset to learn from: textured shapes on photographs, with labels, boxes and masks.

Each image is a random crop of one of the CC0 / public-domain photos in `data/backgrounds`, at a
random size (each side drawn on its own, so mostly not multiples of 32), with one to `max_shapes`
shapes pasted on it. A shape's class is its form (disc, square, triangle, ring, cross), and each
class has its own family of textures (dots, checks, stripes, noise, waves) at a random scale and
orientation, in random shades of its own hue: form, texture and colour all tell the classes apart,
as they do for real objects, which lets a model learn them in minutes on a CPU. Label maps hold
the class per pixel, 0 for the background and 255 (ignored) on a thin band along every edge, as
PASCAL VOC labels do. Everything is determined by `seed` and the sample's index.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np
import tensorflow as tf

from convnext_tf.backbones import arguments

from . import label_files, records
from .segmentation import IGNORE_LABEL
from .visualize import read_rgb, write_rgb

CLASSES = ("background", "disc", "square", "triangle", "ring", "cross")


@dataclass(frozen=True)
class Sample:
    """One generated image: uint8 RGB (H, W, 3), label map (H, W), and per shape its box
    (y1, x1, y2, x2 in pixels), class (1..5) and binary mask (H, W)."""

    image: np.ndarray
    label: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    masks: np.ndarray


def photo_path() -> str:
    """A photo no generated image uses: scikit-image's CC0 'Chelsea the cat' (451x300 PNG)."""
    return str(resources.files("convnext_tf.tasks") / "data" / "chelsea.png")


@lru_cache(maxsize=None)
def backgrounds() -> tuple[np.ndarray, ...]:
    """The shipped background photos (uint8 RGB), in name order."""
    folder = resources.files("convnext_tf.tasks") / "data" / "backgrounds"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".jpg"))
    return tuple(read_rgb(str(folder / name)) for name in names)


def _crop(rng: np.random.Generator, photo: np.ndarray, h: int, w: int) -> np.ndarray:
    """A random crop of `photo` (a random share of it, flipped at random) resized to h x w."""
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.5, 1.0) * min(ph / h, pw / w)
    ch, cw = max(1, int(h * scale)), max(1, int(w * scale))
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    out = cv2.resize(photo[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_AREA)
    return out[:, ::-1] if rng.random() < 0.5 else out


TEXTURES = ("dots", "checks", "stripes", "noise", "waves")  # of the classes 1..5
HUES = (0, 30, 60, 100, 140)  # OpenCV hues (0..180) of the classes 1..5: red, yellow, green, blue, purple


def _shades(rng: np.random.Generator, hue: int) -> np.ndarray:
    """Two random RGB shades (2, 3) of about `hue`: one light, one dark."""
    hsv = np.array([[[(hue + rng.integers(-8, 9)) % 180, rng.integers(150, 256), rng.integers(170, 256)],
                     [(hue + rng.integers(-8, 9)) % 180, rng.integers(100, 256), rng.integers(40, 130)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(np.float32)


def _texture(rng: np.random.Generator, h: int, w: int, kind: str, hue: int) -> np.ndarray:
    """A (h, w, 3) uint8 texture `kind` in two shades of `hue`, at a random scale and angle."""
    a, b = _shades(rng, hue)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(4, 12)
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    if kind == "stripes":
        t = (np.floor(u / period) % 2).astype(np.float32)
    elif kind == "checks":
        t = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif kind == "dots":
        t = (((u % period) - period / 2) ** 2 + ((v % period) - period / 2) ** 2 < (period / 3) ** 2).astype(np.float32)
    elif kind == "waves":
        bent = u + 0.3 * period * np.sin(np.pi * v / period)
        t = (0.5 + 0.5 * np.sin(2 * np.pi * bent / period)).astype(np.float32)
    else:
        t = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.5)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return (a * (1 - t[..., None]) + b * t[..., None]).astype(np.uint8)


def _polygon(cy: float, cx: float, r: float, angle: float, points: np.ndarray) -> np.ndarray:
    """Unit-circle polygon `points` (K, 2 as x, y) scaled by r, rotated by angle, moved to (cx, cy)."""
    c, s = np.cos(angle), np.sin(angle)
    rot = points @ np.array([[c, s], [-s, c]])
    return np.round(rot * r + [cx, cy]).astype(np.int32)


_SQUARE = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) / np.sqrt(2)
_TRIANGLE = np.array([[np.cos(a), np.sin(a)] for a in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6)])
_CROSS = np.array([[-1, -0.3], [-0.3, -0.3], [-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3],
                   [1, 0.3], [0.3, 0.3], [0.3, 1], [-0.3, 1], [-0.3, 0.3], [-1, 0.3]])


def _shape_mask(cls: int, h: int, w: int, cy: float, cx: float, r: float, angle: float) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    centre = (int(round(cx)), int(round(cy)))
    name = CLASSES[cls]
    if name == "disc":
        cv2.circle(mask, centre, int(round(r)), 1, -1)
    elif name == "ring":
        cv2.circle(mask, centre, int(round(r)), 1, -1)
        cv2.circle(mask, centre, int(round(r * 0.55)), 0, -1)
    else:
        points = {"square": _SQUARE, "triangle": _TRIANGLE, "cross": _CROSS}[name]
        cv2.fillPoly(mask, [_polygon(cy, cx, r, angle, points)], 1)
    return mask


def sample(
    index: int,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    size_range: tuple[int, int] = (128, 192),
    max_shapes: int = 3,
    background: np.ndarray | None = None,
    radius_range: tuple[float, float] = (0.12, 0.28),
) -> Sample:
    """The generated sample `index` of the dataset `seed`.

    Args:
      size: (H, W) of the image; by default each side is drawn from `size_range`.
      max_shapes: up to this many shapes, placed without overlapping.
      radius_range: a shape's radius as a share of the image's shorter side.
      background: a photo (uint8 RGB) to paste the shapes on, whole and at its own size when
        `size` is None; by default a random crop of a shipped photo.
    """
    rng = np.random.default_rng([seed, index])
    if background is not None:
        h, w = size or background.shape[:2]
        image = cv2.resize(np.asarray(background, np.uint8), (w, h), interpolation=cv2.INTER_AREA)
    else:
        h, w = size or tuple(int(rng.integers(size_range[0], size_range[1] + 1)) for _ in range(2))
        photos = backgrounds()
        image = _crop(rng, photos[int(rng.integers(0, len(photos)))], h, w)
    image = image.copy()
    label = np.zeros((h, w), np.uint8)
    placed, boxes, classes, masks = [], [], [], []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        for _attempt in range(20):  # a place that overlaps no earlier shape
            r = rng.uniform(*radius_range) * min(h, w)
            cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
            if all((cy - y) ** 2 + (cx - x) ** 2 > (r + q + 2) ** 2 for y, x, q in placed):
                break
        else:
            continue
        cls = int(rng.integers(1, len(CLASSES)))
        mask = _shape_mask(cls, h, w, cy, cx, r, rng.uniform(0, 2 * np.pi))
        if not mask.any():
            continue
        placed.append((cy, cx, r))
        image[mask > 0] = _texture(rng, h, w, TEXTURES[cls - 1], HUES[cls - 1])[mask > 0]
        label[mask > 0] = cls
        ys, xs = np.nonzero(mask)
        boxes.append([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
        classes.append(cls)
        masks.append(mask)
    edges = cv2.morphologyEx(label, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    label[edges] = IGNORE_LABEL
    return Sample(image, label, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64),
                  np.array(masks, np.uint8).reshape(-1, h, w))


def samples(n: int, seed: int = 0, **kwargs):
    """The first `n` samples of the dataset `seed` (kwargs as for `sample`)."""
    n = arguments.integer("n", n, lo=1)
    return (sample(i, seed, **kwargs) for i in range(n))


def dataset(n: int, seed: int = 0, **kwargs) -> tf.data.Dataset:
    """(image uint8 (H, W, 3), label uint8 (H, W)) pairs of `n` generated samples, sizes varying."""
    pairs = [(s.image, s.label) for s in samples(n, seed, **kwargs)]
    return tf.data.Dataset.from_generator(
        lambda: iter(pairs),
        output_signature=(tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([None, None], tf.uint8)),
    )


def write_folder(out_dir: str | os.PathLike, n: int, seed: int = 0, **kwargs) -> str:
    """Write `n` samples as `out_dir/images/NNNN.jpg` and `out_dir/labels/NNNN.png` (palette PNG:
    the palette index is the class, 255 ignored), the layout `datasets.find_pairs` reads."""
    out_dir = os.fspath(out_dir)
    for i, s in enumerate(samples(n, seed, **kwargs)):
        write_rgb(os.path.join(out_dir, "images", f"{i:04d}.jpg"), s.image)
        label_files.write_label(os.path.join(out_dir, "labels", f"{i:04d}.png"), s.label)
    return out_dir


def write_classification_folder(out_dir: str | os.PathLike, per_class: int, seed: int = 0, size: int = 128) -> str:
    """One shape per image in `out_dir/<class>/NNNN.jpg` (Keras' `image_dataset_from_directory` layout)."""
    out_dir = os.fspath(out_dir)
    per_class = arguments.integer("per_class", per_class, lo=1)
    count = {c: 0 for c in CLASSES[1:]}
    index = 0
    while min(count.values()) < per_class:
        s = sample(index, seed, size=(size, size), max_shapes=1)
        index += 1
        name = CLASSES[int(s.classes[0])] if len(s.classes) else None
        if name is None or count[name] >= per_class:
            continue
        write_rgb(os.path.join(out_dir, name, f"{count[name]:04d}.jpg"), s.image)
        count[name] += 1
    return out_dir


def write_detection_records(out_dir: str | os.PathLike, n_train: int, n_val: int, size: int = 128, seed: int = 0) -> dict:
    """TFRecords for Model Garden's detection tasks (boxes, classes, instance masks) and a COCO
    annotation file of the validation split; returns their paths as
    {'train': ..., 'val': ..., 'annotations': ...}. `size` must suit the model (a multiple of 2**max_level)."""
    out_dir = os.fspath(out_dir)
    paths = {"train": os.path.join(out_dir, "train.tfrecord"), "val": os.path.join(out_dir, "val.tfrecord"),
             "annotations": os.path.join(out_dir, "val.json")}
    for split, n, offset in (("train", n_train, 0), ("val", n_val, 1)):
        generated = list(samples(n, seed * 2 + offset, size=(size, size)))
        records.write_records(paths[split], (
            records.detection_example(s.image, s.boxes, s.classes.tolist(), s.masks, source_id=i + 1)
            for i, s in enumerate(generated)
        ))
        if split == "val":
            coco = [(i + 1, size, size, s.boxes, s.classes.tolist(), s.masks) for i, s in enumerate(generated)]
            records.write_json(paths["annotations"], records.coco_annotations(coco, num_classes=len(CLASSES)))
    return paths
