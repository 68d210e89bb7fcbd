"""ConvNeXt V1 builders (`convnext_tiny(input_shape=..., include_top=..., weights=...)`).

Each takes the keyword arguments of `build_convnext` (see `help(convnext_tiny)`); the depths and widths
are in `config._SIZES`.
"""
from .model import variant_builder

convnext_atto = variant_builder("convnext_atto")
convnext_femto = variant_builder("convnext_femto")
convnext_pico = variant_builder("convnext_pico")
convnext_nano = variant_builder("convnext_nano")
convnext_tiny = variant_builder("convnext_tiny")
convnext_small = variant_builder("convnext_small")
convnext_base = variant_builder("convnext_base")
convnext_large = variant_builder("convnext_large")
convnext_xlarge = variant_builder("convnext_xlarge")
