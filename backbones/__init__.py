"""ConvNeXt V1 and V2 in tf_keras: model builders, layers and weight loading.

Modules, each importing only those above it: `arguments`, `files`, `config` (variants and
constants), `layers`, `inference` (weights as graph constants for inference), `torch_files`,
`weights` (reading and key conversion), `catalogue` (published checkpoints), `download` (the cache), `model` (builders), `convnext_v1` /
`convnext_v2`, `backbone` (`ConvNeXtBackbone`), `model_garden` (its Model Garden config and
builder, imported by `convnext_tf.tasks.registry_imports`, not here: plain Keras use needs no Model Garden).
"""
from . import catalogue, convnext_v1, convnext_v2, download
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
from .inference import inference_function
from .model import build_convnext, preprocess_input, stage_output_names
from .weights import (
    CheckpointError,
    CheckpointMismatchError,
    CheckpointReadError,
    LoadResult,
    export_state_dict,
    load_state_dict,
    load_weights,
    read_checkpoint,
    save_weights,
)


def list_models() -> list[str]:
    """Names of every ConvNeXt variant `create_model` builds."""
    return list(MODEL_NAMES)


def create_model(name: str, **kwargs):
    """Build the variant `name` (see `list_models()`); kwargs as for `build_convnext`."""
    return build_convnext(name, **kwargs)
