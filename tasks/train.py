"""`convnext-tf train`: Model Garden's trainer (Orbit) on a registered experiment.

    convnext-tf train --experiment convnext_seg_upernet_ade20k --config_file my.yaml \
        --params_override 'task.train_data.global_batch_size=8' --model_dir DIR --mode train_and_eval

As `python -m official.vision.train`, with our registrations imported: the model directory gets
`params.yaml`, checkpoints and TensorBoard summaries as Model Garden writes them.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import tensorflow as tf
import yaml
from official.common import distribute_utils
from official.core import config_definitions as cfg
from official.core import task_factory, train_lib, train_utils
from official.modeling import hyperparams
from official.modeling import performance
from official.modeling.hyperparams import params_dict
from official.vision.utils import summary_manager

from . import registry_imports  # noqa: F401  (registers the backbone, decoders, optimizer, experiments)
from .experiments import experiment

MODES = ("train", "eval", "train_and_eval", "continuous_eval")


def _as_dict(override: str, what: str) -> dict:
    """A YAML file, a YAML/JSON string or 'a.b=1,c=2' as a nested dict."""
    if os.path.isfile(override):
        with open(override) as f:
            loaded = yaml.safe_load(f)
    else:
        try:
            loaded = yaml.safe_load(params_dict.nested_csv_str_to_json_str(override))
        except ValueError:
            loaded = yaml.safe_load(override)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{what} {override!r}: expected a mapping of config keys, got {type(loaded).__name__}.")
    return loaded


def check_keys(config: hyperparams.Config, overrides: dict, what: str, path: str = "") -> None:
    """Raise a ValueError naming the first key of `overrides` that `config` lacks, with the valid keys."""
    for key, value in overrides.items():
        where = f"{path}.{key}" if path else str(key)
        if not isinstance(config, hyperparams.Config):
            return
        # a one-of config (learning_rate, optimizer, ...) lists only its active choice in as_dict()
        valid = sorted(set(config.as_dict()) | {f.name for f in dataclasses.fields(config)})
        if key not in valid:
            raise ValueError(
                f"{what}: unknown key {where!r}; the keys of {path or 'the experiment'} are: {', '.join(valid)}."
            )
        if isinstance(value, dict):
            check_keys(getattr(config, key), value, what, where)


def parse_config(
    name: str, config_files: Sequence[str] = (), params_override: str | dict | None = None,
) -> cfg.ExperimentConfig:
    """The experiment `name` with YAML files and overrides (a string as `--params_override` takes,
    or a nested dict) applied strictly, validated and locked."""
    params = experiment(name)
    sources = [(f, f"--config_file {f}") for f in config_files]
    if params_override:
        sources.append((params_override, "--params_override"))
    for source, what in sources:
        if what.startswith("--config_file") and not os.path.isfile(source):
            raise ValueError(f"{what}: no such file.")
        overrides = source if isinstance(source, dict) else _as_dict(source, what)
        check_keys(params, overrides, what)
        params.override(overrides, is_strict=True)
    params.validate()
    params.lock()
    return params


def run(params: cfg.ExperimentConfig, model_dir: str, mode: str = "train_and_eval") -> Any:
    """Run Model Garden's `train_lib.run_experiment`; returns its (model, eval logs)."""
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}; got {mode!r}.")
    if "train" in mode:
        train_utils.serialize_config(params, model_dir)
    if params.runtime.mixed_precision_dtype:
        performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)
    strategy = distribute_utils.get_distribution_strategy(
        distribution_strategy=params.runtime.distribution_strategy, all_reduce_alg=params.runtime.all_reduce_alg,
        num_gpus=params.runtime.num_gpus, tpu_address=params.runtime.tpu,
    )
    with strategy.scope():
        task = task_factory.get_task(params.task, logging_dir=model_dir)
    # the eval summary manager takes tf.summary's default step when built: after an earlier run in this
    # process that is the earlier run's step variable, so its evaluations were logged at that step
    tf.summary.experimental.set_step(None)
    return train_lib.run_experiment(
        distribution_strategy=strategy, task=task, mode=mode, params=params, model_dir=model_dir,
        eval_summary_manager=summary_manager.maybe_build_eval_summary_manager(params=params, model_dir=model_dir),
    )


def scalars(model_dir: str, split: str = "train") -> dict[str, list[tuple[int, float]]]:
    """The scalar summaries Model Garden wrote to `model_dir/split` ('train' or 'validation'): tag -> [(step, value)]."""
    out: dict[str, list[tuple[int, float]]] = {}
    for name in sorted(tf.io.gfile.glob(os.path.join(model_dir, split, "events.out.tfevents.*"))):
        for event in tf.data.TFRecordDataset(name).as_numpy_iterator():
            event = tf.compat.v1.Event.FromString(event)
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor) if value.HasField("tensor") else None
                if array is not None and array.ndim == 0 and array.dtype.kind in "fiu":
                    out.setdefault(value.tag, []).append((int(event.step), float(array)))
    return {tag: sorted(points) for tag, points in out.items()}


def add_arguments(parser) -> None:
    """The arguments of `convnext-tf train`, as `python -m official.vision.train` names them."""
    parser.add_argument("--experiment", required=True, help="a registered experiment, e.g. convnext_seg_upernet_ade20k")
    parser.add_argument("--config_file", action="append", default=[], help="YAML overrides (repeatable, in order)")
    parser.add_argument("--params_override", default=None, help="'a.b=1,c.d=x' or a YAML string, applied last")
    parser.add_argument("--model_dir", required=True, help="checkpoints, params.yaml and summaries go here")
    parser.add_argument("--mode", default="train_and_eval", choices=MODES)


def main(args) -> None:
    """Run `convnext-tf train` (arguments of `add_arguments`)."""
    params = parse_config(args.experiment, args.config_file, args.params_override)
    run(params, args.model_dir, args.mode)
    last = {tag: round(points[-1][1], 4) for tag, points in scalars(args.model_dir, "validation").items()}
    print(f"convnext-tf train: {args.experiment} finished in {args.model_dir}; last evaluation: {json.dumps(last)}")
