"""Fine-tune a ConvNeXt segmentation model with Keras `fit`: the path of `train-segmentation`, the
demo and the notebooks (Model Garden's trainer is the other path, see `train`).

The recipe follows the official UperNet fine-tuning: AdamW with weight decay 0.05 and stage-wise
learning-rate decay over the backbone, a linear warm-up, then cosine decay; the ADE20K
augmentation (`datasets.pipeline`). Validation mIoU is measured after every epoch, and the best
model is written as `OUT/model.keras` (atomically) with its curves in `OUT/curves.png`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tf_keras

from convnext_tf.backbones import ConvNeXtBackbone, ConvNeXtConfig, arguments
from convnext_tf.backbones.files import atomic_path
from convnext_tf.necks import NECKS

from .layer_decay import LayerDecayAdamW
from .segmentation import MeanIoU, PixelAccuracy, SegmentationModel, build_segmentation_model
from .visualize import plot_curves, write_rgb


@dataclass
class FinetuneConfig:
    """What `train_segmentation` builds and how it trains.

    model: a variant ('convnext_tiny', 'convnextv2_atto', ...). weights: the backbone's
    checkpoint (a published name such as 'imagenet_1k', a file, or None for random weights).
    neck: 'upernet' or 'fpn'; channels: its width (default 512 UperNet, 256 FPN); aux_head: the
    auxiliary FCN head of the official recipe (aux_channels wide). crop: training crop side.
    steps_per_epoch: default one pass over the training images. layer_decay: per stage ('stage_wise',
    the official segmentation scheme). warmup_steps: linear warm-up, then cosine decay to 0.
    """

    model: str = "convnext_tiny"
    weights: str | None = None
    neck: str = "upernet"
    channels: int | None = None
    aux_head: bool = True
    aux_channels: int = 256
    crop: int = 512
    batch_size: int = 8
    epochs: int = 10
    steps_per_epoch: int | None = None
    learning_rate: float = 1e-4
    weight_decay: float = 0.05
    layer_decay: float = 0.9
    warmup_steps: int = 100
    drop_path_rate: float = 0.1
    seed: int = 0

    def __post_init__(self):
        ConvNeXtConfig.from_name(self.model)  # an unknown variant fails here, naming the known ones
        arguments.choice("neck", self.neck, sorted(NECKS))
        for name, lo in (("crop", 32), ("batch_size", 1), ("epochs", 1), ("warmup_steps", 0), ("aux_channels", 1)):
            setattr(self, name, arguments.integer(name, getattr(self, name), lo=lo))
        if self.steps_per_epoch is not None:
            self.steps_per_epoch = arguments.integer("steps_per_epoch", self.steps_per_epoch, lo=1)
        arguments.number("learning_rate", self.learning_rate, 0.0, 1.0)
        arguments.number("layer_decay", self.layer_decay, 0.0, 1.0)


def build_model(config: FinetuneConfig, num_classes: int) -> SegmentationModel:
    """The segmentation model of `config` (backbone weights loaded) for `num_classes` classes."""
    backbone = ConvNeXtBackbone(config.model, weights=config.weights, drop_path_rate=config.drop_path_rate)
    return build_segmentation_model(backbone, num_classes, neck=config.neck, aux_head=config.aux_head,
                                    channels=config.channels, aux_channels=config.aux_channels)


def optimizer(config: FinetuneConfig, total_steps: int) -> LayerDecayAdamW:
    """AdamW with stage-wise layer decay, linear warm-up to `learning_rate`, then cosine decay."""
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    schedule = tf_keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else config.learning_rate, max(total_steps - warmup, 1),
        warmup_target=config.learning_rate if warmup else None, warmup_steps=warmup,
    )
    return LayerDecayAdamW(schedule, weight_decay=config.weight_decay, layer_decay=config.layer_decay,
                           scheme="stage_wise", num_layers=6)


class BestModel(tf_keras.callbacks.Callback):
    """Write the model as `path` (atomically, without the optimizer's state) whenever validation
    mIoU improves; draw the curves so far as `curves` after every epoch."""

    def __init__(self, path: str, curves: str | None = None):
        super().__init__()
        self.path, self.curves = path, curves
        self.best = -math.inf
        self.history: dict[str, list[float]] = {}
        self._copy = None  # an uncompiled twin of the model, so the file holds no optimizer state

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        miou = logs.get("val_mean_iou", -math.inf)
        if miou > self.best:
            self.best = float(miou)
            if self._copy is None:
                self._copy = SegmentationModel.from_config(self.model.get_config())
            for part in ("backbone", "neck", "decode_head", "aux_head"):  # not the metrics' state
                if getattr(self.model, part) is not None:
                    getattr(self._copy, part).set_weights(getattr(self.model, part).get_weights())
            with atomic_path(self.path, ".keras") as tmp:
                self._copy.save(tmp)
            print(f"\nepoch {epoch + 1}: validation mIoU {miou:.4f}, the best so far; wrote {self.path}")
        if self.curves:
            write_rgb(self.curves, plot_curves(self.history))


def train_segmentation(
    train: tf.data.Dataset,
    val: tf.data.Dataset,
    num_classes: int,
    config: FinetuneConfig,
    out_dir: str | None = None,
    num_train_images: int | None = None,
    verbose: int = 1,
) -> tuple[SegmentationModel, dict]:
    """Fine-tune a model of `config` on batches from `datasets.pipeline`; returns (model, history).

    `train` repeats (training batches), `val` is evaluated after every epoch (mIoU, pixel
    accuracy). With `out_dir`, the best epoch's model is written as `out_dir/model.keras` and the
    curves as `out_dir/curves.png`; the returned model is the last epoch's.
    `num_train_images` sets the default `steps_per_epoch` (one pass). Python's, NumPy's and
    TensorFlow's random generators are seeded with `config.seed`, for repeatable runs.
    """
    num_classes = arguments.integer("num_classes", num_classes, lo=2)
    steps = config.steps_per_epoch or max(1, -(-(num_train_images or config.batch_size) // config.batch_size))
    tf_keras.utils.set_random_seed(config.seed)
    model = build_model(config, num_classes)
    model.compile(optimizer(config, steps * config.epochs),
                  metrics=[MeanIoU(num_classes), PixelAccuracy()])
    callbacks = []
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        callbacks.append(BestModel(os.path.join(out_dir, "model.keras"), os.path.join(out_dir, "curves.png")))
    history = model.fit(train, validation_data=val, epochs=config.epochs, steps_per_epoch=steps,
                        callbacks=callbacks, verbose=verbose)
    return model, {k: list(np.asarray(v, float)) for k, v in history.history.items()}
