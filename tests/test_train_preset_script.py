"""scripts/train_preset.sh: the QP37 recipe, the QP 22-42 fine-tunes of a QP37 preset, RFDA's stage 2
from a finished stage 1, the longer-run experiment (`continue`), and a bad QP or an unfinished
stage 1 refused before anything runs. vcar-prepare and python are stubs on PATH that record their
arguments, so no data is prepared and nothing trains."""

import os
import shutil
import stat
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUB = "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> \"$CALLS\"\n"


@pytest.fixture
def workdir(tmp_path):
    os.makedirs(tmp_path / "scripts")
    shutil.copy(os.path.join(REPO, "scripts", "train_preset.sh"), tmp_path / "scripts")
    stubs = tmp_path / "stubs"
    os.makedirs(stubs)
    for name in ("vcar-prepare", "python"):
        (stubs / name).write_text(STUB)
        (stubs / name).chmod(stat.S_IRWXU)
    return tmp_path


def run(workdir, *args):
    env = dict(os.environ, PATH=f"{workdir / 'stubs'}:{os.environ['PATH']}", CALLS=str(workdir / "calls"))
    r = subprocess.run(["bash", "scripts/train_preset.sh", *args], cwd=workdir, env=env, capture_output=True,
                       text=True)
    calls = (workdir / "calls").read_text().splitlines() if (workdir / "calls").exists() else []
    return r, calls


def test_qp37_is_the_shared_recipe(workdir):
    r, calls = run(workdir, "dncnn")
    assert r.returncode == 0, r.stderr
    prepare = [c for c in calls if c.startswith("vcar-prepare")]
    assert [c.split("--split ")[1].split()[0] for c in prepare] == ["train", "val", "test"]
    assert all("--qp 37 --deblock --sao" in c for c in prepare)
    train, = [c.split() for c in calls if c.startswith("python")]
    assert {"train_main.py", "--model=dncnn", "--qp=37", "--steps=5600", "--lr=5e-4", "--eval_every=1400",
            "--model_dir=runs/presets/dncnn_x265_qp37"} <= set(train)
    assert not any(a.startswith("--init_from") for a in train)


def test_other_qp_fine_tunes_the_qp37_preset(workdir):
    r, calls = run(workdir, "stdf_r3", "32")
    assert r.returncode == 0, r.stderr
    assert all("--qp 32 --deblock --sao" in c for c in calls if c.startswith("vcar-prepare"))
    train, = [c.split() for c in calls if c.startswith("python")]
    assert {"--qp=32", "--steps=2800", "--lr=1e-4", "--eval_every=700", "--init_from=preset:stdf_r3_x265_qp37",
            "--model_dir=runs/presets/stdf_r3_x265_qp32"} <= set(train)


def test_a_committed_unfinished_run_is_copied_to_runs(workdir):
    os.makedirs(workdir / "training" / "presets" / "stdf_r3_x265_qp42")
    (workdir / "training" / "presets" / "stdf_r3_x265_qp42" / "config.json").write_text("{}")
    r, _ = run(workdir, "stdf_r3", "42")
    assert r.returncode == 0, r.stderr
    assert (workdir / "runs" / "presets" / "stdf_r3_x265_qp42" / "config.json").read_text() == "{}"


def test_a_failed_copy_of_a_committed_run_stops_the_script_and_leaves_no_run(workdir):
    """A copy that fails halfway (disk full, a kill) must not leave a runs/ folder that the next
    run would resume from, nor go on to train."""
    os.makedirs(workdir / "training" / "presets" / "stdf_r3_x265_qp42")
    (workdir / "training" / "presets" / "stdf_r3_x265_qp42" / "config.json").write_text("{}")
    (workdir / "stubs" / "cp").write_text("#!/bin/sh\nmkdir -p \"$3\"\nexit 1\n")  # makes the folder, then fails
    (workdir / "stubs" / "cp").chmod(stat.S_IRWXU)
    r, calls = run(workdir, "stdf_r3", "42")
    assert r.returncode != 0 and not [c for c in calls if c.startswith("python")]
    assert not (workdir / "runs" / "presets" / "stdf_r3_x265_qp42").exists()
    (workdir / "stubs" / "cp").unlink()  # the next run copies it whole
    r, calls = run(workdir, "stdf_r3", "42")
    assert r.returncode == 0 and (workdir / "runs" / "presets" / "stdf_r3_x265_qp42" / "config.json").exists()
    assert os.listdir(workdir / "runs" / "presets") == ["stdf_r3_x265_qp42"]


@pytest.mark.parametrize("args", [(), ("stdf_r3", "37", "longer"), ("stdf_r3", "37", "continue", "x")])
def test_no_model_or_a_bad_third_word_is_one_error_line(workdir, args):
    r, calls = run(workdir, *args)
    assert r.returncode == 2 and calls == []
    assert r.stderr == "error: usage: bash scripts/train_preset.sh MODEL [QP [continue]]\n"


def test_continue_trains_on_from_the_qp37_preset_into_its_own_folder(workdir):
    os.makedirs(workdir / "training" / "presets" / "stdf_r3_x265_qp37")  # a committed run is not touched
    r, calls = run(workdir, "stdf_r3", "37", "continue")
    assert r.returncode == 0, r.stderr
    assert all("--qp 37 --deblock --sao" in c for c in calls if c.startswith("vcar-prepare"))
    train, = [c.split() for c in calls if c.startswith("python")]
    assert {"--model=stdf_r3", "--qp=37", "--batch=16", "--patch=64", "--steps=7000", "--lr=2e-4",
            "--warmup_steps=100", "--eval_every=1400", "--seed=1", "--init_from=preset:stdf_r3_x265_qp37",
            "--model_dir=runs/longer/stdf_r3_x265_qp37"} <= set(train)
    assert not (workdir / "runs" / "presets").exists()


@pytest.mark.parametrize("args", [("rfda", "37", "continue"), ("stdf_r3", "32", "continue")])
def test_continue_of_rfda_or_another_qp_runs_nothing(workdir, args):
    r, calls = run(workdir, *args)
    assert r.returncode == 2 and calls == []
    assert r.stderr.startswith("error: continue goes with") and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("qp", ["30", "x"])
def test_a_bad_qp_is_one_error_line_and_nothing_runs(workdir, qp):
    r, calls = run(workdir, "stdf_r3", qp)
    assert r.returncode == 2
    assert r.stderr.startswith("error: QP must be") and len(r.stderr.strip().splitlines()) == 1
    assert calls == [] and not (workdir / "runs").exists()


def stage1(workdir, step, where="runs"):
    checkpoints = workdir / where / "presets" / "stdf_dsta_x265_qp37" / "checkpoints"
    os.makedirs(checkpoints)
    (checkpoints / "checkpoint").write_text(f'model_checkpoint_path: "ckpt-{step}"\n')


@pytest.mark.parametrize("where", ["runs", "training"])
def test_rfda_stage_2_starts_from_the_finished_stage_1(workdir, where):
    stage1(workdir, 5600, where)
    r, calls = run(workdir, "rfda")
    assert r.returncode == 0, r.stderr
    train, = [c.split() for c in calls if c.startswith("python")]
    assert {"--model=rfda", "--qp=37", "--batch=2", "--clip_length=15", "--steps=1400", "--eval_every=350",
            "--init_from=runs/presets/stdf_dsta_x265_qp37", "--init_lr=1e-5",
            "--model_dir=runs/presets/rfda_x265_qp37"} <= set(train)


@pytest.mark.parametrize("args", [("rfda",), ("rfda", "32")])
def test_rfda_without_a_finished_stage_1_or_at_another_qp_runs_nothing(workdir, args):
    stage1(workdir, 5400)
    r, calls = run(workdir, *args)
    assert r.returncode == 2
    assert r.stderr.startswith("error: RFDA") and len(r.stderr.strip().splitlines()) == 1
    assert calls == [] and not (workdir / "runs" / "presets" / "rfda_x265_qp37").exists()
