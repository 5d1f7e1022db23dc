"""vcar-enhance end to end: FPS and peak RSS at 1920x1080 and 2560x1600, tiled and untiled; RSS over a
long clip; how far tiled output is from untiled output.

    python benchmarks/bench_enhance.py [--frames 3] [--long 600] [--out benchmarks/results/enhance.md]
        [--checkpoint ../shared/weights/stdf-pytorch/stdf_mfqev2_r3.safetensors] [--sequence NAME]

Every run is its own process (vcar_tf.cli.enhance.main on a clip made here: x264 QP 37, 25 fps,
an AAC track), so its peak RSS is its own. Untiled runs are skipped where
vcar_tf.inference.tiling estimates more than half the memory available now (NL-ConvLSTM at 1080p
needs about 45 GB). Tiled-vs-untiled: a real sequence of ../shared/data, compressed with x265 at
QP37 (vcar_tf.data.codec), enhanced whole and in tiles; STDF-R3 with the released weights when
--checkpoint is given, the other models with random weights (their ΔPSNR means nothing, the
difference between tiled and untiled output does).
"""

import json
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import arg_parser, peak_rss_mb, publish, run_as_child, run_child, rss_mb  # noqa: E402

SIZES = ((1920, 1080), (2560, 1600))
MODELS = ("stdf_r3", "nl_convlstm")
# NL-ConvLSTM takes minutes per tiled 1080p frame on 2 cores: one frame, at 1080p only
SLOW = {"nl_convlstm": (1, ((1920, 1080),))}


def make_clip(path, width, height, frames, fps=25):
    """Smooth moving content with noise at x264 QP 37 and an AAC track (tests/test_enhance.py's)."""
    from tests.test_enhance import make_video

    make_video(path, width, height, frames, fps, options={"qp": "37", "preset": "ultrafast"})


def _model_run(name, folder, checkpoint):
    """A run folder vcar-enhance takes: the release imported (STDF-R3) or random weights."""
    from tests.conftest import perturb_weights
    from vcar_tf import models
    from vcar_tf.train.config import TrainConfig
    from vcar_tf.train.run import write_run

    run = os.path.join(folder, f"run_{name}")
    if name == "stdf_r3" and checkpoint:
        from vcar_tf.models.stdf.pytorch import load_release

        model = load_release(checkpoint)[1]
    else:
        model = perturb_weights(models.build(name), scale=0.02)
    write_run(run, model, TrainConfig(model=name, model_dir=run))
    return run


def child_enhance(clip, run, memory):
    """One vcar-enhance run; RSS sampled every 0.5 s."""
    from vcar_tf.cli.enhance import main

    samples, done = [], threading.Event()

    def sample():
        while not done.wait(0.5):
            samples.append(rss_mb())

    threading.Thread(target=sample, daemon=True).start()
    out = clip + f".{os.getpid()}.out.mkv"
    argv = [clip, out, "--model_dir", run, "--no_progress", "--qp", "18"]
    if memory != "none":
        argv += ["--max_memory", memory]
    start = time.perf_counter()
    import contextlib
    import io

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        main(argv)
    seconds = time.perf_counter() - start
    done.set()
    n = int(text.getvalue().split("enhanced ")[1].split()[0])
    os.remove(out)
    tiles = next((line.split(": ", 1)[1] for line in text.getvalue().splitlines() if "--max_memory" in line), "untiled")
    thirds = [max(samples[i * len(samples) // 3:(i + 1) * len(samples) // 3] or [0]) for i in range(3)]
    print(json.dumps({"fps": n / seconds, "rss_mb": peak_rss_mb(), "tiles": tiles, "thirds": thirds, "frames": n}))


def child_tiles(name, sequence, frames, tile, weights):
    """Y-PSNR of compressed, untiled and tiled output against raw, and PSNR of tiled vs untiled.
    `weights`: "random", "release:CHECKPOINT" (STDF-R3) or "preset:NAME" (the sequence is then
    compressed with the preset's codec settings)."""
    import numpy as np

    from tests.conftest import perturb_weights, shared_file
    from vcar_tf import models
    from vcar_tf.data.codec import CodecSettings, encode
    from vcar_tf.inference.streaming import enhance_frames
    from vcar_tf.inference.tiling import default_overlap
    from vcar_tf.metrics import psnr_y
    from vcar_tf.video import open_sequence

    settings = CodecSettings(qp=37)
    if weights.startswith("preset:"):
        from vcar_tf.models.presets import from_preset
        from vcar_tf.presets import preset_card

        card = preset_card(weights[len("preset:"):])
        settings = CodecSettings(**card["codec_settings"])
        model = from_preset(card["name"])
    elif weights.startswith("release:"):
        from vcar_tf.models.stdf.pytorch import load_release

        model = load_release(weights[len("release:"):])[1]
    else:
        model = perturb_weights(models.build(name), scale=0.02)
    raw = open_sequence(shared_file(sequence))
    planes = [raw.frame(t) for t in range(min(frames, raw.num_frames))]
    with tempfile.TemporaryDirectory() as tmp:
        bitstream = os.path.join(tmp, "c.hevc")
        encode(iter(planes), settings, bitstream)
        comp = [y.astype(np.float32) / 255 for y, _, _ in open_sequence(bitstream)]
    ref = [y.astype(np.float64) / 255 for y, _, _ in planes]
    radius, overlap = models.spec(name).radius, default_overlap(name)

    def psnr(a, b):
        return float(np.mean([psnr_y(x, y) for x, y in zip(a, b)]))

    def quantised(frames_):
        return [np.round(y * 255) / 255 for y in frames_]

    whole = quantised(enhance_frames(model, comp, radius))
    tiled = quantised(enhance_frames(model, comp, radius, tile=tile, overlap=overlap))
    diff = max(float(np.abs(a - b).max()) for a, b in zip(whole, tiled)) * 255
    last = float(np.abs(whole[-1] - tiled[-1]).max()) * 255
    print(json.dumps({"comp": psnr(ref, comp), "whole": psnr(ref, whole), "tiled": psnr(ref, tiled),
                      "max_diff": diff, "last_diff": last, "frames": len(comp), "overlap": overlap,
                      "size": f"{raw.width}x{raw.height}"}))


def available_mb():
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable")) / 1024


def main():
    p = arg_parser(__doc__)
    p.add_argument("--frames", type=int, default=3, help="frames per 1080p / 2560x1600 clip")
    p.add_argument("--long", type=int, default=600, help="frames of the long 416x240 clip (RSS over time)")
    p.add_argument("--checkpoint", default="none")
    p.add_argument("--sequence", default="tabletennis-a", help="a ../shared/data sequence for tiled vs untiled")
    p.add_argument("--tile_frames", type=int, default=10, help="frames of the sequence (0: all)")
    p.add_argument("--presets", nargs="*", default=[], help="tiled vs untiled: these presets' weights for their models")
    p.add_argument("--models", nargs="+", default=list(MODELS), help="models of the large clips")
    p.add_argument("--tile_models", nargs="+", default=[*MODELS, "rfda"], help="models of tiled vs untiled")
    p.add_argument("--skip", nargs="*", default=[], help="parts to leave out: long, large, tiles")
    p.add_argument("--memory", nargs="+", default=["none", "4G"], help="large clips: none (untiled) and --max_memory values")
    args = p.parse_args()
    if run_as_child(args, {"enhance": child_enhance, "tiles": child_tiles}):
        return
    from vcar_tf.inference.tiling import BYTES_PER_PIXEL

    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        needed = (set() if "large" in args.skip else set(args.models)) | (set() if "long" in args.skip else {"arcnn"})
        runs = {name: _model_run(name, tmp, args.checkpoint if args.checkpoint != "none" else None)
                for name in needed}
        if "long" not in args.skip:
            clip = os.path.join(tmp, "long.mp4")
            make_clip(clip, 416, 240, args.long)
            r = run_child(__file__, "enhance", clip, runs["arcnn"], "none")
            body = ("failed: " + r["failed"]) if "failed" in r else (
                f"AR-CNN, {r['frames']} frames of 416x240 (mp4 with AAC, lossless-ish --qp 18 out): {r['fps']:.2f} FPS; "
                f"highest RSS in each third of the run: {' / '.join(f'{m:.0f}' for m in r['thirds'])} MB "
                f"(last / first third: {r['thirds'][2] / max(r['thirds'][0], 1):.3f}); peak {r['rss_mb']:.0f} MB")
            sections.append("## Memory over a long clip\n\n" + body)
        if "large" not in args.skip:
            rows = ["| model | size | memory | tiles | FPS | peak RSS MB |", "|---|---|---|---|---|---|"]
            for width, height in SIZES:
                for name in args.models:
                    frames, sizes = SLOW.get(name, (args.frames, SIZES))
                    if (width, height) not in sizes:
                        continue
                    clip = os.path.join(tmp, f"clip_{width}x{height}_{frames}.mp4")
                    if not os.path.exists(clip):
                        make_clip(clip, width, height, frames)
                    for memory in args.memory:
                        need = BYTES_PER_PIXEL[name] * width * height / 2**20 + 1000
                        if memory == "none" and need > available_mb() / 2:
                            rows.append(f"| {name} | {width}x{height} | untiled | - | skipped: needs about "
                                        f"{need / 1024:.0f} GiB | - |")
                            continue
                        r = run_child(__file__, "enhance", clip, runs[name], memory)
                        if "failed" in r:
                            rows.append(f"| {name} | {width}x{height} | {memory} | - | failed: {r['failed']} | - |")
                        else:
                            label = "untiled" if memory == "none" else f"--max_memory {memory}"
                            rows.append(f"| {name} | {width}x{height} | {label} | {r['tiles']} | {r['fps']:.3f} | "
                                        f"{r['rss_mb']:.0f} |")
                        print(rows[-1], file=sys.stderr)
            sections.append(f"## 1080p and 2560x1600 ({args.frames} frames each; NL-ConvLSTM one frame, 1080p only)\n\n"
                            "FPS counts everything from the command's start (model load and tracing included).\n\n"
                            + "\n".join(rows))
    if "tiles" not in args.skip:
        rows = ["| model | weights | sequence | frames | tile | overlap | compressed dB | untiled dB | tiled dB | "
                "tiled − untiled ΔPSNR dB | max abs diff (of 255) | on the last frame |", "|" + "---|" * 12]
        from vcar_tf.presets import preset_card

        by_model = {preset_card(n)["model"]: n for n in args.presets}
        for name in args.tile_models:
            tile = 128
            weights = (f"preset:{by_model[name]}" if name in by_model else
                       f"release:{args.checkpoint}" if name == "stdf_r3" and args.checkpoint != "none" else "random")
            frames = args.tile_frames or 10**6
            r = run_child(__file__, "tiles", name, args.sequence, frames, tile, weights)
            if "failed" in r:
                rows.append(f"| {name} | | {args.sequence} | | {tile} | | failed: {r['failed']} |||||")
                continue
            label = by_model.get(name, "released" if weights.startswith("release:") else "random")
            rows.append(f"| {name} | {label} | {args.sequence} {r['size']} | {r['frames']} | {tile} | {r['overlap']} | "
                        f"{r['comp']:.3f} | {r['whole']:.3f} | {r['tiled']:.3f} | {r['tiled'] - r['whole']:+.4f} | "
                        f"{r['max_diff']:.0f} | {r['last_diff']:.0f} |")
            print(rows[-1], file=sys.stderr)
        sections.append("## Tiled against untiled (x265 QP37, a preset's codec settings for a preset; outputs rounded "
                        "to 8 bits)\n\n" + "\n".join(rows))
    publish("vcar-enhance", "\n\n".join(sections) + "\n", args.out)


if __name__ == "__main__":
    main()
