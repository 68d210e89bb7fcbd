"""Inference with the weights as graph constants: cast once, and packed once by oneDNN.

A Keras model reads its variables on every call. Under `mixed_bfloat16` / `mixed_float16` each
read is also a cast to the compute dtype (for ConvNeXt-T, 28M parameters per forward pass), and
oneDNN, which sees the kernels as run-time inputs, reorders them on every call into the layout
its kernels want, or falls back to slower ones: bfloat16 matmuls fused with bias and GELU run on a
generic GEMM instead of AMX, and float32 3x3 convolutions with plain-layout weights run at about
half speed (UperNet's 2048 -> 512 bottleneck). `inference_function` traces the model with its
variables replaced by constants in the dtype each layer reads, so the cast happens once and
oneDNN packs each kernel once and keeps it. Under a mixed policy its LayerNorms run as one
XLA-compiled loop each (`layers.compiled_norms`), compiled once per input shape.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import tensorflow as tf
import tf_keras

from .layers import compiled_norms


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


@contextlib.contextmanager
def constant_weights(model: tf_keras.layers.Layer) -> Iterator[None]:
    """While tracing inside: the layers' variables are constants, in the dtype their call reads.

    The values are read when the context is entered; attributes are swapped without Keras'
    attribute tracking, so the model's weights, saving and checkpoints are untouched.
    """
    swapped = layer_weights(model)
    try:
        for layer, attribute, variable in swapped:
            with tf.init_scope():  # read the value eagerly, even while a function is traced
                value = tf.cast(variable.value(), _read_as(layer, variable)).numpy()
            object.__setattr__(layer, attribute, tf.constant(value))
        yield
    finally:
        for layer, attribute, variable in swapped:
            object.__setattr__(layer, attribute, variable)


def inference_function(model: tf_keras.Model) -> Callable[[Any], Any]:
    """`model(x, training=False)` as a `tf.function` with the weights as constants and, under a
    mixed policy, compiled LayerNorms (see the module).

    The weights are read when a new input signature is traced: build the function after the
    weights are final (loaded or trained), and build a new one after changing them. The model
    itself is untouched (its variables, training, saving).
    """

    @tf.function(reduce_retracing=True)
    def run(inputs):
        with constant_weights(model), compiled_norms():
            return model(inputs, training=False)

    return run
