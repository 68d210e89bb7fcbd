"""Detection with Model Garden's RetinaNet and Mask R-CNN on a ConvNeXt backbone and our FPN.

The models are Model Garden's own (`official.vision.modeling.factory`), configured with
`backbone.type='convnext'` and `decoder.type='exact_fpn'`. Anchors tile the image, so image
sides must be multiples of 2**max_level (128 for RetinaNet's level 7, 64 for Mask R-CNN's level
6); Model Garden's input pipelines pad images to such sizes.

RetinaNet's post-processing runs Model Garden's `'batched'` NMS (`tf.image.combined_non_max_suppression`,
which drops boxes under the score threshold before suppressing) rather than its default `'v2'`,
written for TPUs: v2 suppresses the top 5000 boxes of every class whatever their scores, which
on a CPU takes ten times the network's forward pass (RetinaNet-T, 91 classes). Both keep the
same boxes while at most `pre_nms_top_k` boxes per class pass the threshold (tested). Mask
R-CNN keeps v2 (its 1000 proposals cost less; there the two disagree).
"""
from __future__ import annotations

import weakref

import tensorflow as tf
import tf_keras
from official.vision.configs import maskrcnn as maskrcnn_cfg
from official.vision.configs import retinanet as retinanet_cfg
from official.vision.modeling import factory
from official.vision.ops import anchor

from convnext_tf.backbones.model_garden import Backbone, ConvNeXt
from convnext_tf.necks.model_garden import Decoder, ExactFPNConfig

INPUT_SPECS = tf_keras.layers.InputSpec(shape=[None, None, None, 3])
NMS_VERSION = "batched"  # see the module docstring


def _parts(model_id, version, num_filters, backbone_kwargs):
    return dict(
        backbone=Backbone(type="convnext", convnext=ConvNeXt(model_id=model_id, version=version, **backbone_kwargs)),
        decoder=Decoder(type="exact_fpn", exact_fpn=ExactFPNConfig(num_filters=num_filters)),
    )


def retinanet_config(
    model_id: str = "tiny", version: str | None = None, num_classes: int = 91, min_level: int = 3, max_level: int = 7,
    num_filters: int = 256, **backbone_kwargs,
) -> retinanet_cfg.RetinaNet:
    """Model Garden RetinaNet config with a ConvNeXt backbone (kwargs: `ConvNeXt` config fields)."""
    return retinanet_cfg.RetinaNet(
        num_classes=num_classes, min_level=min_level, max_level=max_level,
        head=retinanet_cfg.RetinaNetHead(num_filters=num_filters),
        detection_generator=retinanet_cfg.DetectionGenerator(nms_version=NMS_VERSION),
        **_parts(model_id, version, num_filters, backbone_kwargs),
    )


def maskrcnn_config(
    model_id: str = "tiny", version: str | None = None, num_classes: int = 91, include_mask: bool = True,
    num_filters: int = 256, **backbone_kwargs,
) -> maskrcnn_cfg.MaskRCNN:
    """Model Garden Mask R-CNN config (levels 2..6) with a ConvNeXt backbone."""
    return maskrcnn_cfg.MaskRCNN(
        num_classes=num_classes, min_level=2, max_level=6, include_mask=include_mask,
        **_parts(model_id, version, num_filters, backbone_kwargs),
    )


def build_retinanet(config: retinanet_cfg.RetinaNet, l2_weight: float = 0.0) -> tf_keras.Model:
    """Model Garden's RetinaNet from `retinanet_config(...)`; takes any image size."""
    return factory.build_retinanet(INPUT_SPECS, config, _l2(l2_weight))


def build_maskrcnn(config: maskrcnn_cfg.MaskRCNN, l2_weight: float = 0.0) -> tf_keras.Model:
    """Model Garden's Mask R-CNN from `maskrcnn_config(...)`; takes any image size."""
    return factory.build_maskrcnn(INPUT_SPECS, config, _l2(l2_weight))


def _l2(weight: float):
    return tf_keras.regularizers.L2(weight / 2.0) if weight else None  # Model Garden's convention


def anchor_boxes(config, height: int, width: int, batch_size: int = 1) -> dict[str, tf.Tensor]:
    """Model Garden's multilevel anchors for a model config and image size, with a batch axis.

    Anchors tile the image at every level, so height and width must be multiples of 2**max_level.
    """
    stride = 2**config.max_level
    if height % stride or width % stride:
        raise ValueError(
            f"Detection images must have sides that are multiples of {stride} (2**max_level, for the anchors); "
            f"got {height}x{width}. Pad the image (Model Garden's parsers do) to "
            f"{-(-height // stride) * stride}x{-(-width // stride) * stride}."
        )
    boxes = anchor.Anchor(
        min_level=config.min_level, max_level=config.max_level, num_scales=config.anchor.num_scales,
        aspect_ratios=config.anchor.aspect_ratios, anchor_size=config.anchor.anchor_size,
        image_size=(height, width),
    ).multilevel_boxes
    return {k: tf.tile(v[None], [batch_size, 1, 1, 1]) for k, v in boxes.items()}


_COMPILED: "weakref.WeakKeyDictionary[tf_keras.Model, tuple]" = weakref.WeakKeyDictionary()


def _compiled(model: tf_keras.Model, config):
    """The model's inference for `config` as one `tf.function` per model, traced once per input
    shape; the anchors and image shape are built in the trace, so a call computes neither."""
    entry = _COMPILED.get(model)
    if entry is None or entry[0] is not config:
        ref = weakref.ref(model)  # the function must not keep the model alive

        @tf.function
        def run(images):
            b, h, w = images.shape[0], images.shape[1], images.shape[2]
            return ref()(images, image_shape=tf.constant([[h, w]] * b, tf.float32),
                         anchor_boxes=anchor_boxes(config, h, w, b), training=False)

        entry = _COMPILED[model] = (config, run)
    return entry[1]


def detect(model: tf_keras.Model, config, images) -> dict[str, tf.Tensor]:
    """Boxes, scores, classes (and masks) for a batch of images whose sides are multiples of 2**max_level.

    Runs compiled: the first call for an image size traces the model (seconds), later calls of
    that size reuse it.
    """
    return _compiled(model, config)(tf.convert_to_tensor(images, tf.float32))
