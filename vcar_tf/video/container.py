"""Any container or codec FFmpeg decodes (mp4, mkv, hevc, h264, y4m...), through PyAV."""

import os
import sys
from fractions import Fraction

import av
import numpy as np

from vcar_tf.errors import VcarError
from vcar_tf.fileutil import atomic_path
from vcar_tf.video.yuv import check_even_size, split_planes

# Raw elementary streams need their demuxer named; containers are probed.
_RAW_FORMATS = {".hevc": "hevc", ".h265": "hevc", ".265": "hevc", ".h264": "h264", ".264": "h264"}


def _open_input(path):
    fmt = _RAW_FORMATS.get(os.path.splitext(path)[1].lower())
    try:
        return av.open(path, format=fmt)
    except FileNotFoundError:
        raise VcarError(f"{path}: no such file") from None
    except (av.error.FFmpegError, ValueError) as e:
        raise VcarError(f"{path}: cannot decode ({e})") from None


def decode_frames(path):
    """Yield (y, u, v) uint8 planes of every frame, converted to YUV 4:2:0."""
    container = _open_input(path)
    try:
        if not container.streams.video:
            raise VcarError(f"{path}: no video stream")
        count = 0
        try:
            for frame in container.decode(video=0):
                if frame.format.name != "yuv420p":
                    if count == 0:
                        print(f"note: {path} is {frame.format.name}: read as 8-bit 4:2:0 (yuv420p), the format "
                              "of vcar_tf's datasets", file=sys.stderr)
                    frame = frame.reformat(format="yuv420p")
                check_even_size(frame.width, frame.height, path)
                yield split_planes(frame.to_ndarray().reshape(-1), frame.width, frame.height)
                count += 1
        except av.error.FFmpegError as e:
            raise VcarError(f"{path}: cannot decode ({e})") from None
        if count == 0:
            raise VcarError(f"{path}: zero frames decoded")
    finally:
        container.close()


class DecodedSequence:
    """A container's frames decoded into memory, with the same interface as YuvSequence."""

    def __init__(self, path, name=None):
        from vcar_tf.video.yuv import parse_yuv_name

        planes = list(decode_frames(path))
        self.path = path
        parsed = parse_yuv_name(path)
        self.name = name or (parsed[0] if parsed else os.path.splitext(os.path.basename(path))[0])
        self.height, self.width = planes[0][0].shape
        self.num_frames = len(planes)
        self._y = np.stack([p[0] for p in planes])
        self._u = np.stack([p[1] for p in planes])
        self._v = np.stack([p[2] for p in planes])

    def __len__(self):
        return self.num_frames

    def y(self, t):
        return self._y[t]

    def frame(self, t):
        return self._y[t], self._u[t], self._v[t]

    def luma(self):
        return self._y

    def __iter__(self):
        for t in range(self.num_frames):
            yield self.frame(t)


def frame_to_av(y, u, v):
    h, w = y.shape
    buf = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(h * 3 // 2, w)
    return av.VideoFrame.from_ndarray(buf, format="yuv420p")


def encode_frames(path, frames, codec, fps=25, options=None, fmt=None, tag_frame=None):
    """Encode (y, u, v) frames with an FFmpeg encoder into `path` (written in place); returns the
    frame count. `tag_frame(frame, index)` may replace each av.VideoFrame before it is encoded."""
    out = av.open(path, "w", format=fmt or _RAW_FORMATS.get(os.path.splitext(path)[1].lower())
                  or _guess_format(path))
    count = 0
    try:
        stream = None
        for y, u, v in frames:
            if stream is None:
                stream = out.add_stream(codec, rate=fps)
                stream.height, stream.width = y.shape
                stream.pix_fmt = "yuv420p"
                stream.options = dict(options or {})
            frame = frame_to_av(y, u, v)
            frame.pts = count
            frame.time_base = Fraction(1, fps)
            if tag_frame is not None:
                frame = tag_frame(frame, count)
            for pkt in stream.encode(frame):
                out.mux(pkt)
            count += 1
        if stream is None:
            raise VcarError(f"{path}: zero frames to encode")
        for pkt in stream.encode():
            out.mux(pkt)
    except av.error.FFmpegError as e:
        raise VcarError(f"{codec} failed: {e}") from None
    finally:
        out.close()
    return count


def write_video(path, frames, codec="libx264", fps=25, options=None):
    """Encode (y, u, v) frames into a container chosen by the extension, atomically."""
    with atomic_path(path) as tmp:
        return encode_frames(tmp, frames, codec, fps, options,
                             fmt=_RAW_FORMATS.get(os.path.splitext(path)[1].lower()) or _guess_format(path))


def _guess_format(path):
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    return {"mkv": "matroska", "mp4": "mp4", "mov": "mov", "y4m": "yuv4mpegpipe", "avi": "avi"}.get(ext, ext)
