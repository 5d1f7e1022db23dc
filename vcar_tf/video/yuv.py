"""Raw 8-bit planar YUV 4:2:0 files: name parsing, memory-mapped reading, atomic writing."""

import os
import re

import numpy as np

from vcar_tf.errors import VcarError
from vcar_tf.fileutil import atomic_path

# MFQE 2.0 names: Name_WxH_nfs.yuv or NAME_WxH.yuv
_NAME_RE = re.compile(r"^(?P<name>.+?)_(?P<w>\d+)x(?P<h>\d+)(?:_(?P<n>\d+))?$")


def parse_yuv_name(path):
    """Return (name, width, height, frames or None) from an MFQE-style file name, or None."""
    stem = os.path.splitext(os.path.basename(path))[0]
    m = _NAME_RE.match(stem)
    if not m:
        return None
    n = m.group("n")
    return m.group("name"), int(m.group("w")), int(m.group("h")), int(n) if n else None


def check_even_size(width, height, what):
    if width <= 0 or height <= 0:
        raise VcarError(f"{what}: invalid size {width}x{height}")
    if width % 2 or height % 2:
        raise VcarError(f"{what}: YUV 4:2:0 needs an even width and height, got {width}x{height}")


def yuv_name(name, width, height, frames):
    """The file name prepared datasets use: NAME_WxH_N.yuv."""
    return f"{name}_{width}x{height}_{frames}.yuv"


def frame_bytes(width, height):
    return width * height * 3 // 2


class YuvSequence:
    """Memory-mapped random access to the frames of a raw YUV 4:2:0 file.

    Nothing is read until a frame is asked for, so files larger than RAM work.
    """

    def __init__(self, path, width=None, height=None, frames=None, name=None):
        parsed = parse_yuv_name(path)
        if width is None or height is None:
            if parsed is None:
                raise VcarError(
                    f"{path}: cannot tell the frame size; name it NAME_WxH[_N].yuv or pass width and height")
            _, width, height, name_frames = parsed
            frames = frames if frames is not None else name_frames
        self.path = path
        self.name = name or (parsed[0] if parsed else os.path.splitext(os.path.basename(path))[0])
        self.width, self.height = int(width), int(height)
        check_even_size(self.width, self.height, path)
        try:
            size = os.path.getsize(path)
        except OSError as e:
            raise VcarError(f"{path}: {e.strerror}") from None
        fb = frame_bytes(self.width, self.height)
        if size == 0:
            raise VcarError(f"{path}: the file holds zero frames")
        if size % fb:
            raise VcarError(
                f"{path}: size {size} B is not a multiple of the {self.width}x{self.height} "
                f"frame size {fb} B (truncated or wrong size)")
        count = size // fb
        if frames is not None and frames != count:
            raise VcarError(f"{path}: expected {frames} frames, the file holds {count}")
        self.num_frames = count
        self._mm = np.memmap(path, dtype=np.uint8, mode="r", shape=(count, fb))

    def __len__(self):
        return self.num_frames

    def _row(self, t):
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} out of range 0..{self.num_frames - 1}")
        return self._mm[t]

    def y(self, t):
        """Luma of frame t, (H, W) uint8 (a view into the mapped file)."""
        return self._row(t)[: self.width * self.height].reshape(self.height, self.width)

    def frame(self, t):
        """Frame t as (y, u, v) uint8 planes."""
        return split_planes(self._row(t), self.width, self.height)

    def luma(self):
        """All luma planes, (T, H, W) uint8 view."""
        wh = self.width * self.height
        return self._mm[:, :wh].reshape(self.num_frames, self.height, self.width)

    def __iter__(self):
        for t in range(self.num_frames):
            yield self.frame(t)


def split_planes(buf, width, height):
    wh = width * height
    c = wh // 4
    y = buf[:wh].reshape(height, width)
    u = buf[wh: wh + c].reshape(height // 2, width // 2)
    v = buf[wh + c: wh + 2 * c].reshape(height // 2, width // 2)
    return y, u, v


def write_yuv(path, frames):
    """Write an iterable of (y, u, v) planes to `path` atomically; returns the frame count."""
    count = 0
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            for y, u, v in frames:
                check_even_size(y.shape[1], y.shape[0], path)
                for p in (y, u, v):
                    f.write(np.ascontiguousarray(p, dtype=np.uint8).tobytes())
                count += 1
        if count == 0:
            raise VcarError(f"{path}: no frames to write")
    return count
