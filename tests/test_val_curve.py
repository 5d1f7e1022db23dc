"""scripts/val_curve.py: the val curve of a run, in the order its stints wrote it, and never a
curve of validations made on test."""

import glob
import os
import shutil

import tensorflow as tf

from tests.conftest import REPO, run_cli

SCRIPT = os.path.join(REPO, "scripts", "val_curve.py")


def _log(run, created, step, value, tmp):
    """An event file named as TensorFlow names one made at `created`, holding val/delta_psnr."""
    folder = tmp / f"w{created}"
    with tf.summary.create_file_writer(str(folder)).as_default():
        tf.summary.scalar("val/delta_psnr", value, step=step)
    (path,) = glob.glob(str(folder / "events.out.tfevents.*"))
    os.makedirs(run / "logs", exist_ok=True)
    target = run / "logs" / f"events.out.tfevents.{created}.host.example.1.0.v2"
    shutil.move(path, target)
    return target


def test_later_stints_win_whatever_the_files_mtimes_and_a_run_without_val_is_refused(tmp_path):
    run = tmp_path / "run"
    first = _log(run, 1000, 100, 0.1, tmp_path)
    second = _log(run, 2000, 100, 0.2, tmp_path)  # the resumed stint validated step 100 again
    os.utime(first, (3000, 3000))  # a checkout or copy: the older file looks newer
    os.utime(second, (1000, 1000))
    r = run_cli(SCRIPT, str(run))
    assert r.returncode == 2 and "kept no best/" in r.stderr  # no best/: its validations were on test
    (run / "best").mkdir()
    (run / "best" / "best.json").write_text("{}")
    r = run_cli(SCRIPT, str(run))
    assert r.returncode == 0 and r.stdout.splitlines()[1].startswith("100  +0.200"), r.stdout
