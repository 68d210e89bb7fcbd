"""Models for prediction from a name and weights, and their predictions on one image at a time.

Used by the `features`, `segment` and `classify` commands and the notebooks.
"""
from __future__ import annotations

import os

import numpy as np
import tf_keras

from convnext_tf.backbones import ConvNeXtConfig, build_convnext, catalogue, load_state_dict, read_checkpoint
from convnext_tf.backbones.config import MIN_INPUT_SIZE
from convnext_tf.backbones.model import preprocess_input
from convnext_tf.backbones.weights import LoadResult, head_classes
from convnext_tf.necks import NECKS

from . import imagenet
from .segmentation import build_segmentation_model, predict_sliding

def check_image(image: np.ndarray, what: str) -> np.ndarray:
    """`image` if both sides are at least 32 pixels, else a ValueError naming it."""
    if min(image.shape[:2]) < MIN_INPUT_SIZE:
        raise ValueError(f"{what} is {image.shape[1]}x{image.shape[0]}; ConvNeXt needs at least "
                         f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} pixels.")
    return image


def is_keras_file(weights: str | None) -> bool:
    """True for a saved Keras model: a .keras/.h5 file that is a whole model, or a SavedModel folder."""
    return bool(weights) and (weights.endswith(".keras") or os.path.isfile(os.path.join(weights, "saved_model.pb")))


def classifier_model(variant: str, state_dict: dict) -> tuple[tf_keras.Model, LoadResult]:
    """`variant`'s classifier with the checkpoint's head (none for a headless checkpoint), any
    input size, loaded from `state_dict` (as `read_checkpoint` gives it)."""
    classes = head_classes(state_dict)
    model = build_convnext(variant, input_shape=(None, None, 3), include_top=classes > 0, classes=max(classes, 1))
    return model, load_state_dict(model, state_dict)


def segmentation_model(model: str | None, weights: str) -> tf_keras.Model:
    """A segmentation model to predict with.

    `weights` is a saved Keras model (`model.keras` of `train-segmentation`; then `model` is not
    needed), a published name ('ade20k') or a checkpoint file of a whole UperNet (Hugging Face or
    mmseg keys); for the last two `model` is '<neck>_<variant>', e.g. 'upernet_convnext_tiny'.
    """
    if is_keras_file(weights):
        if not os.path.exists(weights):
            raise FileNotFoundError(f"No saved model {weights!r}.")
        return tf_keras.models.load_model(weights)
    neck, _, variant = (model or "").partition("_")
    if neck not in NECKS or not variant:
        raise ValueError(
            f"--model {model!r}: expected <neck>_<variant> with neck {' or '.join(sorted(NECKS))}, "
            "e.g. upernet_convnext_tiny (or give a model.keras file as --weights)."
        )
    ConvNeXtConfig.from_name(variant)  # names the known variants if this is none
    if catalogue.is_name(weights):
        classes = catalogue.find(f"upernet_{variant}", weights).classes
    else:
        classes = head_classes(read_checkpoint(weights), "decode_head.classifier")
    return build_segmentation_model(variant, classes, neck=neck, weights=weights)


def segment(model: tf_keras.Model, image: np.ndarray, slide: bool = False, crop_size: int = 512,
            stride: int = 341) -> np.ndarray:
    """The label map (H, W) of a uint8 RGB image at its own size; `slide` predicts overlapping
    `crop_size` crops (mmseg's slide inference) instead of the whole image at once."""
    x = preprocess_input(image[None]).numpy()
    if slide:
        return predict_sliding(model, x[0], crop_size, stride, verbose=True).argmax(-1)
    return model(x, training=False).numpy()[0].argmax(-1)


def classify(model: tf_keras.Model, image: np.ndarray, resolution: int = 224, topk: int = 5) -> list[tuple[int, float]]:
    """The top-k (class index, probability) of a uint8 RGB image, with the official preprocessing."""
    logits = model(imagenet.preprocess(image, resolution)[None], training=False).numpy()[0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    top = np.argsort(-probs)[:topk]
    return [(int(i), float(probs[i])) for i in top]


def class_name(index: int, num_classes: int) -> str:
    """The readable name of class `index` of a 1000-class ImageNet head, else 'class <index>'."""
    return imagenet.class_names()[index] if num_classes == 1000 else f"class {index}"
