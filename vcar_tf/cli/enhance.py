"""Enhance a whole YUV or video file frame by frame with a trained run; chroma passes through.

    vcar-enhance --model_dir RUN|--preset NAME --input IN.yuv|IN.mp4 --output OUT.yuv|OUT.mkv

.yuv inputs need NAME_WxH[_N].yuv names or --width/--height. Video outputs are encoded with
--codec (default libx264) at --qp (default 0: lossless, so the enhancement is kept as is).
"""

import argparse
import os
import sys

import numpy as np
from tqdm import tqdm

from vcar_tf.errors import VcarError, cli_main
from vcar_tf.inference.sequence import enhance_luma
from vcar_tf.cli.common import add_model_flags, load_model
from vcar_tf.video import open_sequence, write_frames


def enhanced_frames(model, seq, radius, progress=True):
    """Yield (y, u, v) uint8 planes: the enhanced luma with the input's chroma."""
    frames = enhance_luma(model, seq, radius)
    for t, y in enumerate(tqdm(frames, total=seq.num_frames, desc="enhance", unit="frame",
                               file=sys.stderr, disable=not progress)):
        _, u, v = seq.frame(t)
        yield np.round(y * 255.0).astype(np.uint8), u, v


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(prog="vcar-enhance", description=__doc__.split("\n")[0])
    add_model_flags(p)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--codec", default="libx264", help="encoder for video outputs")
    p.add_argument("--qp", type=int, default=0, help="QP for video outputs (0: lossless)")
    args = p.parse_args(argv)
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        raise VcarError("--output must differ from --input")
    seq = open_sequence(args.input, args.width, args.height)
    model, _, radius = load_model(args)
    kwargs = {} if args.output.lower().endswith(".yuv") else {
        "codec": args.codec, "options": {"qp": str(args.qp)}}
    n = write_frames(args.output, enhanced_frames(model, seq, radius), **kwargs)
    print(f"enhanced {n} frames -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
