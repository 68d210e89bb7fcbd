"""The ConvNeXt variants (depths and widths of V1 and V2, as the official models and timm) and the
constants every layer shares.

A variant is named `convnext_{model_id}` (V1) or `convnextv2_{model_id}` (V2); Model Garden's
configs name it by the pair (`model_id`, `version`). Adding a variant takes one row in `_SIZES`
and its name in `SIZES_V1` / `SIZES_V2` (plus its catalogue rows, if weights are published).
"""
from __future__ import annotations

import dataclasses

from . import arguments

# model_id -> (depths, widths); V1 atto..nano are timm's additions, the rest are the papers'.
_SIZES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
    "huge": ((3, 3, 27, 3), (352, 704, 1408, 2816)),
}
SIZES_V1 = ("atto", "femto", "pico", "nano", "tiny", "small", "base", "large", "xlarge")
SIZES_V2 = ("atto", "femto", "pico", "nano", "tiny", "base", "large", "huge")
VERSIONS = {"v1": SIZES_V1, "v2": SIZES_V2}
MIN_INPUT_SIZE = 32  # the total stride: smaller images have no stride-32 map
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB in [0, 1]; every published checkpoint was trained on these
IMAGENET_STD = (0.229, 0.224, 0.225)


def variant_name(version: str, model_id: str) -> str:
    """`convnext_tiny` for ('v1', 'tiny'), `convnextv2_tiny` for ('v2', 'tiny')."""
    return f"convnext{'' if version == 'v1' else 'v2'}_{model_id}"


MODEL_NAMES: tuple[str, ...] = tuple(
    variant_name(version, model_id) for version, sizes in VERSIONS.items() for model_id in sizes
)


@dataclasses.dataclass(frozen=True)
class ConvNeXtConfig:
    """Architecture of one ConvNeXt: the only thing V1 and V2 differ in is `use_grn`.

    V1 blocks end with layer scale (`layer_scale_init_value > 0`), V2 blocks have GRN before the
    second pointwise layer and no layer scale. A named variant comes from `from_name` (or
    `from_size`); any other depths and widths make a custom one, e.g.
    `ConvNeXtConfig(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), version="v2")`.
    """

    depths: tuple[int, ...]
    dims: tuple[int, ...]
    version: str = "v1"
    variant: str = "convnext_custom"  # the Keras name of models built from it
    drop_path_rate: float = 0.0
    layer_scale_init_value: float | None = None  # None: 1e-6 for V1, none for V2
    head_init_scale: float = 1.0

    def __post_init__(self):
        set_ = lambda field, value: object.__setattr__(self, field, value)  # noqa: E731 (frozen)
        arguments.choice("version", self.version, sorted(VERSIONS))
        for field in ("depths", "dims"):
            value = getattr(self, field)
            if not isinstance(value, (tuple, list)) or len(value) != 4:
                raise ValueError(f"{field} must be four positive integers, one per stage; got {value!r}.")
            set_(field, tuple(arguments.integer(f"{field}[{i}]", v, lo=1) for i, v in enumerate(value)))
        lsv = self.layer_scale_init_value
        if lsv is not None:
            lsv = arguments.number("layer_scale_init_value", lsv, lo=0.0)
        if self.version == "v2" and lsv:
            raise ValueError("ConvNeXt V2 has no layer scale (GRN replaces it): drop layer_scale_init_value.")
        set_("layer_scale_init_value", (1e-6 if self.version == "v1" else 0.0) if lsv is None else lsv)
        set_("drop_path_rate", arguments.number("drop_path_rate", self.drop_path_rate, 0.0, 1.0))
        set_("head_init_scale", arguments.number("head_init_scale", self.head_init_scale, lo=0.0))

    @property
    def use_grn(self) -> bool:
        return self.version == "v2"

    @property
    def model_id(self) -> str | None:
        """'tiny' for a named variant's depths and widths, None for a custom one."""
        for model_id in VERSIONS[self.version]:
            if _SIZES[model_id] == (self.depths, self.dims):
                return model_id
        return None

    @classmethod
    def from_name(cls, name: str, **overrides) -> "ConvNeXtConfig":
        """The config of a named variant (`convnext_tiny`, `convnextv2_huge`, ...)."""
        if not isinstance(name, str) or name not in MODEL_NAMES:
            raise ValueError(f"Unknown ConvNeXt model {name!r}. Valid names: {', '.join(MODEL_NAMES)}.")
        version = "v2" if name.startswith("convnextv2_") else "v1"
        return cls.from_size(name.split("_", 1)[1], version, **overrides)

    @classmethod
    def from_size(cls, model_id: str, version: str | None = None, **overrides) -> "ConvNeXtConfig":
        """The config of `model_id` ('atto' ... 'huge', or a variant name such as 'convnextv2_atto').

        `version` ('v1' or 'v2', default 'v1') must agree with a variant name's.
        """
        if isinstance(model_id, str) and model_id in MODEL_NAMES:
            named = "v2" if model_id.startswith("convnextv2_") else "v1"
            if version not in (None, named):
                raise ValueError(f"model_id {model_id!r} is a ConvNeXt {named} variant, but version is {version!r}.")
            model_id, version = model_id.split("_", 1)[1], named
        version = arguments.choice("version", version or "v1", sorted(VERSIONS))
        if not isinstance(model_id, str) or model_id not in VERSIONS[version]:
            raise ValueError(
                f"model_id must be one of {', '.join(VERSIONS[version])} for ConvNeXt {version} (or a variant "
                f"name such as {variant_name(version, 'tiny')!r}); got {model_id!r}."
            )
        depths, dims = _SIZES[model_id]
        return cls(depths, dims, version, variant_name(version, model_id), **overrides)
