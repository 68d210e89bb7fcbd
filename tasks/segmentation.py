"""Semantic segmentation: ConvNeXt backbone, UperNet or FPN neck, logits at the input resolution."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from convnext_tf.backbones import ConvNeXtBackbone, ConvNeXtConfig
from convnext_tf.backbones.config import MIN_INPUT_SIZE
from convnext_tf.necks import NECKS, FPN, UperNet
from convnext_tf.necks.ops import ResizeLike, conv_bn_relu, pyramid_inputs, resize

IGNORE_LABEL = 255
AUX_WEIGHT = 0.4  # weight of the auxiliary FCN head's loss in the official UperNet recipe


def _classifier(x, num_classes, dropout_rate, name):
    """mmseg's `conv_seg`: dropout, then a 1x1 convolution with bias, in float32."""
    x = tf_keras.layers.Dropout(dropout_rate, name=f"{name}.dropout")(x)
    return tf_keras.layers.Conv2D(num_classes, 1, name=f"{name}.classifier", dtype="float32")(x)


def decode_head(neck: tf_keras.Model, num_classes: int, dropout_rate: float = 0.1, channels: int = 128) -> tf_keras.Model:
    """Logits at the neck's lowest level.

    UperNet has fused its levels already: a classifier is all that is left. For an FPN, each level
    gets a 3x3 conv-BN-ReLU, is resized to the lowest level and summed (Semantic FPN's fusion).
    """
    inputs = pyramid_inputs(neck.output_specs, sorted(neck.output_specs, key=int))
    levels = sorted(inputs, key=int)
    if isinstance(neck, FPN):
        maps = [conv_bn_relu(inputs[l], channels, 3, f"decode_head.scale_heads.{l}") for l in levels]
        maps = maps[:1] + [ResizeLike(name=f"decode_head.resize.{l}")([m, maps[0]]) for l, m in zip(levels[1:], maps[1:])]
        x = tf_keras.layers.Add(name="decode_head.sum")(maps) if len(maps) > 1 else maps[0]
    else:
        x = inputs[levels[0]]
    return tf_keras.Model(inputs, _classifier(x, num_classes, dropout_rate, "decode_head"), name="decode_head")


def fcn_aux_head(backbone: ConvNeXtBackbone, num_classes: int, channels: int = 256, dropout_rate: float = 0.1) -> tf_keras.Model:
    """mmseg's auxiliary FCNHead on level 4 (stride 16): one 3x3 conv module and a classifier."""
    x = inputs = tf_keras.Input(tf.TensorShape(backbone.output_specs["4"])[1:], name="level_4")
    x = conv_bn_relu(x, channels, 3, "aux_head.convs.0")
    return tf_keras.Model(inputs, _classifier(x, num_classes, dropout_rate, "aux_head"), name="aux_head")


def segmentation_loss(labels: tf.Tensor, logits: tf.Tensor, ignore_label: int = IGNORE_LABEL) -> tf.Tensor:
    """Mean softmax cross-entropy over the pixels whose label is not `ignore_label`."""
    labels = tf.cast(labels, tf.int32)
    valid = tf.not_equal(labels, ignore_label)
    safe = tf.where(valid, labels, 0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(safe, tf.cast(logits, tf.float32))
    mask = tf.cast(valid, tf.float32)
    return tf.reduce_sum(ce * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


class SegmentationModel(tf_keras.Model):
    """Backbone -> neck -> decode head, logits bilinearly resized to the input size.

    Called with `training=True` and an auxiliary head it returns `{'logits', 'aux_logits'}`,
    otherwise the logits alone (float32, (N, H, W, num_classes)). `fit` trains it with
    cross-entropy (ignore label 255) plus 0.4 x the auxiliary loss.
    """

    def __init__(self, backbone, neck, decode_head, aux_head=None, ignore_label=IGNORE_LABEL, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.neck = neck
        self.decode_head = decode_head
        self.aux_head = aux_head
        self.ignore_label = ignore_label

    def call(self, images, training=None):
        for axis, what in ((1, "height"), (2, "width")):
            if images.shape[axis] is not None and images.shape[axis] < MIN_INPUT_SIZE:
                raise ValueError(
                    f"images {what} is {images.shape[axis]}, but segmentation needs at least "
                    f"{MIN_INPUT_SIZE} pixels; got images of shape {images.shape}."
                )
        features = self.backbone(images, training=training)
        size = tf.shape(images)[1:3]
        logits = resize(tf.cast(self.decode_head(self.neck(features, training=training), training=training), tf.float32), size)
        if training and self.aux_head is not None:
            aux = resize(tf.cast(self.aux_head(features["4"], training=training), tf.float32), size)
            return {"logits": logits, "aux_logits": aux}
        return logits

    def compute_loss(self, labels, outputs) -> tf.Tensor:
        if isinstance(outputs, dict):
            return segmentation_loss(labels, outputs["logits"], self.ignore_label) + AUX_WEIGHT * segmentation_loss(
                labels, outputs["aux_logits"], self.ignore_label
            )
        return segmentation_loss(labels, outputs, self.ignore_label)

    def train_step(self, data):
        images, labels = data
        with tf.GradientTape() as tape:
            outputs = self(images, training=True)
            loss = self.compute_loss(labels, outputs)
            total = loss + tf.add_n(self.losses) if self.losses else loss
        self.optimizer.minimize(total, self.trainable_variables, tape=tape)
        return {"loss": loss}

    def test_step(self, data):
        images, labels = data
        return {"loss": self.compute_loss(labels, self(images, training=False))}


def build_segmentation_model(
    backbone: ConvNeXtBackbone | str,
    num_classes: int,
    neck: str = "upernet",
    aux_head: bool = True,
    channels: int | None = None,
    aux_channels: int = 256,
    dropout_rate: float = 0.1,
    weights: str | None = None,
) -> SegmentationModel:
    """A ConvNeXt segmentation model in one call.

    Args:
      backbone: a `ConvNeXtBackbone` (built with `input_tensor` for preprocessing in front) or a
        variant name such as 'convnext_tiny'.
      num_classes: number of classes.
      neck: 'upernet' (mmseg's UPerHead, 512 channels) or 'fpn' (256 channels, Semantic FPN fusion).
      aux_head: add the auxiliary FCN head on level 4 (used in training only).
      channels: neck width (default 512 for UperNet, 256 for FPN).
      weights: 'ade20k' (the openmmlab UperNet checkpoints, 150 classes) or a checkpoint file of the
        whole model (Hugging Face `UperNetForSemanticSegmentation` or mmseg keys, or a Keras file).
    """
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}.")
    if neck not in NECKS:
        raise ValueError(f"neck must be one of {sorted(NECKS)}; got {neck!r}.")
    if isinstance(backbone, str):
        cfg = ConvNeXtConfig.from_name(backbone)
        backbone = ConvNeXtBackbone(cfg.size, cfg.version)
    missing = [l for l in ("2", "3", "4", "5") if l not in backbone.output_specs]
    if missing:
        raise ValueError(
            f"The segmentation model needs backbone levels 2..5; this backbone lacks levels {missing} "
            "(build it with min_level=2, max_level=5)."
        )
    if neck == "upernet":
        neck_model = UperNet(backbone.output_specs, channels=channels or 512, name="neck")
    else:
        neck_model = FPN(backbone.output_specs, num_filters=channels or 256, name="neck")
    model = SegmentationModel(
        backbone,
        neck_model,
        decode_head(neck_model, num_classes, dropout_rate),
        fcn_aux_head(backbone, num_classes, aux_channels, dropout_rate) if aux_head else None,
        name=f"{backbone.convnext_config.name}_{neck}",
    )
    model(tf.zeros([1, 64, 64, 3]))  # create the variables
    if weights:
        from convnext_tf.backbones import load_weights
        from convnext_tf.backbones.hub import resolve

        load_weights(model, resolve(weights, f"upernet_{backbone.convnext_config.name}", 512))
    return model


def predict_sliding(
    model: tf_keras.Model,
    images,
    crop_size: int | tuple[int, int] = 512,
    stride: int | tuple[int, int] = 341,
    num_classes: int | None = None,
    verbose: bool = False,
) -> np.ndarray:
    """mmseg's slide inference: logits of overlapping crops, averaged where they overlap.

    `images` is (H, W, 3) or (N, H, W, 3), already preprocessed; returns float32 logits of the
    same spatial size. Crops at the far edges are shifted inward so that all have the crop size;
    an image no larger than one crop is predicted whole.
    """
    images = np.asarray(images, np.float32)
    single = images.ndim == 3
    if single:
        images = images[None]
    ch, cw = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    n, h, w, _ = images.shape
    rows = max(h - ch + sh - 1, 0) // sh + 1
    cols = max(w - cw + sw - 1, 0) // sw + 1
    total = count = None
    progress = tf_keras.utils.Progbar(rows * cols) if verbose else None
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, h), min(c * sw + cw, w)
            y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
            logits = np.asarray(model(images[:, y1:y2, x1:x2], training=False), np.float32)
            if total is None:
                total = np.zeros((n, h, w, num_classes or logits.shape[-1]), np.float32)
                count = np.zeros((1, h, w, 1), np.float32)
            total[:, y1:y2, x1:x2] += logits
            count[:, y1:y2, x1:x2] += 1
            if progress:
                progress.add(1)
    out = total / count
    return out[0] if single else out
