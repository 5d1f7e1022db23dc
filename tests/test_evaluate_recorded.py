"""scripts/evaluate_recorded.py: an evaluation is recorded, reused while the weights and sequences
are the same, and made again (or left undone with --restore-only) when either changes."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, own_stderr, run_cli
from tests.test_presets import RUN, presets  # noqa: F401  (the fixture: an AR-CNN preset in a private folder, from RUN)
from vcar_tf.cli.compare import main as compare

SCRIPT = os.path.join(REPO, "scripts", "evaluate_recorded.py")


def _evaluate(out, records, data, *extra):
    return run_cli(SCRIPT, "--out", str(out), "--record", "eval", "--records", str(records), "--data", data,
                   "--preset", "arcnn_toy", *extra)


def test_an_evaluation_is_recorded_then_reused_until_its_inputs_change(presets, sample_cache, tmp_path):  # noqa: F811
    _, sample = sample_cache
    data = str(tmp_path / "data")
    shutil.copytree(sample, data)
    out, records = tmp_path / "out", tmp_path / "records"
    r = _evaluate(out, records, data)
    assert r.returncode == 0, r.stderr[-2000:]
    record = json.loads((records / "eval" / "record.json").read_text())
    assert record["command"].startswith("vcar-evaluate --preset arcnn_toy") and record["qp"] == 37
    assert 0.1 < record["peak_rss_gib"] < 64  # TensorFlow alone is hundreds of MB
    assert record["weights_sha256"] == json.loads((presets / "arcnn_toy" / "card.json").read_text())["sha256"]
    assert sorted(record["inputs_sha256"]) == [f"test/{n[:-4]}" for n in sorted(os.listdir(os.path.join(data, "test", "raw")))
                                               if n.endswith(".yuv")]
    report = (out / "report.csv").read_text()
    assert (records / "eval" / "report.csv").read_text() == report and "sd_enh" in report

    shutil.rmtree(out)  # a fresh machine: the record alone brings the evaluation back
    r = _evaluate(out, records, data, "--restore-only")
    assert r.returncode == 0 and "reused" in r.stderr, r.stderr[-2000:]
    assert (out / "report.csv").read_text() == report

    # the precision is part of the key; a record made before it had one is an fp32 evaluation
    assert record["precision"] == "fp32" and record["command"].endswith("--precision fp32 --out " + str(out))
    del record["precision"]
    (records / "eval" / "record.json").write_text(json.dumps(record))
    for precision, reused in (("bf16", False), ("fp32", True)):
        shutil.rmtree(out, ignore_errors=True)
        r = _evaluate(out, records, data, "--precision", precision, "--restore-only")
        assert r.returncode == 0 and ("reused" in r.stderr) == reused == out.exists(), (precision, r.stderr[-2000:])

    results = tmp_path / "results.md"  # a table that shows this evaluation, and a grid section
    assert compare([str(out), "--label", "arcnn_toy", "--out", str(results)]) == 0
    assert compare([str(out), "--label", "arcnn_toy", "--group", "g", "--out", str(results), "--append",
                    "--title", "Grid"]) == 0

    shutil.rmtree(out)  # other compressed frames: the record no longer applies
    comp = next((tmp_path / "data" / "test").glob("*/QP37/*.yuv"))
    comp.write_bytes(comp.read_bytes()[:-1] + bytes([comp.read_bytes()[-1] ^ 1]))
    r = _evaluate(out, records, data, "--restore-only")
    assert r.returncode == 0 and not out.exists() and "reused" not in r.stderr, r.stderr[-2000:]
    # MERGE=1 of preset_results.sh: what the results file shows is not evaluated again
    for shown in (["--kept-in", str(results)], ["--kept-in", str(results), "--title", "Grid", "--group", "g"]):
        r = _evaluate(out, records, data, *shown)
        assert r.returncode == 0 and "shows it already" in r.stderr and not out.exists(), r.stderr[-2000:]
    r = _evaluate(out, records, data, "--kept-in", str(results), "--title", "Grid", "--group", "other", "--restore-only")
    assert r.returncode == 0 and "shows it already" not in r.stderr and not out.exists(), r.stderr[-2000:]


def test_a_runs_evaluation_is_the_evaluation_of_the_preset_made_from_it(presets, sample_cache, tmp_path):  # noqa: F811
    _, sample = sample_cache
    out, records = tmp_path / "out", tmp_path / "records"
    r = run_cli(SCRIPT, "--out", str(out), "--record", "eval", "--records", str(records), "--data", sample,
                "--model_dir", RUN, "--qp", "37")
    assert r.returncode == 0, r.stderr[-2000:]
    made = json.loads((out / "record.json").read_text())
    assert made["command"].startswith(f"vcar-evaluate --model_dir {RUN} ")
    assert made["weights_sha256"] == json.loads((presets / "arcnn_toy" / "card.json").read_text())["sha256"]
    r = _evaluate(out, records, sample, "--restore-only")  # the preset's evaluation: that one, kept
    assert r.returncode == 0 and json.loads((out / "record.json").read_text()) == made, r.stderr[-2000:]
    assert json.loads((records / "eval" / "record.json").read_text()) == made
    # other weights (a --key-file that is not the checkpoint): not that evaluation
    r = run_cli(SCRIPT, "--out", str(out), "--record", "eval", "--records", str(records), "--data", sample,
                "--model_dir", RUN, "--qp", "37", "--key-file", os.path.join(RUN, "config.json"), "--restore-only")
    assert r.returncode == 0 and "evaluated other weights" in r.stderr, r.stderr[-2000:]


def test_bad_arguments_are_one_line_errors(presets, tmp_path):  # noqa: F811
    quiet = {"TF_CPP_MIN_LOG_LEVEL": "3"}
    r = run_cli(SCRIPT, "--out", str(tmp_path / "o"), "--model_dir", str(tmp_path), "--data", str(tmp_path), env=quiet)
    assert r.returncode == 2 and own_stderr(r.stderr) == "error: --model_dir needs --qp or --crf"
    r = run_cli(SCRIPT, "--out", str(tmp_path / "o"), "--preset", "arcnn_toy", "--checkpoint", "best", "--data",
                str(tmp_path), env=quiet)
    assert r.returncode == 2 and own_stderr(r.stderr) == "error: --checkpoint goes with --model_dir"
    r = run_cli(SCRIPT, "--out", str(tmp_path / "o"), "--preset", "arcnn_toy", "--data", str(tmp_path), env=quiet)
    assert r.returncode == 2 and own_stderr(r.stderr).startswith("error: --out") and "not under runs/" in r.stderr


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_preset_precision_writes_the_measured_costs_into_the_card(presets, sample_cache, tmp_path, precision):  # noqa: F811
    _, sample = sample_cache
    r = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "preset_precision.py"), "arcnn_toy", "--val-data",
                        sample, "--test-data", sample, "--records", str(tmp_path / "records"),
                        *(["--precision", precision] if precision != "bf16" else [])],  # bf16 is the default
                       capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ, VCAR_TF_PRESETS=str(presets)),
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    entry = json.loads((presets / "arcnn_toy" / "card.json").read_text())[precision]
    outs = {"val": ("preset-eval-val", f"preset-eval-val-{precision}"), "test": ("preset-eval", f"preset-eval-{precision}")}
    for split, folders in outs.items():
        fp32, low = (float(next(row for row in csv.DictReader(open(tmp_path / "runs" / out / "arcnn_toy" / "report.csv"))
                                if row["sequence"] == "average")["delta_psnr"]) for out in folders)
        assert entry[split]["delta_psnr_fp32"] == fp32 and entry[split][f"delta_psnr_{precision}"] == low
        assert entry[f"{split}_cost_db"] == round(fp32 - low, 4) and abs(entry[f"{split}_cost_db"]) < 0.05
        assert entry[split]["max_sequence_cost_db"] >= entry[f"{split}_cost_db"] - 1e-4
    record = json.loads((tmp_path / "records" / f"preset-eval-val-{precision}" / "arcnn_toy" / "record.json").read_text())
    assert record["precision"] == precision and f"--precision {precision}" in record["command"]
    assert f"arcnn_toy: {precision} costs {entry['val_cost_db']:+.4f} dB on val" in r.stdout


def test_the_inputs_of_a_crf_evaluation_are_keyed_without_a_qp(tmp_path):
    """--model_dir RUN --crf N (no --qp): the record's key reads the CRF<N> folders (it asked
    CodecSettings for QP None and failed after loading the run)."""
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from evaluate_recorded import inputs_sha256
    from tests.conftest import make_planes
    from vcar_tf.video import write_yuv

    for folder in ("raw", "x265_RA/CRF30"):
        write_yuv(str(tmp_path / "test" / folder / "a_64x48_2.yuv"), [make_planes(64, 48, t) for t in range(2)])
    assert list(inputs_sha256(str(tmp_path), None, 30, None)) == ["test/a_64x48_2"]
