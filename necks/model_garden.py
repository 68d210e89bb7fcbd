"""The necks as TensorFlow Model Garden decoders: `decoder.type='upernet'` or `'exact_fpn'`.

`exact_fpn` is our FPN, which works at any input size (Model Garden's `fpn` needs sizes
divisible by 2**max_level).
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional

from official.modeling import hyperparams
from official.vision.configs import decoders as decoders_cfg
from official.vision.modeling.decoders import factory

from .fpn import FPN
from .upernet import UperNet


@dataclasses.dataclass
class UperNetConfig(hyperparams.Config):
    channels: int = 512
    pool_scales: List[int] = dataclasses.field(default_factory=lambda: [1, 2, 3, 6])


@dataclasses.dataclass
class ExactFPNConfig(hyperparams.Config):
    num_filters: int = 256
    use_norm: bool = False


@dataclasses.dataclass
class Decoder(decoders_cfg.Decoder):
    """Model Garden's decoder one-of config with `upernet` and `exact_fpn` choices."""

    type: Optional[str] = "upernet"
    upernet: UperNetConfig = dataclasses.field(default_factory=UperNetConfig)
    exact_fpn: ExactFPNConfig = dataclasses.field(default_factory=ExactFPNConfig)


def build_upernet(input_specs, model_config, l2_regularizer=None) -> UperNet:
    """Model Garden builder: UperNet over levels min_level..min(max_level, the backbone's top)."""
    cfg = model_config.decoder.get()
    top = max(int(l) for l in input_specs)
    return UperNet(
        input_specs, min_level=model_config.min_level, max_level=min(model_config.max_level, top),
        channels=cfg.channels, pool_scales=tuple(cfg.pool_scales), kernel_regularizer=l2_regularizer,
    )


def build_exact_fpn(input_specs, model_config, l2_regularizer=None) -> FPN:
    """Model Garden builder: FPN over min_level..max_level, extra levels by stride-2 convs."""
    cfg = model_config.decoder.get()
    return FPN(
        input_specs, min_level=model_config.min_level, max_level=model_config.max_level,
        num_filters=cfg.num_filters, use_norm=cfg.use_norm, kernel_regularizer=l2_regularizer,
    )


for _key, _builder in (("upernet", build_upernet), ("exact_fpn", build_exact_fpn)):
    try:
        factory.register_decoder_builder(_key)(_builder)
    except KeyError:  # already registered: this module was imported under a second name
        pass
