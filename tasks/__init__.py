"""Dense tasks on ConvNeXt: segmentation, detection (Model Garden), ImageNet evaluation, pictures, CLI.

Modules: `segmentation` (models, loss, metrics, sliding inference), `layer_decay` (layer-wise
learning-rate decay), `imagenet` (evaluation with the official preprocessing), `visualize` (PNG
pictures), `demo` and `cli` (the `convnext-tf` command). With Model Garden (imported only by
these): `registry_imports` (registers everything), `experiments`, `init_checkpoint`, `train`,
`detection` (RetinaNet and Mask R-CNN).
"""
from . import imagenet, layer_decay, segmentation, visualize
from .layer_decay import LayerDecayAdamW
from .segmentation import (
    MeanIoU, PixelAccuracy, SegmentationModel, build_segmentation_model, predict_sliding, segmentation_loss,
)
from .visualize import colorize, overlay, pca_rgb, read_rgb, write_rgb

__all__ = [
    "LayerDecayAdamW", "MeanIoU", "PixelAccuracy", "SegmentationModel", "build_segmentation_model", "colorize",
    "imagenet", "layer_decay", "overlay", "pca_rgb", "predict_sliding", "read_rgb", "segmentation", "segmentation_loss", "visualize", "write_rgb",
]
