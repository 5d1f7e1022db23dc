"""fp32 against Keras mixed_bfloat16 on this CPU: one 3x3 Conv2D 64->64, forward + backward, and
with --preset a shipped preset's inference of one frame.

    python benchmarks/bench_precision.py [--size 48] [--batch 8] [--repeats 5]
        [--preset stdf_r3_x265_qp37 [--frame 832x480]] [--out FILE [--append]]

Decides whether train_main.py --mixed_precision pays on a machine; each policy of the conv runs in
its own process. The preset's two builds (one per policy, the same weights) run in one process,
calls alternating, so that other load on the machine falls on both alike: seconds per frame (min,
median, max of --repeats after a warm-up) and the largest and mean |difference| of the outputs in
[0, 1] units (random frames: a speed check, not a quality figure).
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import publish  # noqa: E402


def child(policy, size, batch, repeats):
    import keras
    import tensorflow as tf

    keras.mixed_precision.set_global_policy(policy)
    layer = keras.layers.Conv2D(64, 3, padding="same")
    x = tf.random.uniform((batch, size, size, 64))
    layer(x)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            y = tf.cast(layer(x), tf.float32)
            loss = tf.reduce_mean(y * y)
        return tape.gradient(loss, layer.trainable_variables)

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        [g.numpy() for g in step()]
    seconds = (time.perf_counter() - start) / repeats
    gflop = 3 * 2 * batch * size * size * 9 * 64 * 64 / 1e9  # forward + two backward convs
    print(json.dumps({"ms": 1000 * seconds, "gflops": gflop / seconds}))


def child_inference(preset, width, height, repeats):
    import keras
    import numpy as np

    from vcar_tf import models
    from vcar_tf.inference.streaming import inference_fn
    from vcar_tf.models.presets import preset_card

    runs = {}
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        runs[policy] = inference_fn(models.from_preset(preset))
    keras.mixed_precision.set_global_policy("float32")
    radius = models.spec(preset_card(preset)["model"]).radius
    x = np.random.default_rng(0).random((1, 2 * radius + 1, height, width, 1), dtype=np.float32)
    outs = {p: np.asarray(run(x), np.float32) for p, run in runs.items()}  # warm-up
    diff = np.abs(outs["float32"] - outs["mixed_bfloat16"])
    seconds = {p: [] for p in runs}
    for _ in range(repeats):
        for p, run in runs.items():
            start = time.perf_counter()
            np.asarray(run(x))
            seconds[p].append(time.perf_counter() - start)
    print(json.dumps({"seconds": seconds, "max_diff": float(diff.max()), "mean_diff": float(diff.mean())}))


def _inference_section(preset, frame, repeats):
    width, height = (int(v) for v in frame.split("x"))
    out = subprocess.run([sys.executable, __file__, "--child", "inference", "--preset", preset, "--frame", frame,
                          "--repeats", str(repeats)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    rows = []
    for policy, values in r["seconds"].items():
        v = sorted(values)
        rows.append(f"| {policy} | {v[0]:.3f} | {v[len(v) // 2]:.3f} | {v[-1]:.3f} | {1 / v[len(v) // 2]:.2f} |")
    f32, bf16 = (sorted(r["seconds"][p])[len(r["seconds"][p]) // 2] for p in ("float32", "mixed_bfloat16"))
    return (f"\n## Inference: preset `{preset}`, one {width}x{height} frame\n\n"
            f"Calls alternating between the two builds, {repeats} each after a warm-up.\n\n"
            "| policy | s min | s median | s max | FPS (median) |\n|---|---|---|---|---|\n" + "\n".join(rows)
            + f"\n\nbfloat16 / float32 speed (medians): {f32 / bf16:.2f}x; outputs apart by at most "
            f"{r['max_diff']:.2e}, {r['mean_diff']:.2e} on average ([0, 1] units, random frames)\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--preset", default=None, help="also time this preset's inference in both policies")
    p.add_argument("--frame", default="832x480", help="--preset: frame size WxH")
    p.add_argument("--out", default=None)
    p.add_argument("--append", action="store_true", help="add this run after what --out holds")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == "inference":
        width, height = (int(v) for v in args.frame.split("x"))
        return child_inference(args.preset, width, height, args.repeats)
    if args.child:
        return child(args.child, args.size, args.batch, args.repeats)
    results = {}
    for policy in ("float32", "mixed_bfloat16"):
        out = subprocess.run([sys.executable, __file__, "--child", policy, "--size", str(args.size), "--batch",
                              str(args.batch), "--repeats", str(args.repeats)], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(out.stderr[-2000:])
        results[policy] = json.loads(out.stdout.strip().splitlines()[-1])
    f32, bf16 = results["float32"], results["mixed_bfloat16"]
    publish("fp32 against mixed_bfloat16",
            f"3x3 Conv2D 64->64 on {args.batch}x{args.size}x{args.size}x64, forward + backward, "
            f"mean of {args.repeats}.\n\n| policy | ms | GFLOP/s |\n|---|---|---|\n"
            f"| float32 | {f32['ms']:.1f} | {f32['gflops']:.0f} |\n"
            f"| mixed_bfloat16 | {bf16['ms']:.1f} | {bf16['gflops']:.0f} |\n\n"
            f"bfloat16 / float32 speed: {f32['ms'] / bf16['ms']:.2f}x\n"
            + (_inference_section(args.preset, args.frame, args.repeats) if args.preset else ""), args.out,
            append=args.append)

if __name__ == "__main__":
    main()
