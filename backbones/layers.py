"""Custom layers of ConvNeXt: LayerNorm, GRN, layer scale, stochastic depth and exact GELU.

Every layer creates its variables with `add_weight` (float32 under mixed precision) and has a
`get_config`, so models save and reload in every Keras format without `custom_objects`.
"""
from __future__ import annotations

import math

import tensorflow as tf
import tf_keras

_PACKAGE = "convnext_tf"
_SQRT_HALF = 1.0 / math.sqrt(2.0)


def gelu(x: tf.Tensor) -> tf.Tensor:
    """Exact GELU, `0.5 * x * (1 + erf(x / sqrt(2)))`.

    Written with `erf` on purpose: `tf.nn.gelu(approximate=False)` lowers to `Erfc`, which tf2onnx
    cannot export.
    """
    return 0.5 * x * (1.0 + tf.math.erf(x * tf.cast(_SQRT_HALF, x.dtype)))


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class PointwiseDense(tf_keras.layers.Dense):
    """Dense over the channels of an (N, H, W, C) map as one 2-D matmul, optionally with exact GELU.

    Keras' Dense runs `tensordot` on rank-4 inputs, whose reshape between MatMul and BiasAdd
    keeps oneDNN from fusing bias and GELU into the matmul; here they fuse.
    """

    def __init__(self, units: int, use_gelu: bool = False, **kwargs):
        super().__init__(units, **kwargs)
        self.use_gelu = use_gelu

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(inputs)
        y = super().call(tf.reshape(inputs, [-1, inputs.shape[-1]]))
        if self.use_gelu:
            y = gelu(y)
        return tf.reshape(y, tf.concat([shape[:-1], [self.units]], axis=0))

    def get_config(self) -> dict:
        return {**super().get_config(), "use_gelu": self.use_gelu}

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.units])


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class LayerNorm(tf_keras.layers.Layer):
    """LayerNorm over the last axis, computed in float32 whatever the dtype policy.

    Matches `torch.nn.LayerNorm` (biased variance). The output has the layer's compute dtype.
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.gamma = self.add_weight(
            name="gamma", shape=(dim,), initializer="ones", experimental_autocast=False
        )
        self.beta = self.add_weight(
            name="beta", shape=(dim,), initializer="zeros", experimental_autocast=False
        )
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.cast(inputs, tf.float32)
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        y = (x - mean) * tf.math.rsqrt(var + self.epsilon)
        return tf.cast(y * self.gamma + self.beta, self.compute_dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class GRN(tf_keras.layers.Layer):
    """Global Response Normalization of ConvNeXt V2, computed in float32.

    `gamma * (x * N(x)) + beta + x` with `N(x) = G(x) / (mean_c G(x) + 1e-6)` and `G(x)` the L2
    norm over H x W. The sum of squares over a large map overflows float16, hence float32.
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.gamma = self.add_weight(
            name="gamma", shape=(dim,), initializer="zeros", experimental_autocast=False
        )
        self.beta = self.add_weight(
            name="beta", shape=(dim,), initializer="zeros", experimental_autocast=False
        )
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.cast(inputs, tf.float32)
        g = tf.sqrt(tf.reduce_sum(tf.square(x), axis=[1, 2], keepdims=True))
        n = g / (tf.reduce_mean(g, axis=-1, keepdims=True) + self.epsilon)
        return tf.cast(x * (self.gamma * n + 1.0) + self.beta, self.compute_dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class LayerScale(tf_keras.layers.Layer):
    """Per-channel learnable scale `gamma * x` (ConvNeXt V1), gamma starting at `init_value`."""

    def __init__(self, init_value: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init_value = init_value

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma",
            shape=(int(input_shape[-1]),),
            initializer=tf_keras.initializers.Constant(self.init_value),
        )
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs * self.gamma

    def get_config(self) -> dict:
        return {**super().get_config(), "init_value": self.init_value}


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class StochasticDepth(tf_keras.layers.Layer):
    """Residual add with per-sample drop path: `shortcut + drop_path(branch)`.

    In training, each sample's branch is dropped with probability `rate` and the kept ones are
    scaled by 1 / (1 - rate), as timm's `DropPath`. At inference it is a plain add.
    """

    def __init__(self, rate: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)

    def call(self, inputs, training=None):
        shortcut, branch = inputs
        if self.rate > 0.0 and training:
            keep = 1.0 - self.rate
            shape = [tf.shape(branch)[0]] + [1] * (branch.shape.rank - 1)
            mask = tf.floor(keep + tf.random.uniform(shape, dtype=branch.dtype))
            branch = branch * mask / keep
        return shortcut + branch

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate}
