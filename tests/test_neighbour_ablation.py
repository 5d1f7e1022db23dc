"""scripts/neighbour_ablation.py: the centre-only windows really hold the centre frame, the two
evaluations differ only there, and models without neighbours to ablate are refused."""

import os

import numpy as np
import tensorflow as tf

from tests.conftest import REPO, load_script, run_cli

SCRIPT = os.path.join(REPO, "scripts", "neighbour_ablation.py")


def test_centre_only_feeds_the_centre_frame_in_every_slot():
    first_frame = lambda x, training=False: x[:, 0]  # noqa: E731  (the window's oldest frame)
    windows = np.random.default_rng(0).random((2, 7, 5, 6, 1), dtype=np.float32)
    out = load_script("neighbour_ablation").centre_only(first_frame, 3)(windows).numpy()
    np.testing.assert_array_equal(out, windows[:, 3])


def test_a_temporal_mean_gains_nothing_from_the_centre_alone(sample_cache):
    from vcar_tf.data.layout import find_pairs

    _, sample = sample_cache
    pairs = find_pairs(os.path.join(sample, "test"), 37)
    mean_of_window = lambda x, training=False: tf.reduce_mean(x, axis=1)  # noqa: E731
    rows = load_script("neighbour_ablation").ablation_rows(mean_of_window, 2, pairs, "test")
    assert [r[0] for r in rows] == [p.name for p in pairs]
    for _, window, alone, window_ssim, alone_ssim in rows:
        assert abs(alone) < 1e-5 and abs(alone_ssim) < 1e-5  # the centre frame itself (float32 round trip)
        assert abs(window) > 0.01  # averaging 5 frames does change them


def test_models_without_neighbours_to_ablate_are_one_line_errors(sample_cache, tmp_path):
    _, sample = sample_cache
    data = os.path.join(sample, "test")
    for preset in ("dncnn_x265_qp37", "rfda_x265_qp37"):
        r = run_cli(SCRIPT, "--preset", preset, "--data", data, "--qp", "37")
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "not a multi-frame window model" in r.stderr
    r = run_cli(SCRIPT, "--preset", "stdf_r3_x265_qp37", "--data", str(tmp_path / "none"), "--qp", "37")
    assert r.returncode == 2 and "error: dataset not found" in r.stderr
