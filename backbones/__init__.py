"""ConvNeXt V1 and V2 in tf_keras: model builders, layers and weight loading."""
from . import catalogue, hub
from .backbone import ConvNeXtBackbone
from .config import MODEL_NAMES, ConvNeXtConfig
from .convnext_v1 import (
    convnext_atto,
    convnext_base,
    convnext_femto,
    convnext_large,
    convnext_nano,
    convnext_pico,
    convnext_small,
    convnext_tiny,
    convnext_xlarge,
)
from .convnext_v2 import (
    convnextv2_atto,
    convnextv2_base,
    convnextv2_femto,
    convnextv2_huge,
    convnextv2_large,
    convnextv2_nano,
    convnextv2_pico,
    convnextv2_tiny,
)
from .model import build_convnext, preprocess_input, stage_output_names
from .model_garden import Backbone, ConvNeXt
from .weights import CheckpointMismatchError, LoadResult, load_state_dict, load_weights, read_checkpoint, save_weights


def list_models() -> list[str]:
    """Names of every ConvNeXt variant `create_model` builds."""
    return list(MODEL_NAMES)


def create_model(name: str, **kwargs):
    """Build the variant `name` (see `list_models()`); kwargs as for `build_convnext`."""
    return build_convnext(name, **kwargs)
