"""convnext-tf: ConvNeXt V1 and V2 in tf_keras, numerically equal to the PyTorch models, as
multi-scale backbones for dense prediction.

The main names are here; the layers are `convnext_tf.backbones` (models, weights), `.necks`
(FPN, UperNet) and `.tasks` (segmentation, detection, evaluation, command line). This file is the
repository's root `__init__.py`, installed as the package `convnext_tf`.
"""
from importlib import metadata as _metadata

from convnext_tf.backbones import (
    ConvNeXtBackbone, convnext_v1, convnext_v2, create_model, list_models, load_weights, preprocess_input, save_weights,
)
from convnext_tf.tasks.segmentation import build_segmentation_model

try:
    __version__ = _metadata.version("convnext-tf")
except _metadata.PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "ConvNeXtBackbone", "build_segmentation_model", "convnext_v1", "convnext_v2", "create_model", "list_models",
    "load_weights", "preprocess_input", "save_weights",
]
