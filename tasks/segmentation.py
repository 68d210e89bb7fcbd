"""Semantic segmentation: ConvNeXt backbone, UperNet or FPN neck, logits at the input resolution."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from convnext_tf.backbones import ConvNeXtBackbone, ConvNeXtConfig, arguments, catalogue, load_weights
from convnext_tf.backbones.layers import serializable
from convnext_tf.backbones.model import resolve_weights
from convnext_tf.backbones.weights import register_rules
from convnext_tf.necks import NECKS, FPN, UperNet
from convnext_tf.necks.ops import ResizeLike, conv_bn_relu, pyramid_inputs, resize

IGNORE_LABEL = 255
AUX_WEIGHT = 0.4  # weight of the auxiliary FCN head's loss in the official UperNet recipe

_B = r"(\d+)"
# Checkpoint keys of the heads, in Hugging Face's UperNetForSemanticSegmentation and mmseg's names;
# the backbone's keys are converted by its own rules, in any format.
register_rules([
    (rf"^decode_head\.psp_modules\.{_B}\.1\.conv\.", r"neck.ppm.\1.conv."),
    (rf"^decode_head\.psp_modules\.{_B}\.1\.(batch_norm|bn)\.", r"neck.ppm.\1.bn."),
    (r"^decode_head\.(bottleneck|fpn_bottleneck)\.conv\.", r"neck.\1.conv."),
    (r"^decode_head\.(bottleneck|fpn_bottleneck)\.(batch_norm|bn)\.", r"neck.\1.bn."),
    (rf"^decode_head\.(lateral_convs|fpn_convs)\.{_B}\.conv\.", r"neck.\1.\2.conv."),
    (rf"^decode_head\.(lateral_convs|fpn_convs)\.{_B}\.(batch_norm|bn)\.", r"neck.\1.\2.bn."),
    (r"^decode_head\.(classifier|conv_seg)\.", "decode_head.classifier."),
    (rf"^auxiliary_head\.convs\.{_B}\.conv\.", r"aux_head.convs.\1.conv."),
    (rf"^auxiliary_head\.convs\.{_B}\.(batch_norm|bn)\.", r"aux_head.convs.\1.bn."),
    (r"^auxiliary_head\.(classifier|conv_seg)\.", "aux_head.classifier."),
])
# UperNet on ADE20K: mmseg's models as converted by Hugging Face (mIoU single-scale, 512x512)
catalogue.register([
    catalogue.Checkpoint(
        f"upernet_convnext_{s}", "ade20k", 512,
        (catalogue.Source(catalogue.HF, f"openmmlab/upernet-convnext-{s}/resolve/main/pytorch_model.bin"),), 150, miou,
    )
    for s, miou in (("tiny", 46.0), ("small", 48.7), ("base", 49.1), ("large", 53.2), ("xlarge", 53.6))
])


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


def segmentation_loss(
    labels: tf.Tensor, logits: tf.Tensor, ignore_label: int = IGNORE_LABEL, sample_weight: tf.Tensor | None = None
) -> tf.Tensor:
    """Mean softmax cross-entropy over the pixels whose label is not `ignore_label`.

    `sample_weight` (per image (N,) or per pixel (N, H, W)) multiplies each pixel's loss before
    the mean over the labelled pixels, as Keras weights a loss.
    """
    labels = tf.cast(labels, tf.int32)
    valid = tf.not_equal(labels, ignore_label)
    safe = tf.where(valid, labels, 0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(safe, tf.cast(logits, tf.float32))
    mask = tf.cast(valid, tf.float32)
    weighted = ce * mask if sample_weight is None else ce * mask * pixel_weights(sample_weight, labels)
    return tf.reduce_sum(weighted) / tf.maximum(tf.reduce_sum(mask), 1.0)


def pixel_weights(sample_weight: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """A weight per image (N,) or per pixel (N, H, W) as a float32 (N, H, W) map."""
    weight = tf.cast(sample_weight, tf.float32)
    weight = tf.reshape(weight, tf.concat([tf.shape(weight), tf.ones([3 - tf.rank(weight)], tf.int32)], 0))
    return tf.broadcast_to(weight, tf.shape(labels))


@serializable
class MeanIoU(tf_keras.metrics.MeanIoU):
    """Mean intersection over union of labels and logits over the classes present (mmseg's mIoU).

    Pixels labelled `ignore_label` are left out; `sample_weight` weighs pixels.
    """

    def __init__(self, num_classes: int, ignore_label: int = IGNORE_LABEL, name: str = "mean_iou", dtype=None):
        super().__init__(num_classes=num_classes, ignore_class=ignore_label, sparse_y_pred=False, name=name, dtype=dtype)

    def get_config(self) -> dict:
        return {"num_classes": self.num_classes, "ignore_label": self.ignore_class, "name": self.name, "dtype": self.dtype}


@serializable
class PixelAccuracy(tf_keras.metrics.Mean):
    """Share of labelled pixels (label != `ignore_label`) whose argmax of the logits is right."""

    def __init__(self, ignore_label: int = IGNORE_LABEL, name: str = "pixel_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.ignore_label = ignore_label

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = tf.cast(y_true, tf.int32)
        correct = tf.cast(tf.equal(tf.argmax(y_pred, axis=-1, output_type=tf.int32), labels), tf.float32)
        weight = tf.cast(tf.not_equal(labels, self.ignore_label), tf.float32)
        if sample_weight is not None:
            weight *= pixel_weights(sample_weight, labels)
        return super().update_state(correct, weight)

    def get_config(self) -> dict:
        return {**super().get_config(), "ignore_label": self.ignore_label}


@serializable
class SegmentationModel(tf_keras.Model):
    """Backbone -> neck -> decode head, logits bilinearly resized to the input size.

    Called with `training=True` and an auxiliary head it returns `{'logits', 'aux_logits'}`,
    otherwise the logits alone (float32, (N, H, W, num_classes)). `fit` trains it with
    cross-entropy (ignore label 255) plus 0.4 x the auxiliary loss, weighted by `sample_weight`
    (per image or per pixel) when given; `compile(metrics=[...])` takes Keras metrics of labels
    and logits (`MeanIoU`, `PixelAccuracy` below handle the ignore label).
    """

    def __init__(self, backbone, neck, decode_head, aux_head=None, ignore_label=IGNORE_LABEL, **kwargs):
        _check_backbone(backbone, variant_names=False)
        super().__init__(**kwargs)
        self.backbone = backbone
        self.neck = neck
        self.decode_head = decode_head
        self.aux_head = aux_head
        self.ignore_label = arguments.integer("ignore_label", ignore_label)
        self._loss_tracker = None
        # Built on the backbone's input spec (not on an example batch), so the variables and a
        # SavedModel's signature take any batch, height and width the backbone takes.
        self(tf_keras.Input(backbone.input_shape[1:], name="images"))
        self.output_names = ["logits"]  # the name of the output in a SavedModel's signature

    def call(self, images, training=None):
        features = self.backbone(images, training=training)
        size = tf.shape(images)[1:3]
        logits = resize(tf.cast(self.decode_head(self.neck(features, training=training), training=training), tf.float32), size)
        if training and self.aux_head is not None:
            aux = resize(tf.cast(self.aux_head(features["4"], training=training), tf.float32), size)
            return {"logits": logits, "aux_logits": aux}
        return logits

    def get_config(self) -> dict:
        serialize = tf_keras.layers.serialize
        return {
            "name": self.name,
            "backbone": serialize(self.backbone),
            "neck": serialize(self.neck),
            "decode_head": serialize(self.decode_head),
            "aux_head": None if self.aux_head is None else serialize(self.aux_head),
            "ignore_label": self.ignore_label,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> "SegmentationModel":
        config = dict(config)
        for part in ("backbone", "neck", "decode_head", "aux_head"):
            if config.get(part) is not None:
                config[part] = tf_keras.layers.deserialize(config[part], custom_objects=custom_objects)
        return cls(**config)

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Keras' compile; the loss is the model's own (see the class), so `loss` must be None."""
        if loss is not None:
            raise ValueError(
                f"SegmentationModel trains with its own loss (cross-entropy ignoring label {self.ignore_label}, "
                f"plus {AUX_WEIGHT} x the auxiliary head's); compile it without loss= (got {loss!r})."
            )
        for key in ("loss_weights", "weighted_metrics"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"SegmentationModel.compile does not take {key}: metrics= are weighted by fit's sample_weight."
                )
        # as weighted metrics, so that fit's and evaluate's sample_weight weighs the pixels they count
        super().compile(optimizer=optimizer, weighted_metrics=metrics, **kwargs)
        self._loss_tracker = tf_keras.metrics.Mean(name="loss")

    def compile_from_config(self, config: dict) -> None:
        """Compile as saved (a reloaded `.keras` file): the optimizer and metrics come back."""
        config = tf_keras.saving.deserialize_keras_object(config)
        self.compile(optimizer=config.get("optimizer"), metrics=config.get("weighted_metrics"))
        if self.built:  # so that the saved optimizer variables have somewhere to go
            self.optimizer.build(self.trainable_variables)

    def fit(self, *args, class_weight=None, **kwargs):
        """Keras' fit; per-class weights go in as a per-pixel `sample_weight` map instead of `class_weight`."""
        if class_weight is not None:
            raise ValueError(
                "SegmentationModel.fit does not take class_weight (labels are maps, not one class per sample); "
                "pass sample_weight with a weight per pixel, e.g. np.take(weights_per_class, labels)."
            )
        return super().fit(*args, **kwargs)

    @property
    def metrics(self):
        compiled = self.compiled_metrics.metrics if getattr(self, "compiled_metrics", None) is not None else []
        return ([self._loss_tracker] if self._loss_tracker is not None else []) + compiled

    def compute_loss(self, labels, outputs, sample_weight=None) -> tf.Tensor:
        if isinstance(outputs, dict):
            return segmentation_loss(labels, outputs["logits"], self.ignore_label, sample_weight) + AUX_WEIGHT * (
                segmentation_loss(labels, outputs["aux_logits"], self.ignore_label, sample_weight)
            )
        return segmentation_loss(labels, outputs, self.ignore_label, sample_weight)

    def _update_metrics(self, loss, labels, logits, sample_weight) -> dict:
        self._loss_tracker.update_state(loss)
        if sample_weight is not None:
            sample_weight = pixel_weights(sample_weight, labels)
        self.compiled_metrics.update_state(labels, logits, sample_weight)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        images, labels, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            outputs = self(images, training=True)
            loss = self.compute_loss(labels, outputs, sample_weight)
            total = loss + tf.add_n(self.losses) if self.losses else loss
        self.optimizer.minimize(total, self.trainable_variables, tape=tape)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs
        return self._update_metrics(loss, labels, logits, sample_weight)

    def test_step(self, data):
        images, labels, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
        logits = self(images, training=False)
        return self._update_metrics(self.compute_loss(labels, logits, sample_weight), labels, logits, sample_weight)


def _check_backbone(backbone, variant_names: bool) -> None:
    if not (isinstance(backbone, ConvNeXtBackbone) or (variant_names and isinstance(backbone, str))):
        raise ValueError(
            f"backbone must be a ConvNeXtBackbone{' or a variant name' if variant_names else ''} ('convnext_tiny', ...); "
            f"got {type(backbone).__name__} {getattr(backbone, 'name', backbone)!r}."
        )


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
    num_classes = arguments.integer("num_classes", num_classes, lo=1)
    arguments.choice("neck", neck, sorted(NECKS))
    aux_head = arguments.boolean("aux_head", aux_head)
    if channels is not None:
        channels = arguments.integer("channels", channels, lo=1)
    aux_channels = arguments.integer("aux_channels", aux_channels, lo=1)
    dropout_rate = arguments.number("dropout_rate", dropout_rate, 0.0, 1.0)
    _check_backbone(backbone, variant_names=True)
    cfg = ConvNeXtConfig.from_name(backbone) if isinstance(backbone, str) else backbone.convnext_config
    weights = resolve_weights(  # before anything is built
        weights, f"upernet_{cfg.variant}", 512, lambda ckpt: build_segmentation_model(cfg.variant, ckpt.classes)
    )
    if isinstance(backbone, str):
        backbone = ConvNeXtBackbone(cfg.variant)
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
        name=f"{cfg.variant}_{neck}",
    )
    if weights:
        load_weights(model, weights)
    return model


def _pair(name: str, value, lo: int) -> tuple[int, int]:
    """(h, w) from an int or a pair of ints, each at least `lo`."""
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an integer or a pair (h, w); got {value!r}.")
    return tuple(arguments.integer(name, v, lo=lo) for v in pair)


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
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be (H, W, C) or (N, H, W, C); got shape {images.shape}.")
    single = images.ndim == 3
    if single:
        images = images[None]
    ch, cw = _pair("crop_size", crop_size, 1)
    sh, sw = _pair("stride", stride, 1)
    if sh > ch or sw > cw:  # crops would leave gaps between them
        raise ValueError(f"stride {(sh, sw)} must not exceed crop_size {(ch, cw)}: pixels between crops would get no logits.")
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
