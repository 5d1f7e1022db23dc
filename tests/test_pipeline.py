import numpy as np
import pytest

from tests.conftest import make_planes
from vcar_tf.data.layout import find_pairs
from vcar_tf.data.pipeline import (PatchSampler, PipelineConfig, augment_planes, iter_sequence_windows,
                                   make_dataset, window_indices)
from vcar_tf.errors import VcarError
from vcar_tf.video import write_yuv


def _dataset(tmp_path, lengths=(9, 5), size=(40, 32)):
    """A dataset whose compressed frames are their raw frames inverted (255 - v): an input taken
    from raw or a target taken from the compressed frames shows."""
    w, h = size
    for i, n in enumerate(lengths):
        frames = [make_planes(w, h, t, seed=i) for t in range(n)]
        name = f"seq{i}_{w}x{h}_{n}.yuv"
        write_yuv(str(tmp_path / "raw" / name), frames)
        write_yuv(str(tmp_path / "x265_LDP/QP37" / name), [tuple(255 - p for p in f) for f in frames])
    return find_pairs(str(tmp_path), 37)


def test_window_indices_are_clipped():
    assert window_indices(0, 10, 3).tolist() == [0, 0, 0, 0, 1, 2, 3]
    assert window_indices(9, 10, 3).tolist() == [6, 7, 8, 9, 9, 9, 9]
    assert window_indices(5, 10, 3).tolist() == [2, 3, 4, 5, 6, 7, 8]
    assert window_indices(1, 2, 3).tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_window_samples_indices_crop_and_identical_augmentation(tmp_path):
    pairs = _dataset(tmp_path)
    cfg = PipelineConfig(radius=2, patch=16, batch=4, seed=3)
    sampler = PatchSampler(pairs, cfg)
    assert len(sampler) == 9 + 5
    seen_aug = set()
    for k in range(60):
        s, t, y0, x0, rot, flip = sampler.describe(k)
        seen_aug.add((rot, flip))
        x, y = sampler.sample(k)
        raw, comp = sampler.sequences[s]
        idx = window_indices(t, comp.num_frames, 2)
        want = augment_planes(comp.luma()[idx, y0:y0 + 16, x0:x0 + 16], rot, flip)
        np.testing.assert_array_equal(x[..., 0], want.astype(np.float32) / 255)
        want_y = augment_planes(raw.luma()[t:t + 1, y0:y0 + 16, x0:x0 + 16], rot, flip)[0]
        np.testing.assert_array_equal(y[..., 0], want_y.astype(np.float32) / 255)  # the raw centre, same crop
        np.testing.assert_allclose(y, 1 - x[2], atol=1e-6)  # and the same augmentation as the input's centre
        assert x.shape == (5, 16, 16, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert len(seen_aug) == 8  # all four rotations, with and without flip
    # every (sequence, frame) is visited exactly once per epoch
    assert sorted((sampler.describe(k)[:2]) for k in range(14)) == sorted(
        [(0, t) for t in range(9)] + [(1, t) for t in range(5)])



def test_centre_noise_touches_only_the_centre_of_about_half_the_windows(tmp_path):
    pairs = _dataset(tmp_path)
    clean = PatchSampler(pairs, PipelineConfig(radius=2, patch=16, seed=3))
    noisy = PatchSampler(pairs, PipelineConfig(radius=2, patch=16, seed=3, centre_noise=0.05))
    changed = 0
    for k in range(60):
        (x, y), (xn, yn) = clean.sample(k), noisy.sample(k)
        np.testing.assert_array_equal(y, yn)  # the target, crop and augmentation are the clean run's
        np.testing.assert_array_equal(np.delete(x, 2, axis=0), np.delete(xn, 2, axis=0))  # neighbours untouched
        if not np.array_equal(x[2], xn[2]):
            changed += 1
            assert 0.03 < np.std(xn[2] - x[2]) < 0.07 and 0 <= xn.min() and xn.max() <= 1
        np.testing.assert_array_equal(xn, noisy.sample(k)[0])  # deterministic per sample index
    assert 20 <= changed <= 40
    for bad in (-0.1, 1.0):
        with pytest.raises(VcarError, match="centre_noise"):
            PipelineConfig(centre_noise=bad)
    with pytest.raises(VcarError, match="window mode"):
        PipelineConfig(mode="clip", centre_noise=0.05)


def test_clip_mode(tmp_path):
    pairs = _dataset(tmp_path)
    sampler = PatchSampler(pairs, PipelineConfig(mode="clip", clip_length=6, patch=16, augment=False))
    assert len(sampler) == 9 - 6 + 1  # the 5-frame sequence is too short for a 6-frame clip
    s, t, y0, x0, _, _ = sampler.describe(0)
    x, y = sampler.sample(0)
    raw, _ = sampler.sequences[s]
    assert x.shape == y.shape == (6, 16, 16, 1)
    for j in range(6):
        np.testing.assert_array_equal(y[j, ..., 0], raw.y(t + j)[y0:y0 + 16, x0:x0 + 16] / np.float32(255))
    with pytest.raises(VcarError, match="long enough"):
        PatchSampler(pairs, PipelineConfig(mode="clip", clip_length=20, patch=16))


def test_tf_dataset_is_deterministic_resumable_and_batched(tmp_path):
    pairs = _dataset(tmp_path)
    cfg = PipelineConfig(radius=3, patch=16, batch=4, seed=7)
    a = list(make_dataset(pairs, cfg).take(5))
    b = list(make_dataset(pairs, cfg).take(5))
    c = list(make_dataset(pairs, PipelineConfig(radius=3, patch=16, batch=4, seed=8)).take(1))
    resumed = list(make_dataset(pairs, cfg, start_sample=3 * 4).take(1))
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0])
    np.testing.assert_array_equal(resumed[0][0], a[3][0])
    assert a[0][0].shape == (4, 7, 16, 16, 1) and a[0][1].shape == (4, 16, 16, 1)
    spec = make_dataset(pairs, cfg).element_spec
    assert spec[0].shape.as_list() == [4, 7, 16, 16, 1]  # static batch from drop_remainder


def test_eval_iterator_walks_whole_sequence(tmp_path):
    pairs = _dataset(tmp_path, lengths=(4,))
    items = list(iter_sequence_windows(pairs[0], radius=3))
    assert [t for t, _, _ in items] == [0, 1, 2, 3]
    raw, comp = pairs[0].open()
    t, window, target = items[0]
    assert window.shape == (7, 32, 40, 1) and target.shape == (32, 40, 1)
    for j, src in enumerate(window_indices(0, 4, 3)):
        np.testing.assert_array_equal(window[j, ..., 0], comp.y(src) / np.float32(255))


def test_patch_larger_than_frames(tmp_path):
    with pytest.raises(VcarError, match="smaller than patch 96"):
        PatchSampler(_dataset(tmp_path), PipelineConfig(patch=96))


def test_pipeline_on_real_shared_data(shared_qp37):
    out, _ = shared_qp37
    pairs = find_pairs(f"{out}/train", 37)
    x, y = next(iter(make_dataset(pairs, PipelineConfig(patch=96, batch=2)).take(1)))
    assert x.shape == (2, 7, 96, 96, 1) and float(np.std(x)) > 0.01
