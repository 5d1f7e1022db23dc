"""Non-local warp: the two-stage approximation against the exact warp, and NL-ConvLSTM inference.

    python benchmarks/bench_nonlocal.py [--repeats 3] [--out benchmarks/results/nonlocal.md]
    python benchmarks/bench_nonlocal.py --streaming [--repeats 3] [--out benchmarks/results/nonlocal.md]
    python benchmarks/bench_nonlocal.py --bound [--repeats 3] [--out benchmarks/results/nonlocal.md]
    python benchmarks/bench_nonlocal.py --allocator [--settings ceiling none system low] [--low-ceiling-gib 14]
        [--repeats 3] [--out benchmarks/results/nonlocal.md]

--streaming measures NL-ConvLSTM over a video instead (StreamingEnhancer, whole windows against
the window feature cache, vcar_tf/models/nl_convlstm/window_cache.py) with the time of each part
of the network, and appends its section to --out. --bound counts the multiply-adds the window
feature cache does per 832x480 frame, times the network's main convolution (3x3, 64 -> 256) on
its own in fp32 and bf16, and appends what that rate allows per frame against the cache's measured
seconds per frame in both precisions, and the time of each part of a cached frame in both.
--allocator streams NL-ConvLSTM through the cache over a 854x480 video, then a 1024x576 one, in
one process, under vcar_tf's ceiling on TensorFlow's oneDNN memory pool (vcar_tf/allocator.py),
without it, with oneDNN's system allocator, and (low) under a ceiling of --low-ceiling-gib set by
hand, each as --settings names, and appends the peak and final RSS and the seconds per frame of
each.

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


def child_stream(path, width, height, repeats, precision="fp32"):
    """s/frame of StreamingEnhancer over R + 2 + repeats frames, from the first frame enhanced
    (tracing, the first window's encoding) to the last enhanced before the flush."""
    import time

    import numpy as np

    from vcar_tf import models
    from vcar_tf.inference.streaming import StreamingEnhancer
    from vcar_tf.models.precision import precision_policy

    with precision_policy(precision):
        model, radius = models.build("nl_convlstm"), models.spec("nl_convlstm").radius
    enhancer = StreamingEnhancer(model, radius, feature_cache=path == "cache")
    frames = np.random.default_rng(0).random((radius + 2 + repeats, height, width), dtype=np.float32)
    base, done = rss_mb(), []
    for y in frames:
        done += [(time.perf_counter(), time.process_time()) for _ in enhancer.push(y)]
    (wall0, cpu0), (wall1, cpu1), n = done[0], done[-1], len(done) - 1
    print(json.dumps({"s_per_frame": (wall1 - wall0) / n, "cpu_s_per_frame": (cpu1 - cpu0) / n,
                      "peak_growth_mb": peak_rss_mb() - base}))


def child_parts(width, height, repeats, precision="fp32"):
    """ms per call of each part of NL-ConvLSTM on one frame (one tf.function each), computed in
    `precision` as vcar-evaluate --precision computes it (the warp's weights computed in float32 and kept,
    like the weighted sum, in the cells' dtype, as the window feature cache does)."""
    import numpy as np
    import tensorflow as tf

    from vcar_tf import models
    from vcar_tf.models.nl_convlstm.model import fused_update
    from vcar_tf.models.nl_convlstm.window_cache import window_feature_cache
    from vcar_tf.models.precision import precision_policy

    with precision_policy(precision):
        model = models.build("nl_convlstm")
    cache, cell = window_feature_cache(model), model.get_layer("forward")
    dtype = tf.bfloat16 if precision == "bf16" else tf.float32
    rng = np.random.default_rng(0)
    frame = tf.constant(rng.random((1, height, width, 1), dtype=np.float32))
    window = tf.expand_dims(tf.concat([frame] * 7, 0), 0)
    maps = [tf.cast(rng.normal(size=(1, height, width, c)).astype(np.float32), dtype) for c in (64, 64, 64, 256)]
    prev, cur, h, gates = maps
    weights = tf.function(cell.warp_weights)(prev, cur, dtype)  # kept in the cells' dtype, as the cache keeps them
    parts = {
        "encoder": (cache.encode, (frame,)),
        "input gates": (cell.input_gates, (cur,)),
        "full gates conv": (lambda x, h: cell.gates(tf.concat([x, h], -1)), (cur, h)),
        "warp weights": (lambda p, c: cell.warp_weights(p, c, dtype), (prev, cur)),
        "warp weighted sum": (cell._warp, (weights, h, h)),
        "recurrent gates + update": (cell.recurrent_update, (gates, h, h)),
        "recurrent gates + update: the update alone": (fused_update, (gates, h)),
        "the update without XLA, as model.call runs it": (cell._update, (gates, h)),
        "decoder": (cache._decoder, ([frame, h, h],)),
        "whole window (model call)": (lambda w: model(w, training=False), (window,)),
    }
    out = {}
    for name, (fn, inputs) in parts.items():
        fn = tf.function(fn)
        out[name] = 1000 * timed(lambda: tf.nest.map_structure(np.asarray, fn(*inputs)), repeats)
    print(json.dumps(out))


def cached_macs_per_pixel(model, radius):
    """{part: multiply-adds per pixel} of one frame enhanced through the window feature cache: the
    encoder and both directions' input gates on the new frame, the similarities of one new pair of
    frames per direction, 2R warps' weighted sums and 2R recurrent gate convs, the decoder. A conv
    does kh·kw·Cin·Cout per output pixel (its kernel's size)."""
    import numpy as np

    def conv(name):
        return int(np.prod(model.get_layer(name).weights[0].shape))

    cell = model.get_layer("forward")
    half = int(np.prod(cell.gates.kernel.shape)) // 2  # the x half and the h half of the gates conv
    features = cell.gates.kernel.shape[2] - cell.filters
    candidates = cell.top_k * cell.block ** 2
    return {"encoder": conv("encoder_1") + conv("encoder_2"),
            "input gates (2 directions)": 2 * half,
            f"recurrent gate convs ({2 * radius})": 2 * radius * half,
            "warp similarities (2 new pairs of frames)": 2 * candidates * features,
            f"warp weighted sums ({2 * radius})": 2 * radius * candidates * 2 * cell.filters,
            "decoder": sum(conv(n) for n in ("merge", "decoder_1", "decoder_2", "decoder_out"))}


def child_bound(width, height, repeats):
    """The cache's multiply-adds per frame by part, and GMAC/s of one 3x3 64 -> 256 conv at this
    size in fp32 and bf16 (the gates' halves, 8 of the cache's 10 convs per frame)."""
    import numpy as np
    import tensorflow as tf

    from vcar_tf import models

    macs = cached_macs_per_pixel(models.build("nl_convlstm"), models.spec("nl_convlstm").radius)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(1, height, width, 64)).astype(np.float32))
    kernel = tf.constant(rng.normal(0, 0.05, (3, 3, 64, 256)).astype(np.float32))
    rate = {}
    for precision, dtype in (("fp32", tf.float32), ("bf16", tf.bfloat16)):
        xc, kc = tf.cast(x, dtype), tf.cast(kernel, dtype)
        conv = tf.function(lambda: tf.nn.conv2d(xc, kc, 1, "SAME"))
        seconds = timed(lambda: conv().numpy(), repeats)
        rate[precision] = width * height * 9 * 64 * 256 / seconds / 1e9
    print(json.dumps({"gmac_per_frame": {k: v * width * height / 1e9 for k, v in macs.items()}, "gmac_per_s": rate}))


def bound(args):
    w, h, target = 832, 480, 4.0  # the issue's size and target, seconds per frame
    b = run_child(__file__, "bound", w, h, args.repeats)
    if "failed" in b:
        raise SystemExit(f"child bound failed: {b['failed']}")
    measured = {p: run_child(__file__, "stream", "cache", w, h, args.repeats, p) for p in ("fp32", "bf16")}
    total = sum(b["gmac_per_frame"].values())
    rows = ["| part | GMAC per frame | share |", "|---|---|---|"]
    rows += [f"| {name} | {g:.1f} | {g / total:.0%} |" for name, g in b["gmac_per_frame"].items()]
    rows.append(f"| total | {total:.1f} | |")
    lines = []
    for p in ("fp32", "bf16"):
        rate, m = b["gmac_per_s"][p], measured[p]
        seconds = m["failed"] if "failed" in m else f"{m['s_per_frame']:.2f} s ({total / m['s_per_frame']:.0f} GMAC/s)"
        lines.append(f"| {p} | {rate:.0f} | {total / rate:.2f} s | {seconds} |")
    body = (f"NL-ConvLSTM at {w}x{h} through the window feature cache (untrained weights, warp approx): the "
            "multiply-adds one enhanced frame needs, counted from the layers' shapes (a conv does kh·kw·Cin·Cout "
            "per pixel; a pair's similarities k·p² candidates x 64 feature channels, a warp's weighted sum k·p² "
            "candidates x 128 state channels), against the rate of one 3x3 "
            f"64 -> 256 conv at this size on its own (the gates' halves; mean of {args.repeats} after a warm-up). "
            "At that rate the whole frame could not take less than total / rate, whatever the code around the "
            f"convs does; the issue's target is {target:g} s per frame, {total / target:.0f} GMAC/s.\n\n"
            + "\n".join(rows) + "\n\n| precision | 3x3 64->256 conv GMAC/s | total / rate | the cache measured "
            f"(s per frame, mean of {args.repeats + 1} after the first) |\n|---|---|---|---|\n" + "\n".join(lines) + "\n")
    parts = {p: run_child(__file__, "parts", w, h, args.repeats, p) for p in ("fp32", "bf16")}
    table = ["| part (calls per cached frame) | fp32 ms per call | bf16 ms per call | fp32 s per frame | "
             "bf16 s per frame |", "|---|---|---|---|---|"]
    for name, calls in CACHED_CALLS.items():
        cells = [("failed" if "failed" in parts[p] else f"{parts[p][name]:.0f}") for p in ("fp32", "bf16")]
        cells += [("" if "failed" in parts[p] else f"{calls * parts[p][name] / 1000:.2f}") for p in ("fp32", "bf16")]
        table.append(f"| {name} ({calls}) | " + " | ".join(cells) + " |")
    body += ("\nWhere a cached frame's time goes, each part one tf.function on random maps at this size, mean of "
             f"{args.repeats} after a warm-up, in each precision (a name after a colon is a sub-part, timed on its "
             "own and already in the part before the colon; the parts leave out the copies and Python between them):\n\n"
             + "\n".join(table) + "\n")
    text = publish("NL-ConvLSTM: the arithmetic of a frame against the conv rate", body).replace("# ", "## ", 1)
    append_section(args.out, text)


ALLOCATORS = {"ceiling": "vcar_tf's ceiling (the default)", "none": "no ceiling (TensorFlow's own pool)",
              "system": "oneDNN's system allocator (TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1)",
              "low": "a ceiling of {} GiB set by hand"}
VIDEOS = ((854, 480), (1024, 576))


def child_videos(setting, repeats, low_gib):
    """Per video of VIDEOS, streamed one after the other in this process through the cache: s/frame
    (as child_stream), the peak RSS so far and the RSS after the video's flush, GB; a video that runs out
    of memory under the ceiling (ResourceExhaustedError) is marked so and ends the run."""
    import time

    import vcar_tf  # noqa: F401  (sets the ceiling)
    from vcar_tf import allocator

    if setting == "none":
        os.environ.pop(allocator.ENV)  # before TensorFlow makes its allocator
    elif setting == "system":
        os.environ["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"] = "1"
    elif setting == "low":
        os.environ[allocator.ENV] = str(int(float(low_gib) * 2**30))
    import numpy as np
    import tensorflow as tf

    from vcar_tf import models
    from vcar_tf.inference.streaming import StreamingEnhancer

    model, radius = models.build("nl_convlstm"), models.spec("nl_convlstm").radius
    rng, out, count = np.random.default_rng(0), [], radius + 2 + repeats
    for width, height in VIDEOS:
        enhancer, done = StreamingEnhancer(model, radius), []  # one per video, as vcar-evaluate does
        try:
            for y in rng.random((count, height, width), dtype=np.float32):
                done += [time.perf_counter() for _ in enhancer.push(y)]
            enhancer.flush()
        except tf.errors.ResourceExhaustedError:
            out.append({"size": f"{width}x{height}", "failed": f"ResourceExhaustedError after {len(done)} frames",
                        "peak_gb": peak_rss_mb() / 1024})
            break
        out.append({"size": f"{width}x{height}", "s_per_frame": (done[-1] - done[0]) / (len(done) - 1),
                    "peak_gb": peak_rss_mb() / 1024, "after_gb": rss_mb() / 1024})
    print(json.dumps({"videos": out, "frames": count}))


def allocators(args):
    rows = ["| allocator | video | s per frame | peak RSS so far GB | RSS after the video GB |", "|---|---|---|---|---|"]
    from vcar_tf import allocator

    ceiling, frames = allocator.cap_onednn_allocator(dict(os.environ)), None
    for setting in args.settings:
        label = ALLOCATORS[setting].format(f"{args.low_ceiling_gib:g}")
        r = run_child(__file__, "videos", setting, args.repeats, args.low_ceiling_gib)
        if "failed" in r:
            rows.append(f"| {label} | {r['failed']} | | | |")
            continue
        frames = r["frames"]
        rows += [f"| {label} | {v['size']} | {v['failed']} | {v['peak_gb']:.2f} | |" if "failed" in v else
                 f"| {label} | {v['size']} | {v['s_per_frame']:.1f} | {v['peak_gb']:.2f} | {v['after_gb']:.2f} |"
                 for v in r["videos"]]
    ceiling = f"{int(ceiling) / 2**30:.1f} GiB"
    body = ("NL-ConvLSTM (untrained weights, warp approx) through the window feature cache "
            "(`StreamingEnhancer`), a video of random 854x480 frames and then one of 1024x576 frames in the same "
            f"process ({frames} frames each), one process per allocator setting. Seconds per frame: "
            "as in the streaming section (the first frame of each video, which traces, left out). vcar_tf's "
            f"ceiling on this machine: TF_MKL_ALLOC_MAX_BYTES = {ceiling}.\n\n" + "\n".join(rows) + "\n")
    text = publish("NL-ConvLSTM memory: TensorFlow's oneDNN pool with and without vcar_tf's ceiling", body)
    append_section(args.out, text.replace("# ", "## ", 1))


def append_section(out, text):
    if out:
        from vcar_tf.fileutil import write_text_atomic

        earlier = open(out).read().rstrip("\n") + "\n\n" if os.path.exists(out) else ""
        write_text_atomic(out, earlier + text)


# Calls of each part per enhanced frame (R 3): whole windows run the encoder on 7 frames and the
# full gates conv on 2(R+1) steps; the cache runs the encoder and both directions' input gates on
# one new frame, the warp weights of one new pair of frames per direction, the first step of each
# direction on its input gates alone and R steps per direction with the recurrent half
# (CACHED_CALLS: the cache's calls, with --bound's sub-parts and a comparison called 0 times).
CACHED_CALLS = {"encoder": 1, "input gates": 2, "warp weights": 2, "warp weighted sum": 6, "recurrent gates + update": 6,
                "recurrent gates + update: the update alone": 6, "the update without XLA, as model.call runs it": 0,
                "decoder": 1}
CALLS = {"encoder": (7, 1), "input gates": (0, 2), "full gates conv": (8, 0), "warp weights": (6, 2),
         "warp weighted sum": (6, 6), "recurrent gates + update": (0, 6), "decoder": (1, 1)}


def streaming(args):
    sizes = ((416, 240), (832, 480))
    rows = ["| size | path | s per frame | CPU s per frame | peak RSS growth MB |", "|---|---|---|---|---|"]
    speed = []
    for w, h in sizes:
        r = {path: run_child(__file__, "stream", path, w, h, args.repeats) for path in ("window", "cache")}
        for path, label in (("window", "whole window per frame (before)"), ("cache", "window feature cache (after)")):
            x = r[path]
            if "failed" in x:
                rows.append(f"| {w}x{h} | {label} | {x['failed']} | | |")
            else:
                rows.append(f"| {w}x{h} | {label} | {x['s_per_frame']:.2f} | {x['cpu_s_per_frame']:.2f} | "
                            f"{x['peak_growth_mb']:.0f} |")
        if not any("failed" in x for x in r.values()):
            speed.append(f"- {w}x{h}: the cache is {r['window']['s_per_frame'] / r['cache']['s_per_frame']:.2f}x "
                         f"faster ({r['window']['cpu_s_per_frame'] / r['cache']['cpu_s_per_frame']:.2f}x in CPU time)")
    w, h = sizes[-1]
    parts = run_child(__file__, "parts", w, h, args.repeats)
    table = [f"| part at {w}x{h} | ms per call | calls per frame before | after | s per frame before | after |",
             "|---|---|---|---|---|---|"]
    if "failed" in parts:
        table.append(f"| {parts['failed']} | | | | | |")
    else:
        total = [0.0, 0.0]
        for name, calls in CALLS.items():
            seconds = [n * parts[name] / 1000 for n in calls]
            total = [a + b for a, b in zip(total, seconds)]
            table.append(f"| {name} | {parts[name]:.0f} | {calls[0]} | {calls[1]} | {seconds[0]:.2f} | {seconds[1]:.2f} |")
        table.append(f"| sum of the parts | | | | {total[0]:.2f} | {total[1]:.2f} |")
        table.append(f"| whole window (model call) | {parts['whole window (model call)']:.0f} | 1 | | | |")
    body = ("NL-ConvLSTM (untrained weights, warp approx) over a video of random frames through "
            "`vcar_tf.inference.streaming.StreamingEnhancer`: calling the model on every clipped 7-frame window "
            "(`feature_cache=False`, today's path) against the window feature cache. Seconds per enhanced frame: "
            f"the mean over the {args.repeats + 1} frames after the first (which traces), each process on its own; CPU "
            "seconds are the process's (2 cores busy: about twice the wall time), less affected by other jobs "
            "sharing the CPU than wall time.\n\n"
            + "\n".join(rows) + "\n\n" + "\n".join(speed)
            + "\n\nWhere the time goes (each part one tf.function, mean of "
            f"{args.repeats} after a warm-up; the parts' sum leaves out the copies and Python between them):\n\n"
            + "\n".join(table) + "\n")
    text = publish("NL-ConvLSTM streaming: whole windows against the window feature cache", body).replace("# ", "## ", 1)
    append_section(args.out, text)


def main():
    parser = arg_parser(__doc__)
    parser.add_argument("--streaming", action="store_true", help="NL-ConvLSTM over a video, appended to --out")
    parser.add_argument("--bound", action="store_true", help="NL-ConvLSTM's arithmetic per frame against the conv "
                        "rate, appended to --out")
    parser.add_argument("--allocator", action="store_true", help="NL-ConvLSTM's memory and speed over two videos "
                        "with and without vcar_tf's ceiling on oneDNN's pool, appended to --out")
    parser.add_argument("--settings", nargs="+", choices=list(ALLOCATORS), default=["ceiling", "none", "system"],
                        help="--allocator's settings, in order")
    parser.add_argument("--low-ceiling-gib", type=float, default=14.0, help="the ceiling of --settings low")
    args = parser.parse_args()
    if run_as_child(args, {"warp": child_warp, "model": child_model, "stream": child_stream, "parts": child_parts,
                             "bound": child_bound, "videos": child_videos}):
        return
    if args.streaming:
        return streaming(args)
    if args.bound:
        return bound(args)
    if args.allocator:
        return allocators(args)

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
