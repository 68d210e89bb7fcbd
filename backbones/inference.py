"""Inference with the weights fixed when traced: cast once, packed once by oneDNN.

A Keras model reads its variables on every call. Under `mixed_bfloat16` / `mixed_float16` each
read is also a cast to the compute dtype (for ConvNeXt-T, 28M parameters per forward pass), and
oneDNN, which sees the kernels as run-time inputs, reorders them on every call into the layout
its kernels want, or falls back to slower ones: bfloat16 matmuls fused with bias and GELU run on a
generic GEMM instead of AMX. `inference_function` traces the model with its variables replaced by
tensors in the dtype each layer reads, so the cast happens once: bfloat16 and float16 ones as
graph constants, which oneDNN packs once and keeps; float32 ones as tensors the function
captures, because float32 kernels run as fast without, and TensorFlow copies every graph
constant several times when it instantiates and optimises the function (ConvNeXt-T's peak RSS
at batch 1: 2553 MiB with float32 constants, 1250 captured). Layer scales are folded into the
matmuls before them, LayerNorms run as oneDNN's fused layer norm, one op each
(`layers.fused_norms`), and float32 3x3 convolutions (the necks') run as Winograd F(2x2, 3x3)
with their kernels transformed once (`winograd`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import tensorflow as tf
import tf_keras

from . import winograd
from .layers import LayerScale, PointwiseDense, fused_norms


def layer_weights(model: tf_keras.layers.Layer) -> list[tuple[tf_keras.layers.Layer, str, tf.Variable]]:
    """(layer, attribute, variable) for every floating-point variable a layer of `model` holds."""
    return [
        (layer, attribute, value)
        for layer in [model, *model.submodules]
        if isinstance(layer, tf_keras.layers.Layer)
        for attribute, value in vars(layer).items()
        if isinstance(value, tf.Variable) and value.dtype.is_floating
    ]


def _read_as(layer: tf_keras.layers.Layer, variable: tf.Variable) -> tf.DType:
    """The dtype the layer's call reads the variable in (Keras' AutoCastVariable: the compute dtype)."""
    return tf.as_dtype(layer.dtype_policy.compute_dtype) if hasattr(variable, "true_dtype") else variable.dtype


def _layer_scale_folds(model: tf_keras.layers.Layer) -> dict[PointwiseDense, LayerScale]:
    """Each linear PointwiseDense whose output only a LayerScale reads (a V1 block's pwconv2 and
    layer_scale), with that LayerScale."""
    folds = {}
    for scale in model.submodules:
        if not isinstance(scale, LayerScale) or len(scale.inbound_nodes) != 1:
            continue
        dense = scale.inbound_nodes[0].inbound_layers
        if (isinstance(dense, PointwiseDense) and not dense.use_gelu
                and dense.activation is tf_keras.activations.linear
                and [node.outbound_layer for node in dense.outbound_nodes] == [scale]):
            folds[dense] = scale
    return folds


def _winograd_convs(model: tf_keras.layers.Layer) -> list[tf_keras.layers.Conv2D]:
    """The convolutions of `model` that Winograd computes (`winograd.applies`)."""
    return [
        layer for layer in model.submodules
        if type(layer) in (tf_keras.layers.Conv2D, winograd.WinogradConv2D) and layer.built and winograd.applies(layer)
    ]


@contextlib.contextmanager
def fixed_weights(model: tf_keras.layers.Layer) -> Iterator[None]:
    """While tracing inside: the layers' variables are fixed tensors in the dtype their call reads
    (float32 ones captured, others graph constants; see the module), each layer scale is folded
    into the matmul before it (`gamma * (x W + b)` is `x (W gamma) + b gamma`: one elementwise
    pass less per V1 block, and one rounding less in bfloat16), and float32 3x3 convolutions hold
    Winograd kernels and compute with `winograd.conv3x3`.

    The values are read when the context is entered; attributes are swapped without Keras'
    attribute tracking, so the model's weights, saving and checkpoints are untouched.
    """
    swapped = layer_weights(model)
    folds = _layer_scale_folds(model)
    convs = _winograd_convs(model)
    with tf.init_scope():  # read the values eagerly, even while a function is traced
        values = {(layer, attribute): variable.value() for layer, attribute, variable in swapped}
        for dense, scale in folds.items():
            gamma = values.pop((scale, "gamma"))
            for attribute in ("kernel", "bias") if dense.use_bias else ("kernel",):
                values[dense, attribute] = values[dense, attribute] * gamma
        for conv in convs:
            values[conv, "kernel"] = winograd.transform_kernel(values[conv, "kernel"])
        cast = {(layer, attribute): tf.cast(values[layer, attribute], _read_as(layer, variable))
                for layer, attribute, variable in swapped if (layer, attribute) in values}
    # float32 tensors are captured as they are; the others become constants in the graph
    replacements = {key: value if value.dtype == tf.float32 else tf.constant(value) for key, value in cast.items()}
    replacements.update({(scale, "gamma"): None for scale in folds.values()})
    replacements.update({(conv, "convolution_op"): winograd.conv3x3 for conv in convs})
    try:
        for (layer, attribute), value in replacements.items():
            object.__setattr__(layer, attribute, value)
        yield
    finally:
        for layer, attribute, variable in swapped:
            object.__setattr__(layer, attribute, variable)
        for conv in convs:
            vars(conv).pop("convolution_op", None)  # the class's method again


def inference_function(model: tf_keras.Model) -> Callable[[Any], Any]:
    """`model(x, training=False)` as a `tf.function` with the weights fixed when traced, layer scales
    folded, fused LayerNorms and Winograd 3x3 convolutions in float32 (see the module).

    The weights are read when a new input signature is traced: build the function after the
    weights are final (loaded or trained), and build a new one after changing them. The model
    itself is untouched (its variables, training, saving).
    """

    @tf.function(reduce_retracing=True)
    def run(inputs):
        with fixed_weights(model), fused_norms():
            return model(inputs, training=False)

    return run
