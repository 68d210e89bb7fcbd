"""Every published ConvNeXt checkpoint, in one table.

Names: 'imagenet_1k' (trained on ImageNet-1k), 'imagenet_22k' (pretrained on ImageNet-22k, then
fine-tuned on 1k: the meaning the original TensorFlow port gave it), 'imagenet_22k_pretrain'
(21841-class head), 'fcmae' (V2 self-supervised, no head), 'fcmae_imagenet_1k' (V2 FCMAE then
fine-tuned on 1k); the modules of other models register theirs ('ade20k' UperNets, in
`convnext_tf.tasks.segmentation`). timm's tags are aliases. The resolution comes from the input
shape (224, 384, or 512 for V2-huge).
"""
from __future__ import annotations

import dataclasses
import os

FB = "https://dl.fbaipublicfiles.com"
HF = "https://huggingface.co"
BASE_URL_ENV = "CONVNEXT_TF_BASE_URL"  # replaces both hosts (a mirror, or a test server)

ALIASES = {
    "in1k": "imagenet_1k", "fb_in1k": "imagenet_1k", "imagenet": "imagenet_1k",
    "in22k_ft_in1k": "imagenet_22k", "fb_in22k_ft_in1k": "imagenet_22k", "imagenet_22k_ft_1k": "imagenet_22k",
    "in22k": "imagenet_22k_pretrain", "fb_in22k": "imagenet_22k_pretrain",
    "fcmae_ft_in1k": "fcmae_imagenet_1k", "fcmae_ft_in22k_in1k": "imagenet_22k",
    "d2_in1k": "imagenet_1k", "d1h_in1k": "imagenet_1k",
}


@dataclasses.dataclass(frozen=True)
class Source:
    """One place a checkpoint's file is published."""

    host: str  # FB or HF
    path: str
    sha256: str | None = None

    @property
    def url(self) -> str:
        return f"{os.environ.get(BASE_URL_ENV, self.host).rstrip('/')}/{self.path}"

    @property
    def ext(self) -> str:
        return os.path.splitext(self.path)[1]


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One published checkpoint: where its file is (in order of preference) and what its head is.

    The same weights are often published twice: by Meta (.pth / .pt) and by timm on the Hugging
    Face hub (.safetensors, read without PyTorch and without unpickling); safetensors come first.
    """

    model: str  # our variant name ('convnext_tiny') or 'upernet_convnext_tiny'
    tag: str  # 'imagenet_1k', 'imagenet_22k', ...
    resolution: int
    sources: tuple[Source, ...]
    classes: int  # 0: no head
    top1: float | None = None  # ImageNet-1k top-1 from the papers (mIoU for ADE20K)

    def filename(self, source: Source) -> str:
        """The name of `source`'s file in the download cache."""
        return f"{self.model}_{self.tag}_{self.resolution}{source.ext}"


def _timm_source(repo: str) -> Source:
    return Source(HF, f"timm/{repo}/resolve/main/model.safetensors")


def _v1(size, tag, res, path, classes, top1, timm=None):
    sources = ((_timm_source(f"convnext_{size}.{timm}"),) if timm else ()) + (Source(FB, f"convnext/{path}"),)
    return Checkpoint(f"convnext_{size}", tag, res, sources, classes, top1)


def _v2(size, tag, res, path, classes, top1, timm):
    sources = (_timm_source(f"convnextv2_{size}.{timm}"), Source(FB, f"convnext/convnextv2/{path}"))
    return Checkpoint(f"convnextv2_{size}", tag, res, sources, classes, top1)


def _timm(model, tag, res, repo, classes, top1=None):
    return Checkpoint(model, tag, res, (_timm_source(repo),), classes, top1)


CHECKPOINTS: list[Checkpoint] = [
    # ConvNeXt V1, ImageNet-1k (paper, table 1)
    *[_v1(s, "imagenet_1k", 224, f"convnext_{s}_1k_224_ema.pth", 1000, t, "fb_in1k")
      for s, t in (("tiny", 82.1), ("small", 83.1), ("base", 83.8), ("large", 84.3))],
    _v1("base", "imagenet_1k", 384, "convnext_base_1k_384.pth", 1000, 85.1),
    _v1("large", "imagenet_1k", 384, "convnext_large_1k_384.pth", 1000, 85.5),
    # ImageNet-22k pretrained (21841 classes) and fine-tuned on 1k
    *[_v1(s, "imagenet_22k_pretrain", 224, f"convnext_{s}_22k_224.pth", 21841, None, "fb_in22k")
      for s in ("tiny", "small", "base", "large", "xlarge")],
    *[_v1(s, "imagenet_22k", 224, f"convnext_{s}_22k_1k_224{'_ema' if s == 'xlarge' else ''}.pth", 1000, t,
          "fb_in22k_ft_in1k")
      for s, t in (("tiny", 82.9), ("small", 84.6), ("base", 85.8), ("large", 86.6), ("xlarge", 87.0))],
    *[_v1(s, "imagenet_22k", 384, f"convnext_{s}_22k_1k_384{'_ema' if s == 'xlarge' else ''}.pth", 1000, t,
          "fb_in22k_ft_in1k_384")
      for s, t in (("tiny", 84.1), ("small", 85.8), ("base", 86.8), ("large", 87.5), ("xlarge", 87.8))],
    # timm's own small V1 models
    *[_timm(f"convnext_{s}", "imagenet_1k", 224, f"convnext_{s}.{d}_in1k", 1000)
      for s, d in (("atto", "d2"), ("femto", "d1"), ("pico", "d1"), ("nano", "d1h"))],
    # ConvNeXt V2: FCMAE pretrained (timm's conversion of the sparse encoder; no head)
    *[_timm(f"convnextv2_{s}", "fcmae", 224, f"convnextv2_{s}.fcmae", 0)
      for s in ("atto", "femto", "pico", "nano", "tiny", "base", "large", "huge")],
    # FCMAE, then fine-tuned on ImageNet-1k (paper, table 2)
    *[_v2(s, "fcmae_imagenet_1k", 224, f"im1k/convnextv2_{s}_1k_224_ema.pt", 1000, t, "fcmae_ft_in1k")
      for s, t in (("atto", 76.7), ("femto", 78.5), ("pico", 80.3), ("nano", 81.9), ("tiny", 83.0),
                   ("base", 84.9), ("large", 85.8), ("huge", 86.3))],
    # FCMAE, ImageNet-22k fine-tuning, then 1k
    *[_v2(s, "imagenet_22k", r, f"im22k/convnextv2_{s}_22k_{r}_ema.pt", 1000, t,
          "fcmae_ft_in22k_in1k" + ("" if r == 224 else f"_{r}"))
      for s, r, t in (("nano", 224, 82.1), ("nano", 384, 83.4), ("tiny", 224, 83.9), ("tiny", 384, 85.1),
                      ("base", 224, 86.8), ("base", 384, 87.7), ("large", 224, 87.3), ("large", 384, 88.2),
                      ("huge", 384, 88.7), ("huge", 512, 88.9))],
]


def register(checkpoints: list[Checkpoint]) -> None:
    """Add the checkpoints of a model defined elsewhere (the UperNets of `tasks.segmentation`)."""
    known = {(c.model, c.tag, c.resolution) for c in CHECKPOINTS}
    CHECKPOINTS.extend(c for c in checkpoints if (c.model, c.tag, c.resolution) not in known)


def canonical_tag(name: str) -> str:
    """'imagenet_1k' for any of its aliases."""
    return ALIASES.get(name, name)


def available(model: str) -> list[tuple[str, int]]:
    """(tag, resolution) of every checkpoint of `model`."""
    return [(c.tag, c.resolution) for c in CHECKPOINTS if c.model == model]


def find(model: str, name: str, resolution: int | None = None) -> Checkpoint:
    """The checkpoint called `name` (or an alias) of `model` at `resolution`.

    'imagenet_1k' of a V2 variant is its 'fcmae_imagenet_1k' (V2 publishes no other ImageNet-1k
    classifier), so one name gives ImageNet-1k weights for every variant.

    Without a resolution (input size None) the lowest one is taken. An unknown name, or one the
    variant does not have, raises a ValueError that lists what the variant has.
    """
    tag = canonical_tag(name)
    matches = [c for c in CHECKPOINTS if c.model == model and c.tag == tag]
    if not matches and tag == "imagenet_1k":  # V2 has one ImageNet-1k classifier: FCMAE, then fine-tuned
        matches = [c for c in CHECKPOINTS if c.model == model and c.tag == "fcmae_imagenet_1k"]
    if resolution is not None and matches:
        exact = [c for c in matches if c.resolution == resolution]
        # other sizes use the nearest published resolution at or below them (224 for 256, say)
        below = sorted((c for c in matches if c.resolution <= resolution), key=lambda c: -c.resolution)
        matches = exact or below or matches
    if not matches:
        have = ", ".join(f"'{t}' ({r})" for t, r in available(model)) or "none"
        raise ValueError(
            f"No checkpoint {name!r} for {model}. Published for {model}: {have}. "
            "Or pass a local file: weights='/path/to/checkpoint.pth'."
        )
    return sorted(matches, key=lambda c: c.resolution)[0]


def is_name(weights: str | None) -> bool:
    """True for a catalogue name, False for a path (anything with a separator or an extension)."""
    return bool(weights) and os.sep not in weights and "/" not in weights and not os.path.splitext(weights)[1]
