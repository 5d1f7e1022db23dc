"""Non-local warp: the two-stage approximation against the exact warp, and NL-ConvLSTM inference.

    python benchmarks/bench_nonlocal.py [--repeats 3] [--out benchmarks/results/nonlocal.md]

One warp moves h and c (2 x 64 channels) of frame t-1 toward frame t with 64-channel features,
batch 1, float32, as in the model. Each measurement runs in its own process; memory is the peak
RSS growth over the RSS just before the first call (ru_maxrss, every transient included).
Targets from the issue: at 180x180 the approximation is >= 43x faster than the exact warp at
<= 1/20 of its memory (paper: 102 ms against 4,392 ms), and its time grows about linearly with
the pixel count up to 832x480.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import arg_parser, peak_rss_mb, publish, rss_mb, run_as_child, run_child, timed  # noqa: E402

SCALING = ((180, 180), (416, 240), (640, 360), (832, 480))


def child_warp(kind, width, height, repeats):
    import numpy as np
    import tensorflow as tf

    from vcar_tf.ops.nonlocal_warp import approx_warp, exact_warp

    rng = np.random.default_rng(0)
    prev, cur = (tf.constant(rng.normal(size=(1, height, width, 64)).astype(np.float32)) for _ in range(2))
    state = tf.constant(rng.normal(size=(1, height, width, 128)).astype(np.float32))
    warp = tf.function(exact_warp if kind == "exact" else approx_warp)
    base = rss_mb()
    seconds = timed(lambda: warp(prev, cur, state).numpy(), repeats)
    print(json.dumps({"ms": 1000 * seconds, "peak_growth_mb": peak_rss_mb() - base}))


def child_model(kind, width, height, repeats):
    import numpy as np

    from vcar_tf import models
    from vcar_tf.inference.streaming import inference_fn

    run = inference_fn(models.build("nl_convlstm", warp=kind))
    x = np.random.default_rng(0).random((1, 7, height, width, 1), dtype=np.float32)
    seconds = timed(lambda: np.asarray(run(x)), repeats)
    print(json.dumps({"ms": 1000 * seconds, "rss_mb": peak_rss_mb()}))


def main():
    args = arg_parser(__doc__).parse_args()
    if run_as_child(args, {"warp": child_warp, "model": child_model}):
        return

    def cell(r, key, fmt):
        return r["failed"] if "failed" in r else format(r[key], fmt)

    exact = run_child(__file__, "warp", "exact", 180, 180, args.repeats)
    approx = {size: run_child(__file__, "warp", "approx", *size, args.repeats) for size in SCALING}
    small = approx[SCALING[0]]
    lines = ["| 180x180 | ms per warp | peak memory growth MB |", "|---|---|---|",
             f"| exact | {cell(exact, 'ms', '.1f')} | {cell(exact, 'peak_growth_mb', '.0f')} |",
             f"| approx (p 10, k 4) | {cell(small, 'ms', '.1f')} | {cell(small, 'peak_growth_mb', '.0f')} |"]
    if "failed" not in exact and "failed" not in small:
        lines.append(f"\nThe approximation is {exact['ms'] / small['ms']:.1f}x faster than the exact warp at "
                     f"{small['peak_growth_mb'] / exact['peak_growth_mb']:.3f}x its memory (targets: >= 43x, <= 0.05x).")
    scaling = ["| size | pixels | approx ms | ms per 100K pixels | relative to 180x180 | peak memory growth MB |",
               "|---|---|---|---|---|---|"]
    for (w, h), r in approx.items():
        if "failed" in r:
            scaling.append(f"| {w}x{h} | {w * h:,d} | {r['failed']} | | | |")
            continue
        per = r["ms"] / (w * h) * 1e5
        base = small["ms"] / (180 * 180) * 1e5 if "failed" not in small else float("nan")
        scaling.append(f"| {w}x{h} | {w * h:,d} | {r['ms']:.1f} | {per:.2f} | {per / base:.2f}x | "
                       f"{r['peak_growth_mb']:.0f} |")
    model = ["| NL-ConvLSTM (7 frames) | warp | ms per frame | peak RSS MB |", "|---|---|---|---|"]
    for w, h in ((416, 240), (832, 480)):
        for kind in ("approx", "none"):
            r = run_child(__file__, "model", kind, w, h, max(1, args.repeats - 1))
            model.append(f"| {w}x{h} | {kind} | {cell(r, 'ms', '.0f')} | {cell(r, 'rss_mb', '.0f')} |")
    publish("Non-local warp: two-stage approximation against exact, and NL-ConvLSTM inference",
            "One warp of h and c (128 channels) with 64-channel features, batch 1, float32, "
            f"mean of {args.repeats} after a warm-up.\n\n" + "\n".join(lines)
            + "\n\nScaling of the approximation (linear in the pixel count means a constant ms per 100K pixels):\n\n"
            + "\n".join(scaling)
            + "\n\nNL-ConvLSTM inference of the centre frame of a 7-frame window through "
              "`vcar_tf.inference.streaming.inference_fn`; `none` is the same network with the warp switched off, "
              "to show the warp's share.\n\n" + "\n".join(model) + "\n", args.out)


if __name__ == "__main__":
    main()
