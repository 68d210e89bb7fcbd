"""ConvNeXt in TensorFlow Model Garden: a backbone config and a registered builder.

Importing this module (`convnext_tf.tasks.registry_imports` does) registers the builder under
`'convnext'`, so any Model Garden model config takes
`backbone=Backbone(type='convnext', convnext=ConvNeXt(model_id='tiny'))`.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional

import tf_keras
from official.modeling import hyperparams
from official.vision.configs import backbones as backbones_cfg
from official.vision.modeling.backbones import factory

from .backbone import ConvNeXtBackbone


@dataclasses.dataclass
class ConvNeXt(hyperparams.Config):
    """Model Garden config of `ConvNeXtBackbone` (see its arguments)."""

    model_id: str = "tiny"  # or a variant name ('convnextv2_atto'), which sets the version
    version: Optional[str] = None  # 'v1' (the default) or 'v2'
    depths: Optional[List[int]] = None  # a custom architecture: these override model_id's
    dims: Optional[List[int]] = None
    min_level: int = 2
    max_level: int = 5
    output_norm: bool = True
    drop_path_rate: float = 0.0
    layer_scale_init_value: Optional[float] = None
    frozen_stages: int = -1
    weights: Optional[str] = None
    gradient_checkpointing: bool = False  # recompute each block's branch in the backward pass


@dataclasses.dataclass
class Backbone(backbones_cfg.Backbone):
    """Model Garden's backbone one-of config with a `convnext` choice."""

    type: Optional[str] = "convnext"
    convnext: ConvNeXt = dataclasses.field(default_factory=ConvNeXt)


def build_backbone(
    input_specs: tf_keras.layers.InputSpec,
    backbone_config: hyperparams.Config,
    norm_activation_config: hyperparams.Config,
    l2_regularizer: tf_keras.regularizers.Regularizer | None = None,
) -> ConvNeXtBackbone:
    """Model Garden builder; ConvNeXt has its own norms and activation, so the norm config is unused."""
    del norm_activation_config
    if backbone_config.type != "convnext":
        raise ValueError(f"Expected backbone type 'convnext'; got {backbone_config.type!r}.")
    cfg = backbone_config.get()
    return ConvNeXtBackbone(
        model_id=cfg.model_id,
        version=cfg.version,
        input_specs=input_specs,
        min_level=cfg.min_level,
        max_level=cfg.max_level,
        output_norm=cfg.output_norm,
        drop_path_rate=cfg.drop_path_rate,
        layer_scale_init_value=cfg.layer_scale_init_value,
        frozen_stages=cfg.frozen_stages,
        weights=cfg.weights,
        kernel_regularizer=l2_regularizer,
        depths=cfg.depths,
        dims=cfg.dims,
        gradient_checkpointing=cfg.gradient_checkpointing,
    )


try:
    factory.register_backbone_builder("convnext")(build_backbone)
except KeyError:  # already registered: this module was imported under a second name
    pass
