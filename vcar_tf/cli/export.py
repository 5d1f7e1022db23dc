"""Export a trained run as a SavedModel (TF Serving), a TFLite file (LiteRT) or an ONNX file.

    vcar-export --model_dir RUN|--preset NAME --out DIR [--format saved_model] [--name NAME] [--version N]
    vcar-export --model_dir RUN|--preset NAME --out DIR --format tflite [--height 480 --width 832]
                [--quantization fp32|fp16|int8|int8_full] [--calibration_frames 8]
    vcar-export --model_dir RUN|--preset NAME --out DIR --format onnx [--onnx_deform composite|native]
                [--quantization fp32|int8] [--calibration_frames 8]

saved_model writes DIR/NAME/VERSION/ (TF Serving's layout; VERSION defaults to one more than the
largest there); tflite writes DIR/NAME_HxW_QUANT.tflite (builtin ops only; `--height 0 --width 0`
leaves H and W free for window models); onnx writes DIR/NAME.onnx (free batch, H
and W; `--onnx_deform native` maps deformable convolutions onto ONNX's DeformConv, opset 19, instead
of the stock-op composite; `--quantization int8` writes DIR/NAME[_deformconv]_int8.onnx with int8
convolutions). Every other export uses stock ops only (the deformable convolution's composite); the signatures
are those of vcar_tf/export/signatures.py. int8 and int8_full are calibrated on windows of the
embedded sample dataset's real frames (TFLite at the export size, ONNX at the sample's 240x416);
TFLite's int8 keeps the deformable sampling positions float (vcar_tf/export/tflite.py), ONNX's
quantizes the convolutions only (vcar_tf/export/onnx.py). TensorFlow loads after the arguments are checked.
"""

import os
import sys

from vcar_tf.cli.common import CALIBRATION_SIZE, CALIBRATION_WINDOWS, add_model_flags, calibration_windows, load_model
from vcar_tf.errors import ArgumentParser, VcarError, cli_main
from vcar_tf.fileutil import check_writable_dir
from vcar_tf.export.names import MAX_FRAME_PIXELS, ONNX_DEFORMS, ONNX_QUANTIZATIONS, TFLITE_QUANTIZATIONS

QUANTIZATIONS = {"saved_model": ("fp32",), "tflite": TFLITE_QUANTIZATIONS, "onnx": ONNX_QUANTIZATIONS}


def check_new_file(path, overwrite):
    """An export file that exists is replaced only with --overwrite (another run of the same model
    exported without --name would otherwise replace it unsaid)."""
    if os.path.exists(path) and not overwrite:
        raise VcarError(f"{path} exists; pass --overwrite to replace it, or --name to export beside it")
    return path


@cli_main
def main(argv=None):
    p = ArgumentParser(prog="vcar-export", description=__doc__.split("\n")[0])
    add_model_flags(p)
    p.add_argument("--format", default="saved_model", choices=list(QUANTIZATIONS))
    p.add_argument("--out", required=True, help="output folder (saved_model: the TF Serving model base folder)")
    p.add_argument("--name", default=None, help="default: the preset's name with --preset, else the model's registry name")
    p.add_argument("--version", type=int, default=None, help="saved_model only")
    p.add_argument("--height", type=int, default=None,
                   help="tflite: input height (default 480; 0 with --width 0: free)")
    p.add_argument("--width", type=int, default=None, help="tflite: input width (default 832; 0 with --height 0: free)")
    p.add_argument("--quantization", default="fp32", choices=list(dict.fromkeys(sum(QUANTIZATIONS.values(), ()))),
                   help="; ".join(f"{f}: {'|'.join(q)}" for f, q in QUANTIZATIONS.items()))
    p.add_argument("--onnx_deform", default="composite", choices=ONNX_DEFORMS,
                   help="onnx: deformable convs as the stock-op composite (opset 18) or ONNX DeformConv (opset 19)")
    p.add_argument("--calibration_frames", type=int, default=CALIBRATION_WINDOWS, help="int8: sample windows to calibrate on")
    p.add_argument("--overwrite", action="store_true", help="tflite, onnx: replace an existing file")
    args = p.parse_args(argv)
    if args.version is not None and args.version < 1:
        raise VcarError(f"--version must be 1 or more (TF Serving's version folders), not {args.version}")
    if args.name is not None and (not args.name or args.name in (".", "..") or os.sep in args.name
                                  or (os.altsep and os.altsep in args.name)):
        raise VcarError(f"--name must be a plain folder name, not {args.name!r}")
    if args.version is not None and args.format != "saved_model":
        raise VcarError(f"--version is for --format saved_model (got --format {args.format})")
    if (args.height is not None or args.width is not None) and args.format != "tflite":
        raise VcarError(f"--height and --width are for --format tflite (got --format {args.format})")
    if (args.height is None) != (args.width is None):
        raise VcarError("give --height and --width together (the other would be the default 480x832's)")
    if args.format == "tflite":
        args.height = 480 if args.height is None else args.height
        args.width = 832 if args.width is None else args.width
        if args.height < 0 or args.width < 0 or (args.height == 0) != (args.width == 0):
            raise VcarError(f"--height and --width must both be positive, or both 0 (free); got "
                            f"{args.height}x{args.width}")
        if args.height * args.width > MAX_FRAME_PIXELS:
            raise VcarError(f"--height {args.height} --width {args.width} is more than the {MAX_FRAME_PIXELS} pixels "
                            f"of the largest frame vcar_tf serves (2560x1600)")
    if args.quantization not in QUANTIZATIONS[args.format]:
        raise VcarError(f"--format {args.format} takes --quantization {' or '.join(QUANTIZATIONS[args.format])}, "
                        f"not {args.quantization}")
    if args.quantization.startswith("int8") and args.calibration_frames < 1:
        raise VcarError(f"--calibration_frames must be at least 1; got {args.calibration_frames}")
    if args.onnx_deform != "composite" and args.format != "onnx":
        raise VcarError(f"--onnx_deform is for --format onnx (got --format {args.format})")
    check_writable_dir(args.out)  # before the model loads and converts
    model, cfg, radius = load_model(args)
    from vcar_tf import models
    from vcar_tf.export import onnx as onnx_export, tflite as tflite_export
    from vcar_tf.export.saved_model import export_saved_model

    name = args.name or args.preset or models.spec(cfg.model).name
    if args.format == "saved_model":
        path = export_saved_model(model, radius, os.path.join(args.out, name), args.version)
    elif args.format == "onnx":
        suffix = ("_deformconv" if args.onnx_deform == "native" else "") + (
            "_int8" if args.quantization == "int8" else "")
        target = check_new_file(os.path.join(args.out, f"{name}{suffix}.onnx"), args.overwrite)
        representative = (calibration_windows(model, radius, *CALIBRATION_SIZE, args.calibration_frames)
                          if args.quantization == "int8" else None)
        path = onnx_export.export_onnx(model, radius, target, deform=args.onnx_deform,
                                       quantization=args.quantization, representative=representative)
    else:
        height, width = (args.height, args.width) if args.height else (None, None)
        size = f"{height}x{width}" if height else "free"
        target = check_new_file(os.path.join(args.out, f"{name}_{size}_{args.quantization}.tflite"), args.overwrite)
        representative = (calibration_windows(model, radius, height or 480, width or 832, args.calibration_frames)
                          if args.quantization.startswith("int8") else None)
        path = tflite_export.export_tflite(model, radius, target, height, width, args.quantization, representative)
    print(f"exported {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
