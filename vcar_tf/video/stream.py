"""Streamed video in and out through PyAV: frames one at a time, their time stamps, the streams to copy.

    src = VideoInput("in.mp4")                      # probes; nothing decoded yet
    with VideoOutput("out.mp4", src, codec="libx264", options={"qp": "0"}) as dst:
        for item in src.items():                    # decoded frames and, in order, packets to copy
            if isinstance(item, Frame): dst.write(item)   # planes may be replaced
            else: dst.copy(item)

Frames are YUV 4:2:0 planes, uint8 (8-bit) or uint16 (10-bit), any width and height (odd ones
have ceil(W/2) x ceil(H/2) chroma). The output keeps each frame's pts and time base, the frame
rate, colour metadata (range, matrix, primaries, transfer), the sample aspect ratio, the display
rotation, and copies the input's audio and subtitle packets unchanged. It is written to a temp
file beside OUTPUT and renamed only when complete.
"""

import contextlib
import io
import os
import sys
from fractions import Fraction
from typing import NamedTuple

import av
import numpy as np

from vcar_tf.errors import VcarError
from vcar_tf.fileutil import atomic_path

# pixel formats handled, with their bit depth (yuvj420p is yuv420p in full range)
PIX_FMTS = {"yuv420p": 8, "yuvj420p": 8, "yuv420p10le": 10}
# output extension -> FFmpeg muxer
MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi",
          ".ts": "mpegts", ".y4m": "yuv4mpegpipe", ".yuv": "rawvideo", ".hevc": "hevc", ".h265": "hevc",
          ".265": "hevc", ".h264": "h264", ".264": "h264"}
RAW_INPUTS = {".hevc": "hevc", ".h265": "hevc", ".265": "hevc", ".h264": "h264", ".264": "h264"}
# outputs that hold one raw video stream and no audio: their encoder is fixed
RAW_OUTPUTS = {"rawvideo": "rawvideo", "yuv4mpegpipe": "wrapped_avframe"}
# containers whose time base is the frame rate (AVI writes 1/time base as the rate, and fills
# gaps with empty frames): their frames are written 1/rate apart, as raw outputs' are
CONSTANT_RATE = ("avi", *RAW_OUTPUTS)
COPIED = ("audio", "subtitle")
COLOUR = ("color_range", "colorspace", "color_primaries", "color_trc")


class Frame(NamedTuple):
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    pts: int
    time_base: Fraction


def plane_array(plane, dtype):
    """A frame plane as a (height, width) array, without the row padding FFmpeg keeps."""
    item = np.dtype(dtype).itemsize
    rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: plane.height, : plane.width * item]
    return np.ascontiguousarray(rows).view(dtype)


def fill_plane(plane, array):
    buf = np.zeros((plane.height, plane.line_size), np.uint8)
    buf[:, : plane.width * array.dtype.itemsize] = np.ascontiguousarray(array).view(np.uint8).reshape(plane.height, -1)
    plane.update(buf)


def raw_frame_bytes(width, height, bit_depth):
    """Bytes of one planar 4:2:0 frame (chroma ceil(W/2) x ceil(H/2)), 8 or 10-bit (two bytes)."""
    return (width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)) * (1 if bit_depth == 8 else 2)


def check_raw_size(path, width, height, bit_depth, frames=None):
    """A raw 4:2:0 file must hold a whole number of width x height frames (and at least one; exactly
    `frames` where its name says how many)."""
    if width <= 0 or height <= 0:
        raise VcarError(f"{path}: invalid size {width}x{height}")
    frame = raw_frame_bytes(width, height, bit_depth)
    size = os.path.getsize(path)
    if size == 0:
        raise VcarError(f"{path}: the file holds zero frames")
    if size % frame:
        raise VcarError(f"{path}: size {size} B is not a multiple of the {width}x{height} frame size {frame} B "
                        "(truncated or wrong size)")
    if frames is not None and size // frame != frames:
        raise VcarError(f"{path}: the name says {frames} frames, the file holds {size // frame}")


def check_input_file(path):
    """A one-line error unless `path` is an existing file."""
    if os.path.isdir(path):
        raise VcarError(f"{path} is a folder, not a video file")
    if not os.path.isfile(path):
        raise VcarError(f"{path}: no such file")


def frame_rate(text):
    """--fps as a positive Fraction ("25", "29.97", "30000/1001"); a one-line error otherwise."""
    try:
        rate = Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        rate = None
    if rate is None or rate <= 0:
        raise VcarError(f"--fps {text}: give a positive frame rate (25, 29.97 or 30000/1001)")
    return rate


class VideoInput:
    """A video file opened for one streamed pass. Raw .yuv needs its size (NAME_WxH[_N].yuv, or
    width/height) and takes pix_fmt (default yuv420p) and fps (default 25)."""

    def __init__(self, path, width=None, height=None, fps=None, pix_fmt=None):
        check_input_file(path)
        if fps is not None:
            fps = frame_rate(fps)
        self.path = path
        ext = os.path.splitext(path)[1].lower()
        fmt, options = RAW_INPUTS.get(ext), {}
        if ext == ".yuv":
            from vcar_tf.video.yuv import parse_yuv_name

            parsed = parse_yuv_name(path)
            if width is None or height is None:
                if parsed is None:
                    raise VcarError(f"{path}: cannot tell the frame size; name it NAME_WxH[_N].yuv or pass --width/--height")
                width, height = parsed[1], parsed[2]
            pix_fmt = pix_fmt or "yuv420p"
            if pix_fmt not in PIX_FMTS:
                raise VcarError(f"--pix_fmt {pix_fmt}: raw .yuv is read as {' or '.join(PIX_FMTS)}")
            named = parsed is not None and (int(width), int(height)) == parsed[1:3]
            check_raw_size(path, int(width), int(height), PIX_FMTS[pix_fmt], parsed[3] if named else None)
            fmt, options = "rawvideo", {"video_size": f"{width}x{height}", "pixel_format": pix_fmt,
                                        "framerate": str(fps or 25)}
        else:
            given = [f"--{k}" for k, v in (("width", width), ("height", height), ("pix_fmt", pix_fmt)) if v is not None]
            if fps is not None and fmt is None:
                given.append("--fps")
            if given:
                raise VcarError(f"{path}: {', '.join(given)} describe a raw .yuv (--fps also a raw .h264/.hevc) "
                                "input; this file's stream says its own")
            if fps is not None:
                options = {"framerate": str(fps)}
        try:
            self._container = av.open(path, format=fmt, options=options)
        except (av.error.FFmpegError, ValueError) as e:
            raise VcarError(f"{path}: cannot decode ({e})") from None
        if not self._container.streams.video:
            self._container.close()
            raise VcarError(f"{path}: no video stream")
        self.stream = self._container.streams.video[0]
        self.stream.thread_type = "AUTO"  # FFmpeg's frame and slice threads for decoding
        ctx = self.stream.codec_context
        self.width, self.height = ctx.width, ctx.height
        self.pix_fmt = ctx.format.name if ctx.format is not None else None
        if self.pix_fmt not in PIX_FMTS:
            self.close()
            raise VcarError(f"{path}: pixel format {self.pix_fmt} is not handled (only 4:2:0: "
                            f"{', '.join(PIX_FMTS)})")
        self.bit_depth = PIX_FMTS[self.pix_fmt]
        self.dtype = np.uint8 if self.bit_depth == 8 else np.uint16
        self.rate = self.stream.average_rate or self.stream.guessed_rate or Fraction(fps or 25)
        self.time_base = self.stream.time_base or 1 / Fraction(self.rate)
        self.num_frames = self.stream.frames or self._estimated_frames(fmt)  # for the progress bar's ETA
        self.colour = {k: getattr(ctx, k) for k in COLOUR}
        self.sample_aspect_ratio = ctx.sample_aspect_ratio or self.stream.sample_aspect_ratio  # anamorphic SD/HDV
        self.copied = [s for s in self._container.streams if s.type in COPIED]
        self.dropped = [s for s in self._container.streams if s.index != self.stream.index and s.type not in COPIED]
        self.rotation = self._first_frame_rotation(fmt, options)
        self._read = False

    def _estimated_frames(self, fmt):
        """Frames from the duration and rate where the container keeps no count (mkv, webm), None
        where it gives no duration either; raw .yuv: from the file size."""
        if fmt == "rawvideo":
            return os.path.getsize(self.path) // raw_frame_bytes(self.width, self.height, self.bit_depth)
        if self.stream.duration:
            seconds = float(self.stream.duration * self.time_base)
        elif self._container.duration:
            seconds = self._container.duration / 1e6
        else:
            return None
        return max(1, round(seconds * float(self.rate)))

    def _first_frame_rotation(self, fmt, options):
        """The display rotation FFmpeg gives the first frame (from the stream's display matrix),
        read through a second opening so that the main pass starts at the beginning."""
        if fmt is not None:  # raw streams carry none
            return 0
        try:
            with av.open(self.path, options=options) as probe:
                for frame in probe.decode(video=0):
                    return int(frame.rotation or 0)
        except (av.error.FFmpegError, ValueError):
            pass  # the main pass reports the decode error
        return 0

    def enable_qp_export(self):
        """Ask the decoder for FFmpeg's per-frame video_enc_params side data (H.264, not HEVC)."""
        self.stream.codec_context.options = {**self.stream.codec_context.options, "export_side_data": "venc_params"}

    def items(self):
        """Yield Frame for each decoded video frame and the input's av.Packet for each audio or
        subtitle packet, in file order (one pass). Raises VcarError on a decode error, a frame
        that changes size or format, or zero frames."""
        if self._read:
            raise RuntimeError("a VideoInput is read once")
        self._read = True
        count = 0
        copied = {s.index for s in self.copied}
        step = int(round(1 / (Fraction(self.rate) * self.time_base))) or 1
        try:
            for packet in self._container.demux(self.stream, *self.copied):
                if packet.stream.index in copied:
                    if packet.dts is not None:
                        yield packet
                    continue
                for frame in packet.decode():
                    yield self._frame(frame, count, step)
                    count += 1
        except av.error.FFmpegError as e:
            raise VcarError(f"{self.path}: cannot decode ({e})") from None
        if count == 0:
            raise VcarError(f"{self.path}: zero frames decoded")

    def _frame(self, frame, index, step):
        if (frame.width, frame.height, frame.format.name) != (self.width, self.height, self.pix_fmt):
            raise VcarError(f"{self.path}: frame {index} is {frame.width}x{frame.height} {frame.format.name}, "
                            f"the stream {self.width}x{self.height} {self.pix_fmt} (changes are not handled)")
        y, u, v = (plane_array(p, self.dtype) for p in frame.planes[:3])
        pts = frame.pts if frame.pts is not None else index * step
        return Frame(y, u, v, pts, frame.time_base or self.time_base)

    def close(self):
        self._container.close()


def frame_qp(frame):
    """The frame QP of a decoded av.VideoFrame's video_enc_params side data, or None when the
    frame carries none. Per-block deltas are not read: through PyAV 18 they came out as garbage
    in a long test process (a mean of 12 for a stream made at QP 29)."""
    for data in frame.side_data:
        if isinstance(data, av.sidedata.encparams.VideoEncParams):
            return float(data.qp)
    return None


def read_stream_qp(path, max_frames=32):
    """(QP, how it was read) of a video file's first frames, or (None, why not).

    Only H.264 and HEVC (the codecs presets are trained for) are read. FFmpeg 8.0's H.264 decoder
    exports per-frame QP (video_enc_params side data, through PyAV's VideoEncParams); its HEVC
    decoder does not, so for HEVC (and H.264 without it) the settings x265/x264 write into the
    stream (an unregistered SEI) give the QP when they encoded at a constant QP."""
    try:
        src = VideoInput(path)
    except VcarError as e:
        return None, str(e)
    if src.stream.codec_context.name not in ("h264", "hevc"):
        name = src.stream.codec_context.name
        src.close()
        return None, f"FFmpeg exports no QP for {name} streams"
    codec = src.stream.codec_context.name
    src.enable_qp_export()
    qps, settings, seen = [], None, 0
    try:
        for packet in src._container.demux(src.stream):
            for frame in packet.decode():
                qp = frame_qp(frame)
                if qp is not None:
                    qps.append((int(frame.pict_type), qp))
                settings = settings or _encoder_settings(frame)
                seen += 1
            if seen >= max_frames:
                break
    except av.error.FFmpegError as e:
        return None, f"cannot decode ({e})"
    finally:
        src.close()
    constant = _constant_qp(settings) if settings is not None else None
    if constant is not None:  # exact where the encoder says so
        return float(constant), f"{settings.split()[0]} settings in the stream: constant QP {constant}"
    if qps:
        # the QP a stream is "made at" is its P frames' (I frames get less, B frames more)
        p_frames = [qp for kind, qp in qps if kind == 2]  # AV_PICTURE_TYPE_P
        chosen, kind = (p_frames, "P frames") if p_frames else ([qp for _, qp in qps], "frames")
        return float(np.median(chosen)), f"median QP of {len(chosen)} {kind} in the first {seen} ({codec} video_enc_params)"
    if settings is not None:
        return None, f"the {codec} stream was not made at a constant QP (its encoder settings: {_rate_control(settings)})"
    return None, f"FFmpeg exports no QP for {codec} streams and the stream names no encoder settings"


def _encoder_settings(frame):
    """x264's or x265's settings string from a frame's unregistered SEI, or None."""
    for data in frame.side_data:
        if data.type == av.sidedata.sidedata.Type.SEI_UNREGISTERED:
            text = bytes(data)[16:].decode("latin-1", "replace")
            for name in ("x264", "x265"):
                if name in text:
                    return text[text.index(name):].rstrip("\x00")
    return None


def _settings_dict(settings):
    out = {}
    for token in settings.replace(" / ", " ").split():
        if "=" in token:
            k, v = token.split("=", 1)
            out[k] = v
    return out


def _rate_control(settings):
    s = _settings_dict(settings)
    return ", ".join(f"{k}={s[k]}" for k in ("rc", "crf", "bitrate", "qp") if k in s) or "unknown"


def _constant_qp(settings):
    """x264 and x265 both write rc=cqp and qp=N for a constant-QP encode."""
    s = _settings_dict(settings)
    return int(float(s["qp"])) if s.get("rc") == "cqp" and "qp" in s else None


def output_format(path):
    ext = os.path.splitext(path)[1].lower()
    if ext not in MUXERS:
        raise VcarError(f"{path}: unknown output extension {ext or '(none)'}; use one of {', '.join(sorted(MUXERS))}")
    return MUXERS[ext]


class VideoOutput:
    """The enhanced video: same size, pixel format, frame times, colour, sample aspect ratio, rotation; the input's
    audio and subtitle streams copied. A context manager: the file appears only on success."""

    def __init__(self, path, like, codec="libx264", options=None, warn=sys.stderr):
        self.path, self.like = path, like
        self.format = output_format(path)
        self.raw = self.format in RAW_OUTPUTS
        self.codec = RAW_OUTPUTS.get(self.format, codec)
        self.constant_rate = self.format in CONSTANT_RATE
        self.time_base = 1 / Fraction(like.rate) if self.constant_rate else like.time_base
        self.options = dict(options or {})
        self._warn = warn
        self._stack = contextlib.ExitStack()
        self.count = 0

    def check(self):
        """Fail before any work if the encoder or the container cannot take this video."""
        if self.codec not in av.codecs_available:
            raise VcarError(f"unknown codec {self.codec!r} (not in this FFmpeg build)")
        try:
            codec = av.codec.Codec(self.codec, "w")
        except (av.error.FFmpegError, ValueError):
            raise VcarError(f"{self.codec} is not a video encoder") from None
        if codec.type != "video":
            raise VcarError(f"{self.codec} is not a video encoder")
        formats = [f.name for f in (codec.video_formats or [])]
        if formats and self.like.pix_fmt not in formats:
            raise VcarError(f"{self.codec} cannot encode {self.like.pix_fmt} (it takes {', '.join(formats)})")
        with av.open(io.BytesIO(), "w", format=self.format) as probe:
            holds = probe.supported_codecs
        if holds and self.codec not in holds:  # an empty set: FFmpeg cannot tell, muxing will
            raise VcarError(f"{self.format} cannot hold {self.codec} video; pick another --codec or extension")
        for s in self.like.copied:
            if holds and not self.raw and s.codec_context.name not in holds:
                raise VcarError(f"{self.format} cannot hold the input's {s.type} stream #{s.index} "
                                f"({s.codec_context.name}) without re-encoding it; write .mkv")
        ctx = av.CodecContext.create(self.codec, "w")
        ctx.width, ctx.height, ctx.pix_fmt = self.like.width, self.like.height, self.like.pix_fmt
        ctx.time_base = self.time_base
        ctx.options = dict(self.options)
        try:
            ctx.open()
        except (av.error.FFmpegError, ValueError) as e:
            odd = " (odd sizes: ffv1, libsvtav1 or libvpx-vp9 in .mkv, or .y4m)" if self.like.width % 2 or self.like.height % 2 else ""
            raise VcarError(f"{self.codec} cannot encode {self.like.width}x{self.like.height} {self.like.pix_fmt} "
                            f"with {self.options or 'its defaults'}{odd}: {e}") from None
        unused = sorted(ctx.options)  # FFmpeg hands back the options the encoder does not have
        del ctx
        if unused:
            raise VcarError(f"{self.codec} has no option {', '.join(unused)}, so it would ignore "
                            f"{self.options}; pick another --codec or rate control")

    def __enter__(self):
        self.check()
        try:
            return self._open()
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise

    def _open(self):
        tmp = self._stack.enter_context(atomic_path(self.path))
        # y4m's 10-bit tags (C420p10) are outside its original spec: FFmpeg wants strict -1 for them
        options = {"strict": "-1"} if self.format == "yuv4mpegpipe" else {}
        self._out = av.open(tmp, "w", format=self.format, options=options)
        self._stack.callback(self._out.close)
        self._video = self._out.add_stream(self.codec, rate=self.like.rate)
        ctx = self._video.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = self.like.width, self.like.height, self.like.pix_fmt
        ctx.time_base = self._video.time_base = self.time_base
        for key, value in self.like.colour.items():
            with contextlib.suppress(AttributeError, ValueError, TypeError):
                setattr(ctx, key, value)
        if self.like.sample_aspect_ratio and not self.raw:
            ctx.sample_aspect_ratio = self.like.sample_aspect_ratio
        self._video.options = self.options
        self._copies = {}
        for s in self.like.copied:
            if self.raw:
                self._note(f"{os.path.basename(self.path)} holds video only: the input's {s.type} stream #{s.index} is not copied")
                continue
            out = self._out.add_stream_from_template(s)
            out.metadata.update(s.metadata)
            self._copies[s.index] = out
        for s in self.like.dropped:
            self._note(f"the input's {s.type} stream #{s.index} is not copied")
        if self.like.rotation and not self.raw:
            self._video.set_display_rotation(self.like.rotation)
        return self

    def _note(self, text):
        if self._warn is not None:
            print(f"note: {text}", file=self._warn)

    def write(self, frame):
        """Encode one Frame (planes of the input's size and dtype) at its pts."""
        out = av.VideoFrame(self.like.width, self.like.height, self.like.pix_fmt)
        for plane, array in zip(out.planes, (frame.y, frame.u, frame.v)):
            fill_plane(plane, array.astype(self.like.dtype, copy=False))
        for key, value in self.like.colour.items():
            with contextlib.suppress(AttributeError, ValueError, TypeError):
                setattr(out, key, value)
        if self.constant_rate:  # frame after frame at the frame rate (y4m and avi write it from the time base)
            out.pts, out.time_base = self.count, self.time_base
        else:
            out.pts, out.time_base = frame.pts, frame.time_base
        self._encode(out)
        self.count += 1

    def _encode(self, frame=None):
        """Encode a frame (None: flush the encoder) and mux what comes out."""
        try:
            packets = self._video.encode(frame)
        except av.error.FFmpegError as e:
            raise VcarError(f"encoding {self.path} failed ({self.codec}): {e}") from None
        self._mux(packets)

    def copy(self, packet):
        """Mux a packet of a copied input stream unchanged."""
        out = self._copies.get(packet.stream.index)
        if out is not None:
            packet.stream = out
            self._mux([packet])

    def _mux(self, packets):
        try:
            for p in packets:
                self._out.mux(p)
        except av.error.FFmpegError as e:
            raise VcarError(f"writing {self.path} failed ({self.codec}): {e}") from None

    def __exit__(self, kind, exc, tb):
        try:
            if kind is None:
                if self.count == 0:
                    raise VcarError(f"{self.path}: zero frames to write")
                self._encode()
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        return self._stack.__exit__(kind, exc, tb)
