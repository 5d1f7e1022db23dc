"""What a hostile but fair user found: run-folder locks, NaN guard, signal exit codes, alias resume,
re-cut sources, hidden leftovers, orphaned workers, and an op cache that others could write."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO, run_cli
from tests.test_trainer import _config, tiny_dataset  # noqa: F401  (the fixture)
from vcar_tf.errors import VcarError


def test_a_second_training_into_a_held_run_folder_fails_at_once(tiny_dataset, tmp_path):  # noqa: F811
    from vcar_tf.train.run import hold_run_lock
    from vcar_tf.train.trainer import Trainer

    run = tmp_path / "run"
    with hold_run_lock(str(run)):
        with pytest.raises(VcarError, match=f"in use by another training \\(pid {os.getpid()}\\)"):
            Trainer(_config(tiny_dataset, run, 2)).run()
        assert not (run / "logs").exists() or not os.listdir(run / "logs")  # the refused run wrote no events
    assert Trainer(_config(tiny_dataset, run, 2)).run()["step"] == 2  # free again once released


def test_a_nan_loss_stops_the_run_without_saving_it(tiny_dataset, tmp_path):  # noqa: F811
    from vcar_tf.train.trainer import Trainer

    trainer = Trainer(_config(tiny_dataset, tmp_path / "run", 6))
    trainer.loss_fn = lambda y, pred: (y - pred) * np.float32("nan")
    with pytest.raises(VcarError, match="the loss became nan at step 1"):
        trainer.run()
    assert not os.path.exists(tmp_path / "run" / "checkpoints" / "checkpoint")


def test_killed_checkpoint_temps_are_swept_and_an_alias_resumes_its_model(tiny_dataset, tmp_path):  # noqa: F811
    from vcar_tf.train.trainer import Trainer

    run = tmp_path / "run"
    Trainer(_config(tiny_dataset, run, 2, model="stifn")).run()
    (run / "checkpoints" / "ckpt-9_temp").mkdir()
    (run / "checkpoints" / "ckpt-9_temp" / "part-00000").write_bytes(b"half")
    result = Trainer(_config(tiny_dataset, run, 4, model="stifn_r3")).run()
    assert result["step"] == 4 and not (run / "checkpoints" / "ckpt-9_temp").exists()


def test_sigterm_saves_a_checkpoint_and_exits_143(tiny_dataset, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "train_main.py", "--model=arcnn", f"--data={tiny_dataset}", "--patch=16",
                          "--batch=2", "--steps=100000", "--checkpoint_every=100000", "--noexport",
                          f"--model_dir={run}"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 300
    while not (run / "config.json").exists():  # written just before the training loop
        assert time.time() < deadline and p.poll() is None
        time.sleep(0.5)
    time.sleep(3)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "checkpoint saved" in err and (run / "checkpoints" / "checkpoint").exists()


def _yuv(path, frames, value=128):
    with open(path, "wb") as f:
        f.write(bytes([value]) * (32 * 16 * 3 // 2 * frames))


def test_prepare_skips_hidden_files_replaces_a_recut_source_and_sweeps_leftovers(tmp_path):
    from vcar_tf.data.codec import CodecSettings
    from vcar_tf.data.prepare import find_sources, prepare_dataset

    src = tmp_path / "src"
    src.mkdir()
    _yuv(src / "clip_32x16.yuv", 4)
    (src / ".tmp-abc.mkv").write_bytes(b"")  # what a killed writer leaves
    assert find_sources([str(src)]) == [str(src / "clip_32x16.yuv")]
    out = tmp_path / "out"
    settings = CodecSettings(qp=37)
    prepare_dataset(find_sources([str(src)]), str(out), [settings], workers=1)
    (out / "raw" / ".clip.decoded.yuv").write_bytes(b"partial")
    (out / settings.folder / "bitstreams" / ".tmp-x.hevc").write_bytes(b"partial")
    time.sleep(0.01)
    _yuv(src / "clip_32x16.yuv", 3, value=90)  # re-cut: fewer frames
    prepare_dataset(find_sources([str(src)]), str(out), [settings], workers=1)
    assert sorted(f for f in os.listdir(out / "raw") if f.endswith(".yuv")) == ["clip_32x16_3.yuv"]
    assert sorted(f for f in os.listdir(out / settings.folder) if f.endswith(".yuv")) == ["clip_32x16_3.yuv"]
    assert not (out / settings.folder / "bitstreams" / ".tmp-x.hevc").exists()


_ORPHAN = r"""
import concurrent.futures as cf, os, sys, time
from vcar_tf.data.prepare import die_with_parent
pool = cf.ProcessPoolExecutor(max_workers=1, initializer=die_with_parent)
print(pool.submit(os.getpid).result(), flush=True)
pool.submit(time.sleep, 600)
time.sleep(600)
"""


def test_pool_workers_die_with_a_killed_parent():
    p = subprocess.Popen([sys.executable, "-c", _ORPHAN], cwd=REPO, stdout=subprocess.PIPE, text=True)
    worker = int(p.stdout.readline())
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    for _ in range(50):
        if not os.path.exists(f"/proc/{worker}") or open(f"/proc/{worker}/stat").read().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the pool worker outlived its killed parent")


_LOAD = "from vcar_tf.ops.deform_conv_op import load_deform_conv; print(load_deform_conv(False) is None)"


def test_an_unusable_or_open_op_cache_warns_once_and_uses_the_composite(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = run_cli("-c", _LOAD + "; print(load_deform_conv(False) is None)", env={"VCAR_TF_CACHE": str(blocker)})
    assert r.returncode == 0 and r.stdout.split() == ["True", "True"], r.stderr[-2000:]
    assert r.stderr.count("using the composite") == 1 and "cannot be used" in r.stderr

    open_cache = tmp_path / "open" / "ops"
    open_cache.mkdir(parents=True)
    open_cache.chmod(0o777)  # anyone could plant a library here
    r = run_cli("-c", _LOAD, env={"VCAR_TF_CACHE": str(open_cache.parent)})
    assert r.returncode == 0 and r.stdout.split() == ["True"], r.stderr[-2000:]
    assert "writable by group or others" in r.stderr and not list(open_cache.glob("*.so"))


def test_training_validates_on_val_and_never_on_test_when_both_exist(tiny_dataset, tmp_path):  # noqa: F811
    from vcar_tf.train.trainer import Trainer

    assert sorted(os.listdir(tiny_dataset)) == ["test", "train", "val"]
    result = Trainer(_config(tiny_dataset, tmp_path / "run", 1)).run()
    assert [row["split"] for row in result["rows"]] == ["val"]


def test_evaluation_refuses_frames_beyond_the_documented_maximum(tmp_path):
    from vcar_tf.data.layout import find_pairs
    from vcar_tf.export.signatures import MAX_FRAME_PIXELS
    from vcar_tf.inference.sequence import evaluate_pairs

    w, h = 2576, 1600
    assert w * h > MAX_FRAME_PIXELS
    for folder in ("raw", "x265_LDP/QP37"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / f"big_{w}x{h}_1.yuv").write_bytes(bytes(w * h * 3 // 2))
    with pytest.raises(VcarError, match=f"larger than the {MAX_FRAME_PIXELS} pixels"):
        evaluate_pairs(None, find_pairs(str(tmp_path), 37), 0)


def test_first_line_of_an_error_message():
    import tensorflow as tf

    from vcar_tf.errors import first_line
    from vcar_tf.serving.signature import one_line_tf_error

    assert first_line(ValueError("bad size\n  details: ...")) == "bad size"
    assert first_line(KeyError()) == "KeyError" and first_line(RuntimeError("  \n ")) == "RuntimeError"
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        tf.debugging.assert_equal(tf.constant(1), tf.constant(2), message="frames: expected 7")
    assert first_line(caught.value) == caught.value.message.strip().splitlines()[0]
    assert one_line_tf_error(caught.value) == "frames: expected 7"
