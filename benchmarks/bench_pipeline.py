"""Windows per second the tf.data pipeline produces (patch 96, batch 16, R=3 by default).

    python benchmarks/bench_pipeline.py [--data DIR] [--batches 60] [--out benchmarks/results/pipeline.md]

With no --data it uses the embedded sample set's train split.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import publish  # noqa: E402

from vcar_tf.data.layout import find_pairs, resolve_datasets  # noqa: E402
from vcar_tf.data.pipeline import PipelineConfig, make_dataset  # noqa: E402


def pipeline_rate(pairs, cfg, batches=60, warmup=5):
    """Windows per second that make_dataset delivers for these pairs."""
    it = iter(make_dataset(pairs, cfg))
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - start
    del it
    return batches * cfg.batch / seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="dataset root with raw/ (default: sample train split)")
    p.add_argument("--qp", type=int, default=37)
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--radius", type=int, default=3)
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", default=None, help="also write a Markdown table here")
    args = p.parse_args()
    roots = resolve_datasets(args.data)
    root = roots.get("train", next(iter(roots.values())))
    pairs = find_pairs(root, args.qp)
    rate = pipeline_rate(pairs, PipelineConfig(radius=args.radius, patch=args.patch, batch=args.batch),
                         args.batches, args.warmup)
    seconds = args.batches * args.batch / rate
    frames = sum(p.open()[0].num_frames for p in pairs)
    table = (f"| dataset | sequences | frames | patch | batch | R | windows/s | batches/s | ms/batch |\n"
             f"|---|---|---|---|---|---|---|---|---|\n"
             f"| {root} | {len(pairs)} | {frames} | {args.patch} | {args.batch} | {args.radius} | "
             f"{rate:.0f} | {rate / args.batch:.1f} | {1000 * seconds / args.batches:.1f} |\n")
    publish("tf.data input pipeline", table, args.out)


if __name__ == "__main__":
    main()
