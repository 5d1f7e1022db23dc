"""Whole-split evaluation speed: frames per second of vcar_tf.inference.sequence.evaluate_pairs
(decode, enhancement, per-frame PSNR/SSIM, the whole report's work) per model and frames per call.

    python benchmarks/bench_evaluate.py --data data/presets/val [--models stdf_r3 dncnn]
        [--batches 1 4] [--sequences 2] [--rounds 2] [--package_root CHECKOUT] [--out benchmarks/results/evaluate.md]

Each (model, batch) runs in its own process with the model's untrained weights (speed does not
depend on them), over the first `--sequences` sequences of the folder's QP37 pairs, `--rounds`
times with the batches alternating. The figure is enhanced frames divided by the wall time of the
whole evaluate_pairs call, tracing included, as a user of vcar-evaluate waits for it.
"""

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_deform import spread  # noqa: E402
from machine import arg_parser, peak_rss_mb, publish, run_as_child, run_child  # noqa: E402


def child_evaluate(model_name, batch, data, sequences, package_root):
    import inspect

    if package_root != "-":
        sys.path.insert(0, package_root)

    from vcar_tf import models
    from vcar_tf.data.layout import find_pairs
    from vcar_tf.inference.sequence import evaluate_pairs

    pairs = find_pairs(data, 37)[:sequences]
    model = models.build(model_name)
    radius = models.spec(model_name).radius
    # a code version without the batch argument (the "before" of a comparison) takes one frame per call
    kwargs = {"batch": batch} if "batch" in inspect.signature(evaluate_pairs).parameters else {}
    if batch > 1 and not kwargs:
        raise SystemExit("this vcar_tf's evaluate_pairs has no batch argument")
    start = time.perf_counter()
    rows, _ = evaluate_pairs(model, pairs, radius, **kwargs)
    assert package_root == "-" or models.__file__.startswith(os.path.abspath(package_root)), models.__file__
    seconds = time.perf_counter() - start
    frames = sum(int(r["frames"]) for r in rows)
    print(json.dumps({"fps": frames / seconds, "frames": frames, "seconds": seconds, "rss_mb": peak_rss_mb(),
                      "delta_psnr": statistics.mean(float(r["delta_psnr"]) for r in rows)}))


def main():
    p = arg_parser(__doc__)
    p.add_argument("--data", default=None, help="a prepared split folder (e.g. data/presets/val); required")
    p.add_argument("--models", nargs="+", default=["arcnn", "dncnn", "stdf_r3", "stifn_r3"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    p.add_argument("--sequences", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--package_root", default=None,
                   help="import vcar_tf from this checkout (e.g. a git worktree of an earlier commit: the before of a comparison)")
    args = p.parse_args()
    if run_as_child(args, {"evaluate": child_evaluate}):
        return
    if args.data is None:
        p.error("--data is required")
    results = {}
    for _ in range(args.rounds):
        for name in args.models:
            for batch in args.batches:
                r = run_child(__file__, "evaluate", name, batch, args.data, args.sequences,
                              os.path.abspath(args.package_root) if args.package_root else "-")
                if "failed" in r:
                    raise SystemExit(f"{name} at batch {batch} failed: {r['failed']}")
                results.setdefault((name, batch), []).append(r)
    lines = ["| model | frames per call | frames/s min / median / max | ΔPSNR dB (untrained) | peak RSS MB (median) |",
             "|---|---|---|---|---|"]
    ratios = []
    for name in args.models:
        for batch in args.batches:
            rs = results[(name, batch)]
            lines.append(f"| {name} | {batch} | {spread([r['fps'] for r in rs], '{:.3f}')} | "
                         f"{rs[0]['delta_psnr']:+.5f} | {statistics.median(r['rss_mb'] for r in rs):.0f} |")
        base = statistics.median(r["fps"] for r in results[(name, args.batches[0])])
        ratios += [f"- {name}: batch {b} / batch {args.batches[0]} = "
                   f"{statistics.median(r['fps'] for r in results[(name, b)]) / base:.2f}x" for b in args.batches[1:]]
    frames = results[(args.models[0], args.batches[0])][0]["frames"]
    code = f"vcar_tf imported from `{args.package_root}`. " if args.package_root else ""
    publish("Whole-split evaluation speed",
            f"{code}`evaluate_pairs` over the first {args.sequences} sequences of `{args.data}` ({frames} frames), untrained "
            f"weights, {args.rounds} rounds, batches alternating; each child's one call timed whole.\n\n"
            + "\n".join(lines) + "\n\nMedians:\n" + "\n".join(ratios) + "\n", args.out, append=True)


if __name__ == "__main__":
    main()
