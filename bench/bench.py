"""convnext-tf against its peers: classification, UperNet segmentation, training steps, detection, checkpointing.

Every scenario runs in fresh worker processes, one per contestant (so each peak RSS is that
scenario's own); the workers take turns for several rounds and the median images/s is reported,
with its fraction of the machine's matmul peak (a 4096x4096 matmul through TensorFlow, float32
and bfloat16). Writes bench/results.md and bench/results.png (the ratios as bars).

    python bench/bench.py [--rounds 3] [--seconds 3] [--groups classification,segmentation,...] [--scenarios NAME,...]
"""
from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# here and in every worker (spawned workers import this module again), before TensorFlow loads:
# tf.keras is tf_keras and TensorFlow's import skips Keras 3, as `make` sets it (README, "Set up")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
TINY = dict(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768])  # ConvNeXt-T for Hugging Face


@dataclasses.dataclass(frozen=True)
class Scenario:
    group: str
    kind: str  # classify | features | segment | train-classify | train-segment | detect
    size: tuple[int, int]  # height, width
    batch: int
    precision: str = "float32"  # or bfloat16 (mixed_bfloat16 in Keras, autocast in PyTorch)
    rounds: int | None = None  # None: --rounds


SCENARIOS = {
    "224 b1 fp32": Scenario("classification", "classify", (224, 224), 1),
    "224 b8 fp32": Scenario("classification", "classify", (224, 224), 8),
    "512 b2 features fp32": Scenario("classification", "features", (512, 512), 2),
    "224 b1 bf16": Scenario("classification", "classify", (224, 224), 1, "bfloat16"),
    "224 b8 bf16": Scenario("classification", "classify", (224, 224), 8, "bfloat16"),
    "UperNet 512x512 b1 fp32": Scenario("segmentation", "segment", (512, 512), 1),
    "UperNet 500x375 b1 fp32": Scenario("segmentation", "segment", (375, 500), 1),
    "UperNet 512x512 b1 bf16": Scenario("segmentation", "segment", (512, 512), 1, "bfloat16"),
    "UperNet 500x375 b1 bf16": Scenario("segmentation", "segment", (375, 500), 1, "bfloat16"),
    "train 224 b8 fp32": Scenario("training", "train-classify", (224, 224), 8),
    "train 224 b8 bf16": Scenario("training", "train-classify", (224, 224), 8, "bfloat16"),
    "train UperNet 512x512 b2 bf16": Scenario("training", "train-segment", (512, 512), 2, "bfloat16"),
    "RetinaNet-T 512x384 b1 fp32": Scenario("detection", "detect", (384, 512), 1),
    "train UperNet 512x512 b2 fp32": Scenario("checkpointing", "train-segment", (512, 512), 2),
    "train UperNet 1024x1024 b1 fp32": Scenario("checkpointing", "train-segment", (1024, 1024), 1, rounds=1),
}
GROUPS = {  # contestants of each group; the first is ours, ratios are against the others
    "classification": ("convnext_tf", "convnext_tf_xla", "keras3_apps", "tf_keras_apps", "pytorch"),
    "segmentation": ("convnext_tf", "pytorch"),
    "training": ("convnext_tf", "pytorch"),
    "detection": ("detect", "forward"),  # detect(): network + post-processing; forward: network alone
    "checkpointing": ("convnext_tf", "convnext_tf_checkpointing", "pytorch"),  # UperNet training, speed and memory
}
TARGETS = {  # (scenario, against): the ratio issue 14 asks for
    ("224 b1 bf16", "pytorch"): 1.3, ("224 b8 bf16", "pytorch"): 1.3,
    ("UperNet 512x512 b1 fp32", "pytorch"): 1.3, ("UperNet 500x375 b1 fp32", "pytorch"): 1.3,
    ("train 224 b8 fp32", "pytorch"): 1.5, ("train 224 b8 bf16", "pytorch"): 1.3,
    ("train UperNet 512x512 b2 fp32", "pytorch"): 1.5, ("train UperNet 512x512 b2 bf16", "pytorch"): 1.3,
    ("RetinaNet-T 512x384 b1 fp32", "forward"): 0.5,  # detect no slower than 2x the forward pass
}


# ----------------------------------------------------------------------------- TensorFlow side
def _policy(precision: str) -> str:
    return "mixed_bfloat16" if precision == "bfloat16" else "float32"


def _nonzero_biases(model) -> None:
    """Random biases and norm offsets, as trained weights have: TensorFlow folds away zero biases,
    which changes the fused kernels it picks."""
    import tensorflow as tf

    for v in model.weights:
        if v.name.split("/")[-1].startswith(("bias", "beta")):
            v.assign(tf.random.normal(v.shape, stddev=0.02, seed=len(v.name)))


def _calibrate_scores(model, config, x, passing: float = 1e-3) -> None:
    """RetinaNet's class scores spread so that a fraction `passing` of (anchor, class) pairs clears the
    0.05 score threshold, as with a trained model (random weights give all 0.01, or all 0.5 with
    random biases)."""
    import numpy as np
    import tensorflow as tf

    from convnext_tf.tasks import detection

    kernel = next(v for v in model.trainable_variables if v.name.startswith("retina_net_head/scores/kernel"))
    bias = next(v for v in model.trainable_variables if v.name.startswith("retina_net_head/scores/bias"))
    kernel.assign(tf.random.normal(kernel.shape, stddev=0.1, seed=1))
    bias.assign(tf.zeros_like(bias))
    h, w = x.shape[1:3]
    raw = model(x, image_shape=tf.constant([[h, w]] * x.shape[0], tf.float32),
                anchor_boxes=detection.anchor_boxes(config, h, w, x.shape[0]), training=False)["cls_outputs"]
    logits = np.concatenate([v.numpy().ravel() for v in raw.values()])
    bias.assign(tf.fill(bias.shape, float(np.log(0.05 / 0.95) - np.quantile(logits, 1 - passing))))


def _flops(fn, spec) -> float:
    """Float operations of one call of a tf.function on a fixed input shape (TensorFlow's profiler)."""
    from tensorflow.python.profiler import model_analyzer, option_builder

    graph = fn.get_concrete_function(spec).graph
    opts = option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation())
    return float(model_analyzer.profile(graph, options=opts.with_empty_output().build()).total_float_ops)


def _build_tf(contestant: str, s: Scenario):
    """(one-step callable, a callable giving the float operations per image, or None) for a TensorFlow contestant."""
    import numpy as np
    import tensorflow as tf
    import tf_keras

    h, w = s.size
    x = tf.random.normal((s.batch, h, w, 3), seed=1)
    if contestant in ("keras3_apps", "tf_keras_apps"):
        keras = __import__("keras" if contestant == "keras3_apps" else "tf_keras")
        keras.mixed_precision.set_global_policy(_policy(s.precision))
        model = keras.applications.ConvNeXtTiny(
            weights=None, include_top=s.kind != "features", include_preprocessing=False, input_shape=(h, w, 3)
        )
        if s.kind == "features":  # stage outputs: the inputs of the three downsamplers, and the last map
            downs = [model.get_layer(f"convnext_tiny_downsampling_block_{i}") for i in range(3)]
            outs = [d.get_input_at(len(d.inbound_nodes) - 1) if hasattr(d, "get_input_at") else d.input for d in downs]
            model = keras.Model(model.inputs, outs + [model.output])
        keras.mixed_precision.set_global_policy("float32")
        fn = tf.function(lambda x: model(x, training=False))
        return (lambda: tf.nest.map_structure(lambda t: t.numpy(), fn(x))), None

    from convnext_tf.backbones import ConvNeXtBackbone, create_model, inference_function
    from convnext_tf.tasks.segmentation import build_segmentation_model

    tf_keras.mixed_precision.set_global_policy(_policy(s.precision))
    if s.kind in ("classify", "train-classify"):
        model = create_model("convnext_tiny", input_shape=(h, w, 3))
    elif s.kind == "features":
        model = ConvNeXtBackbone("tiny", output_norm=False)  # raw stage outputs, as the peers give
    elif s.kind in ("segment", "train-segment"):
        backbone = ConvNeXtBackbone("tiny", gradient_checkpointing=contestant.endswith("checkpointing"))
        model = build_segmentation_model(backbone, 150, neck="upernet", channels=512)
    else:
        from convnext_tf.tasks import detection, registry_imports  # noqa: F401 (Model Garden's registries)

        config = detection.retinanet_config("tiny", num_classes=91)
        model = detection.build_retinanet(config)
    tf_keras.mixed_precision.set_global_policy("float32")
    _nonzero_biases(model)
    if s.kind == "detect":
        _calibrate_scores(model, config, x)
    spec = tf.TensorSpec(x.shape, tf.float32)

    if s.kind.startswith("train"):
        optimizer = tf_keras.optimizers.SGD(0.01, momentum=0.9)
        if s.kind == "train-classify":
            y = tf.constant(np.random.default_rng(0).integers(0, 1000, s.batch))
            loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            loss_of = lambda out: loss_fn(y, out)  # noqa: E731
        else:
            y = tf.constant(np.random.default_rng(0).integers(0, 150, (s.batch, h, w)))
            loss_of = lambda out: model.compute_loss(y, out)  # noqa: E731 (cross-entropy + 0.4 x auxiliary)

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                loss = loss_of(model(x, training=True))
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss

        forward = tf.function(lambda x: model(x, training=False))
        return (lambda: step(x).numpy()), lambda: 3 * _flops(forward, spec) / s.batch  # backward: about 2x the forward

    if s.kind == "detect":
        from convnext_tf.tasks import detection

        if contestant == "detect":
            return (lambda: tf.nest.map_structure(lambda t: t.numpy(), detection.detect(model, config, x))), None
        forward = tf.function(lambda x: model.head(model.decoder(model.backbone(x, training=False), training=False)))
        return (lambda: tf.nest.map_structure(lambda t: t.numpy(), forward(x))), None

    fn = inference_function(model)  # under mixed precision: the weights cast once
    if contestant.endswith("_xla"):
        fn = tf.function(lambda x: model(x, training=False), jit_compile=True)
    flops = lambda: _flops(tf.function(lambda x: model(x, training=False)), spec) / s.batch  # noqa: E731
    return (lambda: tf.nest.map_structure(lambda t: t.numpy(), fn(x))), flops


# ----------------------------------------------------------------------------- PyTorch side
def _build_torch(contestant: str, s: Scenario):
    import torch
    from transformers import (
        ConvNextConfig,
        ConvNextForImageClassification,
        UperNetConfig,
        UperNetForSemanticSegmentation,
    )

    h, w = s.size
    training = s.kind.startswith("train")
    torch.manual_seed(0)
    if s.kind in ("classify", "features", "train-classify"):
        model = ConvNextForImageClassification(ConvNextConfig(**TINY, layer_norm_eps=1e-6, num_labels=1000))
        y = torch.randint(0, 1000, (s.batch,))
    else:
        backbone = ConvNextConfig(**TINY, out_features=["stage1", "stage2", "stage3", "stage4"])
        config = UperNetConfig(backbone_config=backbone, num_labels=150, hidden_size=512, auxiliary_channels=256,
                               use_auxiliary_head=training)  # at inference ours skips the auxiliary head too
        config.backbone_config.hidden_sizes = list(backbone.hidden_sizes)
        model = UperNetForSemanticSegmentation(config)
        y = torch.randint(0, 150, (s.batch, h, w))
    model = model.to(memory_format=torch.channels_last).train(training)
    x = torch.randn(s.batch, 3, h, w).to(memory_format=torch.channels_last)
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=s.precision == "bfloat16")  # noqa: E731

    if training:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = model(pixel_values=x, labels=y).loss  # segmentation: + 0.4 x the auxiliary loss
            loss.backward()
            optimizer.step()
            return loss.item()

        return step, None

    def run():
        with torch.inference_mode(), autocast():
            if s.kind == "features":
                return model.convnext(x, output_hidden_states=True).hidden_states
            return model(pixel_values=x).logits

    return run, None


# ----------------------------------------------------------------------------- workers
def worker(contestant: str, name: str, conn) -> None:
    """Build one scenario, then serve ('run', seconds) -> images/s, ('rss',) -> peak MiB,
    ('flops',) -> float operations per image (after 'rss': profiling a graph costs memory), ('stop',)."""
    s = SCENARIOS[name]
    try:
        fn, flops = (_build_torch if contestant == "pytorch" else _build_tf)(contestant, s)
        fn()
        fn()  # trace, compile, warm caches
        conn.send(("built", None))
    except Exception as e:  # a contestant that cannot run a scenario is reported, not fatal
        conn.send(("error", f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"))
        fn = None
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            return
        if msg[0] == "rss":
            conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            continue
        if msg[0] == "flops":
            conn.send(flops() if flops else None)
            continue
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= msg[1]:
                break
        conn.send(n * s.batch / elapsed)


def matmul_peak(dtype: str) -> float:
    """GFLOP/s of a 4096x4096 matmul through TensorFlow (best of several)."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((4096, 4096)), dtype)
    f = tf.function(lambda a: tf.reduce_sum(tf.cast(tf.matmul(a, a)[:1, :1], tf.float32)))
    f(a).numpy()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        f(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * 4096**3 / best / 1e9


def _runtime_rss(framework: str, conn) -> None:
    """Peak RSS (MiB) of a process that has imported a framework and built nothing: the floor
    under every figure of the RSS columns."""
    if framework == "pytorch":
        import torch  # noqa: F401
        from transformers import ConvNextForImageClassification, UperNetForSemanticSegmentation  # noqa: F401
    else:
        import tensorflow  # noqa: F401
        import tf_keras  # noqa: F401

        import convnext_tf.backbones  # noqa: F401
    conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _in_process(ctx, target, *args):
    """`target(*args, conn)` in a fresh process; what it sends."""
    parent, child = ctx.Pipe()
    ctx.Process(target=target, args=(*args, child), daemon=True).start()
    return parent.recv()


def _peaks(conn) -> None:
    conn.send({d: matmul_peak(d) for d in ("float32", "bfloat16")})


DIED = "the worker process died (out of memory?)"


def run_scenario(ctx, name: str, rounds: int, seconds: float) -> dict:
    """Fresh workers for one scenario; returns {contestant: {'ips': [...], 'rss': MiB, 'flops', 'error'}}."""
    contestants = GROUPS[SCENARIOS[name].group]
    out = {}
    pipes = {}
    for c in contestants:  # built one after the other, so that builds do not compete for the cores
        parent, child = ctx.Pipe()
        ctx.Process(target=worker, args=(c, name, child), daemon=True).start()
        child.close()  # the worker's end: only the worker holds it, so its death reads as EOF here
        try:
            status, value = parent.recv()
        except EOFError:
            status, value = "died", DIED
        out[c] = {"ips": [], "rss": None, "flops": None, "error": None if status == "built" else value}
        if status == "built":
            pipes[c] = parent
        else:
            print(f"{name:<34} {c:<26} {value}", flush=True)
            if status == "error":
                parent.send(("stop",))

    def ask(c, *message):
        """A worker's answer; None once it has died (killed for memory, say): reported, not fatal."""
        try:
            pipes[c].send(message)
            return pipes[c].recv()
        except (EOFError, OSError):
            del pipes[c]
            out[c].update(ips=[], error=DIED)
            print(f"{name:<34} {c:<26} {DIED}", flush=True)
            return None

    for r in range(SCENARIOS[name].rounds or rounds):
        for c in list(pipes):
            ips = ask(c, "run", seconds)
            if ips is not None:
                out[c]["ips"].append(ips)
                print(f"round {r + 1}  {name:<34} {c:<26} {ips:.3f} img/s", flush=True)
    for c in list(pipes):
        out[c]["rss"] = ask(c, "rss")
        if c in pipes:
            out[c]["flops"] = ask(c, "flops")
            pipes[c].send(("stop",))
    return out


# ----------------------------------------------------------------------------- report
def bar_chart(rows: list[tuple[str, float, float | None]], path: str) -> None:
    """Horizontal bars of ratios (ours / peer) with a line at 1x and a tick at each target; PNG."""
    import cv2
    import numpy as np

    left, width, row, top = 430, 560, 30, 50
    scale = width / max(2.0, max(r for _, r, _ in rows) * 1.1)
    img = np.full((top + row * len(rows) + 30, left + width + 20, 3), 255, np.uint8)
    cv2.putText(img, "convnext-tf speed / peer (images/s ratio; | = target)", (10, 30),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (label, ratio, target) in enumerate(rows):
        y = top + i * row
        met = target is None or ratio >= target
        colour = (80, 160, 60) if met else (60, 60, 200)  # BGR: green met, red not
        cv2.rectangle(img, (left, y + 4), (left + int(ratio * scale), y + row - 6), colour, -1)
        cv2.putText(img, label[:52], (10, y + row - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"{ratio:.2f}x", (left + int(ratio * scale) + 5, y + row - 10),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        if target is not None:
            x = left + int(target * scale)
            cv2.line(img, (x, y + 1), (x, y + row - 3), (0, 0, 0), 2)
    x1 = left + int(scale)
    cv2.line(img, (x1, top - 5), (x1, top + row * len(rows)), (120, 120, 120), 1)
    cv2.putText(img, "1x", (x1 - 8, top + row * len(rows) + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    ok, data = cv2.imencode(".png", img)
    with open(path, "wb") as f:
        f.write(data.tobytes())


def report(results: dict, peaks: dict, runtimes: dict, args) -> tuple[list[str], list]:
    lines = [
        "# convnext-tf benchmark (images/s, median of rounds)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; matmul peak (4096x4096 through TensorFlow): "
        f"float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['bfloat16']:.0f} GFLOP/s. "
        f"{args.rounds} rounds of {args.seconds:g} s (at least one call) per scenario and contestant, "
        "contestants alternating, each scenario in fresh processes. Random weights (biases non-zero). "
        "Inference in Keras runs through `inference_function` (weights fixed when traced, cast once; layer scales "
        "folded; oneDNN's fused LayerNorm; float32 3x3 convolutions by Winograd). fp32 = float32; "
        "bf16 = mixed_bfloat16 in Keras, bfloat16 autocast in PyTorch. "
        "PyTorch: Hugging Face ConvNeXt / UperNet in channels_last (inference_mode for inference). "
        "Training: one SGD step (forward, backward, update); UperNet with its auxiliary head, "
        "its large float32 3x3 convolutions trained by Winograd too. "
        "`peak` = ours' FLOPs x images/s over the matmul peak of the precision (training FLOPs taken as "
        "3x the forward pass; direct convolutions' FLOPs, so Winograd can pass 100%). "
        "RSS: peak resident memory of the scenario's process; "
        f"the imports alone take {runtimes['convnext_tf']:.0f} MiB (TensorFlow, tf_keras, convnext_tf; "
        f"TF_USE_LEGACY_KERAS={os.environ['TF_USE_LEGACY_KERAS']}) and "
        f"{runtimes['pytorch']:.0f} MiB (PyTorch, transformers). "
        "Detection: RetinaNet-T (91 classes), scores spread so that 0.1% of (anchor, class) pairs clear the "
        "0.05 threshold, as with a trained model; `detect` is `detection.detect` (network and NMS), "
        "`forward` the backbone, FPN and heads alone.",
        "",
    ]
    chart = []
    for group, contestants in GROUPS.items():
        names = [n for n in results if SCENARIOS[n].group == group]
        if not names:
            continue
        ours, peers = contestants[0], contestants[1:]
        lines += [f"## {group}", "",
                  "| scenario | " + " | ".join(contestants) + " | "
                  + " | ".join(f"{ours} / {c}" for c in peers) + f" | {ours} peak | RSS MiB (" + ", ".join(contestants) + ") |",
                  "|---" * (2 * len(contestants) + 2) + "|"]
        for n in names:
            r = results[n]
            med = {c: statistics.median(r[c]["ips"]) if r[c]["ips"] else None for c in contestants}
            cells = [f"{med[c]:.3g}" if med[c] else f"n/a ({r[c]['error']})" for c in contestants]
            ratios = []
            for c in peers:
                if med[ours] and med[c]:
                    ratio = med[ours] / med[c]
                    target = TARGETS.get((n, c))
                    ratios.append(f"{ratio:.2f}x" + (f" ({'met' if ratio >= target else 'not met'}, target {target:g}x)" if target else ""))
                    if target or c == "pytorch":
                        chart.append((f"{n}: {ours} / {c}", ratio, target))
                else:
                    ratios.append("n/a")
            flops = r[ours]["flops"]
            peak = peaks["bfloat16" if SCENARIOS[n].precision == "bfloat16" else "float32"]
            frac = f"{flops * med[ours] / 1e9 / peak:.0%}" if flops and med[ours] else "n/a"
            rss = ", ".join(f"{r[c]['rss']:.0f}" if r[c]["rss"] else "n/a" for c in contestants)
            lines.append(f"| {n} | " + " | ".join(cells) + " | " + " | ".join(ratios) + f" | {frac} | {rss} |")
        lines.append("")
    return lines, chart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per round (at least one call)")
    parser.add_argument("--groups", default=",".join(GROUPS))
    parser.add_argument("--scenarios", default="", help="comma-separated scenario names (default: all of --groups)")
    parser.add_argument("--out", default=os.path.join(HERE, "results.md"))
    args = parser.parse_args()
    groups = [g for g in args.groups.split(",") if g]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown groups {unknown}; choose from {list(GROUPS)}")
    names = [n for n in args.scenarios.split(",") if n] or [n for n, s in SCENARIOS.items() if s.group in groups]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {list(SCENARIOS)}")

    ctx = mp.get_context("spawn")
    peaks = _in_process(ctx, _peaks)
    print(f"matmul peak: float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['bfloat16']:.0f} GFLOP/s", flush=True)
    runtimes = {f: _in_process(ctx, _runtime_rss, f) for f in ("convnext_tf", "pytorch")}
    print(f"RSS of the imports alone: {runtimes}", flush=True)
    results = {n: run_scenario(ctx, n, args.rounds, args.seconds) for n in names}
    lines, chart = report(results, peaks, runtimes, args)
    chart_path = os.path.splitext(args.out)[0] + ".png"
    if chart:
        bar_chart(chart, chart_path)
        lines.append(f"![ratios]({os.path.basename(chart_path)})")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
