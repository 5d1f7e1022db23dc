"""Side-by-side ΔPSNR / ΔSSIM per sequence of several evaluated runs (their eval/report.csv).

    python -m vcar_tf.compare RUN [RUN ...] --out docs/results.md [--title T] [--notes FILE]
    python -m vcar_tf.compare NEW_RUN --merge docs/results.md --out docs/results.md

A run is a train_main.py model_dir (or any folder holding a report.csv, or the CSV itself).
--merge keeps the columns of a table this tool wrote before (at its printed precision); a run
with the same label replaces its column.
"""

import argparse
import csv
import json
import os
import sys

from vcar_tf.errors import VcarError, cli_main
from vcar_tf.fileutil import write_text_atomic


def read_report(run):
    """(label, rows) of a run's evaluation report; the label is the run's model and step count."""
    for path in (run, os.path.join(run, "report.csv"), os.path.join(run, "eval", "report.csv")):
        if os.path.isfile(path):
            break
    else:
        raise VcarError(f"{run}: no report.csv (train it to the end or run python -m vcar_tf.evaluate)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "delta_psnr" not in rows[0]:
        raise VcarError(f"{path}: not an evaluation report (no delta_psnr column)")
    label = os.path.basename(os.path.normpath(run))
    config = os.path.join(run, "config.json")
    if os.path.isfile(config):
        with open(config) as f:
            cfg = json.load(f)
        label = f"{cfg['model']} ({cfg['steps']} steps)"
    return label, rows


def read_table(path):
    """[(label, rows)] from a Markdown table written by comparison_table (its printed precision)."""
    with open(path) as f:
        lines = [l.strip() for l in f if l.strip().startswith("|")]
    if len(lines) < 3:
        raise VcarError(f"{path}: no comparison table to merge")
    cell = lambda line: [c.strip() for c in line.strip("|").split("|")]
    head = cell(lines[0])
    if head[:5] != ["split", "sequence", "size", "PSNR QP (dB)", "SSIM QP"] or (len(head) - 5) % 2:
        raise VcarError(f"{path}: not a table written by python -m vcar_tf.compare")
    labels = [h[: -len(" ΔPSNR (dB)")] for h in head[5::2]]
    reports = [(label, []) for label in labels]
    for line in lines[2:]:
        cells = cell(line)
        base = {"split": cells[0], "sequence": cells[1].strip("*"), "size": cells[2],
                "psnr": cells[3], "ssim": cells[4]}
        for i, (_, rows) in enumerate(reports):
            dpsnr, dssim = cells[5 + 2 * i], cells[6 + 2 * i]
            if dpsnr:
                rows.append(dict(base, delta_psnr=dpsnr, delta_ssim_x100=dssim))
    return reports


def merge_reports(old, new):
    """old's columns in order, those with a label in new replaced, then new's other columns."""
    fresh = dict(new)
    merged = [(label, fresh.pop(label, rows)) for label, rows in old]
    return merged + [(label, rows) for label, rows in new if label in fresh]


def comparison_table(reports):
    """Markdown: one row per (split, sequence), a ΔPSNR and a ΔSSIM column per run."""
    first = {}
    for _, rows in reports:
        for r in rows:
            first.setdefault((r["split"], r["sequence"]), r)
    keys = [(split, seq, r["size"], r["psnr"], r["ssim"]) for (split, seq), r in first.items()]
    index = [{(r["split"], r["sequence"]): r for r in rows} for _, rows in reports]
    head = ["split", "sequence", "size", "PSNR QP (dB)", "SSIM QP"]
    for label, _ in reports:
        head += [f"{label} ΔPSNR (dB)", f"{label} ΔSSIM (×10⁻²)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for split, seq, size, psnr, ssim in keys:
        cells = [split, f"**{seq}**" if seq == "average" else seq, size, f"{float(psnr):.2f}", f"{float(ssim):.4f}"]
        for rows in index:
            r = rows.get((split, seq))
            cells += [f"{float(r['delta_psnr']):+.3f}", f"{float(r['delta_ssim_x100']):+.3f}"] if r else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m vcar_tf.compare", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default=None, help="write Markdown here (default: print only)")
    p.add_argument("--title", default="Results")
    p.add_argument("--notes", default=None, help="Markdown file inserted under the title")
    p.add_argument("--merge", default=None, help="keep the columns of this earlier comparison")
    args = p.parse_args(argv)
    reports = [read_report(run) for run in args.runs]
    if args.merge:
        reports = merge_reports(read_table(args.merge), reports)
    notes = ""
    if args.notes:
        with open(args.notes) as f:
            notes = f.read().strip() + "\n\n"
    text = f"# {args.title}\n\n{notes}{comparison_table(reports)}"
    print(text)
    if args.out:
        write_text_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
