"""ConvNeXt V1/V2 as a functional tf_keras model.

Layer names follow the PyTorch module paths, so checkpoint mapping is a table:
`stem.conv`, `stem.norm`, `stages.{i}.downsample.{norm,conv}`,
`stages.{i}.blocks.{j}.{dwconv,norm,pwconv1,grn,pwconv2,layer_scale}` (pwconv1 applies the GELU), `head.{pool,norm,fc}`.
The layer `stages.{i}.blocks.{j}` is the block's residual add (its output); the last one of each
stage is the stage output.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import numpy as np
import tensorflow as tf
import tf_keras

from . import arguments, catalogue
from .config import IMAGENET_MEAN, IMAGENET_STD, ConvNeXtConfig
from .download import cached_checkpoint
from .layers import GRN, DepthwiseConv, InputCheck, LayerNorm, LayerScale, PointwiseDense, StochasticDepth, check_input_shape
from .weights import load_weights


def _init(std: float = 0.02) -> tf_keras.initializers.Initializer:
    return tf_keras.initializers.TruncatedNormal(stddev=std)


def new_layer(cls: type, name: str, *args, **kwargs) -> tf_keras.layers.Layer:
    """The layer factory of a model being built: a new layer."""
    return cls(*args, name=name, **kwargs)


def block(
    x: tf.Tensor, dim: int, cfg: ConvNeXtConfig, drop_path: float, name: str,
    make: Callable = new_layer, recompute: bool = False,
) -> tf.Tensor:
    """One ConvNeXt block; V1 and V2 differ only by GRN versus layer scale.

    `make(cls, name, *args, **kwargs)` gives each layer (new ones, or a built model's); with
    `recompute` the residual branch is run under `tf.recompute_grad` (its activations are
    recomputed in the backward pass instead of kept). The drop path stays outside it, so its
    random mask is drawn once.
    """
    branch = [
        make(DepthwiseConv, f"{name}.dwconv", 7, padding="same", depthwise_initializer=_init()),
        make(LayerNorm, f"{name}.norm"),
        make(PointwiseDense, f"{name}.pwconv1", 4 * dim, use_gelu=True, kernel_initializer=_init()),
    ]
    if cfg.use_grn:
        branch.append(make(GRN, f"{name}.grn"))
    branch.append(make(PointwiseDense, f"{name}.pwconv2", dim, kernel_initializer=_init()))
    if cfg.layer_scale_init_value > 0:
        branch.append(make(LayerScale, f"{name}.layer_scale", cfg.layer_scale_init_value))

    def run(y: tf.Tensor) -> tf.Tensor:
        for layer in branch:
            y = layer(y)
        return y

    y = tf.recompute_grad(run)(x) if recompute else run(x)
    return make(StochasticDepth, name, drop_path)([x, y])


def stem(x: tf.Tensor, cfg: ConvNeXtConfig, make: Callable = new_layer) -> tf.Tensor:
    """Patchify stem: 4x4 stride-4 convolution (valid, floors odd sizes) and LayerNorm."""
    x = make(tf_keras.layers.Conv2D, "stem.conv", cfg.dims[0], 4, strides=4, kernel_initializer=_init())(x)
    return make(LayerNorm, "stem.norm")(x)


def stage(
    x: tf.Tensor, i: int, cfg: ConvNeXtConfig, drop_paths: list[float], make: Callable = new_layer,
    recompute: bool = False,
) -> tf.Tensor:
    """Stage i: a LayerNorm + 2x2 stride-2 downsample (i > 0), then `depths[i]` blocks."""
    if i > 0:
        x = make(LayerNorm, f"stages.{i}.downsample.norm")(x)
        x = make(
            tf_keras.layers.Conv2D, f"stages.{i}.downsample.conv", cfg.dims[i], 2, strides=2, kernel_initializer=_init()
        )(x)
    for j, rate in enumerate(drop_paths):
        x = block(x, cfg.dims[i], cfg, rate, f"stages.{i}.blocks.{j}", make, recompute)
    return x


def trunk(x: tf.Tensor, cfg: ConvNeXtConfig, make: Callable = new_layer, recompute: bool = False) -> list[tf.Tensor]:
    """Stem and the four stages; returns the stage outputs (strides 4, 8, 16, 32).

    With the default `make` it builds the layers; `make=lambda cls, name, *a, **k: model.get_layer(name)`
    runs a built model's layers again (how `ConvNeXtBackbone` recomputes its blocks).
    """
    rates = np.linspace(0.0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
    starts = np.cumsum((0,) + cfg.depths).tolist()
    x = stem(make(InputCheck, "input_check")(x), cfg, make)
    outputs = []
    for i, depth in enumerate(cfg.depths):
        x = stage(x, i, cfg, rates[starts[i] : starts[i] + depth], make, recompute)
        outputs.append(x)
    return outputs


def stage_output_names(cfg: ConvNeXtConfig) -> list[str]:
    """Names of the layers whose outputs are the four stage outputs."""
    return [f"stages.{i}.blocks.{d - 1}" for i, d in enumerate(cfg.depths)]


def model_inputs(input_shape, input_tensor) -> tuple[tf.Tensor, list]:
    """The image tensor the trunk starts from and the model's inputs (Keras applications' rules).

    A Keras `input_tensor` (for example the output of preprocessing layers) is used as it is and
    the model starts at its source inputs; a plain tensor is wrapped in an `Input`.
    """
    if input_tensor is None:
        x = tf_keras.Input(shape=input_shape)
    elif tf_keras.backend.is_keras_tensor(input_tensor):
        x = input_tensor
    else:
        x = tf_keras.Input(tensor=input_tensor, shape=input_shape)
    return x, tf_keras.utils.get_source_inputs(x)


def build_convnext(
    variant: str | ConvNeXtConfig,
    *,
    input_shape: tuple | None = (224, 224, 3),
    input_tensor: tf.Tensor | None = None,
    include_top: bool = True,
    classes: int = 1000,
    pooling: str | None = None,
    classifier_activation: str | None = None,
    drop_path_rate: float = 0.0,
    layer_scale_init_value: float | None = None,
    head_init_scale: float = 1.0,
    weights: str | None = None,
    skip_head: bool = False,
    name: str | None = None,
) -> tf_keras.Model:
    """Build the ConvNeXt `variant` as a tf_keras functional model.

    Args:
      variant: a name from `list_models()` ('convnext_tiny', 'convnextv2_atto', ...) or a
        `ConvNeXtConfig` of any depths and widths (its drop path, layer scale and head scale are
        overridden by the arguments below when they are given).
      input_shape: (H, W, C); H and W may be None. Ignored when `input_tensor` is given.
      input_tensor: optional Keras tensor (output of preprocessing layers, say) to build on.
      include_top: classification head (global average pool, LayerNorm, Dense).
      classes: number of classes of the head.
      pooling: without the head, None (the stride-32 map), 'avg' or 'max'.
      classifier_activation: activation of the head's output; None gives logits.
      drop_path_rate: stochastic depth rate of the last block (linear rule from 0).
      layer_scale_init_value: initial layer scale (V1 only; default 1e-6, 0 disables it).
      head_init_scale: factor on the head's initial weights.
      weights: None (random), a published checkpoint's name ('imagenet_1k', 'imagenet_22k', ...,
        see `catalogue`; the resolution follows the input height) or a checkpoint path
        (.pth/.pt/.bin, .safetensors, .h5).
      skip_head: when loading `weights`, leave the head as initialised (a 22k head, say).
      name: Keras name of the model (default: the variant's name).
    Inputs are images normalised with the ImageNet mean and std (see `preprocess_input`).
    """
    cfg = config_of(variant, drop_path_rate=drop_path_rate, layer_scale_init_value=layer_scale_init_value,
                    head_init_scale=head_init_scale)
    arguments.choice("pooling", pooling, (None, "avg", "max"))
    include_top = arguments.boolean("include_top", include_top)
    classes = arguments.integer("classes", classes, lo=1)
    skip_head = arguments.boolean("skip_head", skip_head)
    # a published name is found (and downloaded) before the model is built, so it fails fast
    weights = resolve_weights(weights, cfg.variant, input_tensor.shape[1] if input_tensor is not None else
                              (input_shape[0] if input_shape else None))
    x, inputs = model_inputs(input_shape, input_tensor)
    check_input_shape(x.shape)
    y = trunk(x, cfg)[-1]
    if include_top:
        # The head runs in float32: logits come out float32 under mixed precision.
        y = tf_keras.layers.GlobalAveragePooling2D(name="head.pool", dtype="float32")(y)
        y = LayerNorm(name="head.norm", dtype="float32")(y)
        y = tf_keras.layers.Dense(
            classes, kernel_initializer=_init(0.02 * head_init_scale), name="head.fc", dtype="float32"
        )(y)
        if classifier_activation is not None:
            y = tf_keras.layers.Activation(classifier_activation, name="head.act", dtype="float32")(y)
    elif pooling == "avg":
        y = tf_keras.layers.GlobalAveragePooling2D(name="pool")(y)
    elif pooling == "max":
        y = tf_keras.layers.GlobalMaxPooling2D(name="pool")(y)
    model = tf_keras.Model(inputs, y, name=name or cfg.variant)
    if weights is not None:
        load_weights(model, weights, skip_head=skip_head)
    return model


def variant_builder(variant: str) -> Callable[..., tf_keras.Model]:
    """The builder of one named variant, `convnext_tiny(**kwargs)`, with `build_convnext`'s arguments
    as its signature and docstring (so `help()` and notebooks show them)."""
    cfg = ConvNeXtConfig.from_name(variant)

    def builder(**kwargs) -> tf_keras.Model:
        return build_convnext(variant, **kwargs)

    signature = inspect.signature(build_convnext)
    builder.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    builder.__name__ = builder.__qualname__ = variant
    builder.__module__ = f"convnext_tf.backbones.convnext_{cfg.version}"
    args = build_convnext.__doc__.split("Args:", 1)[1].split("\n      variant:", 1)
    args = args[0] + "\n" + args[1].split("\n", 3)[3] if len(args) == 2 else args[0]
    builder.__doc__ = (
        f"ConvNeXt {cfg.version.upper()}-{cfg.model_id}: depths {cfg.depths}, widths {cfg.dims}.\n\n    Args:{args}"
    )
    return builder


def config_of(variant: str | ConvNeXtConfig, **overrides) -> ConvNeXtConfig:
    """The config of a variant name or a `ConvNeXtConfig`, with the overrides that are not None."""
    if isinstance(variant, ConvNeXtConfig):
        return dataclasses.replace(variant, **{k: v for k, v in overrides.items() if v is not None})
    return ConvNeXtConfig.from_name(variant, **overrides)


def classifier_reference(ckpt: catalogue.Checkpoint) -> tf_keras.Model:
    """A classifier with every part a published checkpoint has, to convert it into."""
    return build_convnext(ckpt.model, input_shape=(None, None, 3), include_top=ckpt.classes > 0,
                          classes=max(ckpt.classes, 1))


def resolve_weights(
    weights, model: str, resolution: int | None,
    reference: Callable[[catalogue.Checkpoint], tf_keras.Model] = classifier_reference,
) -> str | None:
    """None, a local checkpoint path as it is, or the cached Keras file of a published name.

    Called before a model is built, so that a name the variant lacks, or a download that fails,
    costs no time or memory. `model` is the catalogue's name of what is built ('convnext_tiny',
    'upernet_convnext_tiny'); `reference` builds the model a download is converted into.
    """
    weights = arguments.optional_str("weights", weights, "a published name ('imagenet_1k', ...) or a checkpoint path")
    if weights is None or not catalogue.is_name(weights):
        return weights
    return cached_checkpoint(catalogue.find(model, weights, resolution), reference)


def preprocess_input(images: tf.Tensor) -> tf.Tensor:
    """Map RGB images in [0, 255] to the normalised inputs the models take."""
    images = tf.cast(images, tf.float32)  # uint8 tensors too
    return (images / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
