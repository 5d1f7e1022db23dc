"""vcar-evaluate with a committed record: an evaluation already made is not made again.

    python scripts/evaluate_recorded.py --out runs/preset-eval/NAME --preset NAME --data DIR [--qp 37 | --crf 33]
        [--codec-folder F] [--precision fp32|bf16|int8] [--restore-only]
    python scripts/evaluate_recorded.py --out runs/preset-eval/X --model_dir RUN [--checkpoint best] [--key-file WEIGHTS]
        --qp 37 --data DIR

The scripts that make docs/results.md (preset_results.sh, robustness.sh, qp_results.sh) call this in
place of vcar-evaluate. The record of OUT is docs/evaluations/<OUT without its leading runs/>:
report.csv and report.md as vcar-evaluate wrote them (SD and PVD per sequence included), and
record.json with what the numbers depend on (the sha256 of the weights, from the preset's card,
or for a --model_dir of its checkpoint saved as scripts/make_preset.py saves a preset (the same
bytes: a run's evaluation to runs/preset-eval/NAME is the evaluation of the preset made from it)
or of --key-file, the file it was imported from; and of every raw and compressed sequence
evaluated, and the precision: fp32 unless --precision says otherwise, never vcar-evaluate's
machine-dependent auto) and where they
come from (the command, its time, the commit, the machine and the process's peak resident memory).
In order:
1. OUT holds an evaluation made by this script (OUT/record.json) of today's weights and sequences:
   it is kept and recorded.
2. The record matches today's weights and sequences: its report is copied to OUT.
3. --kept-in RESULTS (preset_results.sh's MERGE=1): where RESULTS already shows this evaluation (its
   table's column, or with --group its grid's cell), nothing runs, and vcar-compare --merge keeps it.
4. Otherwise vcar-evaluate runs (--restore-only: nothing runs), and OUT and its record are written.
An OUT with a report.csv but no record.json (made by vcar-evaluate directly) is kept, unrecorded.
"""

import datetime
import json
import os
import resource
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "benchmarks")]  # this checkout's code, whatever pip installed
from machine import describe, revision  # noqa: E402
from vcar_tf.cli import evaluate  # noqa: E402
from vcar_tf.data.codec import CodecSettings  # noqa: E402
from vcar_tf.data.layout import find_pairs, split_datasets  # noqa: E402
from vcar_tf.errors import ArgumentParser, VcarError, cli_main  # noqa: E402
from vcar_tf.fileutil import ensure_writable_dir, write_text_atomic  # noqa: E402
from vcar_tf.models.presets import save_preset_weights  # noqa: E402
from vcar_tf.presets import file_sha256, preset_card  # noqa: E402
from vcar_tf.reporting import REPORT_CSV, read_grid, read_table  # noqa: E402
from vcar_tf.train.run import CHECKPOINTS, load_run  # noqa: E402

RECORDS = os.path.join(REPO, "docs", "evaluations")
RECORD = "record.json"
KEY_DEFAULTS = {"precision": "fp32"}  # what a record made before the key had it means
REPORT_FILES = (REPORT_CSV, "report.md")


def inputs_sha256(data, qp, crf, codec_folder):
    """{split/sequence: {raw, compressed}} sha256 of the sequences vcar-evaluate reads (its own lookup)."""
    settings = CodecSettings(gop="ra", crf=crf) if crf is not None else CodecSettings(qp=qp)
    train, val = split_datasets(data, settings, need_train=False)
    out = {}
    for split, root in (val or train).items():
        for pair in find_pairs(root, qp, codec_folder, crf):
            out[f"{split}/{pair.name}"] = {"raw": file_sha256(pair.raw_path), "compressed": file_sha256(pair.compressed_path)}
    return out


def run_weights_sha256(model_dir, checkpoint):
    """sha256 of a run's checkpoint saved as make_preset.py saves a preset's weights."""
    with tempfile.TemporaryDirectory() as tmp:
        return save_preset_weights(load_run(model_dir, checkpoint)[0], tmp)


def shown_in(path, label, title, group):
    """Whether the results file already shows this evaluation: the label's column of its first
    table, or with a group the label's cell in the averages grid of its `## title` section."""
    if group is None:
        return any(name == label for name, _ in read_table(path))
    reports, groups = read_grid(path, title)
    return any(name == label and g == group for (name, _), g in zip(reports, groups))


def read_record(folder):
    path = os.path.join(folder, RECORD)
    if not os.path.isfile(path) or not all(os.path.isfile(os.path.join(folder, f)) for f in REPORT_FILES):
        return None
    with open(path) as f:
        return json.load(f)


def matches(record, key):
    """Whether a record (or None) is of this key's weights, sequences and settings."""
    return record is not None and all(record.get(k, KEY_DEFAULTS.get(k)) == v for k, v in key.items())


def copy_evaluation(src, dst, record):
    """The report files and record of src into dst, each written atomically."""
    ensure_writable_dir(dst)
    for name in REPORT_FILES:
        with open(os.path.join(src, name)) as f:
            write_text_atomic(os.path.join(dst, name), f.read())
    write_text_atomic(os.path.join(dst, RECORD), json.dumps(record, indent=1, sort_keys=True) + "\n")


@cli_main
def main(argv=None):
    p = ArgumentParser(prog="evaluate_recorded.py", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default=None)
    p.add_argument("--model_dir", default=None)
    p.add_argument("--checkpoint", default="latest", choices=CHECKPOINTS, help="with --model_dir")
    p.add_argument("--key-file", default=None,
                   help="with --model_dir: the weights file it was imported from (default: its checkpoint's weights)")
    p.add_argument("--data", required=True)
    p.add_argument("--qp", type=int, default=None, help="default: the preset's QP")
    p.add_argument("--crf", type=int, default=None)
    p.add_argument("--codec-folder", default=None)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8"), help="vcar-evaluate's --precision")
    p.add_argument("--records", default=RECORDS, help="folder of the records (default docs/evaluations)")
    p.add_argument("--record", default=None, help="the record's path under --records (default: OUT without runs/)")
    p.add_argument("--restore-only", action="store_true", help="never run vcar-evaluate")
    p.add_argument("--kept-in", default=None,
                   help="a copy of docs/results.md: where it already shows this evaluation, nothing runs")
    p.add_argument("--label", default=None, help="with --kept-in: the evaluation's label (default: the preset)")
    p.add_argument("--title", default=None, help="with --kept-in and --group: the section of the grid")
    p.add_argument("--group", default=None, help="with --kept-in: the evaluation's group in that grid")
    args = p.parse_args(argv)
    if (args.preset is None) == (args.model_dir is None):
        raise VcarError("give exactly one of --preset and --model_dir")
    if args.preset is not None and args.checkpoint != "latest":
        raise VcarError("--checkpoint goes with --model_dir")
    if args.preset is not None:
        card = preset_card(args.preset)
        weights, qp = card["sha256"], card["qp"] if args.qp is None else args.qp
    else:
        if args.qp is None and args.crf is None:
            raise VcarError("--model_dir needs --qp or --crf")
        weights = file_sha256(args.key_file) if args.key_file else run_weights_sha256(args.model_dir, args.checkpoint)
        qp = args.qp
    rel = args.record or os.path.relpath(os.path.normpath(args.out), "runs")
    if rel.startswith(".."):
        raise VcarError(f"--out {args.out} is not under runs/: give --record")
    record_dir = os.path.join(args.records, rel)
    key = {"weights_sha256": weights, "qp": qp if args.crf is None else None, "crf": args.crf,
           "codec_folder": args.codec_folder, "precision": args.precision,
           "inputs_sha256": inputs_sha256(args.data, qp, args.crf, args.codec_folder)}

    made = read_record(args.out)
    if matches(made, key):
        copy_evaluation(args.out, record_dir, made)
        return 0
    if made is None and os.path.isfile(os.path.join(args.out, REPORT_CSV)):
        print(f"note: {args.out} has an evaluation made without this script: kept, not recorded", file=sys.stderr)
        return 0
    if made is not None:
        print(f"note: {args.out} evaluated other weights or sequences than today's", file=sys.stderr)
    recorded = read_record(record_dir)
    if matches(recorded, key):
        copy_evaluation(record_dir, args.out, recorded)
        print(f"note: {args.out}: the evaluation recorded in {record_dir} ({recorded['time']}, "
              f"{recorded['revision']}) matches these weights and sequences: reused", file=sys.stderr)
        return 0
    if args.kept_in and shown_in(args.kept_in, args.label or args.preset, args.title, args.group):
        print(f"note: {args.out}: not evaluated, {args.kept_in} shows it already (kept there)", file=sys.stderr)
        return 0
    if args.restore_only:
        return 0
    command = ["--preset", args.preset] if args.preset else ["--model_dir", args.model_dir]
    command += ["--checkpoint", args.checkpoint] if args.checkpoint != "latest" else []
    command += ["--data", args.data]
    command += ["--qp", str(args.qp)] if args.qp is not None else []
    command += ["--crf", str(args.crf)] if args.crf is not None else []
    command += ["--codec-folder", args.codec_folder] if args.codec_folder else []
    command += ["--precision", args.precision]
    command += ["--out", args.out]
    start, code_revision = datetime.datetime.now(datetime.timezone.utc), revision()  # the code that runs
    code = evaluate.main(command)
    if code:
        return code
    end = datetime.datetime.now(datetime.timezone.utc)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB; TensorFlow included
    record = dict(key, command="vcar-evaluate " + " ".join(command), revision=code_revision,
                  time=f"{start:%Y-%m-%d %H:%M}–{end:%H:%M} UTC", machine=describe(), peak_rss_gib=round(peak_gib, 2))
    write_text_atomic(os.path.join(args.out, RECORD), json.dumps(record, indent=1, sort_keys=True) + "\n")
    copy_evaluation(args.out, record_dir, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
