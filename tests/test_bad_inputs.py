"""Bad inputs of every command, as a table: each row must end with one `error:` line naming the
problem and exit code 2, leave no file behind and leave its input files unchanged (sha256).

vcar-prepare's own table is tests/test_prepare.py::test_bad_input_one_line_error_no_partial_output
and vcar-enhance's is tests/test_enhance.py; the rows here cover the others. The rows run two at a
time (each is a fresh process that imports TensorFlow).
"""

import collections
import concurrent.futures as cf
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_without_tf
from tests.test_enhance import make_video

LEGACY_RUN = os.path.join(REPO, "tests", "legacy", "run_arcnn")


def _tree_digest(root):
    """{relative path: sha256} of every file under root."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _make_inputs(root):
    """The inputs the rows read: runs with broken configs or checkpoints, a file where a folder is expected."""
    runs = {}
    for name, change in {
        "good": None,
        "bad_json": lambda p: open(p, "w").write("{not json"),
        "empty_json": lambda p: open(p, "w").write(""),
        "unknown_key": lambda p: json.dump({**json.load(open(p)), "colour": "blue"}, open(p + ".new", "w")),
        "bad_value": lambda p: json.dump({**json.load(open(p)), "steps": -3}, open(p + ".new", "w")),
    }.items():
        run = os.path.join(root, "runs", name)
        shutil.copytree(LEGACY_RUN, run)
        config = os.path.join(run, "config.json")
        if change is not None:
            change(config)
        if os.path.exists(config + ".new"):
            os.replace(config + ".new", config)
        runs[name] = run
    truncated = os.path.join(root, "runs", "truncated")
    shutil.copytree(LEGACY_RUN, truncated)
    data = [os.path.join(truncated, "checkpoints", n) for n in os.listdir(os.path.join(truncated, "checkpoints"))
            if ".data-" in n][0]
    with open(data, "r+b") as f:
        f.truncate(1000)
    runs["truncated"] = truncated
    blocker = os.path.join(root, "a_file")
    with open(blocker, "w") as f:
        f.write("not a folder")
    not_pt = os.path.join(root, "weights.pt")
    with open(not_pt, "w") as f:
        f.write("this is not a checkpoint")
    return runs, blocker, not_pt


def _rows(runs, blocker, not_pt, out):
    """(id, argv after the python executable, message fragment)."""
    train = ["train_main.py", f"--model_dir={out}/train"]
    evaluate = ["-m", "vcar_tf.cli.evaluate"]
    export = ["-m", "vcar_tf.cli.export", "--out", f"{out}/export"]
    return [
        ("train-steps-0", [*train, "--steps=0"], "--steps must be at least 1"),
        ("train-steps-negative", [*train, "--steps=-5"], "--steps must be at least 1"),
        ("train-steps-huge", [*train, "--steps=99999999999999999999"], "--steps must be at most 2147483647"),
        ("train-batch-0", [*train, "--batch=0"], "--batch must be at least 1"),
        ("train-patch-0", [*train, "--patch=0"], "--patch must be at least 1"),
        ("train-checkpoint-every-0", [*train, "--checkpoint_every=0"], "--checkpoint_every must be at least 1"),
        ("train-lr-nan", [*train, "--lr=nan"], "--lr must be a positive number"),
        ("train-lr-milestones", [*train, "--lr_milestones=x"], "--lr_milestones takes step numbers"),
        ("train-radius-negative", [*train, "--radius=-1"], "--radius must be 0 or more"),
        ("train-centre-noise", [*train, "--centre_noise=1.5"], "--centre_noise must be in [0, 1)"),
        ("train-centre-noise-recurrent", [*train, "--model=rfda", "--centre_noise=0.05"],
         "centre_noise goes with window models"),
        ("train-qp", [*train, "--qp=60"], "--qp must be in 0..51"),
        ("train-flag-type", [*train, "--steps=abc"], "flag --steps=abc"),
        ("train-unknown-model", [*train, "--model=nope"], "unknown model 'nope'"),
        ("train-missing-data", [*train, f"--data={out}/missing"], "dataset not found"),
        ("train-unwritable-dir", ["train_main.py", f"--model_dir={blocker}/run"], "cannot create output folder"),
        ("evaluate-not-a-run", [*evaluate, "--model_dir", out], "not a training run"),
        ("evaluate-bad-json", [*evaluate, "--model_dir", runs["bad_json"]], "not valid JSON"),
        ("evaluate-empty-json", [*evaluate, "--model_dir", runs["empty_json"]], "not valid JSON"),
        ("evaluate-unknown-key", [*evaluate, "--model_dir", runs["unknown_key"]], "unknown setting(s) colour"),
        ("evaluate-bad-value", [*evaluate, "--model_dir", runs["bad_value"]], "--steps must be at least 0"),
        ("evaluate-truncated-checkpoint", [*evaluate, "--model_dir", runs["truncated"]], "cannot load"),
        ("evaluate-qp", [*evaluate, "--model_dir", runs["good"], "--qp", "60"], "--qp must be in 0..51"),
        ("evaluate-unwritable-out", [*evaluate, "--model_dir", runs["good"], "--out", f"{blocker}/eval"],
         "cannot create output folder"),
        ("evaluate-unknown-preset", [*evaluate, "--preset", "nope", "--out", f"{out}/e"], "unknown preset"),
        ("evaluate-two-sources", [*evaluate, "--model_dir", runs["good"], "--preset", "x"], "exactly one of"),
        ("export-version-0", [*export, "--model_dir", runs["good"], "--version", "0"], "--version must be 1"),
        ("export-version-negative", [*export, "--model_dir", runs["good"], "--version", "-1"], "--version must be 1"),
        ("export-name-escapes", [*export, "--model_dir", runs["good"], "--name", "../../x"], "plain folder name"),
        ("export-truncated-checkpoint", [*export, "--model_dir", runs["truncated"]], "cannot load"),
        ("export-unknown-format", [*export, "--model_dir", runs["good"], "--format", "pickle"], "invalid choice"),
        ("export-unwritable-out", ["-m", "vcar_tf.cli.export", "--model_dir", runs["good"], "--out", f"{blocker}/x"],
         "cannot create output folder"),
        ("report-qp", ["-m", "vcar_tf.cli.report", "--data", f"{out}/missing", "--qp", "60", "--out", f"{out}/r"],
         "QP must be in 0..51"),
        ("report-missing-data", ["-m", "vcar_tf.cli.report", "--data", f"{out}/missing", "--out", f"{out}/r"],
         "dataset not found"),
        ("report-qp-and-crf", ["-m", "vcar_tf.cli.report", "--qp", "37", "--crf", "30", "--out", f"{out}/r"],
         "--qp and --crf exclude each other"),
        ("report-codec-with-data", ["-m", "vcar_tf.cli.report", "--data", f"{out}/missing", "--codec", "x264", "--out",
                                    f"{out}/r"], "with --data, use --codec_folder"),
        ("compare-missing-run", ["-m", "vcar_tf.cli.compare", f"{out}/missing", "--out", f"{out}/c.md"], "no report.csv"),
        ("import-not-a-checkpoint", ["-m", "vcar_tf.cli.import_weights", "stdf-pytorch", not_pt, "--out",
                                     f"{out}/imported"], "weights.pt"),
        ("import-unknown-source", ["-m", "vcar_tf.cli.import_weights", "nope", not_pt, "--out", f"{out}/i"],
         "invalid choice"),
        ("models-unknown-flag", ["-m", "vcar_tf.models", "--bogus"], "unrecognized arguments"),
    ]


def _run(argv):
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bad_inputs"))
    inputs = os.path.join(root, "inputs")
    out = os.path.join(root, "out")
    os.makedirs(inputs)
    os.makedirs(out)
    runs, blocker, not_pt = _make_inputs(inputs)
    before = _tree_digest(inputs)
    rows = _rows(runs, blocker, not_pt, out)
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip([r[0] for r in rows], pool.map(_run, [r[1] for r in rows])))
    return {"rows": {r[0]: r for r in rows}, "results": results, "before": before,
            "after": _tree_digest(inputs), "out": out}


PLACEHOLDER_ROWS = _rows(collections.defaultdict(str), "", "", "")  # for the ids only
ROW_IDS = [r[0] for r in PLACEHOLDER_ROWS]


def test_table_has_a_row_per_command():
    commands = {row[1][1] if row[1][0] == "-m" else row[1][0] for row in PLACEHOLDER_ROWS}
    assert len(ROW_IDS) >= 30 and commands >= {"train_main.py", "vcar_tf.cli.evaluate", "vcar_tf.cli.export",
                                                 "vcar_tf.cli.report", "vcar_tf.cli.compare",
                                                 "vcar_tf.cli.import_weights", "vcar_tf.models"}


@pytest.mark.parametrize("row_id", ROW_IDS)
def test_bad_input_is_one_error_line_exit_2_no_output(table, row_id):
    _, argv, fragment = table["rows"][row_id]
    r = table["results"][row_id]
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert r.returncode == 2, (argv, r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert lines and lines[-1].startswith("error: ") and fragment in lines[-1], (argv, lines[-3:])
    assert sum(line.startswith("error: ") for line in lines) == 1, lines


def test_bad_inputs_leave_no_output_and_inputs_unchanged(table):
    assert table["after"] == table["before"]
    left = [os.path.relpath(os.path.join(d, f), table["out"]) for d, _, files in os.walk(table["out"]) for f in files]
    assert left == []


def test_argument_and_path_errors_come_before_tensorflow_loads(tmp_path):
    """A mistyped flag, a missing or unreadable file or an unknown preset is one `error:` line, said
    before TensorFlow loads (which takes seconds and prints start-up lines of its own on stderr)."""
    video = tmp_path / "in.mp4"
    video.write_bytes(b"not decoded before the output check")
    exists = tmp_path / "exists.mp4"
    exists.write_bytes(b"")
    clip = tmp_path / "clip.mp4"
    make_video(str(clip), frames=2, audio=False)
    enhance = ["vcar_tf.cli.enhance", "--preset", "dncnn_x265_qp37"]
    export = ["vcar_tf.cli.export", "--preset", "dncnn_x265_qp37", "--out", str(tmp_path / "x")]
    cases = [([*enhance, str(tmp_path / "missing.mp4"), str(tmp_path / "o.mp4")], "no such file"),
             ([*enhance, str(video), str(exists)], "exists; pass --overwrite"),
             ([*enhance, str(video), str(tmp_path / "o.xyz")], "unknown output extension"),
             ([*enhance, str(video), str(tmp_path / "o.mp4"), "--checkpoint", "first"], "invalid choice"),
             ([*enhance, str(video), str(tmp_path / "o.mp4"), "--tile", "0"], "--tile must be at least 8"),
             ([*enhance, str(video), str(tmp_path / "o.mp4"), "--input_qp", "32"], "--input_qp picks a preset"),
             ([*enhance, str(video), str(tmp_path / "o.mp4"), "--tile_overlap", "-1"], "--tile_overlap must be 0"),
             ([*enhance, str(video), str(tmp_path / "o.mp4"), "--max_memory", "4X"], "give a size"),
             ([*enhance, str(video), str(tmp_path / "o.mp4"), "--tile", "64", "--max_memory", "4G"], "not both"),
             (["vcar_tf.cli.enhance", "--preset", "nope", str(clip), str(tmp_path / "o.mp4")], "unknown preset 'nope'"),
             ([*export, "--format", "tflite", "--height", "240"], "give --height and --width together"),
             (["vcar_tf.cli.enhance", str(clip), str(tmp_path / "o.mp4"), "--exported", str(exists), "--precision",
               "bf16"], "--precision bf16 goes with --model_dir or --preset"),
             ([*enhance, str(video), str(tmp_path / "o.mp4"), "--precision", "fp16"], "invalid choice: 'fp16'"),
             (["vcar_tf.cli.enhance", str(clip), str(tmp_path / "o.mp4"), "--saved_model", str(tmp_path)],
              "is not a SavedModel (no saved_model.pb)"),
             (["vcar_tf.cli.evaluate", "--exported", str(tmp_path), "--out", str(tmp_path / "e")],
              "is not a SavedModel (no saved_model.pb)"),
             (["vcar_tf.cli.evaluate", "--preset", "nope", "--data", str(tmp_path), "--out", str(tmp_path / "e")],
              "unknown preset 'nope'"),
             (["vcar_tf.cli.evaluate", "--preset", "dncnn_x265_qp37", "--qp", "60"], "--qp must be in 0..51"),
             (["vcar_tf.cli.evaluate", "--preset", "x", "--data", str(tmp_path / "missing")], "dataset not found"),
             (["vcar_tf.cli.evaluate", "--preset", "dncnn_x265_qp37", "--out", str(exists)], "is not a folder"),
             (["vcar_tf.cli.evaluate", "--preset", "dncnn_x265_qp37"], "need --out"),
             ([*export, "--version", "0"], "--version must be 1"),
             ([*export, "--format", "tflite", "--quantization", "int9"], "invalid choice"),
             ([*export, "--format", "onnx", "--quantization", "fp16"], "--format onnx takes --quantization"),
             (["vcar_tf.cli.export", "--preset", "nope", "--out", str(tmp_path / "x")], "unknown preset 'nope'"),
             (["vcar_tf.cli.import_weights", "nope", str(video), "--out", str(tmp_path / "i")], "invalid choice"),
             (["vcar_tf.cli.import_weights", "stdf-pytorch", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "i")],
              "checkpoint not found"),
             (["vcar_tf.cli.import_weights", "stdf-pytorch", str(video), "--out", str(tmp_path / "i")],
              "not a PyTorch zip checkpoint"),
             (["vcar_tf.cli.compare", "--label", "a"], "give at least one run"),
             (["vcar_tf.cli.compare", str(tmp_path / "missing")], "no report.csv"),
             (["vcar_tf.cli.serve", "--model_base_path", str(tmp_path / "missing")], "is not a folder"),
             (["train_main.py", "--steps=0", f"--model_dir={tmp_path}/t"], "--steps must be at least 1"),
             (["train_main.py", "--lr=nan", f"--model_dir={tmp_path}/t"], "--lr must be a positive number"),
             (["train_main.py", "--init_lr=0.01", f"--model_dir={tmp_path}/t"], "--init_lr needs --init_from"),
             (["train_main.py", "--codec=vp9", f"--model_dir={tmp_path}/t"], "should be one of <x264|x265>"),
             (["train_main.py", f"--init_from={tmp_path}/missing", f"--model_dir={tmp_path}/t"], "is not a training run"),
             (["train_main.py", "--init_from=preset:nope", f"--model_dir={tmp_path}/t"], "unknown preset 'nope'"),
             (["train_main.py", f"--export_dir={exists}", f"--model_dir={tmp_path}/t"],
              "is not a folder"),
             (["vcar_tf.cli.export", "--preset", "dncnn_x265_qp37", "--format", "tflite", "--out", f"{exists}/x"],
              "is not a folder"),
             (["train_main.py", f"--data={tmp_path}/nodata", f"--model_dir={tmp_path}/t"], "dataset not found"),
             (["train_main.py", f"--model_dir={exists}/run"], "is not a folder")]
    for argv, fragment in cases:
        r = run_without_tf(*argv)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, r.stderr[-2000:])
        assert fragment in lines[0], (argv, lines)
    assert not any((tmp_path / name).exists() for name in ("x", "i", "t", "e")) and exists.read_bytes() == b""


def test_flags_take_the_dashed_spelling_too():
    """Flags are spelled with underscores (as train_main.py's); the dashed twin means the same flag,
    and a dashed word that is no flag's twin stays an error."""
    from vcar_tf.errors import ArgumentParser

    p = ArgumentParser(prog="vcar-x")
    p.add_argument("--codec_folder")
    p.add_argument("--hm_ldp_offsets", action="store_true")
    dashed = p.parse_args(["--codec-folder", "x265_LDP", "--hm-ldp-offsets"])
    assert p.parse_args(["--codec_folder", "x265_LDP", "--hm_ldp_offsets"]) == dashed
    assert dashed.codec_folder == "x265_LDP" and dashed.hm_ldp_offsets
    assert p.parse_args(["--codec-folder=a-b"]).codec_folder == "a-b"
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--no-such-flag"])
    assert e.value.code == 2
