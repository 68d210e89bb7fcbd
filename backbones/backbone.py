"""`ConvNeXtBackbone`: ConvNeXt stage outputs at strides 4 to 32 as a Model Garden backbone."""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from . import arguments
from .config import ConvNeXtConfig
from .layers import LayerNorm, check_input_shape, serializable
from .model import model_inputs, new_layer, resolve_weights, trunk
from .weights import load_weights

MIN_LEVEL, MAX_LEVEL = 2, 5  # level l has stride 2**l: stage l - 2


@serializable
class ConvNeXtBackbone(tf_keras.Model):
    """ConvNeXt V1/V2 returning `{'2': stride 4, '3': stride 8, '4': stride 16, '5': stride 32}`.

    Args:
      model_id: 'atto', 'femto', 'pico', 'nano', 'tiny', 'small', 'base', 'large', 'xlarge' (V1)
        or 'huge' (V2), or a variant name ('convnext_tiny', 'convnextv2_atto').
      version: 'v1' or 'v2' (default 'v1'; a variant name sets it).
      depths, dims: a custom architecture's blocks and widths per stage (four each); they
        override model_id's.
      input_specs: `tf_keras.layers.InputSpec` of the images (default [None, None, None, 3]).
      input_tensor: optional Keras tensor to build on (preprocessing layers in front, say).
      min_level, max_level: the levels to return, within 2..5.
      output_norm: a LayerNorm on each output, as the official dense backbones and Hugging Face's
        ConvNextBackbone have (`output_norms.{level}`); False returns raw stage outputs.
      drop_path_rate: stochastic depth of the last block (linear rule from 0).
      layer_scale_init_value: V1 layer scale (default 1e-6).
      frozen_stages: -1 trains everything; 0 freezes the stem; k freezes the stem and stages < k.
      weights: a published checkpoint's name ('imagenet_1k', ...) or a checkpoint path (any format
        `load_weights` reads); a classifier's head is ignored.
      kernel_regularizer: applied to every convolution and dense kernel.
      gradient_checkpointing: in training, recompute each block's residual branch in the
        backward pass instead of keeping its activations (`tf.recompute_grad`): less memory for
        high-resolution dense training, for about one more forward pass of time.
    """

    def __init__(
        self,
        model_id: str = "tiny",
        version: str | None = None,
        input_specs: tf_keras.layers.InputSpec = tf_keras.layers.InputSpec(shape=[None, None, None, 3]),
        input_tensor: tf.Tensor | None = None,
        min_level: int = MIN_LEVEL,
        max_level: int = MAX_LEVEL,
        output_norm: bool = True,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float | None = None,
        frozen_stages: int = -1,
        weights: str | None = None,
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        depths: tuple[int, ...] | None = None,
        dims: tuple[int, ...] | None = None,
        gradient_checkpointing: bool = False,
        **kwargs,
    ):
        overrides = dict(drop_path_rate=drop_path_rate, layer_scale_init_value=layer_scale_init_value)
        if depths is None and dims is None:  # checks model_id, version, drop_path_rate, layer_scale_init_value
            cfg = ConvNeXtConfig.from_size(model_id, version, **overrides)
        else:
            named = ConvNeXtConfig.from_size(model_id, version)
            cfg = ConvNeXtConfig(depths or named.depths, dims or named.dims, named.version, **overrides)
        min_level = arguments.integer("min_level", min_level, MIN_LEVEL, MAX_LEVEL)
        max_level = arguments.integer("max_level", max_level, MIN_LEVEL, MAX_LEVEL)
        if min_level > max_level:
            raise ValueError(f"min_level ({min_level}) must not exceed max_level ({max_level}).")
        frozen_stages = arguments.integer("frozen_stages", frozen_stages, -1, 4)
        output_norm = arguments.boolean("output_norm", output_norm)
        gradient_checkpointing = arguments.boolean("gradient_checkpointing", gradient_checkpointing)
        if kernel_regularizer is not None and not callable(kernel_regularizer):
            raise ValueError(f"kernel_regularizer must be a Keras regularizer or None; got {kernel_regularizer!r}.")
        x, inputs = model_inputs(input_specs.shape[1:], input_tensor)
        check_input_shape(x.shape, channels=3 if weights else None)
        weights = resolve_weights(weights, cfg.variant, x.shape[1])
        endpoints = _levels(trunk(x, cfg), range(min_level, max_level + 1), output_norm, new_layer)
        kwargs.setdefault("name", cfg.variant)
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)
        # Outputs are named by level ('2' .. '5'), in a SavedModel's signature too.
        self.output_names = sorted(endpoints, key=int)

        self._config_dict = {
            "model_id": model_id,
            "version": version,
            "input_specs": input_specs,
            "min_level": min_level,
            "max_level": max_level,
            "output_norm": output_norm,
            "drop_path_rate": drop_path_rate,
            "layer_scale_init_value": layer_scale_init_value,
            "frozen_stages": frozen_stages,
            "weights": None,  # a rebuilt model gets its weights from the saved file
            "kernel_regularizer": kernel_regularizer,
            "depths": None if depths is None else list(cfg.depths),
            "dims": None if dims is None else list(cfg.dims),
            "gradient_checkpointing": gradient_checkpointing,
        }
        # Layers in front of the trunk (an `input_tensor` made by preprocessing layers) are part of
        # the model and of its config, as in a functional classifier.
        self._images = x if x is not inputs[0] else None
        self.convnext_config = cfg
        self._output_specs = {level: t.shape for level, t in endpoints.items()}
        if kernel_regularizer is not None:
            for layer in self.layers:
                for attr in ("kernel", "depthwise_kernel"):
                    if getattr(layer, attr, None) is not None:
                        self.add_loss(lambda k=getattr(layer, attr): kernel_regularizer(k))
        for layer in self.layers:
            if _stage_of(layer.name) < frozen_stages:
                layer.trainable = False
        if weights:
            load_weights(self, weights)

    def call(self, inputs, training=None, mask=None):
        if not (training and self._config_dict["gradient_checkpointing"]):
            return super().call(inputs, training=training, mask=mask)
        # The same layers in the same order (trunk's), with each block's branch recomputed.
        x = inputs if self._images is None else self._front()(inputs, training=training)
        make = lambda cls, name, *args, **kwargs: self.get_layer(name)  # noqa: E731 (the built layers)
        stages = trunk(x, self.convnext_config, make=make, recompute=True)
        config = self._config_dict
        return _levels(stages, range(config["min_level"], config["max_level"] + 1), config["output_norm"], make)

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """Shape of each level's output, keyed by level ('2' .. '5')."""
        return self._output_specs

    @property
    def feature_info(self) -> list[dict]:
        """Channels and stride of each output, as timm's `feature_info`."""
        return [
            {"level": int(level), "stride": 2 ** int(level), "num_chs": int(shape[-1])}
            for level, shape in self._output_specs.items()
        ]

    def get_config(self) -> dict:
        config = dict(self._config_dict, name=self.name)
        config["input_specs"] = {"shape": list(self._config_dict["input_specs"].shape)}
        config["kernel_regularizer"] = tf_keras.regularizers.serialize(config["kernel_regularizer"])
        if self._images is not None:  # the preprocessing layers, as a functional model's config
            config["input_layers"] = self._front().get_config()
        return config

    def _front(self) -> tf_keras.Model:
        """The layers between the input tensor and the trunk (given with `input_tensor`), as a model."""
        return tf_keras.Model(self.inputs, self._images)

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> "ConvNeXtBackbone":
        config = dict(config)
        if isinstance(config.get("input_specs"), dict):
            config["input_specs"] = tf_keras.layers.InputSpec(shape=config["input_specs"]["shape"])
        config["kernel_regularizer"] = tf_keras.regularizers.deserialize(config.get("kernel_regularizer"))
        input_layers = config.pop("input_layers", None)
        if input_layers is not None:
            front = tf_keras.Model.from_config(input_layers, custom_objects=custom_objects)
            config["input_tensor"] = front.outputs[0]
        return cls(**config)


def _levels(stages: list[tf.Tensor], levels: range, output_norm: bool, make) -> dict[str, tf.Tensor]:
    """The outputs by level ('2' .. '5'), each through its `output_norms.{level}` LayerNorm if
    `output_norm`; `make` gives the layers (new ones, or a built model's), as in `model.trunk`."""
    return {
        str(level): make(LayerNorm, f"output_norms.{level}")(stages[level - MIN_LEVEL]) if output_norm
        else stages[level - MIN_LEVEL]
        for level in levels
    }


def _stage_of(layer_name: str) -> int:
    """-1 for the stem, i for stage i's layers (its downsample included), 4 for the rest."""
    if layer_name.startswith("stem."):
        return -1
    if layer_name.startswith("stages."):
        return int(layer_name.split(".")[1])
    return 4
