"""`make demo`: fine-tune a small ConvNeXt segmentation model on generated shapes, then look at it.

    python -m convnext_tf.tasks.demo [--weights imagenet_1k|PATH] [--out out] [--small]

Generates textured shapes on photos (`shapes`), fine-tunes ConvNeXt V2 atto + FPN for about two
minutes (`finetune`), prints mIoU on held-out images next to the all-background baseline, and
writes to --out: `predictions.png` (held-out image | ground truth | prediction), `photo.png` (shapes
on a photo the model never saw, at its own odd size, 451x300), `features.png` (the trained
backbone's pyramid on that photo), `curves.png` and the model itself, `model.keras`.
Without --weights the backbone starts from random weights. --small (or CONVNEXT_TF_SMALL=1) trains
for a shorter time, as the tests do.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import replace

import numpy as np

from convnext_tf.backbones.model import preprocess_input

from . import datasets, metrics, shapes
from .finetune import FinetuneConfig, train_segmentation
from .visualize import colorize, feature_picture, overlay, panel_row, pyramid_table, read_rgb, stack_rows, write_rgb

SMALL_ENV = "CONVNEXT_TF_SMALL"
DEMO = FinetuneConfig(
    model="convnextv2_atto", neck="fpn", channels=64, aux_head=False, crop=128, batch_size=8, epochs=4,
    steps_per_epoch=60, learning_rate=3e-3, warmup_steps=30, drop_path_rate=0.0,
)
SMALL = replace(DEMO, epochs=2, steps_per_epoch=40)
SCALES = (0.5, 1.0)  # random rescaling: the images are small next to the 128 crops, so never enlarged
TRAIN_SEED, VAL_SEED, PHOTO_SEED = 1, 2, 3


def small_mode() -> bool:
    """True when the environment variable CONVNEXT_TF_SMALL is set to 1 (CI's short runs)."""
    return os.environ.get(SMALL_ENV, "0").strip().lower() in ("1", "true", "yes")


def predict_labels(model, image: np.ndarray) -> np.ndarray:
    """The argmax label map of one uint8 RGB image at its own size."""
    return model(preprocess_input(image[None]), training=False).numpy()[0].argmax(-1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="backbone checkpoint: a published name or a file (default: random)")
    parser.add_argument("--out", default="out")
    parser.add_argument("--small", action="store_true", default=small_mode(), help="a shorter run (CI)")
    parser.add_argument("--train-images", type=int, default=200)
    parser.add_argument("--val-images", type=int, default=24)
    args = parser.parse_args(argv)
    config = replace(SMALL if args.small else DEMO, weights=args.weights)
    names = list(shapes.CLASSES)

    print(f"generating {args.train_images} training and {args.val_images} held-out images "
          f"({', '.join(names[1:])} on photos)")
    train = datasets.pipeline(shapes.dataset(args.train_images, TRAIN_SEED), True, config.crop, config.batch_size,
                              scale_range=SCALES)
    held_out = list(shapes.samples(args.val_images, VAL_SEED))
    val = datasets.pipeline(shapes.dataset(args.val_images, VAL_SEED), False)
    print(f"fine-tuning {config.model} + {config.neck.upper()} ({config.weights or 'random initial weights'}): "
          f"{config.epochs} epochs of {config.steps_per_epoch} steps, {config.crop}x{config.crop} crops")
    model, _ = train_segmentation(train, val, len(names), config, out_dir=args.out)

    print("held-out images:")
    result, confusion = metrics.evaluate(model, val, len(names))
    baseline = metrics.scores(np.outer(confusion.sum(1), np.eye(len(names))[0]))  # every pixel 'background'
    print(result.table(names))
    print(f"mIoU {result.miou:.3f} on {args.val_images} held-out images; "
          f"predicting background everywhere gives {baseline.miou:.3f}")

    rows = [panel_row([s.image, colorize(s.label), overlay(s.image, predict_labels(model, s.image))],
                      ["image", "ground truth", "prediction"], height=160) for s in held_out[:4]]
    path = os.path.join(args.out, "predictions.png")
    write_rgb(path, stack_rows(rows))
    print(f"wrote {path}")

    # shapes of the training images' sizes (their images are smaller than the photo)
    photo = shapes.sample(0, PHOTO_SEED, background=read_rgb(shapes.photo_path()), max_shapes=5,
                          radius_range=(0.06, 0.14))
    labels = predict_labels(model, photo.image)
    photo_scores = metrics.scores(metrics.confusion_matrix(photo.label, labels, len(names)))
    path = os.path.join(args.out, "photo.png")
    write_rgb(path, panel_row([photo.image, colorize(photo.label), overlay(photo.image, labels)],
                              ["photo with shapes", "ground truth", f"prediction (mIoU {photo_scores.miou:.2f})"], height=300))
    print(f"photo {photo.image.shape[1]}x{photo.image.shape[0]}: mIoU {photo_scores.miou:.3f}; wrote {path}")

    features = {k: v.numpy()[0] for k, v in model.backbone(preprocess_input(photo.image[None]), training=False).items()}
    print(pyramid_table(features))
    path = os.path.join(args.out, "features.png")
    write_rgb(path, feature_picture(photo.image, features))
    print(f"wrote {path} (each level's first three principal components as RGB), "
          f"{os.path.join(args.out, 'curves.png')} and {os.path.join(args.out, 'model.keras')}")
    return {"miou": result.miou, "baseline_miou": baseline.miou, "pixel_accuracy": result.pixel_accuracy,
            "photo_miou": photo_scores.miou}


if __name__ == "__main__":
    main()
