"""Dense tasks on ConvNeXt: segmentation, detection (Model Garden), ImageNet evaluation, pictures, CLI.

Modules: `segmentation` (models, loss, metrics, sliding inference), `detection` (Model Garden's
RetinaNet and Mask R-CNN), `imagenet` (evaluation with the official preprocessing), `visualize`
(PNG pictures), `demo` and `cli` (the `convnext-tf` command).
"""
from . import detection, imagenet, segmentation, visualize
from .segmentation import (
    MeanIoU, PixelAccuracy, SegmentationModel, build_segmentation_model, predict_sliding, segmentation_loss,
)
from .visualize import colorize, overlay, pca_rgb, read_rgb, write_rgb

__all__ = [
    "MeanIoU", "PixelAccuracy", "SegmentationModel", "build_segmentation_model", "colorize", "detection", "imagenet",
    "overlay", "pca_rgb", "predict_sliding", "read_rgb", "segmentation", "segmentation_loss", "visualize", "write_rgb",
]
