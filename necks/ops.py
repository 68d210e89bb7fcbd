"""Building blocks of the necks: conv-BN-ReLU, resizing to a tensor's size, adaptive pooling."""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from convnext_tf.backbones.layers import serializable
from convnext_tf.backbones.winograd import conv_class


def conv_bn_relu(
    x: tf.Tensor,
    filters: int,
    kernel_size: int,
    name: str,
    kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> tf.Tensor:
    """mmseg's ConvModule: convolution without bias ('same' padding), BatchNorm, ReLU. 3x3
    convolutions train by Winograd where it pays (`winograd.WinogradConv2D`)."""
    x = conv_class(kernel_size)(
        filters, kernel_size, padding="same", use_bias=False, kernel_regularizer=kernel_regularizer,
        name=f"{name}.conv",
    )(x)
    # PyTorch's BatchNorm2d: eps 1e-5, momentum 0.1 (Keras counts momentum the other way)
    x = tf_keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"{name}.bn")(x)
    return tf_keras.layers.ReLU(name=f"{name}.relu")(x)


def resize(x: tf.Tensor, size, method: str = "bilinear") -> tf.Tensor:
    """Resize NHWC `x` to `size` (H, W); bilinear is PyTorch's `align_corners=False`.

    TensorFlow 2 samples at half-pixel centres and clamps at the border as PyTorch does, and
    applies no antialiasing unless asked, so results match `F.interpolate` in both directions.
    """
    return tf.cast(tf.image.resize(x, size, method=method), x.dtype)


def nearest_indices(size_in: tf.Tensor, size_out: tf.Tensor) -> tf.Tensor:
    """Source index of each output row of PyTorch's `F.interpolate(mode='nearest')`: floor(i * in / out).

    Exact integer arithmetic, so the resize is a gather that every runtime (Keras, TFLite, ONNX)
    computes alike; a resize op's nearest mode rounds ties differently from one runtime to another.
    """
    return (tf.range(size_out) * size_in) // size_out


def resize_nearest(x: tf.Tensor, size) -> tf.Tensor:
    """Nearest-neighbour resize of NHWC `x` to `size` (H, W), as mmdet's and mmseg's FPN (PyTorch's 'nearest')."""
    shape = tf.shape(x)
    x = tf.gather(x, nearest_indices(shape[1], size[0]), axis=1)
    return tf.gather(x, nearest_indices(shape[2], size[1]), axis=2)


@serializable
class ResizeLike(tf_keras.layers.Layer):
    """Resize the first input to the spatial size of the second (bilinear, or nearest as PyTorch)."""

    def __init__(self, method: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        if method not in ("bilinear", "nearest"):
            raise ValueError(f"ResizeLike method must be 'bilinear' or 'nearest'; got {method!r}.")
        self.method = method

    def call(self, inputs):
        x, like = inputs
        size = tf.shape(like)[1:3]
        return resize_nearest(x, size) if self.method == "nearest" else resize(x, size)

    def compute_output_shape(self, input_shapes):
        x, like = (tf.TensorShape(s) for s in input_shapes)
        return tf.TensorShape([x[0], like[1], like[2], x[3]])

    def get_config(self) -> dict:
        return {**super().get_config(), "method": self.method}


def _bin_matrix(size: tf.Tensor, bins: int) -> tf.Tensor:
    """(bins, size) averaging matrix of PyTorch's adaptive pooling: bin i is [floor(i*n/b), ceil((i+1)*n/b))."""
    i = tf.range(bins)
    start = (i * size) // bins
    end = ((i + 1) * size + bins - 1) // bins
    r = tf.range(size)[None, :]
    inside = tf.logical_and(r >= start[:, None], r < end[:, None])
    return tf.cast(inside, tf.float32) / tf.cast(end - start, tf.float32)[:, None]


@serializable
class AdaptiveAvgPool(tf_keras.layers.Layer):
    """`nn.AdaptiveAvgPool2d(bins)` for any input size, computed in float32 as two small matmuls."""

    def __init__(self, bins: int, **kwargs):
        super().__init__(**kwargs)
        self.bins = bins

    def call(self, x: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(x)
        ph, pw = _bin_matrix(shape[1], self.bins), _bin_matrix(shape[2], self.bins)
        y = tf.einsum("ih,nhwc->niwc", ph, tf.cast(x, tf.float32))
        y = tf.einsum("jw,niwc->nijc", pw, y)
        return tf.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        s = tf.TensorShape(input_shape)
        return tf.TensorShape([s[0], self.bins, self.bins, s[3]])

    def get_config(self) -> dict:
        return {**super().get_config(), "bins": self.bins}


def pyramid_inputs(input_specs: dict, levels) -> dict[str, tf.Tensor]:
    """Keras inputs for the levels of a backbone's `output_specs` (as Model Garden's decoders)."""
    missing = [str(l) for l in levels if str(l) not in input_specs]
    if missing:
        raise ValueError(
            f"The backbone gives levels {sorted(input_specs)}, but the neck needs {missing} as well."
        )
    return {str(l): tf_keras.Input(shape=tf.TensorShape(input_specs[str(l)])[1:], name=f"level_{l}") for l in levels}


class PyramidModel(tf_keras.Model):
    """A functional neck built from `input_specs` and a config dict; serialises both."""

    def _finish(self, config: dict, outputs: dict) -> None:
        self._config_dict = config
        self._output_specs = {k: v.shape for k, v in outputs.items()}
        self.output_names = sorted(outputs, key=int)  # outputs named by level, in a SavedModel too

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """Shape of each output level, keyed by level."""
        return self._output_specs

    def get_config(self) -> dict:
        config = dict(self._config_dict, name=self.name)
        config["input_specs"] = {k: tf.TensorShape(v).as_list() for k, v in config["input_specs"].items()}
        config["kernel_regularizer"] = tf_keras.regularizers.serialize(config["kernel_regularizer"])
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects=None):
        config = dict(config)
        config["input_specs"] = {k: tf.TensorShape(v) for k, v in config["input_specs"].items()}
        config["kernel_regularizer"] = tf_keras.regularizers.deserialize(config["kernel_regularizer"])
        return cls(**config)
