"""UperNet neck: mmsegmentation's UPerHead without its classifier."""
from __future__ import annotations

import tf_keras

from convnext_tf.backbones.layers import serializable

from .ops import AdaptiveAvgPool, PyramidModel, ResizeLike, conv_bn_relu, pyramid_inputs


@serializable
class UperNet(PyramidModel):
    """Pyramid pooling on the top level, FPN laterals and top-down path, fusion at the lowest level.

    Input: a dict of levels (`backbone.output_specs`); output: `{str(min_level): fused map}` with
    `channels` channels at the lowest level's stride. Layer names follow mmseg and Hugging Face
    (`neck.ppm.{i}`, `neck.bottleneck`, `neck.lateral_convs.{i}`, `neck.fpn_convs.{i}`,
    `neck.fpn_bottleneck`), so their checkpoints map by table.

    Args:
      input_specs: `{level: TensorShape}` of the backbone.
      min_level, max_level: levels used (2..5 as in the papers).
      channels: width of every conv module (512 in mmseg's UperNet).
      pool_scales: output sizes of the adaptive average pools of the pyramid pooling module.
      kernel_regularizer: applied to every convolution kernel.
    """

    def __init__(
        self,
        input_specs: dict,
        min_level: int = 2,
        max_level: int = 5,
        channels: int = 512,
        pool_scales: tuple[int, ...] = (1, 2, 3, 6),
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs,
    ):
        if min_level >= max_level:
            raise ValueError(f"UperNet needs min_level < max_level; got {min_level} and {max_level}.")
        levels = list(range(min_level, max_level + 1))
        inputs = pyramid_inputs(input_specs, levels)
        feats = [inputs[str(l)] for l in levels]
        reg = kernel_regularizer

        # Pyramid pooling module on the top level
        top = feats[-1]
        pooled = [top]
        for i, scale in enumerate(pool_scales):
            p = AdaptiveAvgPool(scale, name=f"neck.ppm.{i}.pool")(top)
            p = conv_bn_relu(p, channels, 1, f"neck.ppm.{i}", reg)
            pooled.append(ResizeLike(name=f"neck.ppm.{i}.resize")([p, top]))
        x = tf_keras.layers.Concatenate(name="neck.ppm.concat")(pooled)
        laterals = [conv_bn_relu(f, channels, 1, f"neck.lateral_convs.{i}", reg) for i, f in enumerate(feats[:-1])]
        laterals.append(conv_bn_relu(x, channels, 3, "neck.bottleneck", reg))

        # Top-down path: each level gets the one above, resized to its exact size
        for i in range(len(laterals) - 1, 0, -1):
            up = ResizeLike(name=f"neck.top_down.{i}")([laterals[i], laterals[i - 1]])
            laterals[i - 1] = tf_keras.layers.Add(name=f"neck.top_down.{i}.add")([laterals[i - 1], up])
        outs = [conv_bn_relu(l, channels, 3, f"neck.fpn_convs.{i}", reg) for i, l in enumerate(laterals[:-1])]
        outs.append(laterals[-1])
        outs = [outs[0]] + [ResizeLike(name=f"neck.fuse.{i}")([o, outs[0]]) for i, o in enumerate(outs[1:], 1)]
        fused = tf_keras.layers.Concatenate(name="neck.fuse.concat")(outs)
        fused = conv_bn_relu(fused, channels, 3, "neck.fpn_bottleneck", reg)
        super().__init__(inputs=inputs, outputs={str(min_level): fused}, **kwargs)
        self._finish(
            {
                "input_specs": input_specs,
                "min_level": min_level,
                "max_level": max_level,
                "channels": channels,
                "pool_scales": tuple(pool_scales),
                "kernel_regularizer": kernel_regularizer,
            },
            {str(min_level): fused},
        )
