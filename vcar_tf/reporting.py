"""Reports and tables: per-sequence rows as CSV and Markdown, per-frame PSNR curves (PNG), and the
side-by-side comparison of several evaluated runs (the commands are vcar-report and vcar-compare)."""

import csv
import io
import os
import sys

import numpy as np
from tqdm import tqdm

from vcar_tf.data.codec import rate_folder
from vcar_tf.data.layout import find_pairs
from vcar_tf.errors import VcarError
from vcar_tf.fileutil import atomic_path, ensure_writable_dir, read_text, write_text_atomic
from vcar_tf.metrics.sequence import frame_metrics, sequence_row


REPORT_CSV = "report.csv"


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
    write_text_atomic(os.path.join(out_dir, REPORT_CSV), to_csv(table))
    write_text_atomic(os.path.join(out_dir, "report.md"), md)
    names = {f"{split}-{name}.png": (name, c) for (split, name), c in curves.items()}
    for file, (name, c) in names.items():
        plot_curves(os.path.join(out_dir, "curves", file), name, c)
    for file in os.listdir(os.path.join(out_dir, "curves")):  # an earlier report's other sequences
        if file.endswith(".png") and file not in names:
            os.remove(os.path.join(out_dir, "curves", file))
    return md


def baseline_report(datasets, qp, out_dir, codec_folder=None, gaussian_ssim=False, crf=None):
    """Compressed-versus-raw report for every sequence of the given dataset roots (at a CRF: crf)."""
    jobs = [(split, pair) for split, root in datasets.items() for pair in find_pairs(root, qp, codec_folder, crf)]
    opened = [(split, pair.name, *pair.open()) for split, pair in jobs]  # every file's size checked first
    ensure_writable_dir(out_dir)  # after the dataset checks: a bad dataset leaves no folder behind
    rows, curves = [], {}
    for split, name, raw, comp in tqdm(opened, desc="metrics", unit="seq", file=sys.stderr):
        psnr_c, ssim_c = frame_metrics(iter(raw.luma()), iter(comp.luma()), gaussian_ssim)
        rows.append(sequence_row(split, name, raw.width, raw.height, psnr_c, ssim_c))
        curves[(split, name)] = {"compressed": psnr_c}
    return write_report(out_dir, rows, curves, f"Compressed baseline, {rate_folder(qp, crf)}")


def report_path(source):
    """The report CSV of `source`: the CSV itself or REPORT_CSV in the folder."""
    return source if os.path.isfile(source) else os.path.join(source, REPORT_CSV)


def read_report(source, label=None):
    """(label, rows) of an evaluation report: `source` is the CSV or a folder holding REPORT_CSV;
    the label defaults to the folder's name."""
    path = report_path(source)
    if not os.path.isfile(path):
        raise VcarError(f"{source}: no {REPORT_CSV} (train it to the end or run vcar-evaluate)")
    reader = csv.DictReader(io.StringIO(read_text(path)))
    rows = list(reader)
    if "delta_psnr" not in (reader.fieldnames or ()):
        raise VcarError(f"{path}: not an evaluation report (no delta_psnr column)")
    if not rows:
        raise VcarError(f"{path}: an evaluation report with no rows")
    return label or os.path.basename(os.path.normpath(source)), checked_numbers(rows, path)


NUMBER_COLUMNS = ("psnr", "ssim", "delta_psnr", "delta_ssim_x100")


def checked_numbers(rows, path, columns=NUMBER_COLUMNS):
    """rows, once every cell of `columns` they have reads as a number (else a one-line error)."""
    for r in rows:
        for column in columns:
            value = r.get(column)
            try:
                float(value)
            except (TypeError, ValueError):
                raise VcarError(f"{path}: {column} of {r.get('split')}/{r.get('sequence')} is not a number "
                                f"({value!r})") from None
    return rows


def read_table(path):
    """[(label, rows)] from a Markdown table written by comparison_table (its printed precision)."""
    text = [l.strip() for l in read_text(path).splitlines()]  # the first comparison table (notes may hold others)
    start = next((i for i, l in enumerate(text) if l.startswith("| split | sequence |")), None)
    if start is None:
        raise VcarError(f"{path}: not a table written by vcar-compare (no '| split | sequence |' header)")
    end = next((i for i in range(start, len(text)) if not text[i].startswith("|")), len(text))
    lines = text[start:end]
    if len(lines) < 3:
        raise VcarError(f"{path}: no comparison table to merge")
    cell = lambda line: [c.strip() for c in line.strip("|").split("|")]
    head = cell(lines[0])
    if head[:5] != ["split", "sequence", "size", "PSNR QP (dB)", "SSIM QP"] or (len(head) - 5) % 2:
        raise VcarError(f"{path}: not a table written by vcar-compare")
    labels = [h[: -len(" ΔPSNR (dB)")] for h in head[5::2]]
    reports = [(label, []) for label in labels]
    for line in lines[2:]:
        cells = cell(line)
        if len(cells) != len(head):
            raise VcarError(f"{path}: a row of {len(cells)} cells in a table of {len(head)} columns")
        base = {"split": cells[0], "sequence": cells[1].strip("*"), "size": cells[2],
                "psnr": cells[3], "ssim": cells[4]}
        for i, (_, rows) in enumerate(reports):
            dpsnr, dssim = cells[5 + 2 * i], cells[6 + 2 * i]
            if dpsnr:
                rows.append(dict(base, delta_psnr=dpsnr, delta_ssim_x100=dssim))
    return [(label, checked_numbers(rows, path)) for label, rows in reports]


def section_span(lines, title):
    """(start, end) of the `## title` section of `lines`: its heading, and the next heading of
    level 1 or 2 (or the end); None when there is no such section."""
    start = next((i for i, l in enumerate(lines) if l.rstrip() == f"## {title}"), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(("# ", "## "))), len(lines))
    return start, end


def read_grid(path, title):
    """([(label, rows)], [group]) from the averages grid of the `## title` section of a file written
    by vcar-compare --group --append (its printed precision): one average row per filled cell."""
    lines = read_text(path).splitlines()
    span = section_span(lines, title)
    if span is None:
        raise VcarError(f"{path}: no section '## {title}' to merge")
    cell = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
    grid = next((i for i in range(*span) if lines[i].startswith("|") and cell(lines[i])[:2] == ["split", "preset"]),
                None)
    if grid is None:
        raise VcarError(f"{path}: the section '## {title}' has no averages grid written by vcar-compare")
    head = cell(lines[grid])
    groups = [h[: -len(" ΔPSNR (dB)")] for h in head[2::2]]
    inputs, reports, report_groups = {}, [], []
    for line in lines[grid + 2:]:
        if not line.startswith("|"):
            break
        cells = cell(line)
        if len(cells) != len(head):
            raise VcarError(f"{path}: a row of {len(cells)} cells in a grid of {len(head)} columns")
        split, label, values = cells[0], cells[1], cells[2:]
        if label.startswith("*compressed input"):
            inputs.update({(split, g): values[2 * j: 2 * j + 2] for j, g in enumerate(groups)})
            continue
        for j, g in enumerate(groups):
            dpsnr, dssim = values[2 * j: 2 * j + 2]
            if dpsnr:
                psnr, ssim = inputs[split, g]
                reports.append((label, checked_numbers([{"split": split, "sequence": "average", "psnr": psnr,
                                                         "ssim": ssim, "delta_psnr": dpsnr,
                                                         "delta_ssim_x100": dssim}], path)))
                report_groups.append(g)
    return reports, report_groups


def merge_reports(old, new):
    """old's columns in order, those with a label in new replaced, then new's other columns."""
    fresh = dict(new)
    merged = [(label, fresh.pop(label, rows)) for label, rows in old]
    return merged + [(label, rows) for label, rows in new if label in fresh]


def same_input(a, b):
    """Two rows' compressed PSNR and SSIM agree within a table's printed precision (2 decimals of
    PSNR, 4 of SSIM), as merged cells have no more."""
    return np.allclose((float(a["psnr"]), float(a["ssim"])), (float(b["psnr"]), float(b["ssim"])), atol=(0.006, 1e-3))


def first_rows(reports):
    """{(split, sequence): the first run's row}, in order. Runs whose compressed inputs differ are an
    error; runs that average different sequences get a note."""
    first, labels = {}, {}
    for label, rows in reports:
        for r in rows:
            key = (r["split"], r["sequence"])
            if key in first and r["sequence"] != "average" and not same_input(first[key], r):
                raise VcarError(f"{label} and {labels[key]} were evaluated on different compressed inputs: "
                                f"{key[0]}/{key[1]} PSNR {float(r['psnr']):.2f} against {float(first[key]['psnr']):.2f} dB")
            first.setdefault(key, r)
            labels.setdefault(key, label)
    covered = {}
    for label, rows in reports:
        for split in dict.fromkeys(r["split"] for r in rows):
            sequences = frozenset(r["sequence"] for r in rows if r["split"] == split and r["sequence"] != "average")
            covered.setdefault(split, {}).setdefault(sequences, label)
    for split, kinds in covered.items():
        if len(kinds) > 1:
            print(f"note: the runs average different {split} sequences ({' / '.join(kinds.values())} differ): "
                  "their average rows are not comparable", file=sys.stderr)
    return first


def per_sequence_table(reports, base_head, base_cells, run_head, run_cells):
    """Markdown: one row per (split, sequence) (first_rows' checks): base_cells(the first run's row)
    under base_head, then run_cells(row) of each run under "LABEL " + run_head."""
    first = first_rows(reports)
    index = [{(r["split"], r["sequence"]): r for r in rows} for _, rows in reports]
    head = ["split", "sequence", *base_head]
    for label, _ in reports:
        head += [f"{label} {h}" for h in run_head]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (split, seq), base in first.items():
        cells = [split, f"**{seq}**" if seq == "average" else seq, *base_cells(base)]
        for rows in index:
            r = rows.get((split, seq))
            cells += run_cells(r) if r else [""] * len(run_head)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_table(reports):
    """Markdown: one row per (split, sequence), a ΔPSNR and a ΔSSIM column per run."""
    return per_sequence_table(
        reports, ["size", "PSNR QP (dB)", "SSIM QP"],
        lambda r: [r["size"], f"{float(r['psnr']):.2f}", f"{float(r['ssim']):.4f}"],
        ["ΔPSNR (dB)", "ΔSSIM (×10⁻²)"],
        lambda r: [f"{float(r['delta_psnr']):+.3f}", f"{float(r['delta_ssim_x100']):+.3f}"])


FLUCTUATION_COLUMNS = ("sd", "pvd", "sd_enh", "pvd_enh")


def fluctuation_table(reports):
    """Markdown: the quality fluctuation (SD and PVD of the per-frame PSNR, in dB) of each (split,
    sequence), of the compressed input and then of each run's output, from full reports (a merged
    table's cells have no SD or PVD)."""
    for label, rows in reports:
        missing = [c for c in FLUCTUATION_COLUMNS if c not in rows[0]]
        if missing:
            raise VcarError(f"{label}: its report has no {', '.join(missing)} column (SD/PVD need vcar-evaluate's report.csv)")
        checked_numbers(rows, label, FLUCTUATION_COLUMNS)
    return per_sequence_table(reports, ["SD QP (dB)", "PVD QP (dB)"],
                              lambda r: [f"{float(r['sd']):.3f}", f"{float(r['pvd']):.3f}"],
                              ["SD (dB)", "PVD (dB)"],
                              lambda r: [f"{float(r['sd_enh']):.3f}", f"{float(r['pvd_enh']):.3f}"])


def average_grid(reports, groups, first_groups=()):
    """Markdown: the average rows only, one row per label, a ΔPSNR and a ΔSSIM column per group
    (e.g. a compression; `first_groups` first, in their order, then the others as they come);
    above them the compressed input's mean PSNR and SSIM in each group."""
    if len(groups) != len(reports):
        raise VcarError(f"{len(groups)} groups for {len(reports)} runs: give one per run")
    order = [g for g in dict.fromkeys([*first_groups, *groups]) if g in set(groups)]
    cells, bases, labels = {}, {}, list(dict.fromkeys(label for label, _ in reports))
    for (label, rows), group in zip(reports, groups):
        for r in rows:
            if r["sequence"] != "average":
                continue
            key = (r["split"], group)
            if key in bases and not same_input(bases[key], r):
                raise VcarError(f"{group}: the runs' compressed inputs differ (PSNR {float(bases[key]['psnr']):.2f} "
                                f"vs {float(r['psnr']):.2f} dB, SSIM {float(bases[key]['ssim']):.4f} vs "
                                f"{float(r['ssim']):.4f})")
            bases.setdefault(key, r)
            cells[r["split"], label, group] = r
    inputs = {key: (float(r["psnr"]), float(r["ssim"])) for key, r in bases.items()}
    head = ["split", "preset"]
    for g in order:
        head += [f"{g} ΔPSNR (dB)", f"{g} ΔSSIM (×10⁻²)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for split in dict.fromkeys(s for s, _ in inputs):
        row = [split, "*compressed input: PSNR (dB), SSIM*"]
        for g in order:
            base = inputs.get((split, g))
            row += [f"{base[0]:.2f}", f"{base[1]:.4f}"] if base else ["", ""]
        lines.append("| " + " | ".join(row) + " |")
        for label in labels:
            row = [split, label]
            for g in order:
                r = cells.get((split, label, g))
                row += [f"{float(r['delta_psnr']):+.3f}", f"{float(r['delta_ssim_x100']):+.3f}"] if r else ["", ""]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def replace_section(text, title, section):
    """`text` with its `## title` section (to the next heading of level 1 or 2) replaced by
    `section`, or with `section` appended when it has none."""
    lines = text.splitlines(keepends=True)
    span = section_span(lines, title)
    if span is None:
        return text.rstrip("\n") + "\n\n" + section
    start, end = span
    rest = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + rest if rest else "")
