"""Fused C++ deformable conv against the composite of stock ops, and STDF-R3 inference FPS.

    python benchmarks/bench_deform.py [--runs 5] [--repeats 5] [--no_stdf] [--impls composite fused]
        [--layer stdf] [--sizes 416x240 832x480] [--out benchmarks/results/deform.md]

The layer shape is STDF's fusion: 7 -> 64 channels, 3x3, 7 deformable groups, at 416x240 and
832x480; --layer picks one of RFDA's instead (LAYERS), --sizes other sizes. Each (implementation,
size) runs in its own process; memory is the peak RSS growth
over the process's RSS just before the first call (ru_maxrss, so it includes every transient).
Targets from the issues: fused >= 10x the composite for forward+backward in every run at <= 1/4 of
its peak memory; STDF-R3 >= 2 FPS at 832x480 on 2 cores (issue 21, with bf16 where the CPU has
it: benchmarks/bench_precision.py times that).
"""

import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import (arg_parser, finished, peak_rss_mb, publish, rss_mb, run_as_child, run_child, timed,  # noqa: E402
                     timed_calls)

SIZES = ((416, 240), (832, 480))
# name: (input channels, output channels, k, deformable groups), the models' deformable layers
LAYERS = {
    "stdf": (7, 64, 3, 7),  # STDF's fusion
    "rfda_dsta": (16, 16, 3, 16),  # RFDA's DSTA attention (at half the frame's size)
    "rfda_align": (128, 64, 1, 128),  # RFDA's recursive-fusion alignment
}


def deform_inputs(width, height, layer="stdf"):
    """A layer's inputs (x, offset, mask NHWC; Keras kernel; bias), float32, seed 0."""
    import numpy as np

    c, o, k, dg = LAYERS[layer]
    rng = np.random.default_rng(0)
    return (rng.random((1, height, width, c), dtype=np.float32),
            rng.normal(0, 2, (1, height, width, 2 * dg * k * k)).astype(np.float32),
            rng.random((1, height, width, dg * k * k), dtype=np.float32),
            rng.normal(0, 0.1, (k, k, c, o)).astype(np.float32), np.zeros(o, np.float32))


def child_layer(impl, width, height, repeats, layer="stdf"):
    os.environ["VCAR_DEFORM_IMPL"] = impl
    import tensorflow as tf

    from vcar_tf.ops.deform_conv import deform_conv2d, selected_impl

    assert selected_impl() == impl
    x, offset, mask, kernel, bias = deform_inputs(width, height, layer)
    dg = LAYERS[layer][3]
    x, offset, mask = tf.constant(x), tf.constant(offset), tf.constant(mask)
    kernel, bias = tf.Variable(kernel), tf.Variable(bias)

    @tf.function
    def forward():
        return deform_conv2d(x, offset, mask, kernel, bias, dg)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch([x, offset, mask])
            loss = tf.reduce_sum(deform_conv2d(x, offset, mask, kernel, bias, dg))
        # the loss is returned so that the forward runs, as in training: the gradient of a sum needs
        # no forward value, and grappler would prune an unused fused forward (not the composite's)
        return [loss, *tape.gradient(loss, [x, offset, mask, kernel, bias])]

    base = rss_mb()
    fwd = statistics.median(timed_calls(lambda: finished(forward()), repeats))
    both = statistics.median(timed_calls(lambda: finished(forward_backward()), repeats))
    peak = peak_rss_mb()
    print(json.dumps({"forward_ms": 1000 * fwd, "fwd_bwd_ms": 1000 * both, "peak_growth_mb": peak - base}))


def child_stdf(impl, width, height, repeats):
    os.environ["VCAR_DEFORM_IMPL"] = impl
    import numpy as np

    from vcar_tf import models
    from vcar_tf.inference.streaming import inference_fn

    run = inference_fn(models.build("stdf_r3"))
    x = np.random.default_rng(0).random((1, 7, height, width, 1), dtype=np.float32)
    seconds = timed(lambda: np.asarray(run(x)), repeats)
    print(json.dumps({"fps": 1 / seconds, "rss_mb": peak_rss_mb()}))


def child(*args):
    r = run_child(__file__, *args)
    if "failed" in r:
        raise SystemExit(f"child {args} failed: {r['failed']}")
    return r


def spread(values, fmt="{:.1f}"):
    """'min / median / max' of a list of numbers."""
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def main():
    p = arg_parser(__doc__, repeats=5)
    p.add_argument("--runs", type=int, default=5, help="runs per size (each: one process per --impls, in order)")
    p.add_argument("--no_stdf", action="store_true", help="leave out the STDF-R3 FPS table")
    p.add_argument("--impls", nargs="+", choices=("composite", "fused"), default=["composite", "fused"],
                   help="time only these (the ratios need both), e.g. fused alone to compare two builds of the op")
    p.add_argument("--layer", choices=sorted(LAYERS), default="stdf")
    p.add_argument("--sizes", nargs="+", default=[f"{w}x{h}" for w, h in SIZES], help="WxH ...")
    args = p.parse_args()
    if run_as_child(args, {"layer": child_layer, "stdf": child_stdf}):
        return
    lines = ["| size | impl | forward ms | forward+backward ms | peak memory growth MB (median) |", "|---|---|---|---|---|"]
    ratios = []
    for w, h in (tuple(int(v) for v in size.split("x")) for size in args.sizes):
        runs = [{impl: child("layer", impl, w, h, args.repeats, args.layer) for impl in args.impls}
                for _ in range(args.runs)]
        for impl in args.impls:
            lines.append(f"| {w}x{h} | {impl} | {spread([r[impl]['forward_ms'] for r in runs])} | "
                         f"{spread([r[impl]['fwd_bwd_ms'] for r in runs])} | "
                         f"{statistics.median(r[impl]['peak_growth_mb'] for r in runs):.0f} |")
        if len(args.impls) < 2:
            continue
        ratio = lambda key: [r["composite"][key] / r["fused"][key] for r in runs]  # noqa: E731
        memory = statistics.median(r["fused"]["peak_growth_mb"] / max(r["composite"]["peak_growth_mb"], 1) for r in runs)
        ratios.append(f"- {w}x{h}: fused is {spread(ratio('forward_ms'))}x faster forward, "
                      f"{spread(ratio('fwd_bwd_ms'))}x forward+backward (min / median / max of the {args.runs} "
                      f"runs' ratios), at {memory:.2f}x the memory")
    c_in, c_out, k, dg = LAYERS[args.layer]
    stdf = ["| STDF-R3 | impl | FPS | peak RSS MB |", "|---|---|---|---|"]
    for w, h in () if args.no_stdf else ((832, 480), (1920, 1080)):
        for impl in ("fused", "composite"):
            r = child("stdf", impl, w, h, max(1, args.repeats - 1))
            stdf.append(f"| {w}x{h} | {impl} | {r['fps']:.2f} | {r['rss_mb']:.0f} |")
    publish("Deformable convolution: fused op against the composite",
            f"Layer {args.layer}: {c_in} -> {c_out} channels, {k}x{k}, {dg} deformable groups, batch 1, float32. "
            "Each run is "
            f"one process per implementation ({', then '.join(args.impls)}), each timing the median of "
            f"{args.repeats} calls after a "
            f"warm-up (one call slowed by the machine moves a median less than a mean); min / median / max over "
            f"{args.runs} runs.\n\n" + "\n".join(lines) + "\n\n" + "\n".join(ratios)
            + ("" if args.no_stdf else "\n\nSTDF-R3 inference of one frame (7-frame window) through "
               "`vcar_tf.inference.streaming.inference_fn`.\n\n" + "\n".join(stdf)) + "\n", args.out)


if __name__ == "__main__":
    main()
