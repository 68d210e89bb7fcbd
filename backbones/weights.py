"""Loading weights: PyTorch state dicts (official, timm, Hugging Face) and Keras files.

Every source is first read into a flat `{key: array}` dict; its keys are renamed by a regex table
to our layer names (`stages.2.blocks.5.dwconv.weight`), arrays are transposed to Keras layouts,
and everything is checked before the first variable is assigned: a failed load changes nothing.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import re
from typing import Any, Mapping

import h5py
import numpy as np
import safetensors.numpy
import tensorflow as tf
import tf_keras

from . import arguments, torch_files
from .config import _SIZES, VERSIONS, variant_name
from .files import atomic_path, describe_content
from .layers import GRN, LayerNorm, LayerScale

# Parts of a model that one model may have and another not: a checkpoint's head is skipped by a
# model without one, and the output norms of a dense backbone are new layers, absent from
# classification checkpoints. Whole stages a truncated backbone (max_level < 5) lacks are skipped too.
OPTIONAL_PREFIXES = ("head.", "output_norms.")

_B = r"(\d+)"
_RULES: dict[str, list[tuple[str, str]]] = {
    # facebookresearch/ConvNeXt and ConvNeXt-V2 (classification and dense backbones)
    "official": [
        (r"^downsample_layers\.0\.0\.", "stem.conv."),
        (r"^downsample_layers\.0\.1\.", "stem.norm."),
        (rf"^downsample_layers\.{_B}\.0\.", r"stages.\1.downsample.norm."),
        (rf"^downsample_layers\.{_B}\.1\.", r"stages.\1.downsample.conv."),
        (rf"^stages\.{_B}\.{_B}\.gamma$", r"stages.\1.blocks.\2.layer_scale.weight"),
        (rf"^stages\.{_B}\.{_B}\.grn\.gamma$", r"stages.\1.blocks.\2.grn.weight"),
        (rf"^stages\.{_B}\.{_B}\.grn\.beta$", r"stages.\1.blocks.\2.grn.bias"),
        (rf"^stages\.{_B}\.{_B}\.(dwconv|norm|pwconv1|pwconv2)\.", r"stages.\1.blocks.\2.\3."),
        (r"^norm\.", "head.norm."),
        (r"^head\.", "head.fc."),
        (rf"^norm{_B}\.", lambda m: f"output_norms.{int(m.group(1)) + 2}."),
    ],
    # timm (conv_mlp variants store fc1/fc2 as 1x1 convolutions; same key names)
    "timm": [
        (r"^stem\.0\.", "stem.conv."),
        (r"^stem\.1\.", "stem.norm."),
        (rf"^stages\.{_B}\.downsample\.0\.", r"stages.\1.downsample.norm."),
        (rf"^stages\.{_B}\.downsample\.1\.", r"stages.\1.downsample.conv."),
        (rf"^stages\.{_B}\.blocks\.{_B}\.conv_dw\.", r"stages.\1.blocks.\2.dwconv."),
        (rf"^stages\.{_B}\.blocks\.{_B}\.norm\.", r"stages.\1.blocks.\2.norm."),
        (rf"^stages\.{_B}\.blocks\.{_B}\.mlp\.fc1\.", r"stages.\1.blocks.\2.pwconv1."),
        (rf"^stages\.{_B}\.blocks\.{_B}\.mlp\.fc2\.", r"stages.\1.blocks.\2.pwconv2."),
        (rf"^stages\.{_B}\.blocks\.{_B}\.mlp\.grn\.", r"stages.\1.blocks.\2.grn."),
        (rf"^stages\.{_B}\.blocks\.{_B}\.gamma$", r"stages.\1.blocks.\2.layer_scale.weight"),
        (r"^head\.norm\.", "head.norm."),
        (r"^head\.fc\.", "head.fc."),
    ],
    # Hugging Face transformers: ConvNext(V2)ForImageClassification, ConvNext(V2)Backbone
    "hf": [
        (r"^embeddings\.patch_embeddings\.", "stem.conv."),
        (r"^embeddings\.layernorm\.", "stem.norm."),
        (rf"^encoder\.stages\.{_B}\.downsampling_layer\.0\.", r"stages.\1.downsample.norm."),
        (rf"^encoder\.stages\.{_B}\.downsampling_layer\.1\.", r"stages.\1.downsample.conv."),
        (rf"^encoder\.stages\.{_B}\.layers\.{_B}\.layernorm\.", r"stages.\1.blocks.\2.norm."),
        (
            rf"^encoder\.stages\.{_B}\.layers\.{_B}\.layer_scale_parameter$",
            r"stages.\1.blocks.\2.layer_scale.weight",
        ),
        (rf"^encoder\.stages\.{_B}\.layers\.{_B}\.(dwconv|pwconv1|pwconv2|grn)\.", r"stages.\1.blocks.\2.\3."),
        (r"^layernorm\.", "head.norm."),
        (r"^classifier\.", "head.fc."),
        (rf"^hidden_states_norms\.stage{_B}\.", lambda m: f"output_norms.{int(m.group(1)) + 1}."),
    ],
}
# Keys of parts other modules define (the segmentation heads), in every format: see `register_rules`.
_EXTRA_RULES: list[tuple[str, Any]] = []
# Wrappers around a backbone's own keys: DDP, transformers' base models, segmentation models.
_PREFIXES = ("module.", "convnext.", "convnextv2.", "backbone.")


@dataclasses.dataclass
class LoadResult:
    """What `load_state_dict` did: the model keys it set, and what it left alone."""

    loaded: list[str]
    missing: list[str]  # model keys without a value in the checkpoint (left as they were)
    unexpected: list[str]  # checkpoint keys the model has no place for
    skipped: list[str]  # checkpoint keys of parts the model does not have (a head, say)


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded; nothing was loaded."""


class CheckpointReadError(CheckpointError):
    """A checkpoint file cannot be read: empty, truncated, corrupt, or not a checkpoint."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not fit the model; nothing was loaded."""


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; bfloat16 has no numpy dtype
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _unwrap(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(state_dict, Mapping):
        raise CheckpointReadError(f"The checkpoint holds a {type(state_dict).__name__}, not a state dict of arrays.")
    for key in ("model", "state_dict", "model_state_dict"):
        if key in state_dict and isinstance(state_dict[key], Mapping):
            return dict(state_dict[key])
    return dict(state_dict)


def _strip(key: str) -> str:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def detect_format(keys) -> str:
    """'official', 'timm', 'hf' or 'keras' from the key names of a state dict."""
    keys = [_strip(k) for k in keys]
    if any(k.startswith("downsample_layers.") for k in keys):
        return "official"
    if any(k.startswith("stem.0.") for k in keys):
        return "timm"
    if any("embeddings.patch_embeddings." in k for k in keys):
        return "hf"
    if any(k.startswith("stem.conv/") for k in keys):
        return "keras"
    raise CheckpointReadError(
        "Unrecognised checkpoint format: expected the official ConvNeXt keys (downsample_layers.*), "
        f"timm's (stem.0.*), Hugging Face's (embeddings.patch_embeddings.*) or Keras'; first keys: {keys[:5]}"
    )


def _rename(key: str, fmt: str) -> str | None:
    key = _strip(key)
    for pattern, repl in _RULES[fmt] + _EXTRA_RULES:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return None


def register_rules(rules: list[tuple[str, Any]]) -> None:
    """Key renaming rules (regex, replacement) for parts defined outside `backbones/`, tried after a
    format's own rules; the owner of those parts registers them (`tasks.segmentation` does for UperNet)."""
    _EXTRA_RULES.extend(r for r in rules if r not in _EXTRA_RULES)


def head_classes(state_dict: Mapping[str, Any], head: str = "head.fc") -> int:
    """Number of classes of a checkpoint's classifier `head` (any supported format), 0 without one."""
    state_dict = _unwrap(state_dict)
    fmt = detect_format(state_dict)
    for key, value in state_dict.items():
        if (key if fmt == "keras" else _rename(key, fmt)) in (f"{head}.bias", f"{head}/bias"):
            return int(np.shape(value)[0])
    return 0


def _keras_value(layer: tf_keras.layers.Layer, param: str, value: np.ndarray) -> tuple[str, np.ndarray] | None:
    """Our weight name and the array in its Keras layout for the PyTorch `param` of `layer`."""
    if isinstance(layer, tf_keras.layers.DepthwiseConv2D):
        if param == "weight":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
            return "depthwise_kernel", value.transpose(2, 3, 0, 1) if value.ndim == 4 else value
        return ("bias", value) if param == "bias" else None
    if isinstance(layer, tf_keras.layers.Conv2D):
        if param == "weight":  # (out, in, kh, kw) -> (kh, kw, in, out)
            return "kernel", value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
        return ("bias", value) if param == "bias" else None
    if isinstance(layer, tf_keras.layers.Dense):
        if param == "weight":  # (out, in) or a 1x1 conv's (out, in, 1, 1) -> (in, out)
            if value.ndim == 4 and value.shape[2:] == (1, 1):
                value = value[:, :, 0, 0]
            return "kernel", value.T if value.ndim == 2 else value
        return ("bias", value) if param == "bias" else None
    if isinstance(layer, tf_keras.layers.BatchNormalization):
        name = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
        return (name[param], value) if param in name else None
    if isinstance(layer, (LayerNorm, GRN, LayerScale)):
        name = {"weight": "gamma", "bias": "beta"}.get(param)
        if name is None or (isinstance(layer, LayerScale) and name != "gamma"):
            return None
        if value.ndim > 1 and all(d == 1 for d in value.shape[:-1]):  # GRN's (1, 1, 1, C)
            value = value.reshape(-1)
        return name, value
    return None


def model_variables(model: tf_keras.Model) -> dict[str, tf.Variable]:
    """`{'stem.conv/kernel': variable, ...}` over every layer, nested models included."""
    return {
        f"{layer.name}/{w.name.split('/')[-1].split(':')[0]}": w for layer in _all_layers(model) for w in layer.weights
    }


def load_state_dict(
    model: tf_keras.Model,
    state_dict: Mapping[str, Any],
    strict: bool = True,
    skip_head: bool = False,
    allow_nonfinite: bool = False,
) -> LoadResult:
    """Load a PyTorch-style state dict (official, timm or Hugging Face keys) into `model`.

    Arrays may be numpy arrays or torch tensors; a top-level `model` key (the official .pth files)
    is unwrapped. With `strict=True` a missing key, an unexpected key or a shape mismatch raises
    one `CheckpointMismatchError` that lists them and nothing is assigned. Keys of a head or of
    output norms the model lacks are skipped; `skip_head=True` also leaves the model's classifier
    as it is (for a 21841-class checkpoint, say). A value holding NaN or Inf raises a
    `CheckpointError` naming its key unless `allow_nonfinite=True`.
    """
    state_dict = _unwrap(state_dict)
    fmt = detect_format(state_dict)
    variables = model_variables(model)
    by_name = {layer.name: layer for layer in _all_layers(model)}
    optional = OPTIONAL_PREFIXES + tuple(
        f"stages.{i}." for i in range(4) if f"stages.{i}.blocks.0.dwconv" not in by_name
    )
    assign: dict[str, tuple[str, np.ndarray]] = {}
    unexpected, skipped, mismatched = [], [], []
    for src, value in state_dict.items():
        value = _to_numpy(value)
        if fmt == "keras":
            target, array = src, value
        else:
            name = _rename(src, fmt)
            if name is None or name.endswith("num_batches_tracked"):
                if name is None and not src.endswith("num_batches_tracked"):
                    unexpected.append(src)
                continue
            layer_name, param = name.rsplit(".", 1)
            if layer_name not in by_name:
                (skipped if layer_name.startswith(optional) else unexpected).append(src)
                continue
            converted = _keras_value(by_name[layer_name], param, value)
            if converted is None:
                unexpected.append(src)
                continue
            target, array = f"{layer_name}/{converted[0]}", converted[1]
        if target not in variables:
            (skipped if target.startswith(optional) else unexpected).append(src)
            continue
        if skip_head and target.startswith("head.fc/"):
            skipped.append(src)
            continue
        if tuple(array.shape) != tuple(variables[target].shape):
            mismatched.append((src, target, value.shape, array.shape, tuple(variables[target].shape)))
            continue
        assign[target] = (src, array)
    missing = [
        k for k in variables
        if k not in assign and not (skip_head and k.startswith("head.fc/"))
        and not k.startswith("output_norms.")
        and not any(m[1] == k for m in mismatched)
    ]
    if strict and (missing or unexpected or mismatched):
        raise CheckpointMismatchError(_mismatch_message(model, fmt, missing, unexpected, mismatched, state_dict))
    if not allow_nonfinite:
        for src, array in assign.values():
            if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
                raise CheckpointError(
                    f"Checkpoint value {src!r} holds NaN or Inf ({int(np.sum(~np.isfinite(array)))} of {array.size}); "
                    "nothing was loaded. Pass allow_nonfinite=True to load it anyway."
                )
    tf_keras.backend.batch_set_value(
        [(variables[target], array.astype(variables[target].dtype.as_numpy_dtype)) for target, (_, array) in assign.items()]
    )
    return LoadResult(loaded=sorted(assign), missing=missing, unexpected=unexpected, skipped=skipped)


def _all_layers(model: tf_keras.Model):
    for layer in model.layers:
        if isinstance(layer, tf_keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


def _listing(keys: list[str], what: str, most: int = 10) -> str:
    rest = f" ... and {len(keys) - most} more" if len(keys) > most else ""
    return f"- {len(keys)} {what}: {', '.join(keys[:most])}{rest}"


def guess_variant(state_dict: Mapping[str, Any], fmt: str) -> str | None:
    """The variant a checkpoint's shapes belong to ('convnext_tiny'), or its depths and widths."""
    depths, dims, grn = {}, {}, False
    for key, value in state_dict.items():
        name = key if fmt == "keras" else _rename(key, fmt)
        m = re.match(r"^stages\.(\d)\.blocks\.(\d+)\.(\w+)[./]", name or "")
        if not m:
            continue
        stage, blk, part = int(m.group(1)), int(m.group(2)), m.group(3)
        depths[stage] = max(depths.get(stage, 0), blk + 1)
        grn |= part == "grn"
        if part == "norm":
            dims[stage] = int(np.shape(value)[-1])
    if sorted(depths) != [0, 1, 2, 3] or sorted(dims) != [0, 1, 2, 3]:
        return None
    arch = (tuple(depths[i] for i in range(4)), tuple(dims[i] for i in range(4)))
    version = "v2" if grn else "v1"
    for size in VERSIONS[version]:
        if _SIZES[size] == arch:
            return variant_name(version, size)
    return f"ConvNeXt {version} with depths {arch[0]} and widths {arch[1]}"


def _mismatch_message(model, fmt, missing, unexpected, mismatched, state_dict) -> str:
    lines = [f"Checkpoint ({fmt} format) does not fit model {model.name!r}; nothing was loaded."]
    guess = guess_variant(state_dict, fmt)
    if guess:
        lines.append(f"- the checkpoint looks like {guess}")
    for src, target, src_shape, shape, model_shape in mismatched[:5]:
        if target.startswith("head.fc/"):
            lines.append(
                f"- head: checkpoint key {src!r} has shape {tuple(src_shape)} but the model's {target!r} is "
                f"{model_shape} (another number of classes?). Pass skip_head=True to keep the model's classifier."
            )
        else:
            lines.append(
                f"- shape mismatch at {src!r}: checkpoint {tuple(src_shape)} (as Keras {tuple(shape)}) "
                f"vs model {target!r} {model_shape}: a checkpoint of another variant?"
            )
    if len(mismatched) > 5:
        lines.append(f"- ... and {len(mismatched) - 5} more shape mismatches")
    if missing:
        lines.append(_listing(missing, "missing in the checkpoint"))
    if unexpected:
        lines.append(_listing(unexpected, "unexpected in the checkpoint"))
    return "\n".join(lines)


def export_state_dict(model: tf_keras.Model, format: str = "hf") -> dict[str, np.ndarray]:
    """`model`'s weights as a state dict in PyTorch layouts: the reverse of `load_state_dict`.

    `format='hf'`: Hugging Face transformers' names, for a classifier (`ConvNextForImageClassification`
    or `ConvNextV2ForImageClassification`) or a backbone without its output norms.
    """
    arguments.choice("format", format, ["hf"])
    variables = model_variables(model)
    prefix = "convnextv2" if any(k.endswith(".grn/gamma") for k in variables) else "convnext"
    out = {}
    for key, var in variables.items():
        layer, weight = key.split("/")
        if layer.startswith("output_norms."):
            continue
        value = var.numpy()
        if weight == "depthwise_kernel":  # (kh, kw, C, 1) -> (C, 1, kh, kw)
            value = value.transpose(2, 3, 0, 1)
        elif weight == "kernel":  # conv (kh, kw, in, out) -> (out, in, kh, kw); dense (in, out) -> (out, in)
            value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
        parts = layer.split(".")
        param = {"kernel": "weight", "depthwise_kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}[weight]
        if layer == "stem.conv":
            name = f"{prefix}.embeddings.patch_embeddings.{param}"
        elif layer == "stem.norm":
            name = f"{prefix}.embeddings.layernorm.{param}"
        elif layer == "head.norm":
            name = f"{prefix}.layernorm.{param}"
        elif layer == "head.fc":
            name = f"classifier.{param}"
        elif parts[2] == "downsample":
            name = f"{prefix}.encoder.stages.{parts[1]}.downsampling_layer.{0 if parts[3] == 'norm' else 1}.{param}"
        else:
            sub = {"norm": "layernorm", "layer_scale": "layer_scale_parameter"}.get(parts[4], parts[4])
            base = f"{prefix}.encoder.stages.{parts[1]}.layers.{parts[3]}.{sub}"
            name = base if sub == "layer_scale_parameter" else f"{base}.{param}"
            if sub == "grn":
                value = value.reshape(1, 1, 1, -1)
        out[name] = value
    return out


_FORMATS = {  # file extension -> (what it is, reader)
    ".pth": "PyTorch checkpoint", ".pt": "PyTorch checkpoint", ".bin": "PyTorch checkpoint",
    ".safetensors": "safetensors file", ".h5": "Keras HDF5 weights file",
}


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a checkpoint file into a flat `{key: array}` dict.

    .pth/.pt/.bin, .safetensors and Keras .h5/.weights.h5 files, all without PyTorch. A file
    that cannot be read raises `CheckpointReadError` naming it, its format and what is wrong.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path!r}.")
    ext = os.path.splitext(path.lower())[1]
    if ext not in _FORMATS:
        raise CheckpointReadError(f"Unsupported checkpoint file {path!r}: expected .pth, .pt, .bin, .safetensors or .h5.")
    what = _FORMATS[ext]
    if os.path.getsize(path) == 0:
        raise CheckpointReadError(f"Cannot read {path} as a {what}: the file is empty (0 bytes).")
    if ext == ".safetensors":
        read = _read_safetensors
    elif ext == ".h5":
        read = _read_keras_h5
    else:
        read = _read_torch
    try:
        state_dict = read(path)
    except CheckpointReadError:
        raise
    except Exception as e:  # each library has its own errors for a bad file
        raise CheckpointReadError(
            f"Cannot read {path} as a {what}: truncated, corrupt or not a {what} ({describe_content(path)}; "
            f"{type(e).__name__}: {_first_line(e)})"
        ) from e
    if not state_dict:
        raise CheckpointReadError(f"{path} holds no weights.")
    return state_dict


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else "no message"


def _read_torch(path: str) -> dict:
    """A PyTorch checkpoint's state dict, read with numpy (see `torch_files`): torch is not needed."""
    try:
        return _unwrap(torch_files.load(path))
    except torch_files.UnsafeCheckpointError as e:
        raise CheckpointReadError(
            f"Cannot read {path} as a PyTorch checkpoint: it holds Python objects other than tensors: {e}."
        ) from e
    except pickle.UnpicklingError as e:
        raise CheckpointReadError(f"Cannot read {path} as a PyTorch checkpoint: {e} ({describe_content(path)}).") from e


def _read_safetensors(path: str) -> dict:
    return safetensors.numpy.load_file(path)


def _read_keras_h5(path: str) -> dict[str, np.ndarray]:
    """Weights of a Keras HDF5 file by our names: `{'stem.conv/kernel': array, ...}`.

    Files of this library (and of any tf_keras model with our layer names), and those of the
    original TensorFlow port (zibbini/convnext-v2_tensorflow: `stem`, `down_sample_k`,
    `block_{i}_{j}`, `head`), whose nested layers have generated names and are read by position.
    """
    out = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise CheckpointReadError(
                f"{path} is an HDF5 file without Keras' 'layer_names': not an HDF5 weights file in the layout "
                "save_weights writes (Keras' own model.save_weights('*.weights.h5') and Keras 3 use another one; "
                "load such a file with model.load_weights, into the same architecture)."
            )
        layers = [n.decode() if isinstance(n, bytes) else n for n in root.attrs["layer_names"]]
        port = "stem" in layers and "block_0_0" in layers
        for layer in layers:
            group = root[layer]
            names = [w.decode() if isinstance(w, bytes) else w for w in group.attrs["weight_names"]]
            if port:
                if names:
                    out.update(_port_weights(path, layer, [(n, np.asarray(group[n])) for n in names]))
                continue
            for weight in names:
                # 'stem.conv/kernel:0'; a nested model's group holds its layers' full names
                parts = weight.split(":")[0].split("/")
                key = "/".join(parts[-2:]) if len(parts) > 1 else f"{layer}/{parts[0]}"
                out[key] = np.asarray(group[weight])
    return out


# The original TensorFlow port's nested models, their weights in order (their layers' names are
# generated, so only the order and the kind of each weight are fixed).
_PORT_LAYOUTS = {
    "stem": ["stem.conv/kernel", "stem.conv/bias", "stem.norm/gamma", "stem.norm/beta"],
    "down_sample": ["downsample.norm/gamma", "downsample.norm/beta", "downsample.conv/kernel", "downsample.conv/bias"],
    "block_v1": ["dwconv/depthwise_kernel", "dwconv/bias", "norm/gamma", "norm/beta", "pwconv1/kernel",
                 "pwconv1/bias", "pwconv2/kernel", "pwconv2/bias", "layer_scale/gamma"],
    "block_v2": ["dwconv/depthwise_kernel", "dwconv/bias", "norm/gamma", "norm/beta", "pwconv1/kernel",
                 "pwconv1/bias", "grn/gamma", "grn/beta", "pwconv2/kernel", "pwconv2/bias"],
    "head": ["head.norm/gamma", "head.norm/beta", "head.fc/kernel", "head.fc/bias"],
}


def _port_weights(path: str, layer: str, weights: list[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Our keys for the weights of one of the original port's layers (see `_PORT_LAYOUTS`)."""
    if layer == "stem" or layer == "head":
        keys = _PORT_LAYOUTS[layer]
    elif m := re.fullmatch(r"down_sample(?:_(\d))?", layer):
        stage = int(m.group(1) or 0) + 1
        keys = [f"stages.{stage}.{k}" for k in _PORT_LAYOUTS["down_sample"]]
    elif m := re.fullmatch(r"block_(\d)_(\d+)", layer):
        layout = _PORT_LAYOUTS["block_v2" if len(weights) == 10 else "block_v1"]
        keys = [f"stages.{m.group(1)}.blocks.{m.group(2)}.{k}" for k in layout]
    else:
        raise CheckpointReadError(f"{path}: unknown layer {layer!r} in a file of the original TensorFlow port.")
    kinds = [name.split(":")[0].split("/")[-1] for name, _ in weights]
    if kinds != [k.split("/")[-1] for k in keys]:
        raise CheckpointReadError(
            f"{path}: layer {layer!r} of the original TensorFlow port holds {kinds}; expected {[k.split('/')[-1] for k in keys]}."
        )
    return {key: value.reshape(-1) if "grn/" in key else value for key, (_, value) in zip(keys, weights)}


def load_weights(
    model: tf_keras.Model, path: str | os.PathLike, strict: bool = True, skip_head: bool = False,
    allow_nonfinite: bool = False,
) -> LoadResult:
    """Load a checkpoint file (any format `read_checkpoint` reads) into `model`."""
    state_dict = read_checkpoint(path)
    try:
        return load_state_dict(model, state_dict, strict=strict, skip_head=skip_head, allow_nonfinite=allow_nonfinite)
    except CheckpointError as e:
        raise type(e)(f"{os.fspath(path)}: {e}") from e


def save_weights(model: tf_keras.Model, path: str | os.PathLike) -> None:
    """Write `model`'s weights to a Keras .h5 file atomically (a temporary file, then a rename)."""
    path = os.fspath(path)
    if not path.lower().endswith(".h5"):
        raise ValueError(
            f"save_weights writes Keras HDF5 files, read back by their extension: {path!r} needs to end "
            "in .weights.h5 (or .h5)."
        )
    try:
        with atomic_path(path, ".h5") as tmp:
            model.save_weights(tmp)
    except OSError as e:
        raise OSError(f"Cannot write {path}: {e.strerror or e}.") from e
