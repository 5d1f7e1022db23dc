import hashlib
import os

import numpy as np
import pytest

from tests.conftest import SHARED_DATA, make_planes, shared_rows
from vcar_tf.errors import VcarError
from vcar_tf.video import decode_frames, open_sequence, write_frames


def test_shared_data_decodes_bit_exactly():
    rows = shared_rows()
    assert len(rows) == 39
    for row in rows:
        digest = hashlib.sha256()
        count = 0
        for y, u, v in decode_frames(os.path.join(SHARED_DATA, row["file"])):
            assert y.shape == (int(row["height"]), int(row["width"]))
            for plane in (y, u, v):
                digest.update(np.ascontiguousarray(plane).tobytes())
            count += 1
        assert count == int(row["frames"]), row["name"]
        assert digest.hexdigest() == row["yuv420p_sha256"], row["name"]


@pytest.mark.parametrize("ext", [".mkv", ".mp4", ".h264"])
def test_write_video_lossless_roundtrip(tmp_path, ext):
    frames = [make_planes(64, 32, t) for t in range(4)]
    path = str(tmp_path / f"clip{ext}")
    assert write_frames(path, frames, codec="libx264", options={"qp": "0"}) == 4
    seq = open_sequence(path)
    assert (seq.width, seq.height, seq.num_frames) == (64, 32, 4)
    for t in range(4):
        for got, want in zip(seq.frame(t), frames[t]):
            np.testing.assert_array_equal(got, want)


def test_write_yuv_through_write_frames(tmp_path):
    frames = [make_planes(16, 8, t) for t in range(2)]
    path = str(tmp_path / "a_16x8.yuv")
    write_frames(path, frames)
    np.testing.assert_array_equal(open_sequence(path).y(1), frames[1][0])


def test_undecodable_and_missing_files(tmp_path):
    bad = tmp_path / "junk.mp4"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(VcarError, match="cannot decode|zero frames|no video"):
        list(decode_frames(str(bad)))
    with pytest.raises(VcarError, match="no such file"):
        open_sequence(str(tmp_path / "missing.mkv"))


def test_a_source_of_another_format_is_read_as_8_bit_420_with_a_note(tmp_path, capsys):
    """A 10-bit source becomes 8-bit 4:2:0 (the datasets' format), said once, not silently."""
    import av

    path = str(tmp_path / "ten.mkv")
    with av.open(path, "w") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 16, 8, "yuv420p10le"
        for t in range(3):
            y = np.full((8, 16), 64 * 4 + 40 * t, np.uint16)  # 10-bit levels 256, 296, 336
            c = np.full((4, 8), 512, np.uint16)
            frame = av.VideoFrame.from_ndarray(np.concatenate([y.reshape(-1), c.reshape(-1), c.reshape(-1)])
                                               .reshape(12, 16), format="yuv420p10le")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    planes = list(decode_frames(path))
    assert [int(p[0].mean()) for p in planes] == [64, 74, 84] and planes[0][0].dtype == np.uint8
    assert capsys.readouterr().err.count("is yuv420p10le: read as 8-bit 4:2:0") == 1
