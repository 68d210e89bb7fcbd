"""Dense tasks on ConvNeXt: segmentation, detection (Model Garden), ImageNet evaluation, pictures, CLI.

Modules: `segmentation` (models, loss, Keras metrics, sliding inference), `metrics` (mIoU and
pixel accuracy from a confusion matrix), `shapes` (a generated dataset: textured shapes on photos),
`datasets` (a folder of images/labels as `tf.data`, with the ADE20K augmentation), `label_files`
(label PNGs, palette ones too), `finetune` (fine-tuning with Keras `fit`), `predict` (models by
name for prediction), `layer_decay` (layer-wise learning-rate decay), `imagenet` (evaluation with
the official preprocessing), `export` (SavedModel, TFLite and ONNX, checked against Keras),
`records` (TFRecords for Model Garden), `visualize` (PNG pictures), `demo` and `cli` (the `convnext-tf` command). With Model Garden (imported only by these):
`registry_imports` (registers everything), `experiments`, `init_checkpoint`, `train`, `detection`
(RetinaNet and Mask R-CNN).
"""
from . import datasets, export, finetune, imagenet, label_files, layer_decay, metrics, predict, segmentation, shapes, visualize
from .finetune import FinetuneConfig, train_segmentation
from .layer_decay import LayerDecayAdamW
from .segmentation import (
    MeanIoU, PixelAccuracy, SegmentationModel, build_segmentation_model, predict_sliding, segmentation_loss,
)
from .visualize import colorize, overlay, pca_rgb, read_rgb, write_rgb

__all__ = [
    "FinetuneConfig", "LayerDecayAdamW", "MeanIoU", "PixelAccuracy", "SegmentationModel", "build_segmentation_model",
    "colorize", "datasets", "export", "finetune", "imagenet", "label_files", "layer_decay", "metrics", "overlay", "pca_rgb",
    "predict", "predict_sliding", "read_rgb", "segmentation", "segmentation_loss", "shapes", "train_segmentation",
    "visualize", "write_rgb",
]
