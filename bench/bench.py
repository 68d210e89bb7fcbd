"""ConvNeXt-T throughput: convnext-tf against Keras' ConvNeXt (Keras 3 and tf_keras) and PyTorch.

Each contestant lives in its own worker process (so its peak RSS is its own); the workers take
turns, scenario by scenario, for several rounds, and the median images/s is reported.
Writes bench/results.md.

    python bench/bench.py [--rounds 5] [--seconds 3] [--only convnext_tf,pytorch]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time

SCENARIOS = {
    # name: (height/width, batch, precision, features only)
    "224 b1 fp32": (224, 1, "float32", False),
    "224 b8 fp32": (224, 8, "float32", False),
    "512 b2 features fp32": (512, 2, "float32", True),
    "224 b1 bf16": (224, 1, "bfloat16", False),
    "224 b8 bf16": (224, 8, "bfloat16", False),
}
CONTESTANTS = ("convnext_tf", "convnext_tf_xla", "keras3_apps", "tf_keras_apps", "pytorch")
OURS = "convnext_tf"


def _build_tf(contestant: str, size: int, precision: str, features: bool):
    """A callable running one forward pass of the TensorFlow contestant on a fixed batch."""
    import tensorflow as tf

    if contestant.startswith("convnext_tf"):
        import tf_keras

        from convnext_tf.backbones import ConvNeXtBackbone, create_model

        tf_keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
        if features:  # raw stage outputs, as the peers give
            model = ConvNeXtBackbone("tiny", output_norm=False)
        else:
            model = create_model("convnext_tiny", input_shape=(size, size, 3))
        tf_keras.mixed_precision.set_global_policy("float32")
    else:
        keras = __import__("keras" if contestant == "keras3_apps" else "tf_keras")
        keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
        model = keras.applications.ConvNeXtTiny(
            weights=None, include_top=not features, include_preprocessing=False, input_shape=(size, size, 3)
        )
        if features:  # stage outputs: the inputs of the three downsamplers, and the last map
            downs = [model.get_layer(f"convnext_tiny_downsampling_block_{i}") for i in range(3)]
            # tf_keras: the input of the call in this model, not the nested Sequential's own Input
            outs = [d.get_input_at(len(d.inbound_nodes) - 1) if hasattr(d, "get_input_at") else d.input for d in downs]
            model = keras.Model(model.inputs, outs + [model.output])
        keras.mixed_precision.set_global_policy("float32")
    fn = tf.function(lambda x: model(x, training=False), jit_compile=contestant.endswith("_xla"))
    return fn


def _build_torch(size: int, batch: int, precision: str, features: bool):
    import torch
    from transformers import ConvNextConfig, ConvNextForImageClassification

    torch.set_grad_enabled(False)
    config = ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768], layer_norm_eps=1e-6)
    model = ConvNextForImageClassification(config).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            if features:
                return model.convnext(x, output_hidden_states=True).hidden_states
            return model(x).logits

    return run


def worker(contestant: str, conn) -> None:
    """Serve ('run', scenario, seconds) -> images/s and ('rss',) -> peak RSS in MiB."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    built = {}
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            return
        if msg[0] == "rss":
            conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            continue
        _, scenario, seconds = msg
        size, batch, precision, features = SCENARIOS[scenario]
        try:
            if scenario not in built:
                if contestant == "pytorch":
                    fn = _build_torch(size, batch, precision, features)
                else:
                    import tensorflow as tf

                    tf_fn = _build_tf(contestant, size, precision, features)
                    x = tf.random.normal((batch, size, size, 3))
                    def fn(tf_fn=tf_fn, x=x):  # bind now: later scenarios rebind these names
                        return tf.nest.map_structure(lambda t: t.numpy(), tf_fn(x))
                fn()
                fn()  # trace, compile, warm caches
                built[scenario] = fn
            fn = built[scenario]
            n, start = 0, time.perf_counter()
            while True:
                fn()
                n += 1
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    break
            conn.send(n * batch / elapsed)
        except Exception as e:  # a contestant that cannot run a scenario is reported, not fatal
            conn.send(f"error: {type(e).__name__}: {str(e).splitlines()[0][:120]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per scenario and round")
    parser.add_argument("--only", default=",".join(CONTESTANTS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.md"))
    args = parser.parse_args()
    contestants = [c for c in args.only.split(",") if c]
    scenarios = [s for s in args.scenarios.split(",") if s]

    ctx = mp.get_context("spawn")
    pipes = {}
    for c in contestants:
        parent, child = ctx.Pipe()
        ctx.Process(target=worker, args=(c, child), daemon=True).start()
        pipes[c] = parent
    results: dict[tuple[str, str], list] = {}
    for r in range(args.rounds):
        for s in scenarios:
            for c in contestants:
                pipes[c].send(("run", s, args.seconds))
                value = pipes[c].recv()
                results.setdefault((s, c), []).append(value)
                shown = f"{value:.2f} img/s" if isinstance(value, float) else value
                print(f"round {r + 1}/{args.rounds}  {s:<22} {c:<16} {shown}", flush=True)
    rss = {}
    for c in contestants:
        pipes[c].send(("rss",))
        rss[c] = pipes[c].recv()
        pipes[c].send(("stop",))

    def median(s, c):
        vals = [v for v in results.get((s, c), []) if isinstance(v, float)]
        return statistics.median(vals) if vals else None

    lines = [
        "# ConvNeXt-T throughput (images/s, median of rounds)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"{args.rounds} rounds of {args.seconds:g} s per scenario, contestants alternating. "
        "Random weights; fp32 = float32, bf16 = mixed_bfloat16 (Keras) or bfloat16 autocast (PyTorch). "
        "`convnext_tf_xla` is `tf.function(jit_compile=True)`; PyTorch is the Hugging Face "
        "reference in channels_last under inference_mode.",
        "",
        "| scenario | " + " | ".join(contestants) + " | " + " | ".join(f"{OURS} / {c}" for c in contestants if c != OURS) + " |",
        "|---" * (len(contestants) * 2) + "|",
    ]
    for s in scenarios:
        meds = {c: median(s, c) for c in contestants}
        cells = [f"{meds[c]:.2f}" if meds[c] else "n/a" for c in contestants]
        ours = meds.get(OURS)
        ratios = [f"{ours / meds[c]:.2f}x" if ours and meds[c] else "n/a" for c in contestants if c != OURS]
        lines.append(f"| {s} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    lines += ["", "Peak RSS of each worker process (MiB, all scenarios): "
              + ", ".join(f"{c} {rss[c]:.0f}" for c in contestants), ""]
    errors = {k: v for k, v in results.items() if any(isinstance(x, str) for x in v)}
    for (s, c), v in errors.items():
        lines.append(f"- {c} could not run {s}: {next(x for x in v if isinstance(x, str))}")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
