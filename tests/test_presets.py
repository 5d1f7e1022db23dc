"""Presets: from_preset with its sha256 check, the listing, --preset in the commands and
--init_from=preset:NAME. The preset here is made by scripts/make_preset.py from the legacy AR-CNN
run (tests/legacy/run_arcnn) into a private folder (VCAR_TF_PRESETS)."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, load_script, run_cli
from tests.test_compare import _run
from vcar_tf.errors import VcarError

RUN = os.path.join(REPO, "tests", "legacy", "run_arcnn")


@pytest.fixture()
def presets(tmp_path, monkeypatch):
    root = tmp_path / "presets"
    reports = [_run(tmp_path / split, "arcnn", shift, split) for split, shift in (("val", 0.25), ("test", 0.125))]
    r = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make_preset.py"), RUN, "--name", "arcnn_toy",
                        "--val", os.path.join(reports[0], "eval"), "--test", os.path.join(reports[1], "eval"),
                        "--out", str(root)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    monkeypatch.setenv("VCAR_TF_PRESETS", str(root))
    return root


def test_from_preset_loads_the_run_and_its_card(presets):
    from vcar_tf.models.presets import from_preset
    from vcar_tf.presets import preset_card, preset_names
    from vcar_tf.train.run import load_run

    assert preset_names() == ["arcnn_toy"]
    card = preset_card("arcnn_toy")
    assert (card["model"], card["qp"], card["test"]["delta_psnr"], card["val"]["delta_psnr"]) == ("arcnn", 37, 0.125, 0.25)
    x = np.random.default_rng(0).uniform(size=(1, 1, 20, 24, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(from_preset("arcnn_toy")(x)), np.asarray(load_run(RUN)[0](x)), atol=1e-6)


def test_the_card_says_the_checkpoint_s_step_and_takes_val_figures_from_val_only(presets, tmp_path):
    """The card's step is the checkpoint's (a run stopped or extended is not at its config's
    --steps); a --val report on the test split (a run without val/ evaluates there) is refused."""
    import json

    from vcar_tf.train.run import checkpoint_step

    card = json.loads((presets / "arcnn_toy" / "card.json").read_text())
    assert card["step"] == checkpoint_step(RUN) and card["val"]["sequences"] == 2
    test_report = _run(tmp_path / "t", "arcnn", 0.125)
    r = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make_preset.py"), RUN, "--name", "x",
                        "--val", os.path.join(test_report, "eval"), "--test", os.path.join(test_report, "eval"),
                        "--out", str(tmp_path / "p")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "no average over a val split (the report has test)" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "p" / "x").exists()


def test_a_recorded_test_evaluation_of_other_weights_is_refused(presets, tmp_path):
    """make_preset.py ships the weights its --test evaluated: an evaluate_recorded.py record of other
    weights (say the latest checkpoint for a --checkpoint best preset) is an error; the old preset stays."""
    import json

    test_report = _run(tmp_path / "t", "arcnn", 0.125)
    val_report = _run(tmp_path / "v", "arcnn", 0.25, "val")
    (tmp_path / "t" / "arcnn" / "eval" / "record.json").write_text(json.dumps({"weights_sha256": "0" * 64}))
    before = (presets / "arcnn_toy" / "card.json").read_text()
    r = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make_preset.py"), RUN, "--name", "arcnn_toy",
                        "--val", os.path.join(val_report, "eval"), "--test", os.path.join(test_report, "eval"),
                        "--out", str(presets)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "evaluated other weights (sha256 000000000000…)" in r.stderr, r.stderr[-2000:]
    assert (presets / "arcnn_toy" / "card.json").read_text() == before
    sha256 = json.loads(before)["sha256"]
    (tmp_path / "t" / "arcnn" / "eval" / "record.json").write_text(json.dumps({"weights_sha256": sha256}))
    r = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make_preset.py"), RUN, "--name", "arcnn_toy",
                        "--val", os.path.join(val_report, "eval"), "--test", os.path.join(test_report, "eval"),
                        "--out", str(presets)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(os.listdir(presets)) == ["arcnn_toy"]  # the old one replaced, nothing left beside it


def test_unknown_and_corrupt_presets_are_one_line_errors(presets):
    from vcar_tf.models.presets import from_preset

    with pytest.raises(VcarError, match="unknown preset 'nope'; the package has: arcnn_toy"):
        from_preset("nope")
    weights = presets / "arcnn_toy" / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(VcarError, match="missing or corrupt"):
        from_preset("arcnn_toy")


def test_presets_in_the_commands_and_as_init_from(presets, tmp_path, capsys):
    r = run_cli("-m", "vcar_tf.models", "--presets", env={"VCAR_TF_PRESETS": str(presets)})
    assert r.returncode == 0 and "arcnn_toy" in r.stdout and "test ΔPSNR +0.125 dB" in r.stdout
    assert "bf16 not measured" in r.stdout and "int8 not measured" in r.stdout
    import json

    from vcar_tf.cli.models import main as list_models
    card = presets / "arcnn_toy" / "card.json"
    card.write_text(json.dumps({**{k: v for k, v in json.loads(card.read_text()).items() if k != "test"},
                                "int8": {"val_cost_db": 0.0042}}))
    assert list_models(["--presets"]) == 0
    listed = capsys.readouterr().out
    assert "arcnn_toy" in listed.split("test not measured")[0] and "int8 costs +0.004 dB on val" in listed
    r = run_cli("-m", "vcar_tf.cli.export", "--preset", "arcnn_toy", "--out", str(tmp_path / "serving"),
                env={"VCAR_TF_PRESETS": str(presets)})
    assert r.returncode == 0 and os.path.exists(tmp_path / "serving" / "arcnn_toy" / "1" / "saved_model.pb"), r.stderr[-2000:]
    r = run_cli("-m", "vcar_tf.cli.export", "--preset", "arcnn_toy", "--model_dir", RUN, "--out", str(tmp_path / "s2"),
                env={"VCAR_TF_PRESETS": str(presets)})
    assert r.returncode == 2 and "pass exactly one of --model_dir, --preset" in r.stderr

    from vcar_tf.models import build
    from vcar_tf.train.run import initialise_from

    model = build("arcnn")
    assert len(initialise_from(model, "preset:arcnn_toy")) == len(model.variables)
    # through train_main.py: one step at a negligible rate leaves the preset's weights
    tuned = tmp_path / "fine-tune"
    r = run_cli("train_main.py", "--model=arcnn", "--steps=1", "--batch=2", "--patch=16", "--lr=1e-9",
                "--lr_schedule=constant", "--noexport", "--init_from=preset:arcnn_toy", f"--model_dir={tuned}",
                env={"VCAR_TF_PRESETS": str(presets)})
    assert r.returncode == 0, r.stderr[-2000:]
    from vcar_tf.models.presets import from_preset
    from vcar_tf.train.run import load_run

    for a, b in zip(load_run(str(tuned))[0].weights, from_preset("arcnn_toy").weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    shutil.rmtree(presets / "arcnn_toy")
    with pytest.raises(VcarError, match="unknown preset 'arcnn_toy'"):
        initialise_from(build("arcnn"), "preset:arcnn_toy")


def test_precision_auto_is_int8_or_bf16_only_for_a_preset_measured_within_budget_on_a_native_cpu(presets, monkeypatch,
                                                                                                  capsys):
    import json
    from types import SimpleNamespace

    from vcar_tf.cli.common import load_model
    from vcar_tf import precision

    path = presets / "arcnn_toy" / "card.json"
    card = json.loads(path.read_text())

    def policy(cost, flags, chosen="auto", source="preset", int8_cost=None, int8_flags=()):
        for key, value in (("bf16", cost), ("int8", int8_cost)):
            card.pop(key, None)
            if value is not None:
                card[key] = {"val_cost_db": value}
        path.write_text(json.dumps(card))
        monkeypatch.setattr(precision, "native_bf16_flags", lambda cpuinfo=None: flags)
        monkeypatch.setattr(precision, "native_int8_flags", lambda cpuinfo=None: int8_flags)
        args = SimpleNamespace(preset="arcnn_toy" if source == "preset" else None,
                               model_dir=RUN if source == "run" else None, checkpoint="latest", precision=chosen)
        model = load_model(args)[0]
        return "int8" if type(model).__name__ == "Int8Model" else model.dtype_policy.name

    assert policy(0.01, ("amx_bf16",)) == "mixed_bfloat16"
    assert "note: computing in bf16 (this CPU has amx_bf16; bf16 costs 0.010 dB on val)" in capsys.readouterr().err
    assert policy(0.05, ("avx512_bf16",)) == "mixed_bfloat16"
    assert policy(0.051, ("amx_bf16",)) == "float32"  # above the budget
    assert policy(0.01, ()) == "float32"  # no native bf16
    assert policy(None, ("amx_bf16",)) == "float32"  # never measured
    assert policy(0.01, ("amx_bf16",), chosen="fp32") == "float32"
    assert policy(0.01, ("amx_bf16",), source="run") == "float32"  # a run has no measured cost
    assert policy(0.5, ("amx_bf16",), chosen="bf16") == "mixed_bfloat16"  # asked for: always
    assert "note: computing" not in capsys.readouterr().err.replace(
        "note: computing in bf16 (this CPU has avx512_bf16; bf16 costs 0.050 dB on val)", "")
    # int8 before bf16, on the same terms
    assert policy(0.01, ("amx_bf16",), int8_cost=0.02, int8_flags=("avx512_vnni",)) == "int8"
    assert "note: computing in int8 (this CPU has avx512_vnni; int8 costs 0.020 dB on val)" in capsys.readouterr().err
    assert policy(0.01, ("amx_bf16",), int8_cost=0.02, int8_flags=()) == "mixed_bfloat16"  # no VNNI
    assert policy(0.01, ("amx_bf16",), int8_cost=0.06, int8_flags=("avx_vnni",)) == "mixed_bfloat16"  # over budget
    assert policy(None, (), int8_cost=0.05, int8_flags=("amx_int8",)) == "int8"
    assert policy(None, (), int8_cost=0.01, int8_flags=("amx_int8",), chosen="fp32") == "float32"
    assert policy(None, (), chosen="int8", int8_flags=("avx_vnni",)) == "int8"  # asked for: measured or not
    with pytest.raises(VcarError, match="int8 needs a CPU with avx512_vnni"):
        policy(None, ("amx_bf16",), chosen="int8")  # but never on a CPU whose integer products saturate


def test_a_broken_card_or_weights_of_another_model_are_one_line_errors(presets):
    import json

    from vcar_tf.models.presets import from_preset
    from vcar_tf.presets import file_sha256

    card_path = presets / "arcnn_toy" / "card.json"
    card = json.loads(card_path.read_text())
    for text, message in (("{bad json", "card.json is not JSON"), ("[1, 2]", "not a preset card (no model, qp)"),
                          (json.dumps({k: v for k, v in card.items() if k != "qp"}), "not a preset card (no qp)"),
                          (json.dumps({k: v for k, v in card.items() if k != "sha256"}), "card.json has no sha256"),
                          (json.dumps({**card, "overrides": [3]}), "card.json's overrides must be an object")):
        card_path.write_text(text)
        with pytest.raises(VcarError, match=message.replace("(", r"\(").replace(")", r"\)")):
            from_preset("arcnn_toy")
    weights = presets / "arcnn_toy" / "model.weights.h5"
    card_path.write_text(json.dumps({**card, "model": "dncnn", "sha256": file_sha256(weights)}))
    with pytest.raises(VcarError, match="model.weights.h5 does not load into dncnn") as e:
        from_preset("arcnn_toy")
    assert str(e.value).endswith("(A total of 32 objects could not be loaded.)"), str(e.value)


def test_a_made_preset_and_a_written_run_are_readable_folders_not_mkdtemps_0700(presets, tmp_path):
    from vcar_tf.train.run import load_run, write_run

    umask = os.umask(0o022)
    try:
        model, cfg, _ = load_run(RUN)
        written = write_run(str(tmp_path / "copy"), model, cfg)
    finally:
        os.umask(umask)
    assert oct(os.stat(written).st_mode & 0o777) == oct(0o755)
    assert oct(os.stat(presets / "arcnn_toy").st_mode & 0o777) == oct(0o777 & ~umask)


def test_a_run_trained_at_another_radius_ships_and_loads_at_it(tmp_path, monkeypatch):
    """make_preset.py writes a run's --radius into the card's overrides, and the commands feed the
    preset windows of that radius (not the registered model's)."""
    import dataclasses
    import json
    from types import SimpleNamespace

    from vcar_tf.cli import common
    from vcar_tf.models import presets as model_presets
    from vcar_tf.train.run import load_run

    monkeypatch.syspath_prepend(os.path.join(REPO, "scripts"))
    import make_preset

    model, cfg, _ = load_run(RUN)
    monkeypatch.setattr(make_preset, "load_run", lambda run, checkpoint: (model, dataclasses.replace(cfg, radius=2), 2))
    reports = [_run(tmp_path / split, "arcnn", 0.25, split) for split in ("val", "test")]
    assert make_preset.main([RUN, "--name", "r2", "--val", os.path.join(reports[0], "eval"),
                             "--test", os.path.join(reports[1], "eval"), "--out", str(tmp_path / "p")]) == 0
    card = json.loads((tmp_path / "p" / "r2" / "card.json").read_text())
    assert card["overrides"] == {"radius": 2}
    monkeypatch.setattr(common, "preset_card", lambda name: {**card, "model": "stdf_r3"})
    monkeypatch.setattr(model_presets, "from_preset", lambda name: "a model")
    args = SimpleNamespace(model_dir=None, preset="r2", checkpoint="latest", precision="fp32")
    assert common.load_model(args)[2] == 2  # stdf_r3 registers radius 3


def test_the_card_s_codec_settings_come_from_the_run_s_codec_folder(tmp_path):
    """A dataset with two x265 folders at QP37 (LDP, and LDP with the loop filters): a run trained
    with --codec_folder gets that folder's settings; without one it is ambiguous, an error."""
    import json

    make_preset = load_script("make_preset")
    for folder, deblock in (("x265_LDP", False), ("x265_LDP_dbk_sao", True)):
        sidecars = tmp_path / "train" / folder / "QP37" / "bitstreams"
        sidecars.mkdir(parents=True)
        (sidecars / "a_16x16_2.json").write_text(json.dumps({"settings": {"codec": "x265", "deblock": deblock}}))
    assert make_preset.codec_settings(str(tmp_path), "x265", 37, "x265_LDP_dbk_sao")["deblock"] is True
    assert make_preset.codec_settings(str(tmp_path), "x265", 37, "x265_LDP")["deblock"] is False
    with pytest.raises(VcarError, match="expected one set of x265 QP37 codec settings, found 2"):
        make_preset.codec_settings(str(tmp_path), "x265", 37)
