import numpy as np
import pytest

from tests.conftest import shared_file
from vcar_tf.data import codec as codec_mod
from vcar_tf.data.codec import CodecSettings, encode, encoder_version, hm_ldp_qp, sidecar, x265_cli
from vcar_tf.errors import VcarError
from vcar_tf.metrics import psnr_y
from vcar_tf.video import decode_frames, open_sequence


def _encode_psnr(tmp_path, name, settings, frames=None):
    seq = open_sequence(shared_file(name))
    n = min(frames or seq.num_frames, seq.num_frames)
    src = [seq.frame(t) for t in range(n)]
    path = str(tmp_path / f"{name}-{settings.codec}-{settings.qp}.bin")
    assert encode(iter(src), settings, path) == n
    decoded = list(decode_frames(path))
    assert len(decoded) == n
    with open(path, "rb") as f:
        bits = f.read()
    return np.array([psnr_y(s[0], d[0]) for s, d in zip(src, decoded)]), bits, decoded


# Ranges measured with x265 on the shared sequences (see the foundation issue).
@pytest.mark.parametrize("qp,low,high", [(22, 39, 42), (37, 27, 32), (42, 23, 29)])
@pytest.mark.parametrize("name", ["tabletennis-b", "ciscovt2people"])
def test_x265_psnr_ranges_on_real_sequences(tmp_path, name, qp, low, high):
    psnr, bits, _ = _encode_psnr(tmp_path, name, CodecSettings(qp=qp), frames=24)
    assert low <= psnr.mean() <= high, psnr.mean()
    info = sidecar(CodecSettings(qp=qp), bits, 24, 352, 240)
    assert info["encoder_version"].startswith("x265")
    assert info["bitrate_kbps"] > 0 and "no-deblock=1" in info["encoder_params"]


def test_deblocking_switch_uses_no_deblock(tmp_path):
    off = CodecSettings(qp=37)
    on = CodecSettings(qp=37, deblock=True, sao=True)
    assert "no-deblock=1" in off.encoder_params() and "deblock=0" not in off.encoder_params()
    assert "no-sao=1" in off.encoder_params() and "no-sao" not in on.encoder_params()
    p_off, _, d_off = _encode_psnr(tmp_path, "ciscovt2people", off, frames=6)
    p_on, _, d_on = _encode_psnr(tmp_path, "ciscovt2people", on, frames=6)
    assert not np.array_equal(d_off[0][0], d_on[0][0])  # the loop filters really change the output
    assert off.folder == "x265_LDP/QP37" and on.folder == "x265_LDP_dbk_sao/QP37"


@pytest.mark.skipif(not x265_cli(), reason="the x265 command is not installed (apt-get install x265)")
def test_hm_ldp_offsets_make_peaks_and_valleys(tmp_path):
    assert [hm_ldp_qp(37, poc) for poc in range(9)] == [37, 40, 39, 40, 38, 40, 39, 40, 38]
    flat, _, _ = _encode_psnr(tmp_path, "tabletennis-b", CodecSettings(qp=37))
    hm, bits, _ = _encode_psnr(tmp_path, "tabletennis-b", CodecSettings(qp=37, hm_ldp_offsets=True))
    poc = np.arange(len(hm))
    peaks, valleys = hm[(poc % 4 == 0) & (poc > 0)], hm[poc % 2 == 1]
    assert peaks.mean() - valleys.mean() > 0.2, (peaks.mean(), valleys.mean())
    # in the flat encoding the same frames show no such gap
    assert abs(flat[(poc % 4 == 0) & (poc > 0)].mean() - flat[poc % 2 == 1].mean()) < 0.1
    assert hm[1:].mean() < flat[1:].mean()  # the P frames are coded at QP + 1..3
    assert abs(hm[0] - flat[0]) < 0.1  # the I frame stays at the base QP
    assert encoder_version(bits).startswith("x265")


@pytest.mark.skipif(not x265_cli(), reason="the x265 command is not installed (apt-get install x265)")
def test_hm_ldp_offsets_encode_pictures_smaller_than_a_ctu_and_clip_the_qp_at_51(tmp_path):
    assert [hm_ldp_qp(50, poc) for poc in range(5)] == [50, 51, 51, 51, 51]
    rng = np.random.default_rng(0)
    frames = [tuple(rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((48, 64), (24, 32), (24, 32)))
              for _ in range(3)]
    for qp in (37, 50):  # 48 rows are under x265's default CTU of 64; QP 50 + 3 was an invalid qpfile line
        out = str(tmp_path / f"qp{qp}.hevc")
        assert encode(frames, CodecSettings(qp=qp, hm_ldp_offsets=True), out) == 3
        assert len(list(decode_frames(out))) == 3


def test_x264_hm_ldp_offsets(tmp_path):
    hm, _, _ = _encode_psnr(tmp_path, "tabletennis-b", CodecSettings(codec="x264", qp=37, hm_ldp_offsets=True),
                            frames=33)
    poc = np.arange(len(hm))
    # ROI offsets through AQ give a weaker pattern than the x265 qpfile (measured 0.17 dB)
    assert hm[(poc % 4 == 0) & (poc > 0)].mean() - hm[poc % 2 == 1].mean() > 0.1


def test_x264_variant(tmp_path):
    s = CodecSettings(codec="x264", qp=37)
    psnr, bits, _ = _encode_psnr(tmp_path, "ciscovt2people", s, frames=8)
    assert 26 <= psnr.mean() <= 34
    assert sidecar(s, bits, 8, 320, 192)["encoder_version"].startswith("x264")
    assert s.folder == "x264_LDP/QP37"


def test_bad_settings(monkeypatch, tmp_path):
    with pytest.raises(VcarError, match="QP must be in 0..51"):
        CodecSettings(qp=52)
    with pytest.raises(VcarError, match="unknown codec"):
        CodecSettings(codec="vp9")
    with pytest.raises(VcarError, match="--crf is for --gop ra"):
        CodecSettings(crf=30)
    with pytest.raises(VcarError, match="unknown GOP"):
        CodecSettings(gop="ldb")
    monkeypatch.setattr(codec_mod.av, "codecs_available", {"h264", "hevc"})
    with pytest.raises(VcarError, match="libx265 is missing from this FFmpeg build"):
        encode(iter([]), CodecSettings(), str(tmp_path / "x.hevc"))


def test_random_access_settings_and_ldp_json_unchanged():
    ra = CodecSettings(gop="ra", crf=33, deblock=True, sao=True)
    assert ra.folder == "x265_RA_dbk_sao/CRF33" and ra.qp is None and ra.ref is None
    assert ra.encoder_params() == "crf=33:frame-threads=1:log-level=error"  # x265's own GOP otherwise
    assert CodecSettings(gop="ra").folder == "x265_RA/QP37"
    assert "no-deblock=1" in CodecSettings(gop="ra").encoder_params()
    # LDP sidecars keep their keys, so datasets prepared before stay cached
    assert set(CodecSettings().to_json()) == {"codec", "qp", "deblock", "sao", "hm_ldp_offsets", "ref", "preset", "fps"}
    assert {"gop": "ra", "crf": 33}.items() <= ra.to_json().items()
