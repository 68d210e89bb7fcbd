"""ImageNet-1k evaluation with the official ConvNeXt preprocessing.

Preprocessing (the official `build_transform` in eval mode): for resolutions under 384, the
shorter side is resized to int(resolution / 0.875) with PIL's antialiased bicubic filter and the
centre is cropped; from 384 up, the image is resized to resolution x resolution. Then [0, 1] and
the ImageNet mean and std. A square warp at 224, as earlier TensorFlow ports did, costs 0.2 to 0.8
points.
"""
from __future__ import annotations

import glob
import json
import os
import xml.etree.ElementTree as ET
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np
import tensorflow as tf
import tf_keras

from convnext_tf.backbones import arguments
from convnext_tf.backbones.config import IMAGENET_MEAN, IMAGENET_STD

CROP_PCT = 0.875
MEAN = np.array(IMAGENET_MEAN, np.float32)
STD = np.array(IMAGENET_STD, np.float32)
_PRECISION_BITS = 22  # PIL's fixed-point precision for 8-bit images


def _bicubic(x: np.ndarray) -> np.ndarray:
    """PIL's bicubic kernel (a = -0.5)."""
    a, x = -0.5, np.abs(x)
    return np.where(
        x < 1, ((a + 2) * x - (a + 3)) * x * x + 1, np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0)
    )


@lru_cache(maxsize=64)
def _coefficients(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) fixed-point weights of PIL's resampling along one axis (antialiased when shrinking)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        k = _bicubic((np.arange(lo, hi) - center + 0.5) / filterscale)
        weights[i, lo:hi] = k / k.sum()
    # PIL rounds half away from zero into 22-bit fixed point
    return np.trunc(weights * (1 << _PRECISION_BITS) + np.where(weights < 0, -0.5, 0.5))


def _resample(x: np.ndarray, coeff: np.ndarray, axis: int) -> np.ndarray:
    """One uint8 pass of PIL's resampling (exact: integer weights, float64 sums)."""
    y = np.tensordot(coeff, x.astype(np.float64), axes=([1], [axis]))
    y = np.moveaxis(y, 0, axis)
    return np.clip(np.floor((y + (1 << (_PRECISION_BITS - 1))) / (1 << _PRECISION_BITS)), 0, 255).astype(np.uint8)


def resize_bicubic(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL's `Image.resize((width, height), Image.BICUBIC)` on a uint8 (H, W, C) array, in numpy."""
    if image.shape[1] != width:
        image = _resample(image, _coefficients(image.shape[1], width), axis=1)  # PIL: horizontal first
    if image.shape[0] != height:
        image = _resample(image, _coefficients(image.shape[0], height), axis=0)
    return image


def preprocess(image: np.ndarray, resolution: int = 224) -> np.ndarray:
    """Official eval preprocessing of a uint8 RGB image -> float32 (resolution, resolution, 3)."""
    h, w = image.shape[:2]
    if resolution >= 384:
        image = resize_bicubic(image, resolution, resolution)
    else:
        size = int(resolution / CROP_PCT)
        if h <= w:  # torchvision's Resize(int): shorter side to size, the other int(size * long / short)
            nh, nw = size, int(size * w / h)
        else:
            nh, nw = int(size * h / w), size
        image = resize_bicubic(image, nh, nw)
        top, left = int(round((nh - resolution) / 2.0)), int(round((nw - resolution) / 2.0))
        image = image[top : top + resolution, left : left + resolution]
    return (image.astype(np.float32) / 255.0 - MEAN) / STD


def synsets() -> list[str]:
    """The 1000 ImageNet-1k WordNet IDs; class i of every published head is synsets()[i]."""
    text = (resources.files("convnext_tf.tasks") / "data" / "imagenet_synsets.txt").read_text()
    return text.split()


def class_names() -> list[str]:
    """Readable names of the 1000 ImageNet-1k classes, in the order of `synsets()` (Keras' names)."""
    return (resources.files("convnext_tf.tasks") / "data" / "imagenet_classes.txt").read_text().splitlines()


def read_dataset(data: str, annotations: str | None = None) -> list[tuple[str, int]]:
    """(image path, class index) pairs of an ImageNet validation set.

    Either the ILSVRC2012 layout (`ILSVRC2012_val_*.JPEG` with `ILSVRC2012_val_*.xml` bounding-box
    annotations in `annotations`, default `data`; the label is the XML `<name>` synset: the label
    file of the dev kit is ordered for another use) or one folder per synset.
    """
    index = {s: i for i, s in enumerate(synsets())}
    images = sorted(p for ext in ("JPEG", "jpeg", "jpg", "png") for p in glob.glob(os.path.join(data, f"*.{ext}")))
    samples = []
    if images:
        for path in images:
            stem = os.path.splitext(os.path.basename(path))[0]
            xml = os.path.join(annotations or data, f"{stem}.xml")
            if not os.path.exists(xml):
                raise FileNotFoundError(f"No annotation {xml} for {path} (give --annotations DIR).")
            name = ET.parse(xml).getroot().findtext("object/name")
            if name not in index:
                raise ValueError(f"{xml}: synset {name!r} is not an ImageNet-1k class.")
            samples.append((path, index[name]))
    else:
        for synset in sorted(os.listdir(data)):
            folder = os.path.join(data, synset)
            if os.path.isdir(folder):
                if synset not in index:
                    raise ValueError(f"Folder {folder}: {synset!r} is not an ImageNet-1k synset.")
                samples += [(os.path.join(folder, f), index[synset]) for f in sorted(os.listdir(folder))]
    if not samples:
        raise FileNotFoundError(f"No images found in {data}.")
    return samples


def load_image(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"Cannot decode image {path}.")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def evaluate(
    model: tf_keras.Model, data: str | list[tuple[str, int]], annotations: str | None = None, resolution: int = 224,
    batch_size: int = 64, verbose: bool = True,
) -> dict:
    """Top-1 and top-5 accuracy (%) of `model` on an ImageNet validation set, with predictions.

    `data` is a folder (see `read_dataset`) or the (path, class) pairs `read_dataset` returned.
    """
    batch_size = arguments.integer("batch_size", batch_size, lo=1)
    samples = read_dataset(data, annotations) if isinstance(data, (str, os.PathLike)) else list(data)
    predict = tf.function(lambda x: model(x, training=False))
    correct1 = correct5 = 0
    predictions = []
    bar = tf_keras.utils.Progbar(len(samples), unit_name="image") if verbose else None
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        x = np.stack([preprocess(load_image(p), resolution) for p, _ in batch])
        logits = np.asarray(predict(tf.constant(x)), np.float32)
        top5 = np.argsort(-logits, axis=1)[:, :5]
        labels = np.array([label for _, label in batch])
        correct1 += int(np.sum(top5[:, 0] == labels))
        correct5 += int(np.sum(np.any(top5 == labels[:, None], axis=1)))
        predictions += top5[:, 0].tolist()
        if bar:
            bar.add(len(batch), [("top1", 100.0 * correct1 / (start + len(batch)))])
    n = len(samples)
    if len(predictions) != n:
        raise RuntimeError(f"Evaluated {len(predictions)} of {n} images.")
    return {
        "images": n, "top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "resolution": resolution,
        "predictions": {os.path.basename(p): int(k) for (p, _), k in zip(samples, predictions)},
    }


def write_json(results: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
