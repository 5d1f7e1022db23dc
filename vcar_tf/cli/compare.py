"""Side-by-side ΔPSNR / ΔSSIM per sequence of several evaluated runs (their eval/report.csv).

    vcar-compare RUN [RUN ...] --out docs/results.md [--title T] [--notes FILE]
    vcar-compare NEW_RUN --merge docs/results.md --out docs/results.md
    vcar-compare RUN [RUN ...] --label L ... --group G ... --out docs/results.md --append [--title T]
    vcar-compare NEW_RUN ... --label L ... --group G ... --merge docs/results.md --out docs/results.md --append --title T
    vcar-compare RUN [RUN ...] --fluctuation [--label L ...] [--out F [--append --title T]]

A run is a train_main.py model_dir (or any folder holding a report.csv, or the CSV itself).
--merge keeps the columns of a table this tool wrote before (at its printed precision); a run
with the same label replaces its column. --group (one per run) gives the averages only: one row per
label, one column pair per group (e.g. the compression the runs were evaluated on). --append puts
the table in --out as a `## TITLE` section, replacing the section of that title if there is one;
with --merge it keeps the cells of the averages grid in the merged file's `## TITLE` section, a run
replacing the cell of its label and group (no run: the grid as it was). --fluctuation gives the SD
and PVD of each sequence's per-frame PSNR, compressed and after each run, from the runs' reports.
"""

import os
import sys

from vcar_tf.errors import ArgumentParser, VcarError, cli_main
from vcar_tf.fileutil import check_writable_file, read_text, write_text_atomic
from vcar_tf.reporting import (REPORT_CSV, average_grid, comparison_table, fluctuation_table, merge_reports,
                               read_grid, read_report, read_table, replace_section, report_path)
from vcar_tf.train.folder import RunFolder, run_label


def report_source(run):
    """A run folder's evaluation (its eval/), or the folder or CSV itself."""
    evaluated = RunFolder(run).eval
    return evaluated if os.path.isfile(os.path.join(evaluated, REPORT_CSV)) else run


def run_report(run):
    """(label, rows) of a run's report."""
    return read_report(report_source(run), run_label(run) or os.path.basename(os.path.normpath(run)))


@cli_main
def main(argv=None):
    p = ArgumentParser(prog="vcar-compare", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="*", help="at least one, but with --merge")
    p.add_argument("--out", default=None, help="write Markdown here (default: print only)")
    p.add_argument("--title", default="Results")
    p.add_argument("--notes", default=None, help="Markdown file inserted under the title")
    p.add_argument("--merge", default=None, help="keep the columns of this earlier comparison")
    p.add_argument("--label", action="append", default=None,
                   help="column label of a run, once per run in order (default: 'MODEL (N steps)')")
    p.add_argument("--group", action="append", default=None,
                   help="with one per run: a table of averages, a row per label and columns per group")
    p.add_argument("--append", action="store_true", help="write the table as a ## section of --out")
    p.add_argument("--fluctuation", action="store_true",
                   help="a table of SD and PVD per sequence (compressed, then each run) instead of ΔPSNR/ΔSSIM")
    args = p.parse_args(argv)
    if args.fluctuation and (args.merge or args.group is not None):
        raise VcarError("--fluctuation reads every run's report: it goes without --merge and --group")
    if args.append and (not args.out or not os.path.isfile(args.out)):
        raise VcarError("--append needs an existing --out file")
    if args.append and args.merge and args.runs and args.group is None:
        raise VcarError("--merge with --append merges the averages grid of the section: give --group per run")
    if not args.runs and not args.merge:
        raise VcarError("give at least one run (or --merge a table to keep)")
    if args.label is not None and len(args.label) != len(args.runs):
        raise VcarError(f"{len(args.label)} --label for {len(args.runs)} runs: give one per run")
    if args.group is not None and len(args.group) != len(args.runs):
        raise VcarError(f"{len(args.group)} groups for {len(args.runs)} runs: give one per run")
    if args.out:
        check_writable_file(args.out, "a Markdown file")
    if args.append and args.notes:
        heading = next((i for i, l in enumerate(read_text(args.notes).splitlines(), 1) if l.startswith(("# ", "## "))), None)
        if heading:
            raise VcarError(f"{args.notes}, line {heading}: a # or ## heading would end the --append section; "
                            "use ### or lower")
    inputs = [report_path(report_source(run)) for run in args.runs] + ([args.notes] if args.notes else [])
    if args.out and os.path.exists(args.out):
        for path in inputs:
            if os.path.exists(path) and os.path.samefile(path, args.out):
                raise VcarError(f"--out {args.out} is an input of this comparison ({path}): write it elsewhere")
    reports = [run_report(run) for run in args.runs]
    if args.label:
        reports = [(label, rows) for label, (_, rows) in zip(args.label, reports)]
    groups, first_groups = args.group, ()
    if args.merge and args.append:
        old, old_groups = read_grid(args.merge, args.title)
        groups = groups or []
        fresh = set(zip((label for label, _ in reports), groups))
        kept = [(r, g) for r, g in zip(old, old_groups) if (r[0], g) not in fresh]
        reports, groups = [r for r, _ in kept] + reports, [g for _, g in kept] + groups
        first_groups = old_groups  # the merged grid keeps its columns' order
    elif args.merge:
        reports = merge_reports(read_table(args.merge), reports)
    notes = ""
    if args.notes:
        notes = read_text(args.notes).strip() + "\n\n"
    if args.fluctuation:
        table = fluctuation_table(reports)
    elif groups is not None:
        table = average_grid(reports, groups, first_groups)
    else:
        table = comparison_table(reports)
    text = f"{'##' if args.append else '#'} {args.title}\n\n{notes}{table}"
    print(text)
    if args.append:
        text = replace_section(read_text(args.out), args.title, text)
    if args.out:
        write_text_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
