"""Segmentation scores from a confusion matrix: mIoU, per-class IoU, pixel accuracy (mmseg's definitions).

Pixels labelled `ignore_label` are not counted. A class that appears neither in the labels nor in
the predictions has no IoU (NaN) and is left out of the mean, as mmseg's `nanmean` leaves it out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tf_keras

from .segmentation import IGNORE_LABEL


def confusion_matrix(labels, predictions, num_classes: int, ignore_label: int = IGNORE_LABEL) -> np.ndarray:
    """(num_classes, num_classes) int64 counts: row = true class, column = predicted class."""
    labels = np.asarray(labels).ravel().astype(np.int64)
    predictions = np.asarray(predictions).ravel().astype(np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels ({labels.size} pixels) and predictions ({predictions.size}) differ in size.")
    keep = labels != ignore_label
    labels, predictions = labels[keep], predictions[keep]
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} must lie in 0..{num_classes - 1} (or be {ignore_label}); got {values.min()}..{values.max()}."
            )
    return np.bincount(labels * num_classes + predictions, minlength=num_classes**2).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class Scores:
    """mIoU, IoU per class (NaN: class absent), pixel accuracy, accuracy per class (NaN: no pixel)."""

    miou: float
    iou: np.ndarray
    pixel_accuracy: float
    accuracy: np.ndarray

    def table(self, class_names=None) -> str:
        """The per-class IoU and accuracy as aligned text lines."""
        names = class_names or [str(i) for i in range(len(self.iou))]
        width = max(len(n) for n in names)
        lines = [f"{'class':<{width}}    IoU    acc"]
        lines += [f"{n:<{width}} {i:6.3f} {a:6.3f}" for n, i, a in zip(names, self.iou, self.accuracy)]
        lines.append(f"{'mean':<{width}} {self.miou:6.3f}  pixel accuracy {self.pixel_accuracy:.3f}")
        return "\n".join(lines)


def scores(confusion: np.ndarray) -> Scores:
    """Scores of a confusion matrix (rows: true class, columns: predicted class)."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    truth = confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        accuracy = np.where(truth > 0, tp / truth, np.nan)
    total = confusion.sum()
    miou = float(np.nanmean(iou)) if np.any(union > 0) else float("nan")
    return Scores(miou, iou, float(tp.sum() / total) if total else float("nan"), accuracy)


def evaluate(model: tf_keras.Model, dataset: tf.data.Dataset, num_classes: int, ignore_label: int = IGNORE_LABEL,
             verbose: bool = True) -> tuple[Scores, np.ndarray]:
    """Scores of `model`'s argmax on (images, labels) batches, and the confusion matrix."""
    confusion = np.zeros((num_classes, num_classes), np.int64)
    cardinality = int(dataset.cardinality())
    progress = tf_keras.utils.Progbar(cardinality if cardinality > 0 else None) if verbose else None
    predict = tf.function(lambda x: tf.argmax(model(x, training=False), axis=-1), reduce_retracing=True)
    for images, labels in dataset:
        confusion += confusion_matrix(labels.numpy(), predict(images).numpy(), num_classes, ignore_label)
        if progress:
            progress.add(1)
    return scores(confusion), confusion
