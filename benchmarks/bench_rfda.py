"""RFDA against STDF-R3 in one run: inference FPS and peak RSS at 832x480 and 1920x1080 on the CPU,
and the streaming memory over a long video.

    python benchmarks/bench_rfda.py [--repeats 2] [--frames 40] [--out benchmarks/results/rfda.md]

One frame of RFDA is one `step` of the stream (window + carried state), the way evaluation,
vcar-enhance and the TF Serving step signature run it; STDF-R3 is one window. Each (model, size)
runs in its own process. The paper's GPU ratio RFDA / STDF-R3 is 10.5 / 25.1 = 0.42 FPS at 480p.
The streaming row feeds --frames frames of 416x240 through vcar_tf.inference.streaming and reports the RSS
after the first 10 frames and after the last: constant memory means they match.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import arg_parser, peak_rss_mb, publish, rss_mb, run_as_child, run_child, timed  # noqa: E402

PAPER_RATIO = 10.5 / 25.1


def child_fps(name, width, height, repeats):
    import numpy as np

    from vcar_tf import models
    from vcar_tf.inference.streaming import frame_step

    run = frame_step(models.build(name))
    x = np.random.default_rng(0).random((1, 7, height, width, 1), dtype=np.float32)
    seconds = timed(lambda: np.asarray(run(x, None)[0]), repeats)
    print(json.dumps({"fps": 1 / seconds, "rss_mb": peak_rss_mb()}))


def child_stream(frames):
    import numpy as np

    from vcar_tf import models
    from vcar_tf.inference.streaming import enhance_frames

    rng = np.random.default_rng(0)
    rss = {}
    video = (rng.random((240, 416), dtype=np.float32) for _ in range(frames))
    for t, _ in enumerate(enhance_frames(models.build("rfda"), video, 3)):
        if t + 1 in (10, frames):
            rss[t + 1] = rss_mb()
    print(json.dumps({"rss_10": rss[10], "rss_last": rss[frames]}))


def main():
    p = arg_parser(__doc__, repeats=2)
    p.add_argument("--frames", type=int, default=40)
    args = p.parse_args()
    if run_as_child(args, {"fps": child_fps, "stream": child_stream}):
        return
    lines = ["| size | STDF-R3 FPS | RFDA FPS | RFDA / STDF-R3 | STDF-R3 peak RSS MB | RFDA peak RSS MB |",
             "|---|---|---|---|---|---|"]
    for w, h in ((832, 480), (1920, 1080)):
        r = {name: run_child(__file__, "fps", name, w, h, args.repeats) for name in ("stdf_r3", "rfda")}
        if any("failed" in v for v in r.values()):
            lines.append(f"| {w}x{h} | {r['stdf_r3'].get('failed', '')} | {r['rfda'].get('failed', '')} | | | |")
            continue
        lines.append(f"| {w}x{h} | {r['stdf_r3']['fps']:.3f} | {r['rfda']['fps']:.3f} | "
                     f"{r['rfda']['fps'] / r['stdf_r3']['fps']:.2f} | {r['stdf_r3']['rss_mb']:.0f} | "
                     f"{r['rfda']['rss_mb']:.0f} |")
        print(lines[-1], flush=True)
    s = run_child(__file__, "stream", args.frames)
    stream = (f"Streaming RFDA over {args.frames} frames of 416x240: RSS {s['rss_10']:.0f} MB after 10 frames, "
              f"{s['rss_last']:.0f} MB after {args.frames}." if "failed" not in s else f"stream failed: {s['failed']}")
    publish("RFDA against STDF-R3 on the CPU",
            f"One frame, batch 1, float32, mean of {args.repeats} after a warm-up; the deformable convs run "
            f"the fused op where it builds. The paper's RTX 3090 ratio is {PAPER_RATIO:.2f}.\n\n"
            + "\n".join(lines) + "\n\n" + stream + "\n", args.out)


if __name__ == "__main__":
    main()
