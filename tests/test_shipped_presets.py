"""The presets shipped in the package: each card is complete and its weights load (sha256 checked),
and `vcar-enhance --preset stdf_r3_x265_qp37`, as the README shows it, makes the embedded sample's
held-out sequence, compressed the preset's way (x265 LDP, deblocking and SAO, QP37), better. A
preset loads with no network and nothing read from ../shared."""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from vcar_tf.cli.enhance import main as enhance
from vcar_tf.data.codec import CodecSettings
from vcar_tf.data.sample import ensure_sample_dataset
from vcar_tf.metrics.psnr import psnr_y
from vcar_tf import models, presets
from vcar_tf.video.container import decode_frames
from vcar_tf.video.yuv import YuvSequence

README_PRESET = "stdf_r3_x265_qp37"
CARD_KEYS = ("name", "model", "codec", "qp", "codec_settings", "data", "train_config", "step", "recipe", "wall_time",
             "machine", "val", "test", "sha256")


@pytest.fixture(autouse=True)
def shipped(monkeypatch):
    monkeypatch.delenv("VCAR_TF_PRESETS", raising=False)


def test_every_shipped_preset_has_a_full_card_and_loads():
    names = presets.preset_names()
    assert README_PRESET in names
    for name in names:
        card = presets.preset_card(name)
        assert set(CARD_KEYS) <= set(card), name
        assert card["name"] == name and card["train_config"]["steps"] > 0
        for split in ("val", "test"):
            assert card[split]["sequences"] > 0 and np.isfinite(card[split]["delta_psnr"])
        model = models.from_preset(name)  # the package-level entry the issue names
        assert model.count_params() > 0


NO_NETWORK_NO_SHARED = """
import os, sys
shared = os.path.realpath(sys.argv[1]) + os.sep
def deny(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request"):
        raise RuntimeError(f"network use: {event} {args}")
    if event == "open" and isinstance(args[0], (str, bytes)):
        if os.path.realpath(os.fsdecode(args[0])).startswith(shared):
            raise RuntimeError(f"read from the shared folder: {args[0]}")
sys.addaudithook(deny)
import numpy as np
from vcar_tf.models import from_preset
model = from_preset(sys.argv[2])
out = model(np.full((1, 7, 24, 40, 1), 0.5, np.float32))
print("enhanced", tuple(out.shape))
"""


def test_a_preset_loads_and_runs_with_no_network_and_nothing_read_from_shared(tmp_path):
    """Every socket connection or name lookup and every file opened under ../shared fail in the child
    (an audit hook); it loads a preset with the fused op and enhances a window."""
    shared = os.path.join(REPO, "..", "shared")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VCAR_")}
    r = subprocess.run([sys.executable, "-c", NO_NETWORK_NO_SHARED, shared, README_PRESET], capture_output=True,
                       text=True, cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0 and "enhanced (1, 24, 40, 1)" in r.stdout, r.stderr[-3000:]
    hook = NO_NETWORK_NO_SHARED.split("import numpy")[0]
    for probe, message in (("open(os.path.join(sys.argv[1], 'x'))", "read from the shared folder"),
                           ("import socket; socket.getaddrinfo('localhost', 80)", "network use")):
        r = subprocess.run([sys.executable, "-c", hook + probe, shared], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode != 0 and message in r.stderr, r.stderr[-1000:]  # the hook itself works


def test_readme_preset_improves_the_embedded_sample(tmp_path):
    settings = CodecSettings(qp=37, deblock=True, sao=True)
    # a private cache: a second QP37 folder beside the default one would make the sample set ambiguous
    root = ensure_sample_dataset([settings], cache_dir=str(tmp_path / "cache"))
    stream, = glob.glob(os.path.join(root, "test", settings.folder, "bitstreams", "*.hevc"))
    raw, = glob.glob(os.path.join(root, "test", "raw", "*.yuv"))
    out = tmp_path / "enhanced.y4m"
    assert enhance([stream, str(out), "--preset", README_PRESET, "--no_progress"]) == 0
    truth = YuvSequence(raw).luma()
    compressed = [y for y, _, _ in decode_frames(stream)]
    enhanced = [y for y, _, _ in decode_frames(str(out))]
    assert len(enhanced) == len(compressed) == len(truth)
    before = np.mean([psnr_y(t, c) for t, c in zip(truth, compressed)])
    after = np.mean([psnr_y(t, e) for t, e in zip(truth, enhanced)])
    assert after > before + 0.05, (before, after)


def test_bf16_precision_evaluates_the_preset_within_0_05_db_of_fp32(tmp_path, capsys):
    """--precision bf16 builds the preset under mixed_bfloat16 and leaves the global policy as it was."""
    import keras

    from vcar_tf.cli.evaluate import main as evaluate
    from vcar_tf.precision import native_bf16_flags
    from vcar_tf.reporting import read_report

    settings = CodecSettings(qp=37, deblock=True, sao=True)
    root = ensure_sample_dataset([settings], cache_dir=str(tmp_path / "cache"))
    averages = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert evaluate(["--preset", "stdf_r3_x265_qp37", "--precision", precision, "--data", root,
                         "--out", str(out)]) == 0
        assert keras.mixed_precision.global_policy().name == "float32"
        average = [r for r in read_report(str(out))[1] if r["sequence"] == "average"][0]
        averages[precision] = float(average["delta_psnr"])
    assert averages["fp32"] > 0.05
    assert abs(averages["bf16"] - averages["fp32"]) <= 0.05, averages
    print(averages)
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:  # an export's precision is fixed when it is made
        evaluate(["--exported", str(tmp_path), "--precision", "bf16", "--out", str(tmp_path / "x")])
    assert refused.value.code == 2 and not (tmp_path / "x").exists()
    assert "--precision bf16 goes with --model_dir or --preset" in capsys.readouterr().err
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n")
    assert native_bf16_flags(str(cpuinfo)) == ("avx512_bf16",)
    cpuinfo.write_text("processor : 0\nflags\t\t: fpu sse avx2\n")
    assert native_bf16_flags(str(cpuinfo)) == () == native_bf16_flags(str(tmp_path / "missing"))


def test_precision_bf16_doc_is_the_one_its_script_makes_from_the_records(tmp_path):
    """docs/precision-bf16.md is what scripts/precision_bf16_doc.sh makes from docs/evaluations/ today
    (a bf16 record added without regenerating it, or a hand edit, fails)."""
    import shutil
    import subprocess

    from tests.conftest import REPO

    for folder in ("docs/evaluations/preset-eval", "docs/evaluations/preset-eval-bf16"):
        shutil.copytree(os.path.join(REPO, folder), tmp_path / folder)
    shutil.copy(os.path.join(REPO, "docs", "precision-bf16-notes.md"), tmp_path / "docs")
    r = subprocess.run(["bash", os.path.join(REPO, "scripts", "precision_bf16_doc.sh")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(os.path.join(REPO, "docs", "precision-bf16.md")) as f:
        assert (tmp_path / "docs" / "precision-bf16.md").read_text() == f.read()


def test_evaluating_a_preset_without_data_compresses_the_sample_the_preset_s_way():
    """vcar-evaluate --preset with no --data builds the embedded sample with the card's codec
    settings (x265 LDP with deblocking and SAO for the shipped presets), not the sample's default
    of loop filters off."""
    from types import SimpleNamespace

    from vcar_tf.cli.evaluate import sample_settings
    from vcar_tf.train.config import TrainConfig

    cfg = TrainConfig(model="stdf_r3", qp=32)
    settings = sample_settings(SimpleNamespace(preset="stdf_r3_x265_qp37"), cfg)
    assert (settings.codec_folder, settings.qp) == ("x265_LDP_dbk_sao", 32)
    assert sample_settings(SimpleNamespace(preset=None), cfg).folder == "x265_LDP/QP32"
