"""ConvNeXt inside TensorFlow Model Garden's own factories (classification, segmentation, detection)."""
import importlib

import numpy as np
import tensorflow as tf
import tf_keras
from official.vision.configs import decoders as decoders_cfg
from official.vision.configs import image_classification as cls_cfg
from official.vision.configs import maskrcnn as maskrcnn_cfg
from official.vision.configs import retinanet as retinanet_cfg
from official.vision.configs import semantic_segmentation as seg_cfg
from official.vision.modeling import factory
from official.vision.modeling.backbones import factory as backbone_factory
from official.vision.ops import anchor

from convnext_tf.backbones import ConvNeXtBackbone, model_garden
from convnext_tf.backbones.model_garden import Backbone, ConvNeXt


def backbone_config(**kwargs):
    return Backbone(type="convnext", convnext=ConvNeXt(model_id="atto", **kwargs))


def specs(size):
    return tf_keras.layers.InputSpec(shape=[None, size, size, 3])


def anchor_boxes(config, h, w):
    """Model Garden's multilevel anchors for a model config, with a batch axis of 1."""
    boxes = anchor.Anchor(
        min_level=config.min_level, max_level=config.max_level, num_scales=config.anchor.num_scales,
        aspect_ratios=config.anchor.aspect_ratios, anchor_size=config.anchor.anchor_size, image_size=(h, w),
    ).multilevel_boxes
    return {k: v[None] for k, v in boxes.items()}


def test_registered_once_and_reimport_is_harmless():
    importlib.reload(model_garden)  # executes the registration a second time
    config = backbone_config(version="v2", output_norm=False)
    backbone = backbone_factory.build_backbone(specs(None), config, None, tf_keras.regularizers.L2(1e-4))
    assert isinstance(backbone, ConvNeXtBackbone) and backbone.convnext_config.version == "v2"
    assert len(backbone.losses) == 40  # the L2 regulariser reached every kernel


def test_classification_model():
    config = cls_cfg.ImageClassificationModel(num_classes=7, input_size=[224, 224, 3], backbone=backbone_config())
    model = factory.build_classification_model(specs(224), config)
    assert model(np.zeros((2, 224, 224, 3), np.float32), training=False).shape == (2, 7)


def test_segmentation_model_with_model_garden_fpn():
    config = seg_cfg.SemanticSegmentationModel(
        num_classes=5, input_size=[512, 512, 3], min_level=2, max_level=5, backbone=backbone_config(),
        decoder=decoders_cfg.Decoder(type="fpn", fpn=decoders_cfg.FPN(num_filters=64)),
        head=seg_cfg.SegmentationHead(level=2, num_convs=1, num_filters=64),
    )
    model = factory.build_segmentation_model(specs(512), config)
    out = model(np.zeros((1, 512, 512, 3), np.float32), training=False)
    assert out["logits"].shape == (1, 128, 128, 5)


def test_retinanet():
    config = retinanet_cfg.RetinaNet(
        num_classes=4, input_size=[640, 640, 3], min_level=3, max_level=7, backbone=backbone_config(),
        decoder=decoders_cfg.Decoder(type="fpn", fpn=decoders_cfg.FPN(num_filters=64)),
        head=retinanet_cfg.RetinaNetHead(num_convs=1, num_filters=64),
    )
    model = factory.build_retinanet(specs(640), config)
    images = np.random.default_rng(0).uniform(-1, 1, (1, 640, 640, 3)).astype(np.float32)
    anchors = anchor_boxes(config, 640, 640)
    out = model(images, image_shape=tf.constant([[640, 640]]), anchor_boxes=anchors, training=False)
    assert out["detection_boxes"].shape[-1] == 4
    assert out["detection_scores"].shape[:2] == out["detection_classes"].shape[:2] == out["detection_boxes"].shape[:2]


def test_maskrcnn():
    config = maskrcnn_cfg.MaskRCNN(
        num_classes=3, input_size=[640, 640, 3], min_level=2, max_level=6, include_mask=True,
        backbone=backbone_config(), decoder=decoders_cfg.Decoder(type="fpn", fpn=decoders_cfg.FPN(num_filters=64)),
    )
    model = factory.build_maskrcnn(specs(640), config)
    images = np.random.default_rng(0).uniform(-1, 1, (1, 640, 640, 3)).astype(np.float32)
    anchors = anchor_boxes(config, 640, 640)
    out = model(images, image_shape=tf.constant([[640, 640]]), anchor_boxes=anchors, training=False)
    n = out["detection_boxes"].shape[1]
    assert out["detection_boxes"].shape == (1, n, 4)
    assert out["detection_masks"].shape[:2] == (1, n)
