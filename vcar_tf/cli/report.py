"""Compressed-baseline report of a dataset: Y-PSNR, SSIM, SD and PVD per sequence, as CSV, Markdown
and per-frame PSNR curves.

    vcar-report [--data DIR] [--qp 37 | --crf 33] --out reports/baseline

With no --data it reports the compressed baseline of the embedded sample dataset.
"""

import sys

from vcar_tf.data.codec import CodecSettings
from vcar_tf.data.layout import prepared_codec_folder, resolve_datasets
from vcar_tf.errors import ArgumentParser, VcarError, cli_main
from vcar_tf.reporting import baseline_report


@cli_main
def main(argv=None):
    p = ArgumentParser(prog="vcar-report", description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="dataset folder (default: the embedded sample set)")
    p.add_argument("--qp", type=int, default=None, help="report the QP<qp> folders (default 37)")
    p.add_argument("--crf", type=int, default=None, help="report the CRF<crf> folders (vcar-prepare --gop ra)")
    p.add_argument("--codec", default=None, help="codec of the embedded sample set (default x265)")
    p.add_argument("--codec_folder", default=None, help="e.g. HM16.5_LDP when a dataset has several")
    p.add_argument("--gaussian_ssim", action="store_true", help="MATLAB-style Gaussian SSIM")
    p.add_argument("--out", default="reports/baseline")
    args = p.parse_args(argv)
    if args.qp is not None and args.crf is not None:
        raise VcarError("--qp and --crf exclude each other: give one")
    if args.codec is not None and args.data is not None:
        raise VcarError("--codec picks the embedded sample set's encoding: with --data, use --codec_folder")
    args.qp = 37 if args.qp is None else args.qp
    rate = {"gop": "ra", "crf": args.crf} if args.crf is not None else {"qp": args.qp}
    settings = CodecSettings(codec=args.codec or "x265", **rate)
    datasets = resolve_datasets(args.data, settings)
    md = baseline_report(datasets, args.qp, args.out, prepared_codec_folder(args.data, settings, args.codec_folder),
                         args.gaussian_ssim, args.crf)
    print(md)
    print(f"wrote {args.out}/report.csv, report.md and curves/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
