"""The imported STDF-PyTorch release against our own stdf_r3: the same graph, so the same speed.

    python benchmarks/bench_import.py --checkpoint ../shared/weights/stdf-pytorch/stdf_mfqev2_r3.safetensors
        [--repeats 3] [--out benchmarks/results/import.md]

Each (model, size) runs in its own process: stdf_r3 as the registry builds it, and the release's
weights imported by vcar_tf.models.stdf.pytorch.load_release; one frame (7-frame window) through
vcar_tf.inference.streaming.inference_fn, the fused deformable conv where it builds.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import arg_parser, peak_rss_mb, publish, run_as_child, run_child, timed  # noqa: E402

SIZES = ((416, 240), (832, 480))


def child_model(which, checkpoint, width, height, repeats):
    import numpy as np

    from vcar_tf import models
    from vcar_tf.inference.streaming import inference_fn
    from vcar_tf.models.stdf.pytorch import load_release

    model = load_release(checkpoint)[1] if which == "imported" else models.build("stdf_r3")
    run = inference_fn(model)
    x = np.random.default_rng(0).random((1, 7, int(height), int(width), 1), dtype=np.float32)
    seconds = timed(lambda: np.asarray(run(x)), int(repeats))
    print(json.dumps({"fps": 1 / seconds, "rss_mb": peak_rss_mb()}))


def main():
    p = arg_parser(__doc__)
    p.add_argument("--checkpoint", default=None, help="the release's .pt or .safetensors")
    args = p.parse_args()
    if run_as_child(args, {"model": child_model}):
        return
    if args.checkpoint is None:
        p.error("--checkpoint is required")
    lines = ["| size | model | FPS | peak RSS MB |", "|---|---|---|---|"]
    ratios = []
    for w, h in SIZES:
        r = {}
        for which in ("stdf_r3", "imported"):
            r[which] = run_child(__file__, "model", which, args.checkpoint, w, h, args.repeats)
            if "failed" in r[which]:
                raise SystemExit(f"{which} at {w}x{h} failed: {r[which]['failed']}")
            lines.append(f"| {w}x{h} | {which} | {r[which]['fps']:.2f} | {r[which]['rss_mb']:.0f} |")
        ratios.append(f"- {w}x{h}: imported / stdf_r3 FPS = {r['imported']['fps'] / r['stdf_r3']['fps']:.2f}")
    publish("Imported STDF-PyTorch release against stdf_r3",
            f"One frame, batch 1, float32, mean of {args.repeats} after a warm-up.\n\n" + "\n".join(lines)
            + "\n\n" + "\n".join(ratios) + "\n", args.out)


if __name__ == "__main__":
    main()
