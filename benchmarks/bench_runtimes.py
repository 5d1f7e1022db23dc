"""Runtimes per model: frames/s and peak RSS of Keras/TF, the SavedModel, LiteRT (fp32, fp16, int8
and int8_full TFLite files) and ONNX Runtime, and, with --checkpoint (the STDF-PyTorch release, read from
../shared/weights and never copied), the ΔPSNR each runtime gives STDF-R3 on real frames.

    python benchmarks/bench_runtimes.py [--models all | arcnn stdf_r3 rfda ...] [--sizes 416x240 832x480]
        [--checkpoint ../shared/weights/stdf-pytorch/stdf_mfqev2_r3.safetensors] [--repeats 2] [--threads 2]
        [--calibration_frames 8] [--runtimes keras saved_model tflite_fp32 ... (default: all)]
        [--out benchmarks/results/runtimes.md [--append]]

--models all (the default) runs every registered model; --append adds this run, with its own
machine line, date, commit and command, after what --out holds (runs of a few models at a time).

Each (model, size) is exported once (vcar_tf.export): the SavedModel; TFLite fp32/fp16/int8/int8_full
at that size, int8 (deformable sampling positions kept float) and int8_full calibrated on
--calibration_frames windows of the embedded sample's training frames (8; fewer for NL-ConvLSTM,
whose calibration in the TFLite interpreter takes minutes per window); ONNX with the composite and
with native DeformConv nodes (the same graph for models without one), and both again with int8
convolutions (onnx_int8, onnx_deformconv_int8; calibrated on as many windows at 240x416, as
vcar-export does). The SavedModel and fp32 ONNX files come from one process, the int8 ONNX files
from another and each TFLite file from its own (a converter that crashes loses only its files,
named in their cells); then every runtime runs in its own process, so its peak RSS is its own: one
frame (batch 1) through vcar_tf.inference.streaming.frame_step, as vcar-evaluate runs it (a
recurrent model: one step of the stream), mean of --repeats after a warm-up. Keras runs the fused
deformable conv where it builds; every export runs the stock-op composite but the deformconv files
(onnxruntime's DeformConv kernel). LiteRT and ONNX Runtime get --threads threads.

Quality (--checkpoint): STDF-R3 with the release weights exported at 416x240, every runtime over
the embedded sample's held-out sequence (motorcycle-pan, 416x240, 32 frames, x265 QP37): ΔPSNR
and its difference from Keras.
"""

import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import arg_parser, peak_rss_mb, publish, run_as_child, run_child, timed  # noqa: E402

QUANTIZATIONS = ("fp32", "fp16", "int8", "int8_full")
ONNX_INT8 = ("onnx_int8", "onnx_deformconv_int8")
RUNTIMES = ("keras", "saved_model", *(f"tflite_{q}" for q in QUANTIZATIONS), "onnx", "onnx_deformconv", *ONNX_INT8)


def _build(name, checkpoint):
    from vcar_tf import models

    if checkpoint != "-":
        from vcar_tf.models.stdf.pytorch import load_release

        return load_release(checkpoint)[1]
    return models.build(name)


def _paths(folder, name):
    paths = {"saved_model": os.path.join(folder, name, "1"), "onnx": os.path.join(folder, f"{name}.onnx"),
             "onnx_deformconv": os.path.join(folder, f"{name}_deformconv.onnx"),
             "onnx_int8": os.path.join(folder, f"{name}_int8.onnx"),
             "onnx_deformconv_int8": os.path.join(folder, f"{name}_deformconv_int8.onnx")}
    paths.update({f"tflite_{q}": os.path.join(folder, f"{name}_{q}.tflite") for q in QUANTIZATIONS})
    return paths


def child_export(name, width, height, folder, checkpoint, calibration_frames, part):
    """Export one part of (name, size): "base" (the SavedModel and both ONNX files), "onnx_int8"
    (both ONNX files with int8 convolutions, calibrated at the sample's 240x416 as vcar-export does)
    or one TFLite quantization, each in its own process, so that a converter that crashes loses only
    its files."""
    from vcar_tf import models

    model, radius, paths = _build(name, checkpoint), models.spec(name).radius, _paths(folder, name)
    if part == "base":
        from vcar_tf.export.onnx import export_onnx
        from vcar_tf.export.saved_model import export_saved_model

        export_saved_model(model, radius, os.path.dirname(paths["saved_model"]), 1)
        export_onnx(model, radius, paths["onnx"])
        export_onnx(model, radius, paths["onnx_deformconv"], deform="native")
        made = BASE
    elif part == "onnx_int8":
        from vcar_tf.cli.common import CALIBRATION_SIZE, calibration_windows
        from vcar_tf.export.onnx import export_onnx

        windows = calibration_windows(model, radius, *CALIBRATION_SIZE, int(calibration_frames))
        for runtime, deform in zip(ONNX_INT8, ("composite", "native")):
            export_onnx(model, radius, paths[runtime], deform=deform, quantization="int8", representative=windows)
        made = ONNX_INT8
    else:
        from vcar_tf.cli.common import calibration_windows
        from vcar_tf.export.tflite import export_tflite

        windows = calibration_windows(model, radius, height, width, int(calibration_frames)) if part.startswith("int8") else None
        export_tflite(model, radius, paths[f"tflite_{part}"], height, width, part, windows)
        made = (f"tflite_{part}",)
    print(json.dumps({f"{k}_mb": _size(paths[k]) / 2**20 for k in made}))


BASE = ("saved_model", "onnx", "onnx_deformconv")  # the runtimes whose files the "base" export part makes


def export_all(name, width, height, folder, checkpoint, calibration_frames, runtimes=RUNTIMES):
    """{runtime_mb: size} of every file `runtimes` need, and {runtime: reason} of every part that failed."""
    sizes, failed = {}, {}
    parts = ((["base"] if set(BASE) & set(runtimes) else []) + [q for q in QUANTIZATIONS if f"tflite_{q}" in runtimes]
             + (["onnx_int8"] if set(ONNX_INT8) & set(runtimes) else []))
    for part in parts:
        made = run_child(__file__, "export", name, width, height, folder, checkpoint, calibration_frames, part)
        if "failed" in made:
            files = {"base": BASE, "onnx_int8": ONNX_INT8}.get(part, (f"tflite_{part}",))
            failed.update({k: made["failed"] for k in files})
        else:
            sizes.update(made)
    return sizes, failed


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _runner(runtime, name, folder, checkpoint, threads):
    if runtime == "keras":
        return _build(name, checkpoint)
    from vcar_tf.inference.exported import load_exported

    return load_exported(_paths(folder, name)[runtime], num_threads=int(threads))


def child_infer(runtime, name, width, height, folder, repeats, threads):
    """Keras and the SavedModel through frame_step (one tf.function, as vcar-evaluate runs them);
    TFLite and ONNX through their runners directly, so the process never loads TensorFlow."""
    import numpy as np

    model = _runner(runtime, name, folder, "-", threads)
    if runtime in ("keras", "saved_model"):
        from vcar_tf import models
        from vcar_tf.inference.streaming import frame_step

        radius, step = models.spec(name).radius, frame_step(model)
        run = lambda x: step(x, None)[0]  # noqa: E731
    else:
        radius = model.radius
        run = (lambda x: model.step(x, model.initial_state(x))[0]) if model.recurrent else model
    x = np.random.default_rng(0).random((1, 2 * radius + 1, height, width, 1), dtype=np.float32)
    seconds = timed(lambda: np.asarray(run(x)), repeats)
    print(json.dumps({"fps": 1 / seconds, "rss_mb": peak_rss_mb()}))


def child_quality(runtime, folder, checkpoint, threads):
    import numpy as np

    from vcar_tf.data.layout import find_pairs, prepared_codec_folder
    from vcar_tf.data.sample import ensure_sample_dataset
    from vcar_tf.inference.sequence import evaluate_pairs

    pairs = find_pairs(os.path.join(ensure_sample_dataset(), "test"), 37, prepared_codec_folder(None))
    row = evaluate_pairs(_runner(runtime, "stdf_r3", folder, checkpoint, threads), pairs, 3)[0][0]
    print(json.dumps({k: float(np.float64(row[k])) for k in ("psnr", "psnr_enh", "delta_psnr")}))


def main():
    p = arg_parser(__doc__, repeats=2)
    p.add_argument("--models", nargs="+", default=["all"], help="registered model names, or all")
    p.add_argument("--sizes", nargs="+", default=["416x240", "832x480"])
    p.add_argument("--checkpoint", default=None, help="STDF-PyTorch release weights for the quality table")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--append", action="store_true", help="add this run after what --out holds")
    p.add_argument("--calibration_frames", type=int, default=8, help="int8 calibration windows")
    p.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES,
                   help="a subset of the runtimes (only their files are exported)")
    args = p.parse_args()
    if args.checkpoint and "keras" not in args.runtimes:
        p.error("--checkpoint compares every runtime with keras: keep keras in --runtimes")
    if run_as_child(args, {"export": child_export, "infer": child_infer, "quality": child_quality}):
        return
    if args.models == ["all"]:
        from vcar_tf.models import names

        args.models = names()
    load_at_start = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    runtimes = [r for r in RUNTIMES if r in args.runtimes]
    exported = [r for r in runtimes if r != "keras"]
    header = "| model | size | " + " | ".join(f"{r} FPS | {r} RSS MB" for r in runtimes) + " | fastest |"
    lines = [header, "|" + "---|" * (2 * len(runtimes) + 3)]
    file_lines = ["| model | size | " + " | ".join(f"{r} MB" for r in exported) + " |",
                  "|" + "---|" * (len(exported) + 2)]
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as tmp:
        for name in args.models:
            for w, h in sizes:
                folder = os.path.join(tmp, f"{name}_{w}x{h}")
                sizes_mb, unexported = export_all(name, w, h, folder, "-", args.calibration_frames, runtimes)
                file_lines.append(f"| {name} | {w}x{h} | " + " | ".join(
                    f"{sizes_mb[r + '_mb']:.1f}" if r + "_mb" in sizes_mb else "-" for r in exported) + " |")
                r = {rt: {"failed": f"export: {unexported[rt]}"} if rt in unexported else
                     run_child(__file__, "infer", rt, name, w, h, folder, args.repeats, args.threads) for rt in runtimes}
                cells = [f"{r[rt]['fps']:.3f} | {r[rt]['rss_mb']:.0f}" if "failed" not in r[rt]
                         else f"failed: {r[rt]['failed']} | -" for rt in runtimes]
                ok = {rt: v["fps"] for rt, v in r.items() if "failed" not in v}
                best = max(ok, key=ok.get) if ok else "-"
                ratio = f"{best} ({ok[best] / ok['keras']:.2f}x keras)" if "keras" in ok and ok else best
                lines.append(f"| {name} | {w}x{h} | " + " | ".join(cells) + f" | {ratio} |")
                print(lines[-1], flush=True)
        quality = ""
        if args.checkpoint:
            folder = os.path.join(tmp, "stdf_release_416x240")
            _, unexported = export_all("stdf_r3", 416, 240, folder, args.checkpoint, args.calibration_frames, runtimes)
            if unexported:
                raise SystemExit(f"exporting the release failed: {unexported}")
            q = {rt: run_child(__file__, "quality", rt, folder, args.checkpoint, args.threads) for rt in runtimes}
            base = q["keras"].get("delta_psnr")
            rows = ["| runtime | PSNR compressed dB | PSNR enhanced dB | ΔPSNR dB | ΔPSNR − Keras dB |", "|---|---|---|---|---|"]
            for rt, v in q.items():
                rows.append(f"| {rt} | failed: {v['failed']} | | | |" if "failed" in v else
                            f"| {rt} | {v['psnr']:.4f} | {v['psnr_enh']:.4f} | {v['delta_psnr']:+.4f} | "
                            f"{v['delta_psnr'] - base:+.4f} |")
            quality = (f"\n## Quality: STDF-R3 with `{os.path.basename(args.checkpoint)}` (STDF-PyTorch release)\n\n"
                       "The embedded sample's held-out sequence (416x240, 32 frames, x265 QP37), every file exported at "
                       "416x240; int8 (deformable sampling positions kept float), int8_full and the ONNX int8 files calibrated on "
                       f"{args.calibration_frames} windows of the sample's training frames.\n\n" + "\n".join(rows) + "\n")
    load_at_end = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    publish(f"Runtimes: Keras/TF, SavedModel, LiteRT and ONNX Runtime ({', '.join(args.models)})",
            f"Load average (1, 5, 15 min, as `uptime` prints it) at the start: {load_at_start}; at the end: "
            f"{load_at_end}; above the {os.cpu_count()} cores, other jobs (e.g. a training run) shared the CPU "
            "and every FPS is lower than on an idle machine.\n\n"
            f"One frame, batch 1, float32 in and out, mean of {args.repeats} after a warm-up; int8 files "
            f"calibrated on {args.calibration_frames} windows of the sample's training frames; LiteRT and ONNX Runtime "
            f"with {args.threads} threads; RSS is the peak of the process (Keras and SavedModel load TensorFlow, "
            "LiteRT and ONNX Runtime do not); benchmarks/bench_peer.py times the PyTorch STDF-R3 peer.\n\n" + "\n".join(lines) + "\n\nFile sizes:\n\n"
            + "\n".join(file_lines) + "\n" + quality, args.out, args.append)


if __name__ == "__main__":
    main()
