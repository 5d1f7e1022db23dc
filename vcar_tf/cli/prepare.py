"""Make an MFQE-2.0-style dataset from source video: raw YUV plus compressed versions per QP.

    vcar-prepare --raw FILES_OR_DIR --out DIR --codec x265 --qp 22 27 32 37 42
    vcar-prepare --raw FILES_OR_DIR --out DIR --gop ra --crf 30 --deblock --sao

Writes DIR/raw/NAME_WxH_N.yuv, DIR/<codec>_LDP[_hmqp][_dbk][_sao]/QP<qp>/NAME_WxH_N.yuv (with
--gop ra: x265_RA[_dbk][_sao]/QP<qp> or CRF<crf>) and, in its bitstreams/ folder, each bitstream
with a JSON sidecar. A finished output is never redone.
"""

import os
import sys

import numpy as np

from vcar_tf.data.codec import CODECS, GOPS, CodecSettings
from vcar_tf.data.codec import ENCODER_PRESETS
from vcar_tf.data.prepare import find_sources, prepare_dataset
from vcar_tf.errors import ArgumentParser, VcarError, cli_main


def add_codec_args(parser):
    parser.add_argument("--codec", default="x265", choices=sorted(CODECS))
    parser.add_argument("--qp", type=int, nargs="+", default=None, help="constant QPs (default: 37)")
    parser.add_argument("--gop", default="ldp", choices=GOPS,
                        help="ldp: low-delay P (default); ra: x265's own random-access GOP with B-frames")
    parser.add_argument("--crf", type=int, nargs="+", default=None, help="with --gop ra: CRFs in place of --qp")
    parser.add_argument("--deblock", action="store_true", help="turn the deblocking filter on")
    parser.add_argument("--sao", action="store_true", help="turn SAO on (x265)")
    parser.add_argument("--hm_ldp_offsets", action="store_true",
                        help="HM16.5 low-delay-P QP offsets per GOP position (+3, +2, +3, +1)")
    parser.add_argument("--preset", default="medium", choices=ENCODER_PRESETS, help="the x265/x264 speed preset")


def settings_from_args(args):
    if args.qp is not None and args.crf is not None:
        raise VcarError("--qp and --crf exclude each other: give one")
    rates = [{"crf": c} for c in args.crf] if args.crf is not None else [{"qp": q} for q in args.qp or [37]]
    return [CodecSettings(codec=args.codec, deblock=args.deblock, sao=args.sao, gop=args.gop,
                          hm_ldp_offsets=args.hm_ldp_offsets, preset=args.preset, **rate) for rate in rates]


@cli_main
def main(argv=None):
    parser = ArgumentParser(prog="vcar-prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--raw", nargs="+", required=True, help="source files or folders")
    parser.add_argument("--out", required=True, help="dataset folder to write")
    parser.add_argument("--split", choices=["train", "val", "test"],
                        help="with a folder holding MANIFEST.tsv: only this split")
    parser.add_argument("--width", type=int, help="width of .yuv sources without WxH in the name")
    parser.add_argument("--height", type=int)
    parser.add_argument("--workers", type=int, default=None, help="parallel sequences (default: cores)")
    add_codec_args(parser)
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    sources = find_sources(args.raw, args.split)
    summary = prepare_dataset(sources, args.out, settings, args.workers, args.width, args.height)
    print(f"{len(sources)} sequences: {summary['raw_written']} raw written, {summary['encoded']} encoded, "
          f"{summary['cached']} already done")
    for s in settings:
        rows = [c for c in summary["sidecars"] if c["settings"] == s.to_json()]
        mean, kbps = (np.mean([c[k] for c in rows]) for k in ("psnr_y", "bitrate_kbps"))
        print(f"{os.path.join(args.out, s.folder)}: mean Y-PSNR {mean:.2f} dB, mean bitrate {kbps:.1f} kbps "
              f"over {len(rows)} sequences")
    return 0


if __name__ == "__main__":
    sys.exit(main())
