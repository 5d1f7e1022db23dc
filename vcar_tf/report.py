"""Per-sequence quality reports: Y-PSNR, SSIM, their deltas, SD and PVD, as CSV, Markdown and
per-frame PSNR curves (PNG).

    vcar-report [--data DIR] [--qp 37] --out reports/baseline

With no --data it reports the compressed baseline of the embedded sample dataset.
"""

import argparse
import csv
import io
import os
import sys

import numpy as np
from tqdm import tqdm

from vcar_tf.errors import cli_main
from vcar_tf.fileutil import atomic_path, ensure_writable_dir, write_text_atomic
from vcar_tf.metrics import peak_valley_difference, psnr_sd, psnr_y, ssim


def frame_metrics(raw_frames, test_frames, gaussian_ssim=False):
    """Per-frame (psnr, ssim) arrays of two equal-length iterables of Y planes."""
    psnr, ssim_ = [], []
    for ref, test in zip(raw_frames, test_frames, strict=True):
        psnr.append(psnr_y(ref, test))
        ssim_.append(ssim(ref, test, gaussian=gaussian_ssim))
    return np.array(psnr), np.array(ssim_)


def sequence_row(split, name, width, height, psnr_c, ssim_c, psnr_e=None, ssim_e=None):
    """One report row; the enhanced columns appear when enhanced curves are given."""
    row = {"split": split, "sequence": name, "size": f"{width}x{height}", "frames": len(psnr_c),
           "psnr": psnr_c.mean(), "ssim": ssim_c.mean(),
           "sd": psnr_sd(psnr_c), "pvd": peak_valley_difference(psnr_c)}
    if psnr_e is not None:
        row.update({"psnr_enh": psnr_e.mean(), "ssim_enh": ssim_e.mean(),
                    "delta_psnr": psnr_e.mean() - psnr_c.mean(),
                    "delta_ssim_x100": 100 * (ssim_e.mean() - ssim_c.mean()),
                    "sd_enh": psnr_sd(psnr_e), "pvd_enh": peak_valley_difference(psnr_e)})
    return row


def average_rows(rows):
    """A mean row per split (sequences weighted equally, as the papers average)."""
    out = []
    for split in dict.fromkeys(r["split"] for r in rows):
        group = [r for r in rows if r["split"] == split]
        avg = {"split": split, "sequence": "average", "size": "", "frames": sum(r["frames"] for r in group)}
        for key, value in group[0].items():
            if isinstance(value, float):
                avg[key] = float(np.mean([r[key] for r in group]))
        out.append(avg)
    return out


_HEADERS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "sd": "SD (dB)", "pvd": "PVD (dB)",
            "psnr_enh": "PSNR enh.", "ssim_enh": "SSIM enh.", "delta_psnr": "ΔPSNR (dB)",
            "delta_ssim_x100": "ΔSSIM (×10⁻²)", "sd_enh": "SD enh.", "pvd_enh": "PVD enh."}


def _fmt(v):
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def to_markdown(rows, title):
    keys = list(rows[0])
    lines = [f"# {title}", "", "| " + " | ".join(_HEADERS.get(k, k) for k in keys) + " |",
             "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows({k: _fmt(v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def plot_curves(path, name, curves):
    """Per-frame PSNR curves {label: array} of one sequence, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    for label, curve in curves.items():
        ax.plot(np.arange(len(curve)), curve, marker=".", label=label)
    ax.set(xlabel="frame", ylabel="Y-PSNR (dB)", title=name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_report(out_dir, rows, curves, title):
    """Write report.csv, report.md and curves/<split>-<name>.png; returns the Markdown text."""
    ensure_writable_dir(os.path.join(out_dir, "curves"))
    table = rows + average_rows(rows)
    md = to_markdown(table, title)
    write_text_atomic(os.path.join(out_dir, "report.csv"), to_csv(table))
    write_text_atomic(os.path.join(out_dir, "report.md"), md)
    for (split, name), c in curves.items():
        plot_curves(os.path.join(out_dir, "curves", f"{split}-{name}.png"), name, c)
    return md


def baseline_report(datasets, qp, out_dir, codec_folder=None, gaussian_ssim=False):
    """Compressed-versus-raw report for every sequence of the given dataset roots."""
    from vcar_tf.data.layout import find_pairs

    ensure_writable_dir(out_dir)
    jobs = [(split, pair) for split, root in datasets.items() for pair in find_pairs(root, qp, codec_folder)]
    rows, curves = [], {}
    for split, pair in tqdm(jobs, desc="metrics", unit="seq", file=sys.stderr):
        raw, comp = pair.open()
        psnr_c, ssim_c = frame_metrics(iter(raw.luma()), iter(comp.luma()), gaussian_ssim)
        rows.append(sequence_row(split, pair.name, raw.width, raw.height, psnr_c, ssim_c))
        curves[(split, pair.name)] = {"compressed": psnr_c}
    return write_report(out_dir, rows, curves, f"Compressed baseline, QP{qp}")


@cli_main
def main(argv=None):
    from vcar_tf.data.codec import CodecSettings
    from vcar_tf.data.layout import resolve_datasets

    p = argparse.ArgumentParser(prog="vcar-report", description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="dataset folder (default: the embedded sample set)")
    p.add_argument("--qp", type=int, default=37)
    p.add_argument("--codec", default="x265", help="codec of the embedded sample set")
    p.add_argument("--codec-folder", default=None, help="e.g. HM16.5_LDP when a dataset has several")
    p.add_argument("--gaussian-ssim", action="store_true", help="MATLAB-style Gaussian SSIM")
    p.add_argument("--out", default="reports/baseline")
    args = p.parse_args(argv)
    datasets = resolve_datasets(args.data, CodecSettings(codec=args.codec, qp=args.qp))
    md = baseline_report(datasets, args.qp, args.out, args.codec_folder, args.gaussian_ssim)
    print(md)
    print(f"wrote {args.out}/report.csv, report.md and curves/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
