import os

import numpy as np
import pytest

from tests.conftest import make_planes, run_cli
from vcar_tf.errors import VcarError
from vcar_tf.video import write_yuv


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """train/, val/ and test/ splits of random 40x32 sequences whose compressed twin is a noisy copy."""
    root = tmp_path_factory.mktemp("tiny")
    for split, n_seq in (("train", 2), ("val", 1), ("test", 1)):
        for i in range(n_seq):
            raw = [make_planes(40, 32, t, seed=10 * i + len(split)) for t in range(6)]
            rng = np.random.default_rng(i)
            comp = [(np.clip(y.astype(int) + rng.integers(-8, 9, y.shape), 0, 255).astype(np.uint8), u, v)
                    for y, u, v in raw]
            write_yuv(str(root / split / "raw" / f"s{i}_40x32_6.yuv"), raw)
            write_yuv(str(root / split / "x265_LDP" / "QP37" / f"s{i}_40x32_6.yuv"), comp)
    return str(root)


def _config(data, model_dir, steps, **kw):
    from vcar_tf.train.config import TrainConfig

    return TrainConfig(**{"model": "arcnn", "data": data, "patch": 16, "batch": 2, "steps": steps,
                          "model_dir": str(model_dir), "checkpoint_every": 2, "lr": 1e-3,
                          "lr_schedule": "constant", **kw})


def _weights(trainer):
    return [v.numpy() for v in trainer.model.weights]


def test_resume_continues_exactly_where_it_stopped(tiny_dataset, tmp_path):
    from vcar_tf.train.trainer import Trainer

    straight = Trainer(_config(tiny_dataset, tmp_path / "a", 6))
    result = straight.run()
    assert result["step"] == 6 and np.isfinite(result["delta_psnr"])
    assert sorted(os.listdir(tmp_path / "a" / "checkpoints"))[0] == "checkpoint"
    Trainer(_config(tiny_dataset, tmp_path / "b", 4)).run()
    resumed = Trainer(_config(tiny_dataset, tmp_path / "b", 6))
    assert resumed.restore() and int(resumed.step.numpy()) == 4
    resumed.run()
    assert int(resumed.step.numpy()) == 6
    for a, b in zip(_weights(straight), _weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert os.listdir(tmp_path / "b" / "logs")  # TensorBoard events


def test_corrupt_checkpoint_is_an_error_not_a_fresh_start(tiny_dataset, tmp_path):
    from vcar_tf.train.trainer import Trainer

    Trainer(_config(tiny_dataset, tmp_path, 2)).run()
    ckpt = tmp_path / "checkpoints"
    for f in os.listdir(ckpt):
        if f.endswith(".index"):
            (ckpt / f).write_bytes(b"garbage")
    with pytest.raises(VcarError, match="cannot resume from"):
        Trainer(_config(tiny_dataset, tmp_path, 4)).run()
    with pytest.raises(VcarError, match="was trained with lr_schedule='constant', not 'cosine'"):
        Trainer(_config(tiny_dataset, tmp_path, 4, lr_schedule="cosine")).run()


def test_a_resume_refuses_settings_that_change_the_training(tiny_dataset, tmp_path):
    """Resuming with another batch, seed or learning rate would silently train another run on the
    checkpoint; where it saves, how often it validates and --steps may change. A folder whose
    first attempt failed before any checkpoint takes new settings."""
    import json

    from vcar_tf.train.trainer import Trainer

    run = tmp_path / "run"
    Trainer(_config(tiny_dataset, run, 2)).run()
    for change, message in (({"batch": 4}, "batch=2, not 4"), ({"seed": 1}, "seed=0, not 1"),
                            ({"lr": 5e-4}, "lr=0.001, not 0.0005"), ({"patch": 8}, "patch=16, not 8")):
        with pytest.raises(VcarError, match=f"was trained with {message}"):
            Trainer(_config(tiny_dataset, run, 4, **change)).run()
    assert Trainer(_config(tiny_dataset, run, 3, eval_every=1, checkpoint_every=1)).run()["step"] == 3
    Trainer(_config(tiny_dataset, run, 6, eval_every=5, checkpoint_every=4)).run()
    index = (run / "checkpoints" / "checkpoint").read_text()
    assert all(f'"ckpt-{n}"' in index for n in (4, 5, 6))  # 5: saved before its validation, not only after
    config = (run / "config.json").read_text()
    with pytest.raises(VcarError, match="is at step 6, past --steps 2"):  # it recorded steps=2 and re-exported
        Trainer(_config(tiny_dataset, run, 2)).run()
    assert (run / "config.json").read_text() == config
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.json").write_text(json.dumps({"model": "dncnn", "batch": 64}))  # a failed first attempt
    assert Trainer(_config(tiny_dataset, fresh, 1)).run()["step"] == 1


def test_bad_configs(tiny_dataset, tmp_path):
    from vcar_tf.train.trainer import Trainer

    with pytest.raises(VcarError, match="unknown model 'nope'; the registry has: arcnn"):
        Trainer(_config(tiny_dataset, tmp_path, 2, model="nope"))
    with pytest.raises(VcarError, match="dataset not found"):
        Trainer(_config(str(tmp_path / "missing"), tmp_path, 2))
    with pytest.raises(VcarError, match="unknown loss"):
        Trainer(_config(tiny_dataset, tmp_path, 2, loss="l1"))
    with pytest.raises(VcarError, match="--clip_length is for the recurrent models; arcnn trains on windows"):
        Trainer(_config(tiny_dataset, tmp_path, 2, clip_length=4))
    legacy = os.path.join(os.path.dirname(__file__), "legacy", "run_arcnn")
    with pytest.raises(VcarError, match="fills every weight of arcnn, so --init_lr would leave the schedule nothing"):
        Trainer(_config(tiny_dataset, tmp_path, 2, init_from=legacy, init_lr=1e-5))


def test_codec_folder_picks_one_of_several_at_the_qp(tiny_dataset, tmp_path):
    import shutil

    from vcar_tf.train.trainer import Trainer

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    for split in ("train", "val", "test"):
        shutil.copytree(data / split / "x265_LDP", data / split / "x265_LDP_dbk_sao")
    with pytest.raises(VcarError, match=r"several QP37 codec folders \(x265_LDP, x265_LDP_dbk_sao\)"):
        Trainer(_config(str(data), tmp_path / "a", 2))
    trainer = Trainer(_config(str(data), tmp_path / "b", 2, codec_folder="x265_LDP_dbk_sao"))
    compressed = [p.compressed_path for p in trainer.train_pairs + trainer.val_pairs]
    assert len(compressed) == 3 and all(f"{os.sep}x265_LDP_dbk_sao{os.sep}QP37{os.sep}" in c for c in compressed)


def test_train_main_cli_errors_and_replica_divisibility(tiny_dataset, tmp_path):
    r = run_cli("train_main.py", "--model=nope", f"--data={tiny_dataset}", f"--model_dir={tmp_path}")
    assert r.returncode == 2 and "error: unknown model 'nope'; the registry has:" in r.stderr.strip().splitlines()[-1]
    # two logical CPU devices under MirroredStrategy: a global batch of 3 cannot be split
    code = ("import tensorflow as tf; cpu = tf.config.list_physical_devices('CPU')[0]; "
            "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2); "
            "import sys; sys.argv = ['train_main.py', '--strategy=mirrored', '--batch=3', '--model=arcnn', "
            f"'--data={tiny_dataset}', '--model_dir={tmp_path}']; "
            "from absl import app; import train_main; app.run(train_main.main)")
    r = run_cli("-c", code)
    assert r.returncode == 2
    assert "global batch 3 is not divisible by the 2 replicas" in r.stderr.strip().splitlines()[-1]


def test_evaluate_cli_reports_the_trained_run(tiny_dataset, tmp_path):
    from vcar_tf.train.trainer import Trainer

    result = Trainer(_config(tiny_dataset, tmp_path / "run", 2)).run()
    r = run_cli("-m", "vcar_tf.evaluate", "--model_dir", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    import csv

    rows = list(csv.DictReader(open(tmp_path / "run" / "eval" / "report.csv")))
    assert [(r["sequence"], r["split"]) for r in rows if r["sequence"] != "average"] == [("s0_40x32_6", "test"),
                                                                                          ("s0_40x32_6", "val")]
    val, = [r for r in rows if r["split"] == "val" and r["sequence"] != "average"]
    assert abs(float(val["delta_psnr"]) - result["delta_psnr"]) < 1e-3  # the trainer validated on val
    assert len(os.listdir(tmp_path / "run" / "eval" / "curves")) == 2
    r = run_cli("-m", "vcar_tf.evaluate", "--model_dir", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "is not a training run" in r.stderr
    # the same report through the exported SavedModel (serve_float signature)
    from vcar_tf.train.run import load_run
    from vcar_tf.export import export_saved_model

    saved = export_saved_model(load_run(str(tmp_path / "run"))[0], 0, str(tmp_path / "serving" / "arcnn"))
    r = run_cli("-m", "vcar_tf.evaluate", "--saved_model", saved, "--data", tiny_dataset,
                "--out", str(tmp_path / "eval_saved"))
    assert r.returncode == 0, r.stderr[-2000:]
    rows_saved = list(csv.DictReader(open(tmp_path / "eval_saved" / "report.csv")))
    assert abs(float(rows_saved[0]["delta_psnr"]) - float(rows[0]["delta_psnr"])) < 1e-3
    # a dataset with a test split only: evaluation needs no training split
    (tmp_path / "only_test").mkdir()
    os.symlink(os.path.join(tiny_dataset, "test"), tmp_path / "only_test" / "test")
    r = run_cli("-m", "vcar_tf.evaluate", "--model_dir", str(tmp_path / "run"), "--data", str(tmp_path / "only_test"),
                "--out", str(tmp_path / "eval_only_test"))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("-m", "vcar_tf.evaluate", "--saved_model", str(tmp_path), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "is not a SavedModel" in r.stderr


def test_train_main_exports_and_vcar_export(tiny_dataset, tmp_path):
    r = run_cli("train_main.py", "--model=arcnn", f"--data={tiny_dataset}", f"--model_dir={tmp_path}/run",
                "--steps=2", "--patch=16", "--batch=2", f"--export_dir={tmp_path}/serving")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "validation ΔPSNR" in r.stdout
    assert os.path.exists(tmp_path / "serving" / "arcnn" / "1" / "saved_model.pb")
    r = run_cli("-m", "vcar_tf.cli.export", "--model_dir", f"{tmp_path}/run", "--out", f"{tmp_path}/serving")
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.path.exists(tmp_path / "serving" / "arcnn" / "2" / "saved_model.pb")


def test_vcar_enhance_yuv_and_video(tiny_dataset, tmp_path):
    from vcar_tf.train.run import load_run
    from vcar_tf.inference.sequence import enhance_luma
    from vcar_tf.train.trainer import Trainer
    from vcar_tf.video import open_sequence

    Trainer(_config(tiny_dataset, tmp_path / "run", 2, lr=1e-2)).run()  # far enough from the identity
    src = os.path.join(tiny_dataset, "test", "x265_LDP", "QP37", "s0_40x32_6.yuv")
    for out in ("out_40x32.yuv", "out.mkv"):
        r = run_cli("-m", "vcar_tf.cli.enhance", "--model_dir", str(tmp_path / "run"), "--input", src,
                    "--output", str(tmp_path / out))
        assert r.returncode == 0, r.stderr[-2000:]
        got, inp = open_sequence(str(tmp_path / out)), open_sequence(src)
        assert got.num_frames == 6
        model, _, _ = load_run(str(tmp_path / "run"))
        want = [np.round(y * 255).astype(np.uint8) for y in enhance_luma(model, inp, 0)]
        assert any(not np.array_equal(want[t], inp.y(t)) for t in range(6))  # trained: not the identity
        for t in range(6):
            np.testing.assert_array_equal(got.y(t), want[t])  # lossless output (qp 0 for video)
            np.testing.assert_array_equal(got.frame(t)[1], inp.frame(t)[1])  # chroma unchanged
    r = run_cli("-m", "vcar_tf.cli.enhance", "--model_dir", str(tmp_path / "run"), "--input", src, "--output", src)
    assert r.returncode == 2 and "must differ" in r.stderr


def test_kill_9_loses_at_most_one_interval_and_resumes(tiny_dataset, tmp_path):
    """SIGKILL train_main.py at three moments; every time the run resumes from a checkpoint that
    loads, no older than one checkpoint interval, and finally completes."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO
    from vcar_tf.train.trainer import Trainer

    args = [sys.executable, "train_main.py", "--model=arcnn", f"--data={tiny_dataset}", "--patch=16",
            "--batch=2", "--steps=100000", "--checkpoint_every=3", f"--model_dir={tmp_path}", "--noexport"]
    last_step = 0
    for delay in (0.0, 0.7, 1.9):
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        index = tmp_path / "checkpoints" / "checkpoint"
        start = index.stat().st_mtime if index.exists() else 0
        deadline = time.time() + 120
        while time.time() < deadline and (not index.exists() or index.stat().st_mtime == start):
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        trainer = Trainer(_config(tiny_dataset, tmp_path, 100000, checkpoint_every=3, lr_schedule="cosine"))
        assert trainer.restore()  # the latest checkpoint always loads
        step = int(trainer.step.numpy())
        assert step > last_step and step % 3 == 0
        last_step = step
    r = run_cli("train_main.py", *args[2:-3], f"--steps={last_step + 4}", "--checkpoint_every=3",
                f"--model_dir={tmp_path}", "--noexport")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resumed from {tmp_path}/checkpoints/ckpt-{last_step} at step {last_step}" in r.stderr
    assert f"after {last_step + 4} steps" in r.stdout


def test_clip_models_train_with_the_loss_summed_over_frames(tiny_dataset, tmp_path, monkeypatch):
    """A recurrent-style model registered with clip_length trains and validates unchanged."""
    import keras
    import tensorflow as tf

    from vcar_tf.models import registry
    from vcar_tf.train.losses import charbonnier, per_example_loss
    from vcar_tf.train.trainer import Trainer

    y = tf.random.uniform((2, 4, 5, 6, 1), seed=1)
    pred = tf.random.uniform((2, 4, 5, 6, 1), seed=2)
    want = sum(charbonnier(y[:, t], pred[:, t]) for t in range(4))
    np.testing.assert_allclose(per_example_loss(charbonnier, y, pred), want, rtol=1e-6)

    class ClipToy(keras.Model):
        """The smallest model of the recurrent protocol (vcar_tf.models.recurrent), R = 0."""

        recurrent = True
        state_channels = 1

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(1, 3, padding="same")
            self.conv.build((None, None, None, 2))

        def initial_state(self, window):
            return tf.zeros_like(window[:, 0])

        def step(self, window, hidden):
            y = window[:, 0] + self.conv(tf.concat([window[:, 0], hidden], axis=-1))
            return y, y

        def call(self, clip):
            hidden, outputs = self.initial_state(clip), []
            for t in range(clip.shape[1]):
                y, hidden = self.step(clip[:, t:t + 1], hidden)
                outputs.append(y)
            return tf.stack(outputs, axis=1)

    build_clip_model = ClipToy

    monkeypatch.setitem(registry._BUILDERS, "clip_toy",
                        registry.ModelSpec("clip_toy", build_clip_model, 0, "test only", clip_length=3))
    trainer = Trainer(_config(tiny_dataset, tmp_path, 3, model="clip_toy"))
    result = trainer.run()
    assert result["step"] == 3 and np.isfinite(result["delta_psnr"]) and result["delta_psnr"] != 0
    assert [r["frames"] for r in result["rows"]] == [6]


def test_stdf_trains_through_the_deformable_conv(tiny_dataset, tmp_path):
    from vcar_tf.train.trainer import Trainer

    trainer = Trainer(_config(tiny_dataset, tmp_path, 3, model="stdf_r3", lr=1e-2))
    offset_head = trainer.model.get_layer("offset_mask").kernel.numpy().copy()
    result = trainer.run()
    assert result["step"] == 3 and np.isfinite(result["delta_psnr"])
    # the offset predictor learns (its gradient flows through the deformable conv)
    assert np.abs(trainer.model.get_layer("offset_mask").kernel.numpy() - offset_head).max() > 0


def test_nl_convlstm_trains_with_three_frames_each_side(tiny_dataset, tmp_path):
    from vcar_tf.train.trainer import Trainer

    trainer = Trainer(_config(tiny_dataset, tmp_path, 3, model="nl_convlstm", patch=24, lr=1e-2))
    assert trainer.model.input_shape[1] == 7
    gates = {d: trainer.model.get_layer(d).gates.kernel.numpy().copy() for d in ("forward", "backward")}
    result = trainer.run()
    assert result["step"] == 3 and np.isfinite(result["delta_psnr"])
    for direction, before in gates.items():  # both directions learn through the decoder's zero-initialised head
        assert np.abs(trainer.model.get_layer(direction).gates.kernel.numpy() - before).max() > 0, direction


def test_two_stages_init_from_with_a_lower_rate_for_the_copied_weights(tiny_dataset, tmp_path):
    """Stage 2 starts from stage 1's checkpoint (variables matched by path); the copied weights
    move at --init_lr, the new recursive-fusion weights at --lr."""
    from vcar_tf.train.trainer import Trainer

    stage1 = Trainer(_config(tiny_dataset, tmp_path / "dsta", 1, model="stdf_dsta", patch=16, lr=1e-2))
    stage1.run()
    rfda = Trainer(_config(tiny_dataset, tmp_path / "rfda", 1, model="rfda", clip_length=4,
                           init_from=str(tmp_path / "dsta"), init_lr=1e-5))
    first = {v.path: v.numpy() for v in stage1.model.trainable_variables}
    second = {v.path: v.numpy() for v in rfda.model.trainable_variables}
    assert set(first) < set(second) and all(np.array_equal(second[p], first[p]) for p in first)
    assert all(p.startswith("rf_") for p in set(second) - set(first))

    # STDF -> STDF+RF: without DSTA's gates the fusion weights get gradients well above Adam's epsilon
    Trainer(_config(tiny_dataset, tmp_path / "stdf", 1, model="stdf_r3", patch=16, lr=1e-2)).run()
    stage2 = Trainer(_config(tiny_dataset, tmp_path / "rf", 2, model="stdf_rf", patch=16, clip_length=4,
                             init_from=str(tmp_path / "stdf"), init_lr=1e-5))
    before = {v.path: v.numpy().copy() for v in stage2.model.trainable_variables}
    result = stage2.run()
    assert result["step"] == 2 and np.isfinite(result["delta_psnr"])
    moved = {v.path: np.abs(v.numpy() - before[v.path]).max() for v in stage2.model.trainable_variables}
    assert max(m for p, m in moved.items() if not p.startswith("rf_")) <= 2 * 1e-5 * 1.01  # Adam: <= lr per step
    assert moved["rf_fe_2/kernel"] > 1e-3
    with pytest.raises(VcarError, match="--init_lr needs --init_from"):
        Trainer(_config(tiny_dataset, tmp_path / "x", 2, model="rfda", init_lr=1e-5))


def test_the_best_checkpoint_on_val_is_kept_across_a_resume(tiny_dataset, tmp_path, monkeypatch):
    """Validations at steps 2, 4, 6 (a resume after 4), 8 score 0.1, 0.3, 0.2, 0.25: RunFolder.best
    holds the step-4 weights; load_run, vcar-evaluate and make_preset take them with --checkpoint best."""
    from vcar_tf.train.run import load_run, read_best
    from vcar_tf.train.trainer import Trainer

    scores, seen = iter([0.1, 0.3, 0.2, 0.25]), {}

    def scripted(self):
        seen[int(self.step.numpy())] = _weights(self)
        return [], {}, next(scores), 0.0

    monkeypatch.setattr(Trainer, "validate", scripted)
    run = tmp_path / "run"
    Trainer(_config(tiny_dataset, run, 4, eval_every=2)).run()
    Trainer(_config(tiny_dataset, run, 8, eval_every=2)).run()
    assert sorted(seen) == [2, 4, 6, 8]
    assert read_best(str(run)) == {"step": 4, "delta_psnr": 0.3, "delta_ssim_x100": 0.0}
    best = [v.numpy() for v in load_run(str(run), "best")[0].weights]
    latest = [v.numpy() for v in load_run(str(run))[0].weights]
    for got, want in zip(best, seen[4]):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(latest, seen[8]):
        np.testing.assert_array_equal(got, want)
    assert any(not np.array_equal(a, b) for a, b in zip(seen[4], seen[8]))

    r = run_cli("-m", "vcar_tf.evaluate", "--model_dir", str(run), "--checkpoint", "best", "--data", tiny_dataset,
                "--out", str(tmp_path / "eval_best"))
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("-m", "vcar_tf.evaluate", "--preset", "arcnn_x265_qp37", "--checkpoint", "best",
                "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == "error: --checkpoint goes with --model_dir"
    assert not (tmp_path / "x").exists()
    import json
    import shutil

    config = json.load(open(run / "config.json"))  # a run on the embedded sample: the card needs no sidecars
    (run / "config.json").write_text(json.dumps({**config, "data": None}))
    r = run_cli("scripts/make_preset.py", str(run), "--name", "tiny_best", "--checkpoint", "best",
                "--val", str(tmp_path / "eval_best"), "--test", str(tmp_path / "eval_best"), "--out", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr[-2000:]
    card = json.load(open(tmp_path / "p" / "tiny_best" / "card.json"))
    assert card["checkpoint"] == "best" and card["step"] == 4
    shutil.rmtree(run / "best")
    with pytest.raises(VcarError, match="has no best checkpoint"):
        load_run(str(run), "best")


def test_the_best_checkpoint_keeps_its_validation_report_for_make_preset(tiny_dataset, tmp_path, monkeypatch):
    """RunFolder.best_eval is the report of the validation that made the best checkpoint: make_preset
    --checkpoint best takes it as --val; a later best without a report removes it, never leaves it stale."""
    import json

    from vcar_tf.reporting import read_report
    from vcar_tf.train.run import read_best
    from vcar_tf.train.trainer import Trainer

    run = tmp_path / "run"
    Trainer(_config(tiny_dataset, run, 2)).run()
    best = read_best(str(run))
    _, rows = read_report(str(run / "best" / "eval"))
    average, = [r for r in rows if r["sequence"] == "average"]
    assert best["step"] == 2 and float(average["delta_psnr"]) == pytest.approx(best["delta_psnr"], abs=1e-4)
    config = json.load(open(run / "config.json"))
    (run / "config.json").write_text(json.dumps({**config, "data": None}))
    test_eval = tmp_path / "test_eval"  # a stand-in for the test evaluation: the run's report, as if on test
    test_eval.mkdir()
    (test_eval / "report.csv").write_text((run / "eval" / "report.csv").read_text().replace("\nval,", "\ntest,"))
    r = run_cli("scripts/make_preset.py", str(run), "--name", "tiny_best", "--checkpoint", "best",
                "--test", str(test_eval), "--out", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr[-2000:]
    card = json.load(open(tmp_path / "p" / "tiny_best" / "card.json"))
    assert card["val"]["delta_psnr"] == pytest.approx(best["delta_psnr"], abs=1e-4) and card["step"] == 2

    monkeypatch.setattr(Trainer, "validate", lambda self: ([], {}, best["delta_psnr"] + 1.0, 0.0))
    (run / "config.json").write_text(json.dumps(config))
    Trainer(_config(tiny_dataset, run, 4)).run()
    assert read_best(str(run))["step"] == 4 and not (run / "best" / "eval").exists()


def test_a_bad_init_from_or_model_dir_fails_before_any_data_is_prepared(tmp_path, monkeypatch):
    from vcar_tf.errors import VcarError
    from vcar_tf.train import trainer

    def untouched(*args, **kwargs):
        raise AssertionError("the dataset was prepared before the flags were checked")

    monkeypatch.setattr(trainer, "split_datasets", untouched)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for kw, message in (({"init_from": str(tmp_path / "missing")}, "is not a training run"),
                        ({"init_from": "preset:nope"}, "unknown preset 'nope'"),
                        ({"model_dir": str(blocker / "run")}, "is not a folder")):
        cfg = _config("sample", kw.pop("model_dir", tmp_path / "run"), 1, **kw)
        with pytest.raises(VcarError, match=message):
            trainer.Trainer(cfg)
    assert not (tmp_path / "run").exists()


def test_a_signal_during_the_final_validation_ends_the_run_as_a_stop(tiny_dataset, tmp_path, monkeypatch):
    """SIGTERM while the last validation runs: the run ends as stopped (train_main exits 143 and
    does not export) and writes no final report; a rerun validates again."""
    import signal

    from vcar_tf.train.trainer import Trainer

    validate = Trainer.validate

    def validate_then_signal(self):
        out = validate(self)
        self._on_signal(signal.SIGTERM, None)
        return out

    monkeypatch.setattr(Trainer, "validate", validate_then_signal)
    run = tmp_path / "run"
    assert Trainer(_config(tiny_dataset, run, 2)).run() == {"stopped_by": signal.SIGTERM}
    assert not (run / "eval" / "report.csv").exists()
    monkeypatch.setattr(Trainer, "validate", validate)
    assert Trainer(_config(tiny_dataset, run, 2)).run()["step"] == 2 and (run / "eval" / "report.csv").exists()


def test_without_a_val_split_validations_choose_nothing(tiny_dataset, tmp_path, capsys):
    """With train/ and test/ only, a validation reports on test/ but keeps no best/: no choice is
    made on test. MFQE's folder names (test_18/) are held out, not trained on."""
    from vcar_tf.data.layout import split_datasets
    from vcar_tf.train.trainer import Trainer

    data = tmp_path / "no_val"
    data.mkdir()
    for split in ("train", "test"):
        os.symlink(os.path.join(tiny_dataset, split), data / split)
    run = tmp_path / "run"
    result = Trainer(_config(str(data), run, 2, eval_every=1)).run()
    assert np.isfinite(result["delta_psnr"]) and not (run / "best").exists()
    assert f"note: {data} has no val/ split: validations report on test and keep no best/" in capsys.readouterr().err

    mfqe = tmp_path / "mfqe"
    for name in ("train_108", "test_18", "val-2", "values", "testing"):
        (mfqe / name / "raw").mkdir(parents=True)
    train, held_out = split_datasets(str(mfqe))
    assert sorted(train) == ["train_108", "values"] and sorted(held_out) == ["test_18", "testing", "val-2"]


def test_a_resume_needs_the_init_from_source_only_for_init_lr(tiny_dataset, tmp_path):
    """A resume restores every weight, so it runs with the --init_from run gone; with --init_lr it
    needs that run (which weights train at --init_lr) and says so. Released weights stay marked:
    the run keeps the source's imported.json, so imported_origin (what make_preset.py refuses) still
    finds it; a fresh start from other weights drops an imported.json left by an earlier attempt."""
    import json
    import shutil

    from vcar_tf.train.folder import imported_origin
    from vcar_tf.train.trainer import Trainer

    source, tuned = tmp_path / "release", tmp_path / "tuned"
    Trainer(_config(tiny_dataset, source, 1)).run()
    record = json.dumps({"source": "stdf-pytorch", "checkpoint": "x.pt"})
    (source / "imported.json").write_text(record)
    Trainer(_config(tiny_dataset, tuned, 1, init_from=str(source))).run()
    assert (tuned / "imported.json").read_text() == record
    shutil.rmtree(source)
    assert Trainer(_config(tiny_dataset, tuned, 2, init_from=str(source))).run()["step"] == 2
    assert imported_origin(str(tuned)) == str(tuned)
    with pytest.raises(VcarError) as fresh:  # a new run without its source: the plain message
        Trainer(_config(tiny_dataset, tmp_path / "new", 1, init_from=str(source)))
    assert "--init_lr" not in str(fresh.value)

    plain, retried = tmp_path / "plain", tmp_path / "retried"
    Trainer(_config(tiny_dataset, plain, 1)).run()
    retried.mkdir()
    (retried / "imported.json").write_text(record)  # an attempt that stopped before its first checkpoint
    Trainer(_config(tiny_dataset, retried, 1, init_from=str(plain))).run()
    assert not (retried / "imported.json").exists() and imported_origin(str(retried)) is None

    # STDF -> STDF+RF with --init_lr: the resume reads the source to split the variables
    Trainer(_config(tiny_dataset, tmp_path / "stdf", 1, model="stdf_r3", patch=16)).run()
    stage2 = dict(model="stdf_rf", patch=16, clip_length=4, init_from=str(tmp_path / "stdf"), init_lr=1e-5)
    Trainer(_config(tiny_dataset, tmp_path / "rf", 1, **stage2)).run()
    shutil.rmtree(tmp_path / "stdf")
    with pytest.raises(VcarError, match="reads it to know which weights train at --init_lr"):
        Trainer(_config(tiny_dataset, tmp_path / "rf", 2, **stage2))


def test_a_validation_killed_mid_run_is_redone_on_resume(tiny_dataset, tmp_path, monkeypatch):
    """A kill during the validation at step 2 (its checkpoint is saved first) leaves it marked; the
    resume validates step 2 before training on, so best/ can still be step 2."""
    from vcar_tf.train.folder import RunFolder
    from vcar_tf.train.run import read_best
    from vcar_tf.train.trainer import Trainer

    seen = []

    def killed(self):
        raise KeyboardInterrupt  # as a SIGKILL would end it, nothing after it runs

    def scripted(self):
        seen.append(int(self.step.numpy()))
        return [], {}, {2: 0.3, 4: 0.1, 5: 0.2, 6: 0.2}[seen[-1]], 0.0

    run = tmp_path / "run"
    monkeypatch.setattr(Trainer, "validate", killed)
    with pytest.raises(KeyboardInterrupt):
        Trainer(_config(tiny_dataset, run, 6, eval_every=2, checkpoint_every=4)).run()
    assert os.path.exists(RunFolder(str(run)).pending_validation)
    monkeypatch.setattr(Trainer, "validate", scripted)
    Trainer(_config(tiny_dataset, run, 5, eval_every=2, checkpoint_every=4)).run()
    assert seen == [2, 4, 5] and read_best(str(run))["step"] == 2
    assert not os.path.exists(RunFolder(str(run)).pending_validation)
    with open(RunFolder(str(run)).pending_validation, "w") as f:
        f.write('{"step": 3}')  # stale: not the step the run resumes at, so removed and not redone
    seen.clear()
    Trainer(_config(tiny_dataset, run, 6, eval_every=2, checkpoint_every=4)).run()
    assert seen == [6] and not os.path.exists(RunFolder(str(run)).pending_validation)


def test_training_in_bf16_loads_the_bf16_kernels_and_fp32_does_not(tiny_dataset, tmp_path, monkeypatch):
    import keras

    from vcar_tf.train import trainer as trainer_module

    loads = []
    monkeypatch.setattr(trainer_module, "load_bf16_kernels", lambda: loads.append(True))
    try:
        trainer_module.Trainer(_config(tiny_dataset, tmp_path / "fp32", 1))
        assert loads == []
        trainer_module.Trainer(_config(tiny_dataset, tmp_path / "bf16", 1, mixed_precision=True))
        assert loads == [True]
    finally:
        keras.mixed_precision.set_global_policy("float32")
