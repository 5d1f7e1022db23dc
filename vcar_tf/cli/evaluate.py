"""Evaluate a trained run on whole sequences: PSNR/SSIM before and after, Δ, SD and PVD.

    vcar-evaluate --model_dir RUN [--data DIR] [--qp 37] [--out RUN/eval]
    vcar-evaluate --saved_model DIR/NAME/VERSION [--data DIR] [--qp 37] --out DIR
    vcar-evaluate --exported FILE.tflite|FILE.onnx|DIR/NAME/VERSION [--data DIR] [--qp 37] --out DIR
    vcar-evaluate --preset NAME [--data DIR] [--qp 37 | --crf 30] [--codec_folder F] --out DIR

(also `python -m vcar_tf.evaluate`). Writes the same report as vcar-report (CSV, Markdown,
per-frame PSNR curves) with the enhanced columns. With no --data it evaluates on the held-out
split of the run's own dataset (for an export: of the embedded sample dataset; for a preset: of the
sample compressed with the preset's codec settings). A fixed-size TFLite
file evaluates only sequences of its size (vcar-export --height/--width). --crf reads the CRF<crf>
folders (vcar-prepare --gop ra --crf) in place of QP<qp>; --codec_folder picks one codec folder
(e.g. x264_LDP_dbk) where a dataset has several at that QP or CRF.
"""

import os
import sys

from vcar_tf.cli.common import add_model_flags, load_model
from vcar_tf.data.codec import CodecSettings, rate_folder
from vcar_tf.data.layout import check_dataset_folder, find_pairs, prepared_codec_folder, split_datasets
from vcar_tf.errors import ArgumentParser, VcarError, cli_main
from vcar_tf.fileutil import check_writable_dir
from vcar_tf.inference.exported import load_exported
from vcar_tf.presets import preset_card
from vcar_tf.reporting import write_report
from vcar_tf.train.config import TrainConfig
from vcar_tf.train.folder import RunFolder

DEFAULT_BATCH = 1


def load_model_and_config(args):
    """(model or an export's runner, TrainConfig giving data/qp, radius) from --model_dir, --preset,
    --saved_model or --exported."""
    if args.out is None and args.model_dir is None and (args.preset or args.saved_model or args.exported):
        raise VcarError("--preset, --saved_model and --exported need --out")
    loaded = load_model(args, others=("saved_model", "exported"))
    if loaded is not None:
        return loaded
    path = os.path.normpath(args.saved_model or args.exported)
    model = load_exported(path)
    name = os.path.basename(os.path.dirname(path)) if os.path.isdir(path) else os.path.splitext(os.path.basename(path))[0]
    return model, TrainConfig(model=name), model.radius


def sample_settings(args, cfg):
    """How the embedded sample is compressed when no --data is given: a preset's own codec settings
    (its loop filters among them) at the QP evaluated, else the run's codec at that QP."""
    if args.preset is not None:
        return CodecSettings(**{**preset_card(args.preset).get("codec_settings", {"codec": cfg.codec}), "qp": cfg.qp})
    return CodecSettings(codec=cfg.codec, qp=cfg.qp)


@cli_main
def main(argv=None):
    p = ArgumentParser(prog="vcar-evaluate", description=__doc__.split("\n")[0])
    add_model_flags(p, precision=True)
    p.add_argument("--saved_model", default=None, help="a vcar-export SavedModel version folder")
    p.add_argument("--exported", default=None, help="a vcar-export .tflite or .onnx file, or a SavedModel version folder")
    p.add_argument("--data", default=None, help="dataset folder (default: the run's own, held-out split)")
    p.add_argument("--qp", type=int, default=None, help="default: the run's QP")
    p.add_argument("--crf", type=int, default=None, help="evaluate on the CRF<crf> folders in place of QP<qp>")
    p.add_argument("--codec_folder", default=None, help="e.g. x264_LDP where a dataset has several")
    p.add_argument("--out", default=None, help="default: MODEL_DIR/eval")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                   help=f"frames per model call for a Keras window model (default {DEFAULT_BATCH}); "
                        "recurrent models, NL-ConvLSTM's feature cache and exports take one")
    args = p.parse_args(argv)
    if args.batch < 1:
        raise VcarError(f"--batch must be at least 1, not {args.batch}")
    for flag in ("qp", "crf"):
        if getattr(args, flag) is not None and not 0 <= getattr(args, flag) <= 51:
            raise VcarError(f"--{flag} must be in 0..51, not {getattr(args, flag)}")
    if args.qp is not None and args.crf is not None:
        raise VcarError("--qp and --crf exclude each other: give one")
    check_dataset_folder(args.data)
    if args.out is not None:
        check_writable_dir(args.out)  # before TensorFlow loads
    model, cfg, radius = load_model_and_config(args)
    from vcar_tf.inference.sequence import evaluate_pairs

    out = check_writable_dir(args.out or RunFolder(args.model_dir).eval)  # before the evaluation, not after
    if args.data is not None:
        cfg.data = args.data
    cfg.qp = args.qp if args.qp is not None else cfg.qp
    settings = sample_settings(args, cfg)
    train_roots, val_roots = split_datasets(cfg.data, settings, need_train=False)
    roots = val_roots or train_roots
    codec_folder = prepared_codec_folder(cfg.data, settings, args.codec_folder)
    rows, curves = [], {}
    for split, root in roots.items():
        r, c = evaluate_pairs(model, find_pairs(root, cfg.qp, codec_folder, args.crf), radius, split, args.batch)
        rows += r
        curves.update(c)
    print(write_report(out, rows, curves, f"{cfg.model} at {rate_folder(cfg.qp, args.crf)}"))
    print(f"wrote {out}/report.csv, report.md and curves/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
