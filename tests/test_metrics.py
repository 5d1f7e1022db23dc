import numpy as np
import pytest
from skimage.metrics import structural_similarity

from tests.conftest import shared_file
from vcar_tf.data.codec import CodecSettings, encode
from vcar_tf.metrics import peak_valley_difference, psnr_sd, psnr_y, ssim
from vcar_tf.video import decode_frames, open_sequence


@pytest.fixture(scope="module")
def real_pairs(tmp_path_factory):
    """(raw, x265 QP37) luma pairs of real frames from two shared sequences."""
    pairs = []
    for name in ("tabletennis-b", "vid4walk"):
        seq = open_sequence(shared_file(name))
        src = [seq.frame(t) for t in range(4)]
        path = str(tmp_path_factory.mktemp("m") / "s.hevc")
        encode(iter(src), CodecSettings(qp=37), path)
        pairs += [(s[0], d[0]) for s, d in zip(src, decode_frames(path))]
    return pairs


def test_ssim_equals_scikit_image_defaults(real_pairs):
    for ref, test in real_pairs:
        want = structural_similarity(ref / 255.0, test / 255.0, data_range=1.0)
        assert abs(ssim(ref, test) - want) < 1e-6
        assert 0.5 < want < 1.0


def test_gaussian_ssim_equals_scikit_image_matlab_settings(real_pairs):
    for ref, test in real_pairs[:3]:
        want = structural_similarity(ref / 255.0, test / 255.0, data_range=1.0, gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False)
        got = ssim(ref, test, gaussian=True)
        assert abs(got - want) < 1e-6
        assert abs(got - ssim(ref, test)) > 1e-4  # it is a different measure


def test_psnr_on_float_without_rounding():
    ref = np.zeros((8, 8))
    test = np.full((8, 8), 0.01)  # MSE 1e-4 -> 40 dB exactly; not representable in uint8
    assert psnr_y(ref, test) == pytest.approx(40.0)
    a = np.arange(64, dtype=np.uint8).reshape(8, 8)
    b = a.copy()
    b[0, 0] += 20  # MSE = (20/255)^2 / 64
    assert psnr_y(a, b) == pytest.approx(10 * np.log10(64 * 255**2 / 400))


def test_psnr_is_capped_at_60_db_so_an_exact_frame_keeps_a_sequence_finite():
    """libvmaf's 8-bit ceiling: an identical frame scores 60 dB (it was inf, and a sequence with one
    black frame that compression kept exactly then had ΔPSNR -inf or NaN); below it, the formula."""
    from vcar_tf.metrics.sequence import frame_metrics, sequence_row

    a = np.arange(64, dtype=np.uint8).reshape(8, 8)
    b = a.copy()
    b[0, 0] += 2  # 60.17 dB by the formula
    assert psnr_y(a, a) == psnr_y(a, b) == 60.0
    assert psnr_y(a, a.astype(np.float64) / 255 + 1.1e-3) == pytest.approx(10 * np.log10(1 / 1.1e-3 ** 2))  # 59.2
    rng = np.random.default_rng(0)
    raw = [np.zeros((16, 16), np.uint8), rng.integers(0, 256, (16, 16), dtype=np.uint8)]
    compressed = [raw[0], np.clip(raw[1].astype(int) + rng.integers(-6, 7, (16, 16)), 0, 255).astype(np.uint8)]
    enhanced = [np.full((16, 16), 0.002), raw[1] / 255.0 + 0.003]
    row = sequence_row("test", "fade", 16, 16, *frame_metrics(raw, compressed), *frame_metrics(raw, enhanced))
    assert np.isfinite([row["psnr"], row["psnr_enh"], row["delta_psnr"], row["sd"], row["pvd"]]).all()
    assert row["psnr"] < 60 and row["delta_psnr"] != 0


def test_sd_and_pvd_on_a_known_curve():
    curve = [30, 32, 30, 31, 29, 33, 30]
    # peaks: 32 (valleys 30 before? none; 30 after), 31 (30, 29), 33 (29, 30 at the end is no valley)
    # strict interior extrema: peaks at 1, 3, 5; valleys at 2, 4
    expected = np.mean([32 - 30, 31 - (30 + 29) / 2, 33 - 29])
    assert peak_valley_difference(curve) == pytest.approx(expected)
    assert psnr_sd(curve) == pytest.approx(np.std(curve))
    assert peak_valley_difference([30, 31, 32, 33]) == 0.0
