"""ConvNeXt V2 builders (`convnextv2_tiny(input_shape=..., include_top=..., weights=...)`).

Each takes the keyword arguments of `build_convnext` (see `help(convnextv2_tiny)`); the depths and widths
are in `config._SIZES`.
"""
from .model import variant_builder

convnextv2_atto = variant_builder("convnextv2_atto")
convnextv2_femto = variant_builder("convnextv2_femto")
convnextv2_pico = variant_builder("convnextv2_pico")
convnextv2_nano = variant_builder("convnextv2_nano")
convnextv2_tiny = variant_builder("convnextv2_tiny")
convnextv2_base = variant_builder("convnextv2_base")
convnextv2_large = variant_builder("convnextv2_large")
convnextv2_huge = variant_builder("convnextv2_huge")
