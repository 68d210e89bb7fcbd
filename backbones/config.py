"""The ConvNeXt variants: depths and widths of V1 and V2, as in the official models and timm."""
from __future__ import annotations

import dataclasses

from . import arguments

# size -> (depths, widths); V1 atto..nano are timm's additions, the rest are the papers'.
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
# Variants from base up are large enough to run only in `make test-all`.
LARGE_SIZES = ("base", "large", "xlarge", "huge")
MIN_INPUT_SIZE = 32


def model_name(version: str, size: str) -> str:
    """`convnext_tiny` for ('v1', 'tiny'), `convnextv2_tiny` for ('v2', 'tiny')."""
    return f"convnext{'' if version == 'v1' else 'v2'}_{size}"


MODEL_NAMES: tuple[str, ...] = tuple(
    model_name(version, size) for version, sizes in VERSIONS.items() for size in sizes
)


@dataclasses.dataclass(frozen=True)
class ConvNeXtConfig:
    """Architecture of one ConvNeXt: the only thing V1 and V2 differ in is `use_grn`.

    V1 blocks end with layer scale (`layer_scale_init_value > 0`), V2 blocks have GRN before the
    second pointwise layer and no layer scale.
    """

    name: str
    version: str
    size: str
    depths: tuple[int, ...]
    dims: tuple[int, ...]
    drop_path_rate: float = 0.0
    layer_scale_init_value: float = 1e-6
    head_init_scale: float = 1.0

    @property
    def use_grn(self) -> bool:
        return self.version == "v2"

    @classmethod
    def from_name(cls, name: str, **overrides) -> "ConvNeXtConfig":
        """The config of a named variant (`convnext_tiny`, `convnextv2_huge`, ...)."""
        if not isinstance(name, str) or name not in MODEL_NAMES:
            raise ValueError(f"Unknown ConvNeXt model {name!r}. Valid names: {', '.join(MODEL_NAMES)}.")
        version = "v2" if name.startswith("convnextv2_") else "v1"
        return cls.from_size(name.split("_", 1)[1], version, **overrides)

    @classmethod
    def from_size(cls, model_id: str, version: str = "v1", **overrides) -> "ConvNeXtConfig":
        """The config of size `model_id` ('atto' ... 'huge') in `version` ('v1' or 'v2')."""
        arguments.choice("version", version, sorted(VERSIONS))
        if not isinstance(model_id, str) or model_id not in VERSIONS[version]:
            raise ValueError(
                f"model_id must be one of {', '.join(VERSIONS[version])} for ConvNeXt {version}; got {model_id!r}."
            )
        lsv = overrides.pop("layer_scale_init_value", None)
        if lsv is not None:
            lsv = arguments.number("layer_scale_init_value", lsv, lo=0.0)
        if version == "v2" and lsv:
            raise ValueError("ConvNeXt V2 has no layer scale (GRN replaces it): drop layer_scale_init_value.")
        if lsv is None:
            lsv = 1e-6 if version == "v1" else 0.0
        if "drop_path_rate" in overrides:
            overrides["drop_path_rate"] = arguments.number("drop_path_rate", overrides["drop_path_rate"], 0.0, 1.0)
        if "head_init_scale" in overrides:
            overrides["head_init_scale"] = arguments.number("head_init_scale", overrides["head_init_scale"], lo=0.0)
        depths, dims = _SIZES[model_id]
        return cls(
            name=model_name(version, model_id), version=version, size=model_id, depths=depths, dims=dims,
            layer_scale_init_value=float(lsv), **overrides,
        )
