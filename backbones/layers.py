"""Custom layers of ConvNeXt: LayerNorm, GRN, layer scale, stochastic depth and exact GELU.

Every layer creates its variables with `add_weight` (float32 under mixed precision) and has a
`get_config`, so models save and reload in every Keras format without `custom_objects`.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from typing import Iterator

import tensorflow as tf
import tf_keras
from tensorflow.core.framework.attr_value_pb2 import AttrValue
from tensorflow.python.framework import kernels

from . import arguments
from .config import MIN_INPUT_SIZE

PACKAGE = "convnext_tf"  # Keras registers our classes as 'convnext_tf>ClassName'
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


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


_jit_gelu = tf.function(gelu, jit_compile=True)


@tf.function(jit_compile=True)
def _gelu_grad(x: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    # Phi(x) as in `gelu`, not shared: `gelu` keeps exactly the op pattern grappler fuses into MatMul
    cdf = 0.5 * (1.0 + tf.math.erf(x * tf.cast(_SQRT_HALF, x.dtype)))
    return dy * (cdf + x * tf.exp(-0.5 * tf.square(x)) * tf.cast(_INV_SQRT_2PI, x.dtype))


@tf.custom_gradient
def gelu_for_training(x: tf.Tensor):
    """`gelu` with its derivative `Phi(x) + x phi(x)` written out and compiled by XLA into one
    loop: the backward pass keeps x alone instead of the three full-size intermediates autodiff
    keeps, and runs one pass instead of about ten elementwise ops. Not used at inference, where
    oneDNN fuses `gelu` into the matmul.
    """
    return _jit_gelu(x), lambda dy: _gelu_grad(x, dy)


def _normalize(x: tf.Tensor, epsilon: float) -> tuple[tf.Tensor, tf.Tensor]:
    """(x - mean) / sqrt(var + epsilon) over the last axis (biased variance), and 1 / sqrt(var + epsilon)."""
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    inv = tf.math.rsqrt(var + epsilon)
    return (x - mean) * inv, inv


@tf.function(jit_compile=True)
def _layer_norm_forward(x, gamma, beta, epsilon):
    xhat, inv = _normalize(tf.cast(x, tf.float32), epsilon)
    return tf.cast(xhat * gamma + beta, x.dtype), xhat, inv


@tf.function(jit_compile=True)
def _layer_norm_grad(dy, xhat, inv, gamma, x_dtype):
    dy = tf.cast(dy, tf.float32)
    axes = tf.range(tf.rank(dy) - 1)
    g = dy * gamma
    dx = inv * (g - tf.reduce_mean(g, axis=-1, keepdims=True) - xhat * tf.reduce_mean(g * xhat, axis=-1, keepdims=True))
    return tf.cast(dx, x_dtype), tf.reduce_sum(dy * xhat, axes), tf.reduce_sum(dy, axes)


@tf.custom_gradient
def layer_norm_for_training(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float):
    """LayerNorm of `x` (float32 statistics, output in x's dtype) with its closed-form gradient,
    each direction one XLA-compiled loop; the backward pass keeps only the normalised x and
    1/std, where autodiff keeps more and runs about twice the elementwise ops."""
    y, xhat, inv = _layer_norm_forward(x, gamma, beta, epsilon)

    def grad(dy):
        dx, dgamma, dbeta = _layer_norm_grad(dy, xhat, inv, gamma, x.dtype)
        return dx, dgamma, dbeta, None

    return y, grad


def _onednn_layer_norm_dtypes() -> frozenset:
    """Dtypes of oneDNN's layer norm CPU kernel; empty where TensorFlow is built without it."""
    try:
        registered = kernels.get_registered_kernels_for_op("_MklLayerNorm").kernel
    except (tf.errors.NotFoundError, RuntimeError):
        return frozenset()
    return frozenset(
        tf.as_dtype(t) for k in registered if k.device_type == "CPU"
        for c in k.constraint if c.name == "T" for t in c.allowed_values.list.type
    )


@functools.cache
def gpu_present() -> bool:
    """Read once, at the first trace (not at import: that would fix the devices before users configure them)."""
    return bool(tf.config.list_logical_devices("GPU"))


_ONEDNN_LAYER_NORM = _onednn_layer_norm_dtypes()
_FUSED_NORMS = contextvars.ContextVar("fused_norms", default=False)


def _mkl_layer_norm(flat: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float) -> tf.Tensor:
    graph = tf.compat.v1.get_default_graph()
    return graph._create_op_internal(
        "_MklLayerNorm", [flat, tf.cast(gamma, flat.dtype), tf.cast(beta, flat.dtype)], dtypes=[flat.dtype],
        name="fused_layer_norm",
        attrs={"T": AttrValue(type=flat.dtype.as_datatype_enum), "epsilon": AttrValue(f=epsilon)},
    ).outputs[0]


@functools.cache
def _fused_runs(dtype: tf.DType) -> bool:
    """Whether oneDNN's layer norm runs in `dtype` on this CPU: a registered kernel is not enough
    (float16 needs AVX512-FP16), so it is tried once, eagerly, on a tiny input."""
    if dtype not in _ONEDNN_LAYER_NORM:
        return False
    probe = tf.function(lambda x: _mkl_layer_norm(x, tf.ones([8]), tf.zeros([8]), 1e-6))
    with tf.init_scope():
        try:
            probe(tf.zeros([1, 8], dtype)).numpy()
        except tf.errors.OpError:
            return False
    return True


def _fused_layer_norm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float) -> tf.Tensor | None:
    """oneDNN's layer norm over the last axis as one op (float32 statistics, output in x's dtype),
    or None where it cannot run: eager, a GPU present, or a dtype this CPU or build lacks.

    `_MklLayerNorm` is the op TensorFlow's own graph rewrite gives Keras' LayerNormalization.
    No graph of ours matches that rewrite's patterns, so the op is created here; it takes a
    matrix, hence the reshape to (pixels, channels).
    """
    if tf.executing_eagerly() or gpu_present() or not _fused_runs(x.dtype):
        return None
    return tf.reshape(_mkl_layer_norm(tf.reshape(x, [-1, x.shape[-1]]), gamma, beta, epsilon), tf.shape(x))


@contextlib.contextmanager
def fused_norms() -> Iterator[None]:
    """Inside: LayerNorms at inference run as oneDNN's layer norm, one op each, which reads the
    activations in their own dtype (bfloat16, float16, float32) and keeps float32 statistics in
    between. Otherwise they are casts and separate mean, variance and scale ops: about a tenth of
    ConvNeXt-T's batch-1 time in float32, more in bfloat16. `inference_function` traces inside
    it; saved and exported models do not (the op is TensorFlow's private, CPU only)."""
    token = _FUSED_NORMS.set(True)
    try:
        yield
    finally:
        _FUSED_NORMS.reset(token)


@serializable
class PointwiseDense(tf_keras.layers.Dense):
    """Dense over the channels of an (N, H, W, C) map as one 2-D matmul, optionally with exact GELU.

    Keras' Dense runs `tensordot` on rank-4 inputs, whose reshape between MatMul and BiasAdd
    keeps oneDNN from fusing bias and GELU into the matmul; here they fuse.
    """

    def __init__(self, units: int, use_gelu: bool = False, **kwargs):
        super().__init__(units, **kwargs)
        self.use_gelu = use_gelu

    def call(self, inputs: tf.Tensor, training=None) -> tf.Tensor:
        shape = tf.shape(inputs)
        y = super().call(tf.reshape(inputs, [-1, inputs.shape[-1]]))
        if self.use_gelu:
            y = gelu_for_training(y) if training else gelu(y)
        return tf.reshape(y, tf.concat([shape[:-1], [self.units]], axis=0))

    def get_config(self) -> dict:
        return {**super().get_config(), "use_gelu": self.use_gelu}

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.units])


def _depthwise_kernel_grad(x: tf.Tensor, dy: tf.Tensor, kh: int, kw: int) -> tf.Tensor:
    """The kernel gradient of a stride-1 'SAME' depthwise convolution (multiplier 1).

    dK[i, j, c] = sum over n, h, w of x_padded[n, h + i, w + j, c] * dy[n, h, w, c]: a 'VALID'
    depthwise convolution of the padded maps with dy's maps as its filters, one channel per
    (image, channel) pair, summed over the images.
    """
    shape = tf.shape(x)
    n, h, w, c = shape[0], shape[1], shape[2], shape[3]
    maps = tf.pad(tf.transpose(x, [1, 2, 0, 3]), [[(kh - 1) // 2, kh // 2], [(kw - 1) // 2, kw // 2], [0, 0], [0, 0]])
    maps = tf.reshape(maps, [1, h + kh - 1, w + kw - 1, n * c])
    filters = tf.reshape(tf.transpose(dy, [1, 2, 0, 3]), [h, w, n * c, 1])
    per_image = tf.nn.depthwise_conv2d(maps, filters, [1, 1, 1, 1], "VALID")
    return tf.reduce_sum(tf.reshape(per_image, [kh, kw, n, c]), axis=2)[..., tf.newaxis]


@tf.custom_gradient
def depthwise_conv_for_training(x: tf.Tensor, kernel: tf.Tensor):
    """`tf.nn.depthwise_conv2d(x, kernel, stride 1, 'SAME')` for a (kh, kw, C, 1) kernel, with the
    kernel gradient by `_depthwise_kernel_grad`. On CPU, TensorFlow's backprop-filter kernel takes
    about 10x the forward convolution (a tenth of a ConvNeXt-T training step); this takes 0.2-0.9x
    as long as that kernel, least on small maps. The input gradient is TensorFlow's."""
    strides = [1, 1, 1, 1]

    def grad(dy):
        dx = tf.compat.v1.nn.depthwise_conv2d_native_backprop_input(tf.shape(x), kernel, dy, strides, "SAME")
        return dx, _depthwise_kernel_grad(x, dy, kernel.shape[0], kernel.shape[1])

    return tf.nn.depthwise_conv2d(x, kernel, strides, "SAME"), grad


@serializable
class DepthwiseConv(tf_keras.layers.DepthwiseConv2D):
    """Keras' DepthwiseConv2D, trained in float32 and with a faster kernel gradient.

    Under a mixed policy, training runs it in float32: TensorFlow's bfloat16 depthwise
    backprop-filter kernel is about 2.5x slower than its float32 one. The kernel is read in the
    compute dtype and widened, so the values are those of the mixed layer. On CPU, a stride-1
    'same' convolution takes its kernel gradient from `depthwise_conv_for_training`. Inference is
    Keras' own.
    """

    def call(self, inputs: tf.Tensor, training=None) -> tf.Tensor:
        fast_grad = (self.strides == (1, 1) and self.dilation_rate == (1, 1) and self.padding == "same"
                     and self.depth_multiplier == 1 and self.data_format == "channels_last" and not gpu_present())
        if not training or (self.compute_dtype == "float32" and not fast_grad):
            return super().call(inputs)
        x, kernel = tf.cast(inputs, tf.float32), tf.cast(self.depthwise_kernel, tf.float32)
        if fast_grad:
            y = depthwise_conv_for_training(x, kernel)
        else:
            y = tf.nn.depthwise_conv2d(x, kernel, (1, *self.strides, 1), self.padding.upper(), dilations=self.dilation_rate)
        if self.use_bias:
            y = tf.nn.bias_add(y, tf.cast(self.bias, tf.float32))
        return tf.cast(self.activation(y), self.compute_dtype)


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

    def call(self, inputs: tf.Tensor, training=None) -> tf.Tensor:
        gamma, beta = tf.convert_to_tensor(self.gamma), tf.convert_to_tensor(self.beta)
        y = None
        if training:  # the same values, a cheaper backward pass
            y = layer_norm_for_training(inputs, gamma, beta, self.epsilon)
        elif _FUSED_NORMS.get():
            y = _fused_layer_norm(inputs, gamma, beta, self.epsilon)
        if y is None:
            y = _normalize(tf.cast(inputs, tf.float32), self.epsilon)[0] * gamma + beta
        return tf.cast(y, self.compute_dtype)

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
        squares = tf.reduce_sum(tf.square(x), axis=[1, 2], keepdims=True)
        # an all-zero channel (GELU gives exact zeros below about -5.5, -4 in bfloat16) has norm 0;
        # its gradient is 0 there, as torch's vector_norm gives, not sqrt's NaN
        nonzero = squares > 0.0
        g = tf.where(nonzero, tf.sqrt(tf.where(nonzero, squares, 1.0)), 0.0)
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
        if self.gamma is None:  # folded into the layer before it (`inference.fixed_weights`)
            return inputs
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
