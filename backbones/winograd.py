"""Winograd F(2x2, 3x3): a 3x3 stride-1 'same' convolution with 16 multiplications per 2x2 output
tile and channel pair instead of 36 (Lavin and Gray, 2016), for kernels fixed in advance (inference).

Each 2x2 output tile Y comes from a 4x4 input tile d: `Y = A^T [sum over input channels of
(B^T d B) * U] A`, with `U = G g G^T` the transformed kernel g. In TensorFlow ops: the input
transform is a stride-2 depthwise convolution with 16 fixed 4x4 filters per channel, the channel
sums are 16 batched matmuls (tiles x C by C x K), and the output transform is adds. In float32 on
CPU this is 2-2.9x faster than TensorFlow's direct convolution on UperNet's 3x3 layers (2048 ->
512 at 128x128 down to 2816 -> 512 at 16x16); in bfloat16 oneDNN's direct (AMX) convolution is
the faster one, so only float32 layers use it (`applies`). Rounding: about 3e-6 of the output's
range, against about 1e-6 for the direct convolution.

The transformed input tiles take four times their input's memory, so they are made band by band
(rows of tiles of one image, at most `BAND_FLOATS` values each, zero-padded per band), and each
band's output is written in place into the result: the extra memory is bounded at any resolution.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from convnext_tf.backbones.layers import gpu_present

BAND_FLOATS = 1 << 23  # transformed input tiles held at once: 8 M values (32 MiB in float32)

_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)  # input transform B^T
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)  # kernel transform G
# the output transform A^T = [[1, 1, 1, 0], [0, 1, -1, -1]] and its transpose are written out as adds
_INPUT_FILTERS = np.einsum("ia,jb->abij", _BT, _BT).reshape(4, 4, 1, 16)  # (i, j): B^T[i, a] B^T[j, b]


def transform_kernel(kernel: tf.Tensor) -> tf.Tensor:
    """(3, 3, C, K) convolution kernel -> (16, C, K) Winograd kernel `G g G^T`."""
    kernel = tf.convert_to_tensor(kernel)
    if kernel.shape.rank != 4 or tuple(kernel.shape[:2]) != (3, 3):
        raise ValueError(f"Winograd F(2x2, 3x3) needs a (3, 3, C, K) kernel; got shape {tuple(kernel.shape)}.")
    g = tf.constant(_G, kernel.dtype)
    return tf.reshape(tf.einsum("ia,abck,jb->ijck", g, kernel, g), [16, kernel.shape[2], kernel.shape[3]])


def conv3x3(inputs: tf.Tensor, transformed: tf.Tensor) -> tf.Tensor:
    """`tf.nn.conv2d(inputs, kernel, 1, 'SAME')` for NHWC `inputs` of any size, with
    `transformed = transform_kernel(kernel)`."""
    channels, filters = inputs.shape[-1], transformed.shape[2]
    shape = tf.shape(inputs)
    n, h, w = shape[0], shape[1], shape[2]
    th, tw = (h + 1) // 2, (w + 1) // 2  # output tiles; odd sizes get one padded row / column
    input_filters = tf.constant(np.tile(_INPUT_FILTERS, (1, 1, channels, 1)), inputs.dtype)
    per_band = tf.maximum(1, BAND_FLOATS // (tw * 16 * channels))  # tile rows per band
    bands = (th + per_band - 1) // per_band  # per image

    def band(i, y):
        """Band i: its 4x4 input tiles d (zero-padded here), `B^T d B`, the channel sums, the
        output transform, written into y in place."""
        image, r0 = i // bands, (i % bands) * per_band
        r1 = tf.minimum(th, r0 + per_band)
        start, end = tf.maximum(0, 2 * r0 - 1), tf.minimum(h, 2 * r1 + 1)  # input rows 2 r0 - 1 .. 2 r1
        top = start - (2 * r0 - 1)
        d = tf.pad(inputs[image:image + 1, start:end],
                   [[0, 0], [top, 2 * (r1 - r0) + 2 - top - (end - start)], [1, 2 * tw - w + 1], [0, 0]])
        v = tf.nn.depthwise_conv2d(d, input_filters, [1, 2, 2, 1], "VALID")  # (1, rows, tw, C * 16)
        v = tf.transpose(tf.reshape(v, [-1, channels, 16]), [2, 0, 1])  # (16, tiles, C)
        m = tf.reshape(tf.matmul(v, transformed), [4, 4, -1, tw, filters])
        at_m = [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]  # A^T M, then (A^T M) A below
        pixels = tf.stack([tf.stack([r[0] + r[1] + r[2], r[1] - r[2] - r[3]], axis=2) for r in at_m], axis=1)
        pixels = tf.reshape(pixels, [-1, 2 * tw, filters])  # (rows, 2, tw, 2, K) -> pixel rows
        first = image * 2 * th + 2 * r0
        return i + 1, tf.raw_ops.InplaceUpdate(x=y, i=tf.range(first, first + tf.shape(pixels)[0]), v=pixels)

    y = tf.raw_ops.Empty(shape=tf.stack([n * 2 * th, 2 * tw, filters]), dtype=inputs.dtype)
    # one band at a time: the transformed tiles (four times their input) stay bounded
    _, y = tf.while_loop(lambda i, _: i < n * bands, band, (0, y), parallel_iterations=1)
    y = tf.reshape(y, [n, 2 * th, 2 * tw, filters])[:, :h, :w]
    y.set_shape(inputs.shape[:-1].concatenate([filters]))
    return y


def applies(layer: tf_keras.layers.Conv2D) -> bool:
    """Whether `inference.inference_function` runs this convolution by Winograd: 3x3, stride 1,
    'same', no dilation or groups, channels last, float32, and no GPU (cuDNN has its own)."""
    return (
        layer.kernel_size == (3, 3) and layer.strides == (1, 1) and layer.dilation_rate == (1, 1)
        and layer.padding == "same" and layer.groups == 1 and layer.data_format == "channels_last"
        and layer.compute_dtype == "float32" and not gpu_present()
    )
