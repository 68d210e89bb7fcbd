"""FPN whose top-down path resizes to the exact size of the level below, so any input size works."""
from __future__ import annotations

import tf_keras

from convnext_tf.backbones.layers import serializable
from convnext_tf.backbones.winograd import conv_class

from .ops import PyramidModel, ResizeLike, pyramid_inputs


@serializable
class FPN(PyramidModel):
    """Feature pyramid network (Lin et al.) over a backbone's levels.

    Model Garden's FPN upsamples by a fixed factor of 2, which breaks when a level has an odd
    size (500x375 input: 31 columns at stride 16, 16 at stride 32). Here each top-down step
    resizes (nearest) to the exact size of the level below, with PyTorch's rule (source index
    floor(i * in / out), as mmdet's and mmseg's FPN), computed as a gather so that every export
    format gives the same result.

    Args:
      input_specs: `{level: TensorShape}` of the backbone.
      min_level, max_level: output levels; levels above the backbone's top (6, 7 for RetinaNet) are
        made by stride-2 3x3 convolutions, the first on the top output, the next after a ReLU.
      num_filters: channels of every output.
      use_norm: BatchNorm after the lateral and output convolutions.
      kernel_regularizer: applied to every convolution kernel.
    Output: `{str(level): map}` for min_level..max_level, as Model Garden decoders.
    """

    def __init__(
        self,
        input_specs: dict,
        min_level: int = 2,
        max_level: int = 5,
        num_filters: int = 256,
        use_norm: bool = False,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs,
    ):
        backbone_max = max(int(l) for l in input_specs)
        if min_level > max_level:
            raise ValueError(f"FPN needs min_level <= max_level; got {min_level} and {max_level}.")
        levels = list(range(min_level, min(max_level, backbone_max) + 1))
        inputs = pyramid_inputs(input_specs, levels)

        def conv(x, kernel, name, strides=1):
            x = conv_class(kernel, strides)(
                num_filters, kernel, strides=strides, padding="same", use_bias=not use_norm,
                kernel_regularizer=kernel_regularizer, name=name,
            )(x)
            if use_norm:
                x = tf_keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"{name}.bn")(x)
            return x

        laterals = {l: conv(inputs[str(l)], 1, f"neck.lateral.{l}") for l in levels}
        for l in reversed(levels[:-1]):
            up = ResizeLike("nearest", name=f"neck.top_down.{l}")([laterals[l + 1], laterals[l]])
            laterals[l] = tf_keras.layers.Add(name=f"neck.top_down.{l}.add")([laterals[l], up])
        outputs = {str(l): conv(laterals[l], 3, f"neck.output.{l}") for l in levels}
        for l in range(levels[-1] + 1, max_level + 1):
            x = outputs[str(l - 1)]
            if l > levels[-1] + 1:
                x = tf_keras.layers.ReLU(name=f"neck.extra.{l}.relu")(x)
            outputs[str(l)] = conv(x, 3, f"neck.extra.{l}", strides=2)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._finish(
            {
                "input_specs": input_specs,
                "min_level": min_level,
                "max_level": max_level,
                "num_filters": num_filters,
                "use_norm": use_norm,
                "kernel_regularizer": kernel_regularizer,
            },
            outputs,
        )
