"""Initial checkpoints in Model Garden's format, for a task's `init_checkpoint`.

Model Garden restores `init_checkpoint` with `tf.train.Checkpoint(backbone=model.backbone)`
(and `decoder=model.decoder`), matching objects by their place in the model, so the saved
backbone must have the same structure as the one the experiment builds. The checkpoints written
here carry that structure (version, depths, dims, levels, output norms, the decoder's config) so
that our tasks name a mismatch before Model Garden reports its generic one.
"""
from __future__ import annotations

import json
import os

import tensorflow as tf
import tf_keras

from convnext_tf.backbones import ConvNeXtBackbone, files
from convnext_tf.backbones.weights import CheckpointMismatchError

STRUCTURE_KEY = "convnext_tf_structure"
_DECODER_TYPES = {"UperNet": "upernet", "FPN": "exact_fpn"}  # our neck classes -> Model Garden decoder types


def _config_path(part: str, key: str, structure_of_part: dict) -> str:
    """The experiment's config field of a structure entry, for error messages."""
    if part == "backbone":
        return f"task.model.backbone.convnext.{key}"
    if key in ("min_level", "max_level"):
        return f"task.model.{key}"
    if key == "type":
        return "task.model.decoder.type"
    return f"task.model.decoder.{_DECODER_TYPES.get(structure_of_part.get('type'), '?')}.{key}"


def structure(backbone: ConvNeXtBackbone, decoder: tf_keras.Model | None = None) -> dict:
    """What decides a checkpoint's layout: the backbone's architecture and levels, the decoder's config."""
    c = backbone.get_config()
    out = {"backbone": {
        "version": backbone.convnext_config.version,
        "depths": list(backbone.convnext_config.depths),
        "dims": list(backbone.convnext_config.dims),
        "min_level": c["min_level"],
        "max_level": c["max_level"],
        "output_norm": c["output_norm"],
    }}
    if decoder is not None:
        config = {k: v for k, v in decoder.get_config().items() if k not in ("input_specs", "kernel_regularizer", "name")}
        out["decoder"] = json.loads(json.dumps({"type": type(decoder).__name__, **config}))
    return out


def write(out_dir: str, backbone: ConvNeXtBackbone, decoder: tf_keras.Model | None = None) -> str:
    """Write `tf.train.Checkpoint(backbone=..., decoder=...)` into the folder `out_dir`, atomically.

    Returns the checkpoint's prefix; Model Garden's `init_checkpoint` takes the folder or the prefix.
    """
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir!r} is a file; a Model Garden checkpoint is a folder.")
    with files.atomic_folder(out_dir) as tmp:
        items = {"backbone": backbone, STRUCTURE_KEY: tf.Variable(json.dumps(structure(backbone, decoder)))}
        if decoder is not None:
            items["decoder"] = decoder
        tf.train.CheckpointManager(tf.train.Checkpoint(**items), tmp, max_to_keep=1, checkpoint_name="ckpt").save()
    return tf.train.latest_checkpoint(out_dir)


def read_structure(path: str) -> dict | None:
    """The structure stored in a checkpoint written by `write` (None for other checkpoints)."""
    prefix = tf.train.latest_checkpoint(path) if tf.io.gfile.isdir(path) else path
    if prefix is None:
        raise ValueError(f"init_checkpoint {path!r}: no checkpoint in this folder (no 'checkpoint' index file).")
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as e:
        raise ValueError(
            f"init_checkpoint {path!r} is not a TensorFlow checkpoint ({type(e).__name__}); write one with "
            "`convnext-tf convert ... --format model-garden` (a Keras .weights.h5 file goes in "
            "task.model.backbone.convnext.weights instead)."
        ) from e
    key = f"{STRUCTURE_KEY}/.ATTRIBUTES/VARIABLE_VALUE"
    if not reader.has_tensor(key):
        return None
    return json.loads(reader.get_tensor(key))


def check(path: str, model: tf_keras.Model, modules) -> None:
    """Raise `CheckpointMismatchError` naming the first field where the checkpoint and `model` differ.

    `modules` is Model Garden's `init_checkpoint_modules` ('backbone', 'backbone,decoder', a list
    or 'all'); a checkpoint without a stored structure is left to Model Garden.
    """
    saved = read_structure(path)
    if saved is None:
        return
    parts = ",".join(p for p in ("backbone", "decoder") if p in saved)
    if "all" in modules:
        raise CheckpointMismatchError(
            f"init_checkpoint {path!r} holds only {parts}, not a whole model: set init_checkpoint_modules to {parts!r}."
        )
    wanted = [m for m in ("backbone", "decoder") if m in modules]
    if not isinstance(getattr(model, "backbone", None), ConvNeXtBackbone):
        return
    built = structure(model.backbone, getattr(model, "decoder", None) if "decoder" in wanted else None)
    for part in wanted:
        if part not in saved:
            raise CheckpointMismatchError(
                f"init_checkpoint {path!r} has no {part} (it holds {parts}); set init_checkpoint_modules to {parts!r}."
            )
        if part not in built:
            continue
        for key in sorted(set(saved[part]) | set(built[part])):
            if saved[part].get(key) != built[part].get(key):
                raise CheckpointMismatchError(
                    f"init_checkpoint {path!r} does not fit the experiment's {part}: "
                    f"{_config_path(part, key, built[part])} is "
                    f"{built[part].get(key)!r} in the experiment but {saved[part].get(key)!r} in the checkpoint. "
                    f"Write the checkpoint with the experiment's settings (convnext-tf convert --format model-garden "
                    f"--min-level/--max-level/--no-output-norm) or change the experiment."
                )
