import os

import numpy as np
import pytest

from tests.conftest import make_planes
from vcar_tf.errors import VcarError
from vcar_tf.video import YuvSequence, open_sequence, parse_yuv_name, write_yuv, yuv_name


@pytest.mark.parametrize("name,expected", [
    ("Kimono_1920x1080_240.yuv", ("Kimono", 1920, 1080, 240)),
    ("BQMall_832x480.yuv", ("BQMall", 832, 480, None)),
    ("/a/b/Basketball_Pass_416x240_500.yuv", ("Basketball_Pass", 416, 240, 500)),
    ("davis-dog-ds2_426x240_50.yuv", ("davis-dog-ds2", 426, 240, 50)),
    ("nosize.yuv", None),
])
def test_parse_mfqe_names(name, expected):
    assert parse_yuv_name(name) == expected


def test_roundtrip_and_random_access(tmp_path):
    w, h, n = 64, 48, 5
    frames = [make_planes(w, h, t) for t in range(n)]
    path = str(tmp_path / yuv_name("clip", w, h, n))
    assert write_yuv(path, frames) == n
    seq = open_sequence(path)
    assert (seq.name, seq.width, seq.height, seq.num_frames) == ("clip", w, h, n)
    for t in (3, 0, 4):
        for got, want in zip(seq.frame(t), frames[t]):
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(seq.luma()[2], frames[2][0])
    assert isinstance(seq._mm, np.memmap)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_explicit_size_overrides_missing_name(tmp_path):
    path = str(tmp_path / "noname.yuv")
    write_yuv(path, [make_planes(32, 16, t) for t in range(3)])
    seq = YuvSequence(path, width=32, height=16)
    assert seq.num_frames == 3
    with pytest.raises(VcarError, match="cannot tell the frame size"):
        YuvSequence(path)


def test_random_access_does_not_read_the_file(tmp_path):
    # A sparse 1080p file of 20,000 frames (62 GB apparent size): frame access must be instant.
    path = tmp_path / "huge_1920x1080_20000.yuv"
    with open(path, "wb") as f:
        f.truncate(1920 * 1080 * 3 // 2 * 20000)
    seq = YuvSequence(str(path))
    assert seq.num_frames == 20000
    assert seq.y(19999).shape == (1080, 1920) and seq.y(19999).max() == 0


@pytest.mark.parametrize("setup,message", [
    (lambda p: p.write_bytes(b"\0" * (32 * 16 * 3 // 2 * 2 + 7)), "not a multiple"),
    (lambda p: p.write_bytes(b""), "zero frames"),
])
def test_bad_files(tmp_path, setup, message):
    p = tmp_path / "bad_32x16.yuv"
    setup(p)
    with pytest.raises(VcarError, match=message):
        YuvSequence(str(p))


def test_odd_size_and_frame_count_mismatch(tmp_path):
    p = tmp_path / "odd_33x16.yuv"
    p.write_bytes(b"\0" * 1000)
    with pytest.raises(VcarError, match="even width and height"):
        YuvSequence(str(p))
    p = tmp_path / "short_32x16_5.yuv"
    p.write_bytes(b"\0" * (32 * 16 * 3 // 2 * 4))
    with pytest.raises(VcarError, match="expected 5 frames, the file holds 4"):
        YuvSequence(str(p))
