"""ConvNeXt builders (`convnext_tiny(input_shape=..., include_top=..., weights=...)`).

Each takes the keyword arguments of `build_convnext`.
"""
import tf_keras

from .model import build_convnext


def convnext_atto(**kwargs) -> tf_keras.Model:
    """ConvNeXt-atto (3.7M parameters with the 1000-class head)."""
    return build_convnext("convnext_atto", **kwargs)


def convnext_femto(**kwargs) -> tf_keras.Model:
    """ConvNeXt-femto (5.2M parameters with the 1000-class head)."""
    return build_convnext("convnext_femto", **kwargs)


def convnext_pico(**kwargs) -> tf_keras.Model:
    """ConvNeXt-pico (9.1M parameters with the 1000-class head)."""
    return build_convnext("convnext_pico", **kwargs)


def convnext_nano(**kwargs) -> tf_keras.Model:
    """ConvNeXt-nano (15.6M parameters with the 1000-class head)."""
    return build_convnext("convnext_nano", **kwargs)


def convnext_tiny(**kwargs) -> tf_keras.Model:
    """ConvNeXt-tiny (28.6M parameters with the 1000-class head)."""
    return build_convnext("convnext_tiny", **kwargs)


def convnext_small(**kwargs) -> tf_keras.Model:
    """ConvNeXt-small (50.2M parameters with the 1000-class head)."""
    return build_convnext("convnext_small", **kwargs)


def convnext_base(**kwargs) -> tf_keras.Model:
    """ConvNeXt-base (88.6M parameters with the 1000-class head)."""
    return build_convnext("convnext_base", **kwargs)


def convnext_large(**kwargs) -> tf_keras.Model:
    """ConvNeXt-large (197.8M parameters with the 1000-class head)."""
    return build_convnext("convnext_large", **kwargs)


def convnext_xlarge(**kwargs) -> tf_keras.Model:
    """ConvNeXt-xlarge (350.2M parameters with the 1000-class head)."""
    return build_convnext("convnext_xlarge", **kwargs)
