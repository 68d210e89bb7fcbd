"""TFRecords in the formats Model Garden's vision decoders read, and COCO annotations for evaluation.

Images are stored as JPEG and `image/source_id` is a number (Model Garden converts it with
`tf.strings.to_number`); segmentation labels and instance masks are single-channel PNGs.
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf
from pycocotools import mask as coco_mask  # a dependency of Model Garden

from convnext_tf.backbones.files import atomic_path


def _bytes(*values: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def _image_features(image: np.ndarray, source_id: int) -> dict:
    image = np.asarray(image, np.uint8)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8; got shape {image.shape}.")
    return {
        "image/encoded": _bytes(tf.io.encode_jpeg(image, quality=95).numpy()),
        "image/format": _bytes(b"jpeg"),
        "image/source_id": _bytes(str(int(source_id)).encode()),
        "image/height": _ints([image.shape[0]]),
        "image/width": _ints([image.shape[1]]),
    }


def _png(mask: np.ndarray) -> bytes:
    return tf.io.encode_png(np.asarray(mask, np.uint8)[..., None]).numpy()


def classification_example(image: np.ndarray, label: int, source_id: int = 0) -> tf.train.Example:
    """An image and its class id (`image/class/label`)."""
    features = {**_image_features(image, source_id), "image/class/label": _ints([label])}
    return tf.train.Example(features=tf.train.Features(feature=features))


def segmentation_example(image: np.ndarray, label: np.ndarray, source_id: int = 0) -> tf.train.Example:
    """An image and its (H, W) map of class ids (255: ignored), as a PNG under `image/segmentation/class/encoded`."""
    if np.shape(label) != np.shape(image)[:2]:
        raise ValueError(f"label shape {np.shape(label)} differs from the image's {np.shape(image)[:2]}.")
    features = {
        **_image_features(image, source_id),
        "image/segmentation/class/encoded": _bytes(_png(label)),
        "image/segmentation/class/format": _bytes(b"png"),
    }
    return tf.train.Example(features=tf.train.Features(feature=features))


def detection_example(
    image: np.ndarray, boxes: np.ndarray, classes: Sequence[int], masks: np.ndarray | None = None, source_id: int = 0,
) -> tf.train.Example:
    """An image with boxes ((N, 4) pixel [ymin, xmin, ymax, xmax]), class ids and optional (N, H, W) {0, 1} masks."""
    h, w = np.shape(image)[:2]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n_masks = len(boxes) if masks is None else len(masks)
    if len(classes) != len(boxes) or n_masks != len(boxes):
        raise ValueError(f"{len(boxes)} boxes, {len(classes)} classes and {n_masks} masks: one each per object.")
    features = {
        **_image_features(image, source_id),
        "image/object/bbox/ymin": _floats(boxes[:, 0] / h),
        "image/object/bbox/xmin": _floats(boxes[:, 1] / w),
        "image/object/bbox/ymax": _floats(boxes[:, 2] / h),
        "image/object/bbox/xmax": _floats(boxes[:, 3] / w),
        "image/object/class/label": _ints(classes),
        "image/object/is_crowd": _ints([0] * len(boxes)),
        "image/object/area": _floats((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])),
    }
    if masks is not None:
        features["image/object/mask"] = _bytes(*(_png(m) for m in masks))
    return tf.train.Example(features=tf.train.Features(feature=features))


def write_records(path: str, examples: Iterable[tf.train.Example]) -> int:
    """Write examples to one TFRecord file (atomically); returns how many."""
    count = 0
    with atomic_path(path) as tmp:
        with tf.io.TFRecordWriter(tmp) as writer:
            for example in examples:
                writer.write(example.SerializeToString())
                count += 1
    return count


def coco_annotations(samples: Iterable[tuple], num_classes: int) -> dict:
    """A COCO instances file for evaluation from (source_id, height, width, boxes, classes[, masks]) per image.

    Model Garden's COCO evaluator needs one (`task.annotation_file`) under NumPy 2; with masks
    (Mask R-CNN) each object gets its mask as RLE.
    """
    images, annotations = [], []
    for source_id, h, w, boxes, classes, *masks in samples:
        images.append({"id": int(source_id), "height": int(h), "width": int(w)})
        boxes = np.asarray(boxes, float).reshape(-1, 4)
        for i, ((y1, x1, y2, x2), c) in enumerate(zip(boxes, classes)):
            annotation = {
                "id": len(annotations) + 1, "image_id": int(source_id), "category_id": int(c), "iscrowd": 0,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
            }
            if masks:
                rle = coco_mask.encode(np.asfortranarray(np.asarray(masks[0][i], np.uint8)))
                annotation["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
                annotation["area"] = float(coco_mask.area(rle))
            annotations.append(annotation)
    categories = [{"id": i, "name": str(i)} for i in range(1, num_classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_json(path: str, content: dict) -> None:
    """Write JSON atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(content, f)
