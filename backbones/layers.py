"""Custom layers of ConvNeXt: LayerNorm, GRN, layer scale, stochastic depth and exact GELU.

Every layer creates its variables with `add_weight` (float32 under mixed precision) and has a
`get_config`, so models save and reload in every Keras format without `custom_objects`.
"""
from __future__ import annotations

import math

import tensorflow as tf
import tf_keras

from . import arguments
from .config import MIN_INPUT_SIZE

PACKAGE = "convnext_tf"  # Keras registers our classes as 'convnext_tf>ClassName'
_SQRT_HALF = 1.0 / math.sqrt(2.0)


def serializable(cls):
    """Register a layer or model class with Keras, so saved models reload without custom_objects.

    Models are registered under their bare class name too: the legacy .h5 format stores a
    model's `__class__.__name__`, not its registered name.
    """
    cls = tf_keras.saving.register_keras_serializable(package=PACKAGE)(cls)
    if issubclass(cls, tf_keras.Model):
        tf_keras.utils.get_custom_objects().setdefault(cls.__name__, cls)
    return cls


def gelu(x: tf.Tensor) -> tf.Tensor:
    """Exact GELU, `0.5 * x * (1 + erf(x / sqrt(2)))`.

    Written with `erf` on purpose: `tf.nn.gelu(approximate=False)` lowers to `Erfc`, which tf2onnx
    cannot export.
    """
    return 0.5 * x * (1.0 + tf.math.erf(x * tf.cast(_SQRT_HALF, x.dtype)))


@serializable
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


@serializable
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


@serializable
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


@serializable
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


@serializable
class StochasticDepth(tf_keras.layers.Layer):
    """Residual add with per-sample drop path: `shortcut + drop_path(branch)`.

    In training, each sample's branch is dropped with probability `rate` and the kept ones are
    scaled by 1 / (1 - rate), as timm's `DropPath`. At inference it is a plain add.
    """

    def __init__(self, rate: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.rate = arguments.number("drop_path_rate", rate, 0.0, 1.0)

    def call(self, inputs, training=None):
        shortcut, branch = inputs
        if self.rate > 0.0 and training:
            keep = 1.0 - self.rate
            shape = [tf.shape(branch)[0]] + [1] * (branch.shape.rank - 1)
            mask = tf.floor(keep + tf.random.uniform(shape, dtype=branch.dtype))
            # rate 1 drops every branch (the mask is 0); as timm, no division by a keep of 0
            branch = branch * mask / keep if keep > 0.0 else branch * mask
        return shortcut + branch

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate}


def check_input_shape(shape, channels: int | None = None) -> None:
    """Raise ValueError for a static H or W under 32 pixels or an unexpected channel count."""
    shape = tf.TensorShape(shape)
    if shape.rank != 4:
        raise ValueError(f"ConvNeXt takes images (batch, height, width, channels); got shape {shape}.")
    for axis, what in ((1, "height"), (2, "width")):
        if shape[axis] is not None and shape[axis] < MIN_INPUT_SIZE:
            raise ValueError(
                f"Input {what} is {shape[axis]}, but ConvNeXt needs at least {MIN_INPUT_SIZE} pixels "
                f"(its total stride); got input shape {shape}."
            )
    if shape[-1] is not None and shape[-1] < 1:
        raise ValueError(f"Input has {shape[-1]} channels; got input shape {shape}.")
    if channels is not None and shape[-1] is not None and shape[-1] != channels:
        raise ValueError(f"Input has {shape[-1]} channels, but the weights expect {channels}; got shape {shape}.")



@serializable
class InputCheck(tf_keras.layers.Layer):
    """Passes images through, refusing at run time any under `MIN_INPUT_SIZE` pixels high or wide.

    Sizes known when the model is built are checked then (`check_input_shape`); this graph
    assertion covers dynamic ones, with a message instead of an error deep inside a convolution.
    """

    def call(self, images: tf.Tensor) -> tf.Tensor:
        check_input_shape(images.shape)
        size = tf.shape(images)[1:3]
        check = tf.debugging.assert_greater_equal(
            tf.reduce_min(size), MIN_INPUT_SIZE,
            message=f"ConvNeXt needs images of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} pixels "
            "(its total stride); the smaller of the image's height and width is",
        )
        with tf.control_dependencies([check]):
            return tf.identity(images)
