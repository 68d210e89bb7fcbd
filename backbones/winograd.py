"""Winograd F(2x2, 3x3): a 3x3 stride-1 'same' convolution with 16 multiplications per 2x2 output
tile and channel pair instead of 36 (Lavin and Gray, 2016), in inference and in training.

Each 2x2 output tile Y comes from a 4x4 input tile d: `Y = A^T [sum over input channels of
(B^T d B) * U] A`, with `U = G g G^T` the transformed kernel g. In TensorFlow ops: the input
transform is adds, giving 16 (tiles, C) matrices, one per tile position; the channel sums are 16
matmuls (tiles x C by C x K); the output transform is adds. For inputs of static shape both
transforms are XLA-compiled loops, compiled once per band shape; for inputs of varying size, where
that would mean a compile for every new size, the input transform is 16 stride-2 depthwise
convolutions with fixed 4x4 filters (2-3x slower) and the output transform TensorFlow's ops. In
float32 on CPU this is 2-2.9x faster than TensorFlow's direct convolution on UperNet's 3x3 layers
(2048 -> 512 at 128x128 down to 2816 -> 512 at 16x16); in bfloat16 oneDNN's direct (AMX)
convolution is the faster one, so only float32 layers use it (`applies`). Rounding: about 3e-6 of
the output's range, against about 1e-6 for the direct convolution.

The transformed input tiles take four times their input's memory, so they are made band by band
(rows of tiles of one image, at most `BAND_FLOATS` values on either side of the matmuls,
zero-padded per band), and each band's output is written in place into the result: the extra
memory is bounded at any resolution.

Inference (`conv3x3`, kernels transformed once by `inference.inference_function`) loops over the
bands of inputs of any size. Training (`conv3x3_for_training`, used by `WinogradConv2D`, the
necks' 3x3 layer, where `trains_by_winograd`) unrolls the bands of an input of static shape, one
after another, and has Winograd gradients: the input gradient is the convolution of dy with the
flipped, transposed kernel, and the kernel gradient `G^T [sum over tiles of V^T (A dY A^T)] G`
recomputes each band's tiles V in the backward pass instead of keeping them (its `A dY A^T` is an
XLA-compiled loop as well).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from convnext_tf.backbones.layers import gpu_present, serializable

BAND_FLOATS = 1 << 25  # transformed values per band: 32 M (128 MiB in float32)

_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)  # input transform B^T
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)  # kernel transform G
# the output transform A^T = [[1, 1, 1, 0], [0, 1, -1, -1]] and its transpose are written out as adds

# Winograd pays in training on large layers only (measured on 2 cores, forward and both gradients,
# batch 2, direct / Winograd): with 128 channels it loses (0.51x at 8x8 to 0.88x at 64x64); the
# transforms and each call's kernel work (the kernel transforms, the kernel gradient's sums) need
# both channels and tiles: 256 -> 256 at 16x16 0.73x but at 32x32 1.10x and at 128x128 1.45x,
# 512 -> 512 at 8x8 0.56x but at 16x16 1.09x, 2048 -> 512 at 8x8 0.90x, 2816 -> 512 at 16x16 1.41x.
# `trains_by_winograd` applies these bounds.
TRAINING_MIN_CHANNELS = 256  # min(C, K)
TRAINING_MIN_TILE_CHANNELS = 1 << 16  # 2x2 output tiles of the whole batch x min(C, K)


def transform_kernel(kernel: tf.Tensor) -> tf.Tensor:
    """(3, 3, C, K) convolution kernel -> (16, C, K) Winograd kernel `G g G^T`."""
    kernel = tf.convert_to_tensor(kernel)
    if kernel.shape.rank != 4 or tuple(kernel.shape[:2]) != (3, 3):
        raise ValueError(f"Winograd F(2x2, 3x3) needs a (3, 3, C, K) kernel; got shape {tuple(kernel.shape)}.")
    g = tf.constant(_G, kernel.dtype)  # two small matmuls: 2.4x faster than one einsum on (3, 3, 2048, 512)
    rows = tf.reshape(tf.matmul(g, tf.reshape(kernel, [3, -1])), [4, 3, -1])  # G over the kernel's rows
    return tf.reshape(tf.matmul(tf.broadcast_to(g, [4, 4, 3]), rows), [16, kernel.shape[2], kernel.shape[3]])


def _band_rows(tw, channels: int, filters: int):
    """Tile rows per band: at most `BAND_FLOATS` transformed values on either side of the matmul."""
    return BAND_FLOATS // (tw * 16 * max(channels, filters))


def _rows_transform(x: tf.Tensor, axis: int) -> list[tf.Tensor]:
    """The input transform `_BT` along `axis` (1: rows, 2: columns) of 4-row windows at stride 2,
    written out as adds: four outputs, one per row of B^T."""
    s = [x[:, k:k - 3 or None:2] if axis == 1 else x[:, :, k:k - 3 or None:2] for k in range(4)]
    return [s[0] - s[2], s[1] + s[2], s[2] - s[1], s[1] - s[3]]


@tf.function(jit_compile=True, input_signature=[tf.TensorSpec([None, None, None, None], tf.float32)])
def _compiled_input_transform(d: tf.Tensor) -> list[tf.Tensor]:
    """`B^T d B` of each 4x4 tile at stride 2 of a zero-padded band d (1, 2 rows + 2, 2 tw + 2, C),
    as 16 (tiles, C) matrices, one per tile position (i, j) at 4 i + j: one fused XLA loop of adds,
    2-3x faster than depthwise convolutions (which multiply by B's zeros), compiled per band shape."""
    return [tf.reshape(c, [-1, tf.shape(d)[-1]]) for r in _rows_transform(d, 1) for c in _rows_transform(r, 2)]


def _depthwise_filters(channels: int) -> list[tf.Tensor]:
    """The input transform as depthwise filters, one (4, 4, C, 1) per tile position (i, j):
    B^T[i, a] B^T[j, b] at (a, b)."""
    return [tf.constant(np.tile(np.outer(_BT[i], _BT[j])[:, :, None, None], (1, 1, channels, 1)))
            for i in range(4) for j in range(4)]


def _tiles(inputs: tf.Tensor, image, r0, r1, tw, compiled: bool = True) -> list[tf.Tensor]:
    """The transformed 4x4 input tiles of tile rows r0..r1 of one image of NHWC `inputs` with tw
    tiles per row (zero-padded here: the 'same' padding of this band only), as 16 (tiles, C)
    matrices: by `_compiled_input_transform`, or (not `compiled`) by depthwise convolutions with
    `_depthwise_filters`, which need no compile for each new shape."""
    h, w = tf.shape(inputs)[1], tf.shape(inputs)[2]
    start, end = tf.maximum(0, 2 * r0 - 1), tf.minimum(h, 2 * r1 + 1)  # input rows 2 r0 - 1 .. 2 r1
    top = start - (2 * r0 - 1)
    d = tf.pad(inputs[image:image + 1, start:end],
               [[0, 0], [top, 2 * (r1 - r0) + 2 - top - (end - start)], [1, 2 * tw - w + 1], [0, 0]])
    if compiled:
        return [tf.ensure_shape(v, [None, inputs.shape[-1]]) for v in _compiled_input_transform(d)]
    return [tf.reshape(tf.nn.depthwise_conv2d(d, f, [1, 2, 2, 1], "VALID"), [-1, inputs.shape[-1]])
            for f in _depthwise_filters(inputs.shape[-1])]


def _products(v: list[tf.Tensor], kernels: list[tf.Tensor], adjoint: bool = False) -> list[tf.Tensor]:
    """The channel sums: the 16 (tiles, K) products of tiles and transformed kernels (transposed
    if `adjoint`)."""
    return [tf.matmul(a, b, transpose_b=adjoint) for a, b in zip(v, kernels)]


def _output_transform(m: list[tf.Tensor]) -> tf.Tensor:
    """`A^T M A` of 16 (rows, tw, K) products, m[4 i + j] at tile position (i, j): (2 rows, 2 tw, K)
    pixels."""
    at_m = [[m[j] + m[4 + j] + m[8 + j] for j in range(4)],  # A^T M, then (A^T M) A below
            [m[4 + j] - m[8 + j] - m[12 + j] for j in range(4)]]
    pixels = tf.stack([tf.stack([r[0] + r[1] + r[2], r[1] - r[2] - r[3]], axis=2) for r in at_m], axis=1)
    shape = tf.shape(m[0])
    return tf.reshape(pixels, [-1, 2 * shape[1], shape[2]])  # (rows, 2, tw, 2, K) -> pixel rows


# one fused XLA loop, 1.5x faster than TensorFlow's adds and stacks; compiled per band shape
_compiled_output_transform = tf.function(
    _output_transform, jit_compile=True, input_signature=[[tf.TensorSpec([None, None, None], tf.float32)] * 16])


def _pixels(m: list[tf.Tensor], tw, filters: int, compiled: bool = True) -> tf.Tensor:
    """The output transform of 16 (tiles, K) products: (2 tile rows, 2 tw, K) pixels."""
    transform = _compiled_output_transform if compiled else _output_transform
    return tf.ensure_shape(transform([tf.reshape(t, [-1, tw, filters]) for t in m]), [None, None, filters])


def conv3x3(inputs: tf.Tensor, transformed: tf.Tensor) -> tf.Tensor:
    """`tf.nn.conv2d(inputs, kernel, 1, 'SAME')` for NHWC `inputs` of any size, with
    `transformed = transform_kernel(kernel)`."""
    channels, filters = inputs.shape[-1], transformed.shape[2]
    shape = tf.shape(inputs)
    n, h, w = shape[0], shape[1], shape[2]
    th, tw = (h + 1) // 2, (w + 1) // 2  # output tiles; odd sizes get one padded row / column
    # XLA compiles the transforms once per band shape: for a static input shape (as in a function
    # traced for one size) once; for inputs of varying size depthwise convolutions, not a compile
    # for every new size (about 0.3 s per layer)
    static = inputs.shape.is_fully_defined()
    kernels = tf.unstack(transformed)
    per_band = tf.maximum(1, _band_rows(tw, channels, filters))
    bands = (th + per_band - 1) // per_band  # per image

    def band(i, y):
        """Band i's output pixels, written into y in place."""
        image, r0 = i // bands, (i % bands) * per_band
        r1 = tf.minimum(th, r0 + per_band)
        pixels = _pixels(_products(_tiles(inputs, image, r0, r1, tw, static), kernels), tw, filters, static)
        first = image * 2 * th + 2 * r0
        return i + 1, tf.raw_ops.InplaceUpdate(x=y, i=tf.range(first, first + tf.shape(pixels)[0]), v=pixels)

    y = tf.raw_ops.Empty(shape=tf.stack([n * 2 * th, 2 * tw, filters]), dtype=inputs.dtype)
    # one band at a time: the transformed tiles (four times their input) stay bounded
    _, y = tf.while_loop(lambda i, _: i < n * bands, band, (0, y), parallel_iterations=1)
    y = tf.reshape(y, [n, 2 * th, 2 * tw, filters])[:, :h, :w]
    y.set_shape(inputs.shape[:-1].concatenate([filters]))
    return y


# Training: static shapes, the bands unrolled and chained by control dependencies, one at a time.

def _bands(inputs: tf.Tensor, filters: int) -> list[tuple[int, int, int]]:
    """(image, first tile row, end tile row) of each band of static NHWC `inputs`."""
    n, h, w, channels = inputs.shape
    th, tw = (h + 1) // 2, (w + 1) // 2
    rows = max(1, _band_rows(tw, channels, filters))
    return [(image, r0, min(th, r0 + rows)) for image in range(n) for r0 in range(0, th, rows)]


def _conv3x3_static(inputs: tf.Tensor, kernels: list[tf.Tensor], adjoint: bool = False) -> tf.Tensor:
    """`conv3x3` for inputs of static shape, without a loop, with the 16 transformed kernels as
    (C, K) matrices, or (K, C) ones if `adjoint` (its gradient is `conv3x3_for_training`'s)."""
    n, h, w, channels = inputs.shape
    filters = kernels[0].shape[0 if adjoint else 1]
    th, tw = (h + 1) // 2, (w + 1) // 2
    with tf.control_dependencies([inputs]):  # allocated when the input exists, not when the step starts
        y = tf.raw_ops.Empty(shape=[n * 2 * th, 2 * tw, filters], dtype=inputs.dtype)
    for image, r0, r1 in _bands(inputs, filters):
        with tf.control_dependencies([y]):  # after the previous band
            v = _tiles(inputs, image, r0, r1, tw)
        first = image * 2 * th + 2 * r0
        y = tf.raw_ops.InplaceUpdate(x=y, i=tf.range(first, first + 2 * (r1 - r0)),
                                     v=_pixels(_products(v, kernels, adjoint), tw, filters))
    return tf.reshape(y, [n, 2 * th, 2 * tw, filters])[:, :h, :w]


def _a_rows(first: tf.Tensor, second: tf.Tensor) -> list[tf.Tensor]:
    """A (4 x 2) applied to the two rows (or columns) of 2x2 tiles: four outputs, one per row of A."""
    return [first, first + second, first - second, -second]


@tf.function(jit_compile=True, input_signature=[tf.TensorSpec([None, None, None], tf.float32)])
def _compiled_gradient_transform(dy: tf.Tensor) -> list[tf.Tensor]:
    """`A dY A^T` (the adjoint of the output transform) of each 2x2 tile of dy (2 rows, 2 tw, K),
    as 16 (tiles, K) matrices, one per tile position: one fused XLA loop, compiled per band shape."""
    shape = tf.shape(dy)
    d = tf.reshape(dy, [shape[0] // 2, 2, shape[1] // 2, 2, shape[2]])
    return [tf.reshape(c, [-1, shape[2]])  # A dY over the rows, then (A dY) A^T over the columns
            for r in _a_rows(d[:, 0], d[:, 1]) for c in _a_rows(r[:, :, 0], r[:, :, 1])]


def _kernel_gradient(inputs: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    """The (3, 3, C, K) kernel gradient `G^T [sum over tiles of V^T (A dY A^T)] G`, V recomputed
    band by band."""
    n, h, w, channels = inputs.shape
    filters = dy.shape[-1]
    th, tw = (h + 1) // 2, (w + 1) // 2
    if (2 * th, 2 * tw) != (h, w):
        dy = tf.pad(dy, [[0, 0], [0, 2 * th - h], [0, 2 * tw - w], [0, 0]])  # whole tiles
    totals = None  # per tile position: (C, K)
    for image, r0, r1 in _bands(inputs, filters):
        with tf.control_dependencies([dy] if totals is None else totals):  # in the backward pass, in turn
            v = _tiles(inputs, image, r0, r1, tw)
        dm = _compiled_gradient_transform(dy[image, 2 * r0:2 * r1])
        products = [tf.matmul(a, tf.ensure_shape(b, [None, filters]), transpose_a=True) for a, b in zip(v, dm)]
        totals = products if totals is None else [t + p for t, p in zip(totals, products)]
    gt = tf.constant(_G.T, inputs.dtype)  # G^T over the first tile axis, then over the second
    total = tf.reshape(tf.matmul(gt, tf.reshape(tf.stack(totals), [4, -1])), [3, 4, -1])
    return tf.reshape(tf.matmul(tf.broadcast_to(gt, [3, 3, 4]), total), [3, 3, channels, filters])


# `G P = S G` for the 3x3 flip P, with S swapping G's rows 0 and 3: the flipped kernel's transform
# is the kernel's with tile rows and columns 0 and 3 swapped.
_SWAP = [3, 1, 2, 0]
_FLIPPED_TILES = [4 * _SWAP[i] + _SWAP[j] for i in range(4) for j in range(4)]


@tf.autograph.experimental.do_not_convert  # AutoGraph would convert the undecorated function
@tf.custom_gradient
def conv3x3_for_training(inputs: tf.Tensor, kernel: tf.Tensor):
    """`tf.nn.conv2d(inputs, kernel, 1, 'SAME')` by Winograd for float32 NHWC `inputs` of static
    shape and a (3, 3, C, K) kernel, with Winograd gradients: the input gradient is the convolution
    of dy with the flipped, transposed kernel, and the kernel gradient is summed band by band."""
    with tf.control_dependencies([inputs]):
        transformed = tf.unstack(transform_kernel(kernel))

    def grad(dy):
        with tf.control_dependencies([dy]):  # made in the backward pass, not held from the forward one
            transformed = tf.unstack(transform_kernel(kernel))
        flipped = [transformed[k] for k in _FLIPPED_TILES]
        return _conv3x3_static(dy, flipped, adjoint=True), _kernel_gradient(inputs, dy)

    return _conv3x3_static(inputs, transformed), grad


def applies(layer: tf_keras.layers.Conv2D) -> bool:
    """Whether this convolution runs by Winograd (in `inference.inference_function`, and in training
    as a `WinogradConv2D`): 3x3, stride 1, 'same', no dilation or groups, channels last, float32,
    and no GPU (cuDNN has its own)."""
    return (
        layer.kernel_size == (3, 3) and layer.strides == (1, 1) and layer.dilation_rate == (1, 1)
        and layer.padding == "same" and layer.groups == 1 and layer.data_format == "channels_last"
        and layer.compute_dtype == "float32" and not gpu_present()
    )


def trains_by_winograd(layer: tf_keras.layers.Conv2D, input_shape: tf.TensorShape) -> bool:
    """Whether a training call of `layer` on `input_shape` runs by Winograd: `applies`, a static
    NHWC shape (as in a training step), and work enough to pay for the transforms (at least
    `TRAINING_MIN_CHANNELS` on either side, and output tiles x those channels at least
    `TRAINING_MIN_TILE_CHANNELS`)."""
    if not (applies(layer) and input_shape.rank == 4 and input_shape.is_fully_defined()):
        return False
    n, h, w, channels = input_shape
    narrow = min(channels, layer.filters)
    return (narrow >= TRAINING_MIN_CHANNELS
            and n * ((h + 1) // 2) * ((w + 1) // 2) * narrow >= TRAINING_MIN_TILE_CHANNELS)


@serializable
class WinogradConv2D(tf_keras.layers.Conv2D):
    """Keras' Conv2D that trains by Winograd (`conv3x3_for_training`) where `trains_by_winograd`:
    the necks' 3x3 convolutions. Other calls are Conv2D's: inference (`inference.inference_function`
    runs these layers by Winograd too), exports, inputs of unknown size and small layers."""

    def call(self, inputs: tf.Tensor, training=None) -> tf.Tensor:
        if not (training is True and trains_by_winograd(self, inputs.shape)):
            return super().call(inputs)
        outputs = conv3x3_for_training(inputs, tf.convert_to_tensor(self.kernel))
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return outputs if self.activation is None else self.activation(outputs)


def conv_class(kernel_size: int, strides: int = 1) -> type[tf_keras.layers.Conv2D]:
    """The class of a neck's convolution: `WinogradConv2D` for 3x3 stride 1, else Conv2D."""
    return WinogradConv2D if (kernel_size, strides) == (3, 1) else tf_keras.layers.Conv2D
