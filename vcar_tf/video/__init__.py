"""Video I/O: raw YUV 4:2:0 and any container FFmpeg decodes."""

import os

from vcar_tf.errors import VcarError
from vcar_tf.video.container import DecodedSequence, decode_frames, write_video
from vcar_tf.video.stream import Frame, VideoInput, VideoOutput, read_stream_qp
from vcar_tf.video.yuv import (YuvSequence, parse_yuv_name, split_planes, write_yuv,
                               yuv_name)

VIDEO_EXTENSIONS = (".yuv", ".mkv", ".mp4", ".mov", ".avi", ".y4m", ".hevc", ".h265", ".265",
                    ".h264", ".264", ".webm")


def open_sequence(path, width=None, height=None, name=None):
    """Open a .yuv file (memory-mapped) or any FFmpeg-decodable file (decoded into memory)."""
    if not os.path.exists(path):
        raise VcarError(f"{path}: no such file")
    if path.lower().endswith(".yuv"):
        return YuvSequence(path, width, height, name=name)
    return DecodedSequence(path, name=name)


def write_frames(path, frames, **kwargs):
    """Write (y, u, v) frames as raw .yuv or, for any other extension, as encoded video."""
    if path.lower().endswith(".yuv"):
        return write_yuv(path, frames)
    return write_video(path, frames, **kwargs)


__all__ = ["VIDEO_EXTENSIONS", "DecodedSequence", "Frame", "VideoInput", "VideoOutput", "read_stream_qp", "YuvSequence", "decode_frames", "open_sequence",
           "parse_yuv_name", "split_planes", "write_frames", "write_video", "write_yuv", "yuv_name"]
