"""Layer-wise learning-rate decay for ConvNeXt, as the official fine-tuning recipes use it.

Each backbone variable gets a layer id from its name (`stem.*`, `stages.{i}.downsample.*`,
`stages.{i}.blocks.{j}.*`); everything else (necks, heads, output norms) is the top layer. Its
learning rate is `base_lr * decay ** (num_layers + 1 - layer_id)`, so the top trains at the
full rate and the stem at the smallest. Schemes:

- 'single': one layer per block (ConvNeXt V2's fine-tuning default); num_layers = sum(depths).
- 'group': 12 groups of three blocks (the ConvNeXt repos' `get_num_layer_for_convnext`,
  mmsegmentation's 'layer_wise').
- 'stage_wise': one layer per stage, stem and downsamples lowest (mmsegmentation's
  `LearningRateDecayOptimizerConstructor`, used by the official UperNet recipes with
  num_layers 6 for tiny and 12 for larger models).
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

import tensorflow as tf
import tf_keras

from convnext_tf.backbones import arguments
from convnext_tf.backbones.layers import serializable

SCHEMES = ("single", "group", "stage_wise")
_BACKBONE = re.compile(r"(?:^|/)(?:stem\.|stages\.(\d+)\.(?:downsample\.|blocks\.(\d+)\.))")


def parse_name(name: str) -> tuple[str, int, int] | None:
    """('stem', 0, 0), ('downsample', stage, 0), ('block', stage, block) or None for the rest."""
    m = _BACKBONE.search(name)
    if m is None:
        return None
    if m.group(1) is None:
        return ("stem", 0, 0)
    if m.group(2) is None:
        return ("downsample", int(m.group(1)), 0)
    return ("block", int(m.group(1)), int(m.group(2)))


def default_num_layers(scheme: str, depths: Sequence[int]) -> int:
    """sum(depths) for 'single', 12 for 'group' and 'stage_wise'."""
    return sum(depths) if scheme == "single" else 12


def layer_id(name: str, scheme: str, depths: Sequence[int], num_layers: int | None = None) -> int:
    """The layer id of a variable or layer name under `scheme` (the top layer is num_layers + 1)."""
    arguments.choice("scheme", scheme, SCHEMES)
    n = default_num_layers(scheme, depths) if num_layers is None else num_layers
    parsed = parse_name(name)
    if parsed is None:
        return n + 1
    kind, stage, block = parsed
    if scheme == "single":
        return sum(depths[:stage]) + (block if kind == "block" else 0) + 1
    if scheme == "stage_wise":
        return 0 if kind != "block" else stage + 1
    # 'group': stages 0 and 1 are one layer each, stage 2 in groups of three, stage 3 the last
    if kind == "stem":
        return 0
    if stage == 3:
        return n
    if kind == "downsample":
        return stage + 1
    return stage + 1 if stage < 2 else 3 + block // 3


def lr_scale(name: str, decay: float, scheme: str, depths: Sequence[int], num_layers: int | None = None) -> float:
    """The learning-rate multiplier `decay ** (num_layers + 1 - layer_id)` of a name."""
    n = default_num_layers(scheme, depths) if num_layers is None else num_layers
    return float(decay) ** (n + 1 - layer_id(name, scheme, depths, n))


def depths_of(names: Iterable[str]) -> tuple[int, int, int, int]:
    """The blocks per stage seen in variable names (an error if a stage has none)."""
    depths = [0, 0, 0, 0]
    for name in names:
        parsed = parse_name(name)
        if parsed and parsed[0] == "block":
            depths[parsed[1]] = max(depths[parsed[1]], parsed[2] + 1)
    if 0 in depths:
        raise ValueError(
            f"Layer decay could not find the ConvNeXt blocks of stage {depths.index(0)} among the trainable "
            "variables (stages.{i}.blocks.{j}.*; a frozen stage has none): pass depths= explicitly."
        )
    return tuple(depths)


@serializable
class LayerDecayAdamW(tf_keras.optimizers.AdamW):
    """AdamW whose learning rate is scaled per ConvNeXt layer (see the module docstring).

    The scale multiplies the learning rate, so it applies to both the Adam step and the
    decoupled weight decay, as PyTorch's parameter groups with `lr_scale` do. Variables of rank
    0 or 1 (biases, norms, GRN and layer-scale parameters) get no weight decay, as in the
    official recipes. Depths are read from the variable names at the first step unless given.

    Args:
      learning_rate: the top layer's rate (a float or a schedule).
      weight_decay: decoupled weight decay (0.05 in the official recipes).
      layer_decay: the decay per layer (1.0 turns layer decay off).
      scheme: 'single', 'group' or 'stage_wise'.
      num_layers: default sum(depths) for 'single', 12 otherwise.
      depths: blocks per stage; default: found from the variable names.
      epsilon: 1e-8 as PyTorch's AdamW (Keras' default is 1e-7).
      **kwargs: as `tf_keras.optimizers.AdamW` (beta_1, beta_2, clipnorm, ...).
    """

    def __init__(
        self,
        learning_rate=1e-4,
        weight_decay: float = 0.05,
        layer_decay: float = 0.9,
        scheme: str = "single",
        num_layers: int | None = None,
        depths: Sequence[int] | None = None,
        epsilon: float = 1e-8,
        name: str = "LayerDecayAdamW",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, epsilon=epsilon, name=name, **kwargs)
        self.layer_decay = arguments.number("layer_decay", layer_decay, 0.0, 1.0)
        self.scheme = arguments.choice("scheme", scheme, SCHEMES)
        self.num_layers = None if num_layers is None else arguments.integer("num_layers", num_layers, lo=1)
        if depths is not None:
            depths = tuple(arguments.integer("depths", d, lo=1) for d in depths)
            if len(depths) != 4:
                raise ValueError(f"depths must have four stages; got {depths}.")
        self.depths = depths
        self._lr_scales: dict = {}
        self._scale = 1.0

    def build(self, var_list):
        super().build(var_list)
        depths = self.depths or depths_of(v.name for v in var_list)
        self._lr_scales = {
            self._var_key(v): lr_scale(v.name, self.layer_decay, self.scheme, depths, self.num_layers) for v in var_list
        }

    def lr_scale_of(self, variable: tf.Variable) -> float:
        """The learning-rate multiplier of a variable (after the first step or `build`)."""
        return self._lr_scales.get(self._var_key(variable), 1.0)

    @property
    def learning_rate(self):
        return super().learning_rate * self._scale if self._scale != 1.0 else super().learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        tf_keras.optimizers.AdamW.learning_rate.fset(self, value)

    def _scaled(self, variable, step, *args):
        self._scale = self.lr_scale_of(variable)
        try:
            return step(*args)
        finally:
            self._scale = 1.0

    def update_step(self, gradient, variable):
        return self._scaled(variable, super().update_step, gradient, variable)

    def _use_weight_decay(self, variable) -> bool:
        return len(variable.shape) > 1 and super()._use_weight_decay(variable)

    def _apply_weight_decay(self, variables):
        for variable in variables:  # one at a time, each with its own scale
            self._scaled(variable, super()._apply_weight_decay, [variable])

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "layer_decay": self.layer_decay,
            "scheme": self.scheme,
            "num_layers": self.num_layers,
            "depths": None if self.depths is None else list(self.depths),
        }
