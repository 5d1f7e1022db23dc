"""The presets shipped in the package: each card is complete and its weights load (sha256 checked),
and `vcar-enhance --preset stdf_r3_x265_qp37`, as the README shows it, makes the embedded sample's
held-out sequence, compressed the preset's way (x265 LDP, deblocking and SAO, QP37), better."""

import glob
import os

import numpy as np
import pytest

from vcar_tf.cli.enhance import main as enhance
from vcar_tf.data.codec import CodecSettings
from vcar_tf.data.sample import ensure_sample_dataset
from vcar_tf.metrics.psnr import psnr_y
from vcar_tf import models
from vcar_tf.models import presets
from vcar_tf.video.container import decode_frames
from vcar_tf.video.yuv import YuvSequence

README_PRESET = "stdf_r3_x265_qp37"
CARD_KEYS = ("name", "model", "codec", "qp", "data", "train_config", "recipe", "wall_time", "machine", "val", "test",
             "sha256")


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
