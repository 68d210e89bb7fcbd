"""`make demo`: multi-scale ConvNeXt features of a real photo and a UperNet segmentation of it.

    python -m convnext_tf.tasks.demo [--model convnext_tiny] [--weights NAME|PATH]
        [--segmentation-weights ade20k|PATH] [--image PATH] [--out out]

Writes `features.png` (each stage's first three principal components as RGB) and
`segmentation.png` (UperNet's labels over the photo, at the photo's own size).
"""
from __future__ import annotations

import argparse
import os
from importlib import resources

from convnext_tf.backbones import ConvNeXtBackbone, preprocess_input
from convnext_tf.tasks.segmentation import build_segmentation_model
from convnext_tf.tasks.visualize import overlay, panel_row, pca_rgb, read_rgb, write_rgb


def default_image() -> str:
    return str(resources.files("convnext_tf.tasks") / "data" / "chelsea.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="convnext_tiny")
    parser.add_argument("--weights", default=None, help="checkpoint name or path (random weights if omitted)")
    parser.add_argument("--segmentation-weights", default=None, help="'ade20k' or an UperNet checkpoint path")
    parser.add_argument("--image", default=default_image())
    parser.add_argument("--out", default="out")
    args = parser.parse_args(argv)

    image = read_rgb(args.image)
    backbone = ConvNeXtBackbone(args.model, output_norm=False, weights=args.weights)
    features = [f.numpy()[0] for f in backbone(preprocess_input(image[None]), training=False).values()]

    print(f"{args.model} ({'weights ' + args.weights if args.weights else 'random weights'}) "
          f"on {os.path.basename(args.image)} {image.shape[1]}x{image.shape[0]}")
    print(f"{'level':>5} {'stride':>6} {'channels':>8}  shape (H, W)")
    for i, f in enumerate(features):
        print(f"{i + 2:>5} {2 ** (i + 2):>6} {f.shape[-1]:>8}  {f.shape[0]} x {f.shape[1]}")
    panels = [image] + [pca_rgb(f) for f in features]
    titles = ["input"] + [f"stride {2 ** (i + 2)}: {f.shape[1]}x{f.shape[0]}x{f.shape[2]}" for i, f in enumerate(features)]
    path = os.path.join(args.out, "features.png")
    write_rgb(path, panel_row(panels, titles))
    print(f"wrote {path} (first three principal components of each stage as RGB)")

    # UperNet checkpoints hold their own backbone; otherwise the backbone gets --weights
    seg_backbone = args.model if args.segmentation_weights else ConvNeXtBackbone(args.model, weights=args.weights)
    seg = build_segmentation_model(seg_backbone, 150, weights=args.segmentation_weights)
    labels = seg(preprocess_input(image[None]), training=False).numpy()[0].argmax(-1)
    path = os.path.join(args.out, "segmentation.png")
    write_rgb(path, panel_row([image, overlay(image, labels)], ["input", f"UperNet-{backbone.convnext_config.model_id} ({args.segmentation_weights or 'random weights'})"], height=300))
    print(f"UperNet {args.model}: logits at {labels.shape[1]}x{labels.shape[0]}, {len(set(labels.ravel().tolist()))} classes present")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
