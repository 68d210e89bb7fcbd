"""The `convnext-tf` command, one subcommand per everyday job.

    convnext-tf features IMAGE... --model convnext_tiny [--weights W] [--out DIR]
    convnext-tf segment IMAGE... --model upernet_convnext_tiny --weights ade20k|FILE [--slide] [--out DIR]
    convnext-tf classify IMAGE... --model convnextv2_tiny --weights imagenet_1k [--topk 5]
    convnext-tf train-segmentation --data DIR --model convnext_tiny --neck upernet --epochs N --out OUT
    convnext-tf export MODEL [--model NAME] --format savedmodel|tflite|onnx [--quantize Q] --out PATH
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
    ConvNeXtBackbone, ConvNeXtConfig, catalogue, create_model, export_state_dict, read_checkpoint, save_weights,
)
from convnext_tf.backbones.model import preprocess_input, resolve_weights
from convnext_tf.backbones.weights import head_classes
from convnext_tf.necks import NECKS
from convnext_tf.tasks import datasets, export, imagenet, init_checkpoint, predict
from convnext_tf.tasks import train as train_lib
from convnext_tf.tasks.finetune import FinetuneConfig, train_segmentation
from convnext_tf.tasks.label_files import write_label
from convnext_tf.tasks.segmentation import build_segmentation_model
from convnext_tf.tasks.visualize import feature_picture, overlay, pyramid_table, read_rgb, write_rgb


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
    model, result = predict.classifier_model(args.model, state_dict)
    classes = head_classes(state_dict)
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


def _images(paths: list[str]):
    """(path, stem, uint8 RGB image) of each path, every one read and size-checked before any work."""
    images = [(p, os.path.splitext(os.path.basename(p))[0], predict.check_image(read_rgb(p), p)) for p in paths]
    stems = [s for _, s, _ in images]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ValueError(f"Several images share the name {', '.join(twice)}: their outputs would overwrite each other.")
    return images


def features(args) -> None:
    images = _images(args.images)
    backbone = ConvNeXtBackbone(args.model, output_norm=False, weights=args.weights)
    for path, stem, image in images:
        maps = {k: v.numpy()[0] for k, v in backbone(preprocess_input(image[None]), training=False).items()}
        out = os.path.join(args.out, f"{stem}_features.png")
        write_rgb(out, feature_picture(image, maps))
        print(f"{path} ({image.shape[1]}x{image.shape[0]}), {args.model} ({args.weights or 'random weights'}):")
        print(pyramid_table(maps))
        print(f"wrote {out}")


def segment(args) -> None:
    images = _images(args.images)
    model = predict.segmentation_model(args.model, args.weights)
    for path, stem, image in images:
        labels = predict.segment(model, image, slide=args.slide, crop_size=args.crop, stride=args.stride)
        write_label(os.path.join(args.out, f"{stem}_labels.png"), labels)
        write_rgb(os.path.join(args.out, f"{stem}_overlay.png"), overlay(image, labels))
        ids, counts = np.unique(labels, return_counts=True)
        top = ", ".join(f"{i} ({c / labels.size:.0%})" for c, i in sorted(zip(counts, ids), reverse=True)[:5])
        print(f"{path} ({image.shape[1]}x{image.shape[0]}): classes {top}; wrote {stem}_labels.png, "
              f"{stem}_overlay.png in {args.out}")


def classify(args) -> None:
    if args.topk < 1:
        raise ValueError(f"--topk must be at least 1; got {args.topk}.")
    images = _images(args.images)
    model = create_model(args.model, input_shape=(args.resolution, args.resolution, 3), weights=args.weights)
    classes = model.output_shape[-1]
    synsets = imagenet.synsets() if classes == 1000 else None
    for path, _, image in images:
        print(f"{path}:")
        for index, prob in predict.classify(model, image, args.resolution, min(args.topk, classes)):
            synset = f" {synsets[index]}" if synsets else ""
            print(f"  {prob:7.2%}  {index:>5}{synset}  {predict.class_name(index, classes)}")


def train_segmentation_command(args) -> None:
    config = FinetuneConfig(  # checks the arguments before the data is read
        model=args.model, weights=args.weights, neck=args.neck, crop=args.crop, batch_size=args.batch_size,
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, learning_rate=args.lr, seed=args.seed,
    )
    pairs = datasets.find_pairs(args.data)
    train_pairs, val_pairs = datasets.split_pairs(pairs, args.val_split, args.seed)
    found = datasets.check_pairs(pairs)  # every label readable and of its image's size, before training
    if args.num_classes is not None and args.num_classes < found:
        raise ValueError(f"--num-classes {args.num_classes}: the labels in {args.data} hold class ids up to {found - 1}.")
    num_classes = args.num_classes or found
    print(f"{len(pairs)} image/label pairs in {args.data}: {len(train_pairs)} to train on, {len(val_pairs)} to validate; "
          f"{num_classes} classes")
    train = datasets.pipeline(train_pairs, True, config.crop, config.batch_size, seed=args.seed)
    val = datasets.pipeline(val_pairs, False)
    _, history = train_segmentation(train, val, num_classes, config, out_dir=args.out, num_train_images=len(train_pairs))
    best = max(history["val_mean_iou"])
    print(f"best validation mIoU {best:.4f} (epoch {history['val_mean_iou'].index(best) + 1}); "
          f"wrote {os.path.join(args.out, 'model.keras')} and {os.path.join(args.out, 'curves.png')}")


def export_command(args) -> None:
    config = export.ExportConfig(  # checks the arguments before the model is built
        format=args.format, quantize=args.quantize, input_size=tuple(args.input_size) if args.input_size else None,
        dynamic=args.dynamic, include_preprocessing=args.include_preprocessing, opset=args.opset, calibration=args.calibration,
        calibration_images=args.calibration_images, verify=not args.no_verify,
    )
    model = export.load_model(args.src, args.model, args.backbone, args.resolution)
    checks = export.export(model, args.out, config)
    for check in checks:
        print(f"  {check}")
    height, width = export.input_size(model, config) or ("H", "W")
    dtype = "uint8 RGB" if config.include_preprocessing else "float32 normalised"
    print(f"wrote {args.out}: input '{export.INPUT_NAME}' (N, {height}, {width}, 3) {dtype}, "
          f"outputs {', '.join(repr(n) for n in export.output_names(model))}")


def _subcommand(sub, name: str, help: str, example: str, func) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="convnext-tf", description="ConvNeXt for TensorFlow")
    sub = parser.add_subparsers(dest="command", required=True)
    f = _subcommand(sub, "features", "the multi-scale feature pyramid of images: a table and a picture each",
                    "convnext-tf features street.jpg --model convnext_tiny --weights imagenet_1k --out features", features)
    f.add_argument("images", nargs="+", metavar="IMAGE")
    f.add_argument("--model", default="convnext_tiny", help="variant, e.g. convnext_tiny or convnextv2_atto")
    f.add_argument("--weights", default=None, help="a published name (imagenet_1k, ...) or a checkpoint file (default: random)")
    f.add_argument("--out", default=".", help="folder for <stem>_features.png")
    s = _subcommand(sub, "segment", "label maps and overlays of images at their own size",
                    "convnext-tf segment street.jpg --model upernet_convnext_tiny --weights ade20k --out seg", segment)
    s.add_argument("images", nargs="+", metavar="IMAGE")
    s.add_argument("--model", default=None, help="<neck>_<variant>, e.g. upernet_convnext_tiny (not needed with a .keras model)")
    s.add_argument("--weights", required=True,
                   help="ade20k, an UperNet checkpoint file, or a model.keras from train-segmentation")
    s.add_argument("--slide", action="store_true", help="predict overlapping crops (mmseg's slide inference)")
    s.add_argument("--crop", type=int, default=512, help="--slide: crop side")
    s.add_argument("--stride", type=int, default=341, help="--slide: step between crops")
    s.add_argument("--out", default=".", help="folder for <stem>_labels.png (palette PNG) and <stem>_overlay.png")
    k = _subcommand(sub, "classify", "ImageNet classes of images, with the official preprocessing",
                    "convnext-tf classify cat.jpg --model convnextv2_tiny --weights imagenet_1k --topk 5", classify)
    k.add_argument("images", nargs="+", metavar="IMAGE")
    k.add_argument("--model", required=True, help="variant, e.g. convnextv2_tiny")
    k.add_argument("--weights", default="imagenet_1k", help="a published name or a classifier checkpoint file")
    k.add_argument("--topk", type=int, default=5)
    k.add_argument("--resolution", type=int, default=224, help="224, 384 or 512 (the checkpoint's)")
    t = _subcommand(sub, "train-segmentation", "fine-tune a segmentation model on a folder of images/ and labels/",
                    "convnext-tf train-segmentation --data my_data --model convnext_tiny --weights imagenet_1k "
                    "--neck upernet --epochs 20 --out run1", train_segmentation_command)
    t.add_argument("--data", required=True, help="DIR with images/*.jpg|png and labels/*.png, matched by file stem")
    t.add_argument("--model", default="convnext_tiny", help="backbone variant")
    t.add_argument("--weights", default=None, help="backbone weights: a published name or a file (default: random)")
    t.add_argument("--neck", default="upernet", choices=sorted(NECKS))
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--out", required=True, help="folder for model.keras (the best epoch) and curves.png")
    t.add_argument("--crop", type=int, default=512, help="training crop side")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--steps-per-epoch", type=int, default=None, help="default: one pass over the training images")
    t.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (AdamW, stage-wise decay 0.9)")
    t.add_argument("--val-split", type=float, default=0.1, help="share of the images held out for validation")
    t.add_argument("--num-classes", type=int, default=None, help="default: the largest label id + 1")
    t.add_argument("--seed", type=int, default=0)
    x = _subcommand(sub, "export", "export a model to a SavedModel, TFLite or ONNX, checked against the Keras model",
                    "convnext-tf export run1/model.keras --format tflite --quantize int8 --out seg_int8.tflite",
                    export_command)
    x.add_argument("src", metavar="MODEL",
                   help="a saved Keras model (model.keras), or weights for --model: a published name or a checkpoint file")
    x.add_argument("--model", default=None,
                   help="with weights: a variant (convnext_tiny: the classifier) or <neck>_<variant> (upernet_convnext_tiny)")
    x.add_argument("--backbone", action="store_true", help="export the variant's ConvNeXtBackbone (levels '2'..'5')")
    x.add_argument("--resolution", type=int, default=None, help="for published names: 224, 384 or 512")
    x.add_argument("--format", required=True, choices=export.FORMATS)
    x.add_argument("--quantize", default=None, choices=export.QUANTIZATIONS, help="tflite: fp16, dynamic-int8 or int8")
    size = x.add_mutually_exclusive_group()
    size.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="a fixed input size")
    size.add_argument("--dynamic", action="store_true", help="insist on dynamic height and width (the default where the model allows)")
    x.add_argument("--include-preprocessing", action="store_true",
                   help="take uint8 RGB pixels and normalise inside (ImageNet mean and std)")
    x.add_argument("--opset", type=int, default=17, help="onnx: the opset")
    x.add_argument("--calibration", default=None, help="int8: a folder of images to calibrate on (default: generated)")
    x.add_argument("--calibration-images", type=int, default=32, help="int8: how many calibration images")
    x.add_argument("--no-verify", action="store_true", help="skip running the export against the Keras model")
    x.add_argument("--out", required=True, help="a SavedModel folder (TF Serving: .../NAME/1), or a .tflite / .onnx file")
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
