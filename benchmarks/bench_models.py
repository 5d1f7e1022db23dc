"""Per model: parameters, multiply-accumulates per frame, training steps/s and samples/s,
the input pipeline's rate against what training consumes, inference FPS and peak RSS at
416x240, 832x480 and 1920x1080, on this machine's CPU.

    python benchmarks/bench_models.py [--models arcnn dncnn stifn_r3] [--out benchmarks/results/models.md]

Each inference size runs in its own process so that its peak RSS is its own.
"""

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import publish, run_child  # noqa: E402

SIZES = ((416, 240), (832, 480), (1920, 1080))


def macs_per_pixel(model):
    """Multiply-accumulates per output pixel of every stride-1 Conv2D/Conv3D layer."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv3D)):
            kernel = layer.kernel.shape  # (..., in, out)
            per_position = int(__import__("numpy").prod(kernel))
            depth = layer.output.shape[1] if isinstance(layer, keras.layers.Conv3D) else 1
            total += per_position * depth
    return total


def child_inference(name, width, height, repeats):
    import numpy as np

    from vcar_tf import models

    from vcar_tf.evaluation import inference_fn

    run = inference_fn(models.build(name))
    radius = models.spec(name).radius
    x = np.random.default_rng(0).random((1, 2 * radius + 1, height, width, 1), dtype=np.float32)
    run(x)  # warm-up and trace
    start = time.perf_counter()
    for _ in range(repeats):
        run(x)
    fps = repeats / (time.perf_counter() - start)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"fps": fps, "rss_mb": rss}))


def child_training(name, patch, batch, steps):
    import numpy as np
    import tensorflow as tf
    import keras

    from vcar_tf import models

    model = models.build(name)
    radius = models.spec(name).radius
    opt = keras.optimizers.Adam(1e-4)
    opt.build(model.trainable_variables)
    x = tf.constant(np.random.default_rng(0).random((batch, 2 * radius + 1, patch, patch, 1), dtype=np.float32))
    y = x[:, radius]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    print(json.dumps({"steps_per_s": steps / (time.perf_counter() - start)}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--train_steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None)
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, name, *rest = args.child
        if kind == "infer":
            child_inference(name, *map(int, rest))
        else:
            child_training(name, *map(int, rest))
        return
    from vcar_tf import models

    from bench_pipeline import pipeline_rate
    from vcar_tf.data.layout import find_pairs, resolve_datasets
    from vcar_tf.data.pipeline import PipelineConfig

    sample_train = find_pairs(resolve_datasets(None)["train"], 37)
    names = args.models or models.names()
    lines = ["| model | params | MACs/frame 832x480 | train steps/s | train samples/s | pipeline windows/s | "
             "pipeline / training | " + " | ".join(f"FPS {w}x{h} | RSS MB {w}x{h}" for w, h in SIZES) + " |",
             "|---|---|---|---|---|---|---|" + "---|---|" * len(SIZES)]
    for name in names:
        model = models.build(name)
        macs = macs_per_pixel(model) * 832 * 480
        train = run_child(__file__, "train", name, args.patch, args.batch, args.train_steps)
        feed = pipeline_rate(sample_train, PipelineConfig(radius=models.spec(name).radius, patch=args.patch,
                                                          batch=args.batch), batches=20)
        consumed = train["steps_per_s"] * args.batch
        cells = []
        for w, h in SIZES:
            r = run_child(__file__, "infer", name, w, h, args.repeats)
            cells += ["failed", r["failed"]] if "failed" in r else [f"{r['fps']:.2f}", f"{r['rss_mb']:.0f}"]
        lines.append(f"| {name} | {model.count_params():,} | {macs / 1e9:.1f} G | {train['steps_per_s']:.3f} | "
                     f"{consumed:.1f} | {feed:.0f} | {feed / consumed:.0f}x | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    publish("Models on CPU",
            f"Training at patch {args.patch}, batch {args.batch} (fp32, Adam, synthetic data); inference of "
            f"one frame (batch 1) through `vcar_tf.evaluation.inference_fn` (a tf.function, as evaluation and "
            f"vcar-enhance run it), mean of {args.repeats} after a warm-up; RSS is the peak of that process. "
            f"The pipeline column is tf.data on the embedded sample train split at the same patch, batch "
            f"and radius; 'pipeline / training' is how many times faster it feeds than training eats.\n\n"
            + "\n".join(lines) + "\n", args.out)

if __name__ == "__main__":
    main()
