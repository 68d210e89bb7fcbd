"""The `convnext-tf` command: `convert` checkpoints, `eval-imagenet` models, `train` experiments.

    convnext-tf convert SRC --model convnext_tiny [--out FILE] [--verify]
    convnext-tf convert SRC --model convnext_tiny --format model-garden --out DIR [--min-level 3]
    convnext-tf eval-imagenet --data DIR --model convnext_tiny --weights imagenet_1k [--batch-size 64]
    convnext-tf train --experiment NAME [--config_file F.yaml] [--params_override S] --model_dir DIR
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from convnext_tf.backbones import (
    ConvNeXtBackbone, ConvNeXtConfig, build_convnext, catalogue, create_model, export_state_dict, load_state_dict,
    read_checkpoint, save_weights,
)
from convnext_tf.backbones.model import resolve_weights
from convnext_tf.backbones.weights import head_classes
from convnext_tf.tasks import imagenet, init_checkpoint
from convnext_tf.tasks import train as train_lib
from convnext_tf.tasks.segmentation import build_segmentation_model


def verify(model, name: str) -> float:
    """Max |ours - PyTorch| / max |PyTorch| of the logits on a random batch (needs torch, transformers)."""
    try:
        import torch
        from transformers import (
            ConvNextConfig, ConvNextForImageClassification, ConvNextV2Config, ConvNextV2ForImageClassification,
        )
    except ImportError as e:
        raise ImportError(f"--verify runs the PyTorch reference: pip install 'convnext-tf[convert]' ({e}).") from e
    cfg = ConvNeXtConfig.from_name(name)
    v2 = cfg.version == "v2"
    config = (ConvNextV2Config if v2 else ConvNextConfig)(
        depths=list(cfg.depths), hidden_sizes=list(cfg.dims), layer_norm_eps=1e-6, num_labels=model.output_shape[-1]
    )
    ref = (ConvNextV2ForImageClassification if v2 else ConvNextForImageClassification)(config).eval()
    ref.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in export_state_dict(model, 'hf').items()})
    x = np.random.default_rng(0).standard_normal((2, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).logits.numpy()
    return float(np.max(np.abs(model(x, training=False).numpy() - expected)) / np.max(np.abs(expected)))


def convert_model_garden(args) -> None:
    """A `tf.train.Checkpoint(backbone=...[, decoder=...])` folder for Model Garden's `init_checkpoint`."""
    if not args.out:
        raise ValueError("--format model-garden needs --out DIR (the checkpoint folder to write).")
    if args.model.startswith("upernet_"):  # backbone and UperNet neck of a segmentation checkpoint
        variant = args.model[len("upernet_"):]
        if catalogue.is_name(args.src):
            weights, classes = args.src, None
        else:
            weights, classes = args.src, head_classes(read_checkpoint(args.src), "decode_head.classifier")
        model = build_segmentation_model(variant, classes or 150, weights=weights)
        parts = dict(backbone=model.backbone, decoder=model.neck)
    else:
        weights = resolve_weights(args.src, args.model, args.resolution)
        parts = dict(backbone=ConvNeXtBackbone(
            args.model, min_level=args.min_level, max_level=args.max_level, output_norm=not args.no_output_norm,
            weights=weights,
        ))
    prefix = init_checkpoint.write(args.out, **parts)
    levels = f"levels {parts['backbone'].output_names[0]}..{parts['backbone'].output_names[-1]}"
    print(f"converted {args.src}\n  {' + '.join(parts)} of {args.model} ({levels}), Model Garden checkpoint\n"
          f"  wrote {prefix} (init_checkpoint: {args.out})")


def convert(args) -> None:
    if args.format == "model-garden":
        return convert_model_garden(args)
    out = args.out
    if out is not None and not out.lower().endswith(".h5"):
        raise ValueError(f"--out {out!r}: convert writes Keras weights, so the file needs the extension .weights.h5.")
    if catalogue.is_name(args.src):
        path = resolve_weights(args.src, args.model, args.resolution)
        state_dict = read_checkpoint(path)
        what = args.src
        out = out or os.path.basename(path)
    else:
        state_dict = read_checkpoint(args.src)
        what = args.src
        out = out or os.path.splitext(os.path.basename(args.src))[0] + ".weights.h5"
    classes = head_classes(state_dict)
    model = build_convnext(args.model, input_shape=(None, None, 3), include_top=classes > 0, classes=max(classes, 1))
    result = load_state_dict(model, state_dict)
    save_weights(model, out)
    print(f"converted {what}\n  model {args.model}, {len(result.loaded)} arrays, "
          f"{'head of ' + str(classes) + ' classes' if classes else 'no head'}"
          f"{', skipped ' + str(len(result.skipped)) if result.skipped else ''}\n  wrote {out}")
    if args.verify:
        if not classes:
            print("  --verify needs a checkpoint with a classifier head; skipped")
        else:
            print(f"  max relative difference to the PyTorch reference: {verify(model, args.model):.2e}")


def eval_imagenet(args) -> None:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1; got {args.batch_size}.")
    if args.resolution < 32:
        raise ValueError(f"--resolution must be at least 32; got {args.resolution}.")
    samples = imagenet.read_dataset(args.data, args.annotations)  # before the model (and its weights)
    model = create_model(args.model, input_shape=(args.resolution, args.resolution, 3), weights=args.weights)
    results = imagenet.evaluate(model, samples, resolution=args.resolution, batch_size=args.batch_size)
    results.update(model=args.model, weights=args.weights)
    imagenet.write_json(results, args.out)
    print(f"{args.model} ({args.weights}) at {args.resolution}: top-1 {results['top1']:.2f}%, "
          f"top-5 {results['top5']:.2f}% on {results['images']} images; wrote {args.out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="convnext-tf", description="ConvNeXt for TensorFlow")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="convert a checkpoint (file or catalogue name) to Keras .weights.h5")
    c.add_argument("src", help="a .pth/.pt/.bin/.safetensors file, or a name such as imagenet_1k")
    c.add_argument("--model", required=True, help="variant, e.g. convnext_tiny")
    c.add_argument("--out", help="output .weights.h5 (written atomically)")
    c.add_argument("--resolution", type=int, default=None, help="for catalogue names: 224, 384 or 512")
    c.add_argument("--verify", action="store_true", help="compare with the PyTorch reference (needs torch)")
    c.add_argument("--format", default="keras", choices=["keras", "model-garden"],
                   help="keras: a .weights.h5 file; model-garden: a tf.train.Checkpoint folder for init_checkpoint")
    c.add_argument("--min-level", type=int, default=2, help="model-garden: the experiment backbone's min_level")
    c.add_argument("--max-level", type=int, default=5, help="model-garden: the experiment backbone's max_level")
    c.add_argument("--no-output-norm", action="store_true", help="model-garden: a backbone with output_norm=False")
    c.set_defaults(func=convert)
    e = sub.add_parser("eval-imagenet", help="top-1/top-5 on the ImageNet validation set")
    e.add_argument("--data", required=True, help="ILSVRC2012 val images (with XML annotations) or class folders")
    e.add_argument("--annotations", default=None, help="folder of the val XML annotations (default: --data)")
    e.add_argument("--model", required=True)
    e.add_argument("--weights", default="imagenet_1k")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--resolution", type=int, default=224)
    e.add_argument("--out", default="imagenet_results.json")
    e.set_defaults(func=eval_imagenet)
    t = sub.add_parser("train", help="train a registered Model Garden experiment (convnext_seg_upernet_ade20k, ...)")
    train_lib.add_arguments(t)
    t.set_defaults(func=train_lib.main)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError, ImportError) as err:
        print(f"convnext-tf: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
