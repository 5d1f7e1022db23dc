"""fp32 against Keras mixed_bfloat16 on this CPU: one 3x3 Conv2D 64->64, forward + backward, and
with --preset a shipped preset's inference of one frame in fp32, bf16 and int8 (vcar_tf.models.int8).

    python benchmarks/bench_precision.py [--size 48] [--batch 8] [--repeats 5]
        [--preset stdf_r3_x265_qp37 [--frame 832x480] [--profile N]] [--out FILE [--append]]

Decides whether train_main.py --mixed_precision pays on a machine; each policy of the conv runs in
its own process. The preset's three builds (the same weights; int8 calibrated as --precision int8
calibrates) run in one process, calls alternating, so that other load on the machine falls on all
alike: seconds per frame (min, median, max of --repeats after a warm-up) and the largest and mean
|difference| of each output from fp32's in [0, 1] units (random frames: a speed check, not a
quality figure; the quality figures are the evaluations in the README). --profile N then traces N
more calls of each build with TF's profiler: milliseconds per frame by kind of op, and the
convolutions' GFLOP/s from the graph's float-op count, to tell how far a policy is from its
convolutions' bound.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import float_ops_by_type, publish, traced_op_seconds  # noqa: E402


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
            tape.watch(x)
            y = tf.cast(layer(x), tf.float32)
            loss = tf.reduce_mean(y * y)
        # the input's gradient too, as for any layer but the first: the three convs counted below
        # (until 2026-12-04 only the weights' was taken, so two ran and GFLOP/s read 1.5x high)
        return tape.gradient(loss, [x, *layer.trainable_variables])

    step()
    start = time.perf_counter()
    for _ in range(repeats):
        [g.numpy() for g in step()]
    seconds = (time.perf_counter() - start) / repeats
    gflop = 3 * 2 * batch * size * size * 9 * 64 * 64 / 1e9  # forward + two backward convs
    print(json.dumps({"ms": 1000 * seconds, "gflops": gflop / seconds}))


def is_conv(op_type):
    """A convolution kind of TF op (oneDNN's fused ones included), not the deformable conv."""
    return "Conv" in op_type and "Deform" not in op_type


def child_inference(preset, width, height, repeats, profile=0):
    import tempfile

    import keras
    import numpy as np
    import tensorflow as tf

    from vcar_tf import models
    from vcar_tf.cli.common import CALIBRATION_SIZE, CALIBRATION_WINDOWS, calibration_windows
    from vcar_tf.inference.streaming import inference_fn
    from vcar_tf.models.int8 import Int8Model
    from vcar_tf.presets import preset_card

    runs = {}
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        runs[policy] = inference_fn(models.from_preset(preset))
    keras.mixed_precision.set_global_policy("float32")
    radius = models.spec(preset_card(preset)["model"]).radius
    fp32 = models.from_preset(preset)
    runs["int8"] = Int8Model(fp32, calibration_windows(fp32, radius, *CALIBRATION_SIZE, CALIBRATION_WINDOWS))
    x = np.random.default_rng(0).random((1, 2 * radius + 1, height, width, 1), dtype=np.float32)
    outs = {p: np.asarray(run(x), np.float32) for p, run in runs.items()}  # warm-up
    diff = {p: np.abs(outs["float32"] - out) for p, out in outs.items() if p != "float32"}
    seconds = {p: [] for p in runs}
    for _ in range(repeats):
        for p, run in runs.items():
            start = time.perf_counter()
            np.asarray(run(x))
            seconds[p].append(time.perf_counter() - start)
    result = {"seconds": seconds, "max_diff": {p: float(d.max()) for p, d in diff.items()},
              "mean_diff": {p: float(d.mean()) for p, d in diff.items()}}
    if profile:
        flops = float_ops_by_type(runs["float32"], tf.TensorSpec(x.shape, tf.float32))
        result["gflop"] = sum(flops.values()) / 1e9
        result["conv_gflop"] = sum(v for k, v in flops.items() if is_conv(k)) / 1e9
        result["kinds"] = {}
        for p, run in runs.items():
            with tempfile.TemporaryDirectory(prefix="bench-precision-") as trace_dir:
                ops, _, _ = traced_op_seconds(lambda: np.asarray(run(x)), profile, trace_dir)
            kinds = result["kinds"][p] = {}
            for op, t in ops.items():
                kind = op.rsplit(":", 1)[1]
                kinds[kind] = kinds.get(kind, 0.0) + t
    print(json.dumps(result))


def _profile_section(r, profile):
    policies = tuple(r["kinds"])
    totals = {p: sum(r["kinds"][p].values()) for p in policies}
    kinds = sorted(set().union(*(r["kinds"][p] for p in policies)),
                   key=lambda k: -max(r["kinds"][p].get(k, 0.0) for p in policies))
    rows = [f"| {k} | " + " | ".join(f"{1000 * r['kinds'][p].get(k, 0.0):.1f}" for p in policies) + " |"
            for k in kinds if max(r["kinds"][p].get(k, 0.0) / totals[p] for p in policies) >= 0.005]
    conv = {p: sum(t for k, t in r["kinds"][p].items() if is_conv(k)) for p in policies}
    rows.append("| all convolutions | " + " | ".join(f"{1000 * conv[p]:.1f}" for p in policies) + " |")
    rows.append("| all ops | " + " | ".join(f"{1000 * totals[p]:.1f}" for p in policies) + " |")
    return (f"\n### Where the frame's time goes\n\nTF profiler trace of {profile} more calls per build: kernel "
            "milliseconds per frame summed over TF's threads, by kind of op (kinds under 0.5% left out). The graph "
            f"counts {r['gflop']:.1f} GFLOP per frame, {r['conv_gflop']:.1f} of them in convolutions (TF's "
            "profiler float-op count of the frozen graph; the fused deformable conv has no count): the "
            "convolutions ran at " + ", ".join(f"{r['conv_gflop'] / conv[p]:.0f} GFLOP/s in {p}" for p in policies)
            + " (int8: billions of multiply-adds x 2 per second).\n\n"
            "| kind of op | " + " | ".join(f"{p} ms" for p in policies) + " |\n" + "|---" * (len(policies) + 1) + "|\n"
            + "\n".join(rows) + "\n")


def _inference_section(preset, frame, repeats, profile=0):
    width, height = (int(v) for v in frame.split("x"))
    out = subprocess.run([sys.executable, __file__, "--child", "inference", "--preset", preset, "--frame", frame,
                          "--repeats", str(repeats), "--profile", str(profile)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    rows = []
    for policy, values in r["seconds"].items():
        v = sorted(values)
        rows.append(f"| {policy} | {v[0]:.3f} | {v[len(v) // 2]:.3f} | {v[-1]:.3f} | {1 / v[len(v) // 2]:.2f} |")
    median = {p: sorted(v)[len(v) // 2] for p, v in r["seconds"].items()}
    speed = "; ".join(f"{p} / float32 speed (medians): {median['float32'] / median[p]:.2f}x, outputs apart by at "
                      f"most {r['max_diff'][p]:.2e}, {r['mean_diff'][p]:.2e} on average" for p in r["max_diff"])
    return (f"\n## Inference: preset `{preset}`, one {width}x{height} frame\n\n"
            f"Calls alternating between the {len(median)} builds, {repeats} each after a warm-up.\n\n"
            "| policy | s min | s median | s max | FPS (median) |\n|---|---|---|---|---|\n" + "\n".join(rows)
            + f"\n\n{speed} ([0, 1] units, random frames)\n"
            + (_profile_section(r, profile) if profile else ""))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--preset", default=None, help="also time this preset's inference in fp32, bf16 and int8")
    p.add_argument("--frame", default="832x480", help="--preset: frame size WxH")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="--preset: trace N more calls per build and list where the time goes")
    p.add_argument("--out", default=None)
    p.add_argument("--append", action="store_true", help="add this run after what --out holds")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == "inference":
        width, height = (int(v) for v in args.frame.split("x"))
        return child_inference(args.preset, width, height, args.repeats, args.profile)
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
            f"3x3 Conv2D 64->64 on {args.batch}x{args.size}x{args.size}x64, forward + backward (three convs: "
            f"the input's and the weights' gradients), "
            f"mean of {args.repeats}.\n\n| policy | ms | GFLOP/s |\n|---|---|---|\n"
            f"| float32 | {f32['ms']:.1f} | {f32['gflops']:.0f} |\n"
            f"| mixed_bfloat16 | {bf16['ms']:.1f} | {bf16['gflops']:.0f} |\n\n"
            f"bfloat16 / float32 speed: {f32['ms'] / bf16['ms']:.2f}x\n"
            + (_inference_section(args.preset, args.frame, args.repeats, args.profile) if args.preset else ""), args.out,
            append=args.append)

if __name__ == "__main__":
    main()
