"""Exports measured: size, difference to Keras and batch-1 latency per model and format, and the
mIoU of the `make demo` model in each format on its held-out images.

    python bench/export_bench.py [--demo-model out/model.keras] [--runs 20]

One process, one format after the other; writes bench/export_results.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf

from convnext_tf.backbones import ConvNeXtBackbone, build_convnext
from convnext_tf.tasks import demo, export, metrics, shapes
from convnext_tf.tasks.segmentation import build_segmentation_model

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "export_results.md")
FORMATS = [("savedmodel", None), ("tflite", None), ("tflite", "fp16"), ("tflite", "dynamic-int8"),
           ("tflite", "int8"), ("onnx", None)]
EXTENSION = {"savedmodel": "", "tflite": ".tflite", "onnx": ".onnx"}


def models() -> dict:
    """name: (model, latency input size)."""
    return {
        "convnext_tiny classifier": (build_convnext("convnext_tiny", input_shape=(None, None, 3)), (224, 224)),
        "convnextv2_atto backbone": (ConvNeXtBackbone("convnextv2_atto"), (512, 512)),
        "upernet_convnextv2_atto (150 classes)": (build_segmentation_model("convnextv2_atto", 150, aux_head=False), (512, 512)),
        "fpn_convnextv2_atto (150 classes)": (build_segmentation_model("convnextv2_atto", 150, neck="fpn", aux_head=False),
                                              (512, 512)),
    }


def latency(fn, x, runs: int, budget: float = 20.0) -> float:
    """Median milliseconds of `fn(x)` after two warm-up calls: `runs` calls, or as many (at least
    three) as fit in `budget` seconds."""
    for _ in range(2):
        fn(x)
    times: list[float] = []
    while len(times) < runs and (len(times) < 3 or sum(times) < budget):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def size_mb(path: str) -> float:
    if os.path.isfile(path):
        return os.path.getsize(path) / 1e6
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 1e6


def label(fmt: str, quantize: str | None) -> str:
    return {"savedmodel": "SavedModel", "tflite": "TFLite", "onnx": "ONNX (onnxruntime)"}[fmt] + (
        f" {quantize}" if quantize else (" fp32" if fmt == "tflite" else ""))


def speed_table(runs: int, folder: str) -> list[str]:
    lines = ["| model | format | size (MB) | max difference (of the largest output) | batch-1 latency (ms) |",
             "|---|---|---|---|---|"]
    for name, (model, size) in models().items():
        x = export.sample_batch(size, False, batch=1)
        keras_fn = tf.function(lambda images: model(images, training=False))
        xla_fn = tf.function(lambda images: model(images, training=False), jit_compile=True)
        h, w = size
        for what, fn in (("Keras tf.function", keras_fn), ("Keras tf.function, XLA", xla_fn)):
            ms = latency(fn, tf.constant(x), runs)
            lines.append(f"| {name} at {h}x{w} | {what} | | | {ms:.1f} |")
            print(lines[-1], flush=True)
        for fmt, quantize in FORMATS:
            path = os.path.join(folder, f"{len(lines)}{EXTENSION[fmt]}")
            checks = export.export(model, path, export.ExportConfig(format=fmt, quantize=quantize), log=None)
            worst = max(checks, key=lambda c: c.max_rel)
            ms = latency(export.Runner(path), x, runs)
            lines.append(f"| {name} at {h}x{w} | {label(fmt, quantize)} | {size_mb(path):.1f} | "
                         f"{worst.max_abs:.1e} ({worst.max_rel:.1e}) | {ms:.1f} |")
            print(lines[-1], flush=True)
    return lines


def miou_table(model_path: str, folder: str) -> list[str]:
    """mIoU of the demo model in each format on the demo's held-out images, each at its own size."""
    model = export.load_model(model_path)
    held_out = list(shapes.samples(24, demo.VAL_SEED))
    n = len(shapes.CLASSES)

    def evaluate(predict) -> tuple[float, list[np.ndarray]]:
        labels = [predict(s.image) for s in held_out]
        confusion = sum(metrics.confusion_matrix(s.label, l, n) for s, l in zip(held_out, labels))
        return metrics.scores(confusion).miou, labels

    miou, reference = evaluate(lambda image: export.keras_outputs(model, image[None], True)["logits"].numpy()[0].argmax(-1))
    lines = ["| format | mIoU | pixels labelled differently from Keras |", "|---|---|---|",
             f"| Keras fp32 | {miou:.4f} | |"]
    print(lines[-1], flush=True)
    for fmt, quantize in FORMATS:
        path = os.path.join(folder, f"demo{len(lines)}{EXTENSION[fmt]}")
        config = export.ExportConfig(format=fmt, quantize=quantize, include_preprocessing=True)
        export.export(model, path, config, log=None)
        runner = export.Runner(path)
        miou, labels = evaluate(lambda image: runner(image[None])["logits"][0].argmax(-1))
        changed = np.mean(np.concatenate([(a != b).ravel() for a, b in zip(labels, reference)]))
        lines.append(f"| {label(fmt, quantize)} | {miou:.4f} | {changed:.2%} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-model", default="out/model.keras", help="the model `make demo` trained")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        lines = [f"# Exports ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)", ""]
        if os.path.exists(args.demo_model):
            lines += [f"## mIoU of {args.demo_model} on the 24 held-out demo images", "", *miou_table(args.demo_model, folder), ""]
        else:
            print(f"{args.demo_model} not found (run `make demo` first): no mIoU table")
        lines += ["## Size, difference and latency (random weights)", "", *speed_table(args.runs, folder)]
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
