"""vcar_tf.compare: side-by-side tables of evaluated runs, and merging new runs into an old table."""

import json

import numpy as np
import pytest

from vcar_tf.cli.compare import main
from vcar_tf.reporting import read_table
from vcar_tf.errors import VcarError
from vcar_tf.metrics.sequence import sequence_row
from vcar_tf.reporting import average_rows, to_csv


def _run(tmp_path, model, shift, split="test", ramp=0.0):
    """A run folder with config.json and eval/report.csv whose ΔPSNR is `shift` dB everywhere, plus
    `ramp` dB times the frame's index."""
    run = tmp_path / model
    (run / "eval").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": model, "steps": 10}))
    rng = np.random.default_rng(0)  # the same compressed baseline for every run
    rows = []
    for name, (w, h) in {"a": (64, 48), "b": (96, 64)}.items():
        psnr_c, ssim_c = 30 + rng.random(5), 0.8 + 0.1 * rng.random(5)
        rows.append(sequence_row(split, name, w, h, psnr_c, ssim_c, psnr_c + shift + ramp * np.arange(5),
                                 ssim_c + shift / 100))
    (run / "eval" / "report.csv").write_text(to_csv(rows + average_rows(rows)))
    return str(run)


def test_merge_keeps_old_columns_adds_new_and_replaces_same_label(tmp_path):
    first = tmp_path / "first.md"
    assert main([_run(tmp_path, "arcnn", 0.25), _run(tmp_path / "x", "dncnn", 0.5), "--out", str(first)]) == 0
    merged = tmp_path / "merged.md"
    # dncnn rerun with another result replaces its column; stdf_r3 is new
    assert main([_run(tmp_path / "y", "dncnn", -0.125), _run(tmp_path, "stdf_r3", 1.0),
                 "--merge", str(first), "--out", str(merged)]) == 0
    labels = [label for label, _ in read_table(merged)]
    assert labels == ["arcnn (10 steps)", "dncnn (10 steps)", "stdf_r3 (10 steps)"]
    deltas = {label: [float(r["delta_psnr"]) for r in rows] for label, rows in read_table(merged)}
    assert deltas["arcnn (10 steps)"] == pytest.approx([0.25] * 3)
    assert deltas["dncnn (10 steps)"] == pytest.approx([-0.125] * 3)
    assert deltas["stdf_r3 (10 steps)"] == pytest.approx([1.0] * 3)
    assert "| test | **average** |" in merged.read_text()


def test_merge_rejects_a_table_it_did_not_write(tmp_path):
    other = tmp_path / "other.md"
    other.write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    with pytest.raises(VcarError, match="not a table written by"):
        read_table(other)


def test_labels_name_the_columns_one_per_run(tmp_path, capsys):
    run = _run(tmp_path, "arcnn", 0.25)
    assert main([run, "--label", "AR-CNN, imported"]) == 0
    assert "AR-CNN, imported ΔPSNR (dB)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main([run, run, "--label", "only one"])
    assert e.value.code == 2 and "1 --label for 2 runs" in capsys.readouterr().err


def test_groups_give_an_averages_grid_appended_as_a_section_that_a_rerun_replaces(tmp_path, capsys):
    out = tmp_path / "results.md"
    runs = [_run(tmp_path / g, m, d) for g, m, d in
            [("in", "arcnn", 0.25), ("in", "stdf_r3", 0.5), ("x264", "arcnn", -0.125), ("x264", "stdf_r3", 0.75)]]
    assert main([*runs[:2], "--out", str(out), "--title", "Results"]) == 0
    main_table = out.read_text()
    args = [*runs, "--label", "A", "--label", "S", "--label", "A", "--label", "S", "--group", "in-domain",
            "--group", "in-domain", "--group", "x264", "--group", "x264", "--out", str(out), "--append",
            "--title", "Robustness"]
    assert main(args) == 0
    text = out.read_text()
    assert text.startswith(main_table + "\n## Robustness\n\n")
    assert [label for label, _ in read_table(out)] == ["arcnn (10 steps)", "stdf_r3 (10 steps)"]  # the first table
    head, _, base, a, s = [l for l in text.split("## Robustness")[1].splitlines() if l.startswith("|")]
    assert "in-domain ΔPSNR (dB) | in-domain ΔSSIM (×10⁻²) | x264 ΔPSNR (dB)" in head
    assert a == "| test | A | +0.250 | +0.250 | -0.125 | -0.125 |"
    assert s == "| test | S | +0.500 | +0.500 | +0.750 | +0.750 |"
    assert base.startswith("| test | *compressed input: PSNR (dB), SSIM* | 30.")
    assert main(args) == 0 and out.read_text() == text  # the section is replaced, not added twice
    with pytest.raises(SystemExit) as e:
        main([*runs[:2], "--group", "x", "--out", str(out)])
    assert e.value.code == 2 and "1 groups for 2 runs" in capsys.readouterr().err


def test_a_grid_merge_keeps_the_cells_it_has_and_adds_or_replaces_the_new_runs(tmp_path, capsys):
    out = tmp_path / "results.md"
    runs = [_run(tmp_path / g, m, d) for g, m, d in
            [("in", "arcnn", 0.25), ("in", "stdf_r3", 0.5), ("x264", "arcnn", -0.125), ("x264", "stdf_r3", 0.75)]]
    assert main([*runs[:2], "--out", str(out), "--title", "Results"]) == 0
    grid = ["--out", str(out), "--append", "--title", "Robustness"]
    assert main([*runs, "--label", "A", "--label", "S", "--label", "A", "--label", "S", "--group", "in-domain",
                 "--group", "in-domain", "--group", "x264", "--group", "x264", *grid]) == 0
    before = out.read_text()
    assert main(["--merge", str(out), *grid]) == 0 and out.read_text() == before  # no run: the grid as it was
    new = [_run(tmp_path / "d", "dncnn", 0.375), _run(tmp_path / "s2", "stdf_r3", -0.5)]
    assert main([*new, "--label", "D", "--label", "S", "--group", "x264", "--group", "x264", "--merge", str(out), *grid]) == 0
    rows = [l for l in out.read_text().split("## Robustness")[1].splitlines() if l.startswith("| test |")]
    assert rows[1:] == ["| test | A | +0.250 | +0.250 | -0.125 | -0.125 |",
                        "| test | S | +0.500 | +0.500 | -0.500 | -0.500 |",
                        "| test | D |  |  | +0.375 | +0.375 |"]
    assert out.read_text().split("## Robustness")[0] == before.split("## Robustness")[0]
    head = "in-domain ΔPSNR (dB) | in-domain ΔSSIM (×10⁻²) | x264 ΔPSNR (dB)"
    # every cell of the first column fresh, every other one kept: the columns keep their order
    fresh = [_run(tmp_path / f"{m}2", m, 0.125) for m in ("arcnn", "stdf_r3", "dncnn")]
    labels = ["--label", "A", "--label", "S", "--label", "D"]
    assert main([*fresh, *labels, *["--group", "in-domain"] * 3, "--merge", str(out), *grid]) == 0
    rows = [l for l in out.read_text().split("## Robustness")[1].splitlines() if l.startswith("| ")]
    assert head in rows[0] and rows[-1] == "| test | D | +0.125 | +0.125 | +0.375 | +0.375 |"
    with pytest.raises(SystemExit) as e:
        main([*new, "--merge", str(out), *grid])
    assert e.value.code == 2 and "give --group per run" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--out", str(out)])
    assert e.value.code == 2 and "give at least one run" in capsys.readouterr().err


def test_fluctuation_gives_the_sd_and_pvd_of_the_input_then_of_each_run(tmp_path, capsys):
    runs = [_run(tmp_path, "arcnn", 0.25), _run(tmp_path, "stdf_r3", 0.5, ramp=0.75)]
    out = tmp_path / "results.md"
    out.write_text("# Results\n\nkept\n")
    assert main([*runs, "--label", "A", "--label", "S", "--fluctuation", "--out", str(out), "--append",
                 "--title", "Fluctuation"]) == 0
    text = out.read_text()
    assert text.startswith("# Results\n\nkept\n\n## Fluctuation\n")
    head, _, *body = [l for l in text.splitlines() if l.startswith("|")]
    assert head == "| split | sequence | SD QP (dB) | PVD QP (dB) | A SD (dB) | A PVD (dB) | S SD (dB) | S PVD (dB) |"
    reports = [[r.split(",") for r in (tmp_path / m / "eval" / "report.csv").read_text().splitlines()]
               for m in ("arcnn", "stdf_r3")]
    columns = reports[0][0]
    assert len(body) == 3 and body[-1].startswith("| test | **average** |")
    for i, line in enumerate(body):
        a, s = ({k: float(v) for k, v in zip(columns, report[i + 1]) if k in ("sd", "pvd", "sd_enh", "pvd_enh")}
                for report in reports)
        cells = [float(c) for c in line.strip("|").split("|")[2:]]
        assert cells == pytest.approx([a["sd"], a["pvd"], a["sd_enh"], a["pvd_enh"], s["sd_enh"], s["pvd_enh"]], abs=6e-4)
        assert s["sd_enh"] > a["sd_enh"] + 0.5  # the ramp's output fluctuates more: its own columns, not the input's
    for argv, message in (([*runs, "--fluctuation", "--merge", str(out)], "goes without --merge and --group"),
                          ([*runs, "--fluctuation", "--group", "x", "--group", "x"], "goes without --merge and --group")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err
    report = tmp_path / "stdf_r3" / "eval" / "report.csv"
    report.write_text(report.read_text().replace(",sd_enh,", ",sd_x,"))
    with pytest.raises(SystemExit) as e:
        main([*runs, "--fluctuation"])
    assert e.value.code == 2 and "its report has no sd_enh column" in capsys.readouterr().err


def test_an_input_is_never_the_output_and_bytes_that_are_not_text_are_one_error_line(tmp_path, capsys):
    run = _run(tmp_path, "arcnn", 0.25)
    report = tmp_path / "arcnn" / "eval" / "report.csv"
    before = report.read_bytes()
    binary = tmp_path / "clip.bin"
    binary.write_bytes(b"\x00\x00\x00\x18ftypmp42\xdb\xff" * 20)
    notes = tmp_path / "notes.md"
    notes.write_text("notes\n")
    for argv, message in (([run, "--out", str(report)], "is an input of this comparison"),
                          ([run, "--notes", str(notes), "--out", str(notes)], "is an input of this comparison"),
                          ([str(binary)], "clip.bin: not a UTF-8 text file (byte 12 is 0xdb)"),
                          ([run, "--merge", str(binary)], "not a UTF-8 text file"),
                          ([run, "--notes", str(binary)], "not a UTF-8 text file")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], (argv, err)
    assert report.read_bytes() == before and notes.read_text() == "notes\n"


def test_notes_with_tables_or_headings_and_odd_run_folders(tmp_path, capsys):
    """A table in --notes is not the comparison to merge; a ## heading in --notes would end an
    --append section (refused); --out a folder is said before any work; a config.json without a
    model or steps labels the run by its folder."""
    run_a, run_b = _run(tmp_path, "arcnn", 0.25), _run(tmp_path / "x", "dncnn", 0.5)
    notes = tmp_path / "notes.md"
    notes.write_text("| setting | value |\n|---|---|\n| qp | 37 |\n")
    first = tmp_path / "first.md"
    assert main([run_a, "--notes", str(notes), "--out", str(first)]) == 0
    assert main([run_b, "--merge", str(first), "--out", str(first)]) == 0
    assert [label for label, _ in read_table(first)] == ["arcnn (10 steps)", "dncnn (10 steps)"]
    capsys.readouterr()
    headed = tmp_path / "headed.md"
    headed.write_text("context\n\n## Setup\nqp 37\n")
    before = first.read_text()
    for argv, message in (([run_a, "--notes", str(headed), "--append", "--out", str(first)],
                           "headed.md, line 3: a # or ## heading would end the --append section"),
                          ([run_a, "--out", str(tmp_path)], "is a folder, not a Markdown file")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        captured = capsys.readouterr()
        assert e.value.code == 2 and message in captured.err and not captured.out, captured
    assert first.read_text() == before
    (tmp_path / "arcnn" / "config.json").write_text(json.dumps({"model": "arcnn"}))
    assert main([run_a]) == 0 and "arcnn ΔPSNR (dB)" in capsys.readouterr().out


def test_a_report_or_table_with_a_cell_that_is_not_a_number_is_one_error_line(tmp_path, capsys):
    run = _run(tmp_path, "arcnn", 0.25)
    report = tmp_path / "arcnn" / "eval" / "report.csv"
    broken = tmp_path / "broken" / "eval"
    broken.mkdir(parents=True)
    lines = report.read_text().splitlines()
    head = lines[0].split(",")
    cells = lines[1].split(",")
    cells[head.index("delta_psnr")] = "abc"
    (broken / "report.csv").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    (tmp_path / "empty.csv").write_text(lines[0] + "\n")
    table = tmp_path / "table.md"
    assert main([run, "--out", str(table)]) == 0
    text = table.read_text()
    bad_cell = tmp_path / "bad_cell.md"
    bad_cell.write_text(text.replace("+0.250", "abc", 1))
    short_row = tmp_path / "short_row.md"
    short_row.write_text(text.replace(" | +0.250 |", " |", 1))
    for argv, message in (([run, str(broken.parent)], "delta_psnr of test/a is not a number ('abc')"),
                          ([str(tmp_path / "empty.csv")], "an evaluation report with no rows"),
                          ([run, "--merge", str(bad_cell)], "is not a number ('abc')"),
                          ([run, "--merge", str(short_row)], "a row of 6 cells in a table of 7 columns")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and message in err[0], (argv, err)


def test_runs_on_other_compressed_inputs_are_refused_and_other_sequences_noted(tmp_path, capsys):
    """Side by side, ΔPSNR means something only on the same compressed frames: a run whose inputs
    differ (another codec folder, say) is an error; one averaging other sequences gets a note."""
    import csv

    same, other = _run(tmp_path, "arcnn", 0.25), _run(tmp_path / "x", "dncnn", 0.5)
    report = tmp_path / "x" / "dncnn" / "eval" / "report.csv"
    rows = list(csv.DictReader(report.open()))
    rows[0]["psnr"] = str(float(rows[0]["psnr"]) + 0.5)  # sequence a, compressed another way
    with report.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(SystemExit) as e:
        main([same, other])
    assert e.value.code == 2 and "were evaluated on different compressed inputs: test/a" in capsys.readouterr().err

    fewer = _run(tmp_path / "y", "stdf_r3", 1.0)
    report = tmp_path / "y" / "stdf_r3" / "eval" / "report.csv"
    rows = [r for r in csv.DictReader(report.open()) if r["sequence"] != "b"]
    with report.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main([same, fewer]) == 0
    assert "note: the runs average different test sequences" in capsys.readouterr().err
