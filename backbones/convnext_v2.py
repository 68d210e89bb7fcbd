"""ConvNeXt V2 builders (`convnextv2_tiny(input_shape=..., include_top=..., weights=...)`).

Each takes the keyword arguments of `build_convnext`.
"""
import tf_keras

from .model import build_convnext


def convnextv2_atto(**kwargs) -> tf_keras.Model:
    """ConvNeXt V2-atto (3.7M parameters with the 1000-class head)."""
    return build_convnext("convnextv2_atto", **kwargs)


def convnextv2_femto(**kwargs) -> tf_keras.Model:
    """ConvNeXt V2-femto (5.2M parameters with the 1000-class head)."""
    return build_convnext("convnextv2_femto", **kwargs)


def convnextv2_pico(**kwargs) -> tf_keras.Model:
    """ConvNeXt V2-pico (9.1M parameters with the 1000-class head)."""
    return build_convnext("convnextv2_pico", **kwargs)


def convnextv2_nano(**kwargs) -> tf_keras.Model:
    """ConvNeXt V2-nano (15.6M parameters with the 1000-class head)."""
    return build_convnext("convnextv2_nano", **kwargs)


def convnextv2_tiny(**kwargs) -> tf_keras.Model:
    """ConvNeXt V2-tiny (28.6M parameters with the 1000-class head)."""
    return build_convnext("convnextv2_tiny", **kwargs)


def convnextv2_base(**kwargs) -> tf_keras.Model:
    """ConvNeXt V2-base (88.7M parameters with the 1000-class head)."""
    return build_convnext("convnextv2_base", **kwargs)


def convnextv2_large(**kwargs) -> tf_keras.Model:
    """ConvNeXt V2-large (197.9M parameters with the 1000-class head)."""
    return build_convnext("convnextv2_large", **kwargs)


def convnextv2_huge(**kwargs) -> tf_keras.Model:
    """ConvNeXt V2-huge (660.3M parameters with the 1000-class head)."""
    return build_convnext("convnextv2_huge", **kwargs)
