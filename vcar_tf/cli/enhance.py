"""Enhance a video: any FFmpeg-decodable file (or raw .yuv) in, the same video with its luma enhanced out.

    vcar-enhance INPUT OUTPUT [--preset NAME | --model_dir RUN | --saved_model DIR | --exported FILE]
                 [--codec libx264] [--lossless | --crf N | --qp N] [--tile N | --max_memory 4G]

Streamed end to end (decode, enhance and encode overlap in threads; memory stays flat). The output
keeps the input's frame rate and time stamps, audio and subtitle streams (copied, not re-encoded),
colour metadata, rotation and bit depth (8 or 10); chroma passes through unchanged. Default
encoding: --lossless (libx264 at QP 0), which keeps the enhancement exactly. With no model flag,
the preset nearest to the stream's QP is used (read from the stream where FFmpeg allows).
TensorFlow loads after the arguments, the input and the output are checked.
"""

import math
import os
import re
import sys
import time

import av

from vcar_tf.cli.common import add_model_flags, check_model_flags, load_model
from vcar_tf.inference.exported import load_exported
from vcar_tf.errors import ArgumentParser, VcarError, cli_main
from vcar_tf.inference.tiling import HEADROOM, default_overlap, plan_for_memory, tile_within_pixels
from vcar_tf.video.stream import (RAW_OUTPUTS, VideoInput, VideoOutput, check_input_file, output_format,
                                  read_stream_qp)

DEFAULT_CODEC = "libx264"
DEFAULT_QP = 37  # the QP presets are trained for, assumed when the stream's cannot be read
MODEL_FLAGS = ("model_dir", "preset", "saved_model", "exported")
# encoder options for --lossless, per codec (codecs not listed have no lossless mode here)
LOSSLESS = {"libx264": {"qp": "0"}, "libx265": {"x265-params": "lossless=1"}, "libvpx-vp9": {"lossless": "1"},
            "ffv1": {}, "rawvideo": {}, "wrapped_avframe": {}}


def encoder_options(args):
    """(codec, FFmpeg encoder options) for --codec and --lossless / --crf / --qp (lossless when none is
    given); a raw output (.yuv, .y4m) has neither, and takes none of --codec, --crf, --qp."""
    if output_format(args.output) in RAW_OUTPUTS:
        given = [f"--{f}" for f in ("codec", "crf", "qp") if getattr(args, f) is not None]
        if given:
            raise VcarError(f"{args.output} is raw video, stored without encoding: {', '.join(given)} "
                            "would not apply")
        return None, {}
    codec = args.codec or DEFAULT_CODEC
    if codec not in av.codecs_available:
        raise VcarError(f"unknown codec {codec!r} (not in this FFmpeg build)")
    chosen = [f for f in ("lossless", "crf", "qp") if getattr(args, f) not in (None, False)]
    if len(chosen) > 1:
        raise VcarError(f"pass at most one of --lossless, --crf, --qp (got {', '.join('--' + f for f in chosen)})")
    for flag in ("crf", "qp"):
        value = getattr(args, flag)
        if value is not None and not 0 <= value <= 51:
            raise VcarError(f"--{flag} must be in 0..51, got {value}")
    options = {}
    if args.crf is not None:
        options = {"crf": str(args.crf)}
    elif args.qp is not None:
        options = {"x265-params": f"qp={args.qp}"} if codec == "libx265" else {"qp": str(args.qp)}
    elif codec not in LOSSLESS:
        raise VcarError(f"{codec} has no lossless mode here; pass --crf or --qp "
                        f"(lossless: {', '.join(c for c in LOSSLESS if c.startswith(('lib', 'ffv')))})")
    else:
        options = dict(LOSSLESS[codec])
    if codec == "libx265":
        options["x265-params"] = ":".join(filter(None, [options.get("x265-params"), "log-level=error"]))
    return codec, options


def parse_bytes(text):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise VcarError(f"--max_memory {text!r}: give a size such as 4G or 512M")
    try:
        return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " "))
    except OverflowError:
        raise VcarError(f"--max_memory {text!r}: too large a number") from None


def check_paths(args):
    check_input_file(args.input)
    output_format(args.output)
    if os.path.exists(args.output):
        if os.path.samefile(args.input, args.output):
            raise VcarError(f"the output {args.output} is the input file (through a link or another name): "
                            "the output must differ from the input")
        if not args.overwrite:
            raise VcarError(f"{args.output} exists; pass --overwrite to replace it")
    elif os.path.realpath(args.input) == os.path.realpath(args.output):
        raise VcarError("--output must differ from --input")


def load_enhancer(args, src):
    """(model, radius, registered name or None) from --preset, --model_dir or --saved_model, or the
    preset nearest to the stream's QP when none is given. The one place that knows the kinds of
    model file (runs, presets, and through load_exported SavedModel, TFLite and ONNX exports)."""
    exports = [p for p in (args.saved_model, args.exported) if p is not None]
    if exports:
        check_model_flags(args, others=("saved_model", "exported"))
        path = os.path.normpath(exports[0])
        runner = load_exported(path)
        name = (os.path.basename(os.path.dirname(os.path.abspath(path))) if os.path.isdir(path)
                else os.path.splitext(os.path.basename(path))[0])
        return runner, runner.radius, name
    if args.preset is None and args.model_dir is None:
        args.preset = choose_preset(args, src)
    model, cfg, radius = load_model(args, others=("saved_model", "exported"))
    return model, radius, cfg.model


def check_fixed_size(model, src, args):
    """A TFLite file exported for one H x W runs whole frames of that size only (said before TensorFlow loads)."""
    size = getattr(model, "input_size", None)
    if size is None:
        return
    path = args.exported or args.saved_model
    if size != (src.height, src.width):
        raise VcarError(f"{path} was exported for {size[1]}x{size[0]} frames, the video's are "
                        f"{src.width}x{src.height}: export it with --height {src.height} --width {src.width}, or "
                        "--height 0 --width 0 for any size")
    for flag in ("tile", "max_memory"):
        if getattr(args, flag) is not None:
            raise VcarError(f"{path} was exported for whole {size[1]}x{size[0]} frames: --{flag} needs a "
                            "free-size export (--height 0 --width 0)")


def fit_export_limit(model, src, tile, overlap, chosen=False):
    """The tile, made small enough for an export that takes at most so many pixels a call; a tile
    `chosen` by --max_memory (not the user's --tile) is made smaller, not refused."""
    limit = getattr(model, "max_frame_pixels", None)
    if limit is None:
        return tile
    fitted = tile_within_pixels(limit, src.height, src.width, None if chosen else tile, overlap)
    if chosen and (fitted is None or (tile is not None and tile <= fitted)):
        return tile
    if fitted != tile:
        print(f"{src.width}x{src.height} frames are over the export's {limit} pixels a call: tiles of "
              f"{fitted}x{fitted} with {overlap} px overlap")
    return fitted


def choose_preset(args, src):
    """The shipped preset trained at the QP nearest to the stream's (or --input_qp's); of several at
    that QP, the one with the best val ΔPSNR."""
    from vcar_tf.presets import preset_card, preset_names

    names = preset_names()
    if not names:
        raise VcarError("no preset ships yet: pass --model_dir RUN or --saved_model DIR")
    if args.input_qp is not None:
        qp, how = args.input_qp, "given by --input_qp"
    else:
        qp, how = read_stream_qp(src.path)
        if qp is None:
            print(f"the stream's QP cannot be read: {how}; assuming QP {DEFAULT_QP} (--input_qp sets it)")
            qp, how = DEFAULT_QP, "assumed"
    cards = {n: preset_card(n) for n in names}
    # nearest QP first; among presets of that QP, the best on the val split (choices never use test)
    best = min(names, key=lambda n: (abs(cards[n]["qp"] - qp), -cards[n].get("val", {}).get("delta_psnr", 0.0), n))
    print(f"preset {best} ({cards[best]['model']}, trained at QP {cards[best]['qp']}): the nearest to "
          f"QP {qp:g} ({how})")
    return best


def plan_tiles(args, src, name, radius, channels=0):
    """(tile or None, overlap) from --tile / --tile_overlap / --max_memory; `channels` is a recurrent
    model's state channels (0 for a window model)."""
    overlap = args.tile_overlap if args.tile_overlap is not None else default_overlap(name or "")
    if args.tile is not None:
        return args.tile, overlap
    if args.max_memory is None:
        return None, overlap
    budget = parse_bytes(args.max_memory)
    from vcar_tf.inference.video import QUEUE

    tile, fixed = plan_for_memory(budget, name, src.width, src.height, radius, 2 * QUEUE + radius + 1,
                                  (src.bit_depth + 7) // 8, overlap, channels)
    if tile == 0:
        raise VcarError(f"--max_memory {args.max_memory} is too small: {HEADROOM:.0%} of it, less the "
                        f"{fixed / 2**30:.2f} GiB that the model and the frame buffers already hold, leaves too "
                        f"little for whole frames or the smallest tile")
    if tile is None:
        print(f"--max_memory {args.max_memory}: whole frames fit, no tiling")
        return None, overlap
    print(f"--max_memory {args.max_memory}: tiles of {tile}x{tile} with {overlap} px overlap")
    return tile, overlap


def parse_args(argv):
    p = ArgumentParser(prog="vcar-enhance", description=__doc__.split("\n")[0])
    p.add_argument("input_pos", nargs="?", metavar="INPUT", help="a video file (mp4, mkv, webm, y4m, .yuv...)")
    p.add_argument("output_pos", nargs="?", metavar="OUTPUT", help="the enhanced video; its extension picks the container")
    p.add_argument("--input", help="the same as INPUT")
    p.add_argument("--output", help="the same as OUTPUT")
    add_model_flags(p, precision=True)
    p.add_argument("--saved_model", default=None, help="a vcar-export SavedModel (DIR/NAME/VERSION)")
    p.add_argument("--exported", default=None, help="a vcar-export .tflite or .onnx file (or a SavedModel folder)")
    p.add_argument("--input_qp", type=int, default=None,
                   help="with no model flag: pick the preset for this QP instead of the stream's")
    p.add_argument("--codec", default=None, help=f"video encoder (default {DEFAULT_CODEC}); not for a raw .yuv or "
                   ".y4m output")
    p.add_argument("--lossless", action="store_true", help="lossless encoding (the default)")
    p.add_argument("--crf", type=int, default=None, help="constant-quality encoding at this CRF (0..51)")
    p.add_argument("--qp", type=int, default=None, help="constant-QP encoding (0..51)")
    p.add_argument("--tile", type=int, default=None, help="enhance in tiles of N x N pixels")
    p.add_argument("--tile_overlap", type=int, default=None,
                   help="context around each tile (default: the model's receptive field)")
    p.add_argument("--max_memory", default=None, help="pick the tile size for this memory (e.g. 4G)")
    p.add_argument("--width", type=int, help="raw .yuv: frame width")
    p.add_argument("--height", type=int, help="raw .yuv: frame height")
    p.add_argument("--fps", default=None, help="raw .yuv, .h264, .hevc: frame rate (default 25)")
    p.add_argument("--pix_fmt", default=None, help="raw .yuv: yuv420p (default) or yuv420p10le")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--no_progress", action="store_true")
    args = p.parse_args(argv)
    for flag in ("input", "output"):
        given = [v for v in (getattr(args, flag), getattr(args, flag + "_pos")) if v is not None]
        if len(given) != 1:
            raise VcarError(f"give {flag.upper()} once (as an argument or --{flag})")
        setattr(args, flag, given[0])
    if args.input_qp is not None and not 0 <= args.input_qp <= 51:
        raise VcarError(f"--input_qp must be in 0..51, got {args.input_qp}")
    if args.input_qp is not None and any(getattr(args, f) is not None for f in MODEL_FLAGS):
        raise VcarError("--input_qp picks a preset: not with --model_dir, --preset, --saved_model or --exported")
    if args.tile_overlap is not None and args.tile_overlap < 0:
        raise VcarError(f"--tile_overlap must be 0 or more pixels, got {args.tile_overlap}")
    if args.tile is not None and args.max_memory is not None:
        raise VcarError("pass --tile or --max_memory, not both")
    if args.tile is not None and args.tile < 8:
        raise VcarError(f"--tile must be at least 8 pixels, got {args.tile}")
    if args.max_memory is not None:
        parse_bytes(args.max_memory)  # a size now; plan_tiles plans with it once the model is known
    return args


@cli_main
def main(argv=None):
    args = parse_args(argv)
    check_paths(args)
    codec, options = encoder_options(args)
    src = VideoInput(args.input, args.width, args.height, args.fps, args.pix_fmt)
    try:
        dst = VideoOutput(args.output, src, codec=codec, options=options)
        dst.check()
        model, radius, name = load_enhancer(args, src)
        check_fixed_size(model, src, args)
        from vcar_tf.inference.video import enhance_video
        from vcar_tf.models.recurrent import is_recurrent, state_channels

        tile, overlap = plan_tiles(args, src, name, radius, state_channels(model) if is_recurrent(model) else 0)
        tile = fit_export_limit(model, src, tile, overlap, chosen=args.max_memory is not None)
        start = time.perf_counter()
        with dst:
            n = enhance_video(model, radius, src, dst, tile, overlap, progress=not args.no_progress)
        seconds = time.perf_counter() - start
    finally:
        src.close()
    rate = f"{math.floor(n / seconds * 100) / 100:g} fps" if seconds > 0 else ""
    print(f"enhanced {n} frames ({src.width}x{src.height} {src.pix_fmt}, {float(src.rate):g} fps) -> "
          f"{args.output} in {seconds:.1f} s ({rate})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
