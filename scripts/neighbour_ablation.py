"""Does a window model use its neighbours? Its gain with the real window against its gain when
every frame of the window is the centre frame (the neighbours carry no new information).

    python scripts/neighbour_ablation.py --preset stdf_r3_x265_qp37 --data data/presets/val --qp 37 \
        [--out FILE.md [--append]]
    python scripts/neighbour_ablation.py --model_dir RUN [--checkpoint best] --data DIR --qp 37

--data is one split's folder (e.g. data/presets/val, prepared by vcar-prepare). Both evaluations
stream every frame of every sequence as vcar-evaluate does (clipped windows, whole frames), in
float32. A single-frame model gains the same either way; a model that uses its neighbours loses
part of its gain without them. Window models only (a recurrent model's state carries the past).
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "benchmarks")]  # this checkout's code, whatever pip installed
from machine import publish  # noqa: E402
from vcar_tf.cli.common import add_model_flags, load_model  # noqa: E402
from vcar_tf.data.layout import check_dataset_folder, find_pairs  # noqa: E402
from vcar_tf.errors import ArgumentParser, VcarError, cli_main  # noqa: E402
from vcar_tf.fileutil import check_writable_file  # noqa: E402
from vcar_tf.models.recurrent import is_recurrent  # noqa: E402


def centre_only(model, radius):
    """The model called on windows whose 2R+1 frames are all the centre frame, as one graph."""
    import tensorflow as tf

    def call(windows):
        centre = tf.convert_to_tensor(windows)[:, radius:radius + 1]
        return model(tf.repeat(centre, 2 * radius + 1, axis=1), training=False)

    return tf.function(call, reduce_retracing=True)


def ablation_rows(model, radius, pairs, split):
    """[(sequence, ΔPSNR with the window, ΔPSNR with the centre only, the same for ΔSSIM×10⁻²)]."""
    from vcar_tf.inference.sequence import evaluate_pairs

    full, _ = evaluate_pairs(model, pairs, radius, split)
    alone, _ = evaluate_pairs(centre_only(model, radius), pairs, radius, split)
    return [(a["sequence"], a["delta_psnr"], b["delta_psnr"], a["delta_ssim_x100"], b["delta_ssim_x100"])
            for a, b in zip(full, alone, strict=True)]


def table(rows):
    lines = ["| sequence | ΔPSNR dB, window | ΔPSNR dB, centre only | from the neighbours | "
             "ΔSSIM×10⁻², window | ΔSSIM×10⁻², centre only |", "|---|---|---|---|---|---|"]
    mean = ["mean", *(sum(r[i] for r in rows) / len(rows) for i in range(1, 5))]
    for name, dp, dp0, ds, ds0 in [*rows, mean]:
        lines.append(f"| {name} | {dp:+.3f} | {dp0:+.3f} | {dp - dp0:+.3f} | {ds:+.2f} | {ds0:+.2f} |")
    return "\n".join(lines)


@cli_main
def main(argv=None):
    p = ArgumentParser(prog="neighbour_ablation.py", description=__doc__.split("\n")[0])
    add_model_flags(p, precision=True)
    p.set_defaults(precision="fp32")
    p.add_argument("--data", required=True, help="one split's dataset folder, e.g. data/presets/val")
    p.add_argument("--qp", type=int, required=True)
    p.add_argument("--out", default=None, help="also write the result to this Markdown file")
    p.add_argument("--append", action="store_true", help="after what --out holds")
    args = p.parse_args(argv)
    check_dataset_folder(args.data)
    if args.out is not None:
        check_writable_file(args.out)
    pairs = find_pairs(args.data, args.qp)
    model, cfg, radius = load_model(args)
    if is_recurrent(model) or radius == 0:
        raise VcarError(f"{cfg.model} is not a multi-frame window model: nothing to ablate")
    split = os.path.basename(os.path.normpath(args.data))
    rows = ablation_rows(model, radius, pairs, split)
    body = (f"{cfg.model} (radius {radius}) on {len(rows)} sequences of {args.data} at QP{args.qp}, every frame, "
            f"{args.precision}. Centre only: each window's {2 * radius + 1} frames are its centre frame.\n\n"
            + table(rows))
    publish(f"Neighbour ablation: {args.preset or args.model_dir}", body, args.out, args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
