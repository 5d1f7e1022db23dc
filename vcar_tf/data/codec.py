"""x265 / x264 low-delay-P compression through PyAV's FFmpeg, with HM-style per-frame QP offsets;
x265's own random-access GOP (B-frames) at a QP or CRF."""

import contextlib
import dataclasses
import itertools
import json
import os
import re
import shutil
import subprocess
from fractions import Fraction

import av
import av.filter
import numpy as np

from vcar_tf.errors import VcarError
from vcar_tf.video.container import encode_frames

CODECS = {"x265": ("libx265", "hevc", "x265-params", ".hevc"),
          "x264": ("libx264", "h264", "x264-params", ".h264")}

# HM16.5 encoder_lowdelay_P_main.cfg: QP offset by POC % 4 (GOP of 4; POC 0 is the I frame at QP).
HM_LDP_QP_OFFSETS = {1: 3, 2: 2, 3: 3, 0: 1}
# The speed presets x265 and x264 share.
ENCODER_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                   "veryslow", "placebo")
# FFmpeg maps an ROI qoffset of 1.0 to this many QP steps for 8-bit video.
_ROI_QP_RANGE = 51
# GOP structures: low-delay P (no B-frames, one I frame) or x265's default random access.
GOPS = ("ldp", "ra")


def rate_folder(qp, crf=None):
    """The folder of one rate: QP37, or CRF30 for a CRF encoding."""
    return f"CRF{crf}" if crf is not None else f"QP{qp}"


def hm_ldp_qp(qp, poc):
    """The QP HM's low-delay-P configuration gives picture `poc` at base QP `qp` (at most 51, as HM clips it)."""
    return qp if poc == 0 else min(51, qp + HM_LDP_QP_OFFSETS[poc % 4])


@dataclasses.dataclass(frozen=True)
class CodecSettings:
    """Settings of one compression run. Defaults follow the NL-ConvLSTM Vimeo protocol.
    gop="ra" keeps x265's own GOP (B-frames, keyint, references: `ref` becomes None); a `crf`
    replaces the constant `qp` (which becomes None); CRF is for RA only."""

    codec: str = "x265"
    qp: int | None = 37
    deblock: bool = False
    sao: bool = False
    hm_ldp_offsets: bool = False
    ref: int | None = 4
    preset: str = "medium"
    fps: int = 25
    gop: str = "ldp"
    crf: int | None = None

    def __post_init__(self):
        if self.codec not in CODECS:
            raise VcarError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}")
        if self.gop not in GOPS:
            raise VcarError(f"unknown GOP {self.gop!r}; choose one of {', '.join(GOPS)}")
        if self.crf is not None:
            if not 0 <= int(self.crf) <= 51:
                raise VcarError(f"CRF must be in 0..51, got {self.crf}")
            if self.gop != "ra":
                raise VcarError("--crf is for --gop ra; low-delay P encodes at a constant --qp")
            object.__setattr__(self, "qp", None)
        elif self.qp is None or not 0 <= int(self.qp) <= 51:
            raise VcarError(f"QP must be in 0..51, got {self.qp}")
        if self.sao and self.codec != "x265":
            raise VcarError("SAO exists only in HEVC (x265)")
        if self.gop == "ra":
            if self.codec != "x265":
                raise VcarError("--gop ra is x265's random-access GOP; x264 has --gop ldp only")
            if self.hm_ldp_offsets:
                raise VcarError("--hm_ldp_offsets are low-delay-P offsets: not with --gop ra")
            object.__setattr__(self, "ref", None)

    @property
    def codec_folder(self):
        """The codec part of `folder`, e.g. x265_LDP, x265_RA_dbk_sao."""
        tags = "".join(t for t, on in (("_hmqp", self.hm_ldp_offsets), ("_dbk", self.deblock),
                                       ("_sao", self.sao)) if on)
        return f"{self.codec}_{self.gop.upper()}{tags}"

    @property
    def folder(self):
        """Folder of the compressed sequences, e.g. x265_LDP/QP37 (MFQE: HM16.5_LDP/QP37),
        x265_RA_dbk_sao/CRF30."""
        return f"{self.codec_folder}/{rate_folder(self.qp, self.crf)}"

    @property
    def encoder_name(self):
        return CODECS[self.codec][0]

    @property
    def uses_x265_cli(self):
        """HM offsets with x265 go through the x265 CLI's --qpfile (FFmpeg's libx265 ROI path
        that could carry a per-frame QP crashes inside x265 4.2)."""
        return self.codec == "x265" and self.hm_ldp_offsets

    def encoder_param_dict(self):
        if self.gop == "ra":  # x265's defaults but the rate, the loop filters and one frame thread
            p = {"crf": self.crf} if self.crf is not None else {"qp": self.qp}
            p.update({"frame-threads": 1, "log-level": "error"})
            p.update({k: 1 for k, off in (("no-sao", not self.sao), ("no-deblock", not self.deblock)) if off})
            return p
        p = {"bframes": 0, "scenecut": 0, "ref": self.ref, "ipratio": 1, "pbratio": 1,
             "qp": self.qp, "aq-mode": 0}
        if self.codec == "x265":
            p.update({"keyint": -1, "no-cutree": 1, "frame-threads": 1, "log-level": "error"})
            if not self.sao:
                p["no-sao"] = 1
        else:
            p.update({"keyint": "infinite", "no-mbtree": 1, "threads": 1})
            if self.hm_ldp_offsets:
                # Per-frame QP reaches libx264 as ROI side data, honoured only through AQ, which
                # constant-QP mode disables. CRF with qcomp=1 and no mbtree is constant QP
                # (qscale no longer depends on complexity); AQ strength 0.01 is ~0 QP.
                del p["qp"]
                p.update({"crf": self.qp, "qcomp": 1, "aq-mode": 1, "aq-strength": 0.01})
        # `deblock=0` leaves deblocking on (it sets the filter offsets); `no-deblock=1` turns it off.
        if not self.deblock:
            p["no-deblock"] = 1
        return p

    def encoder_params(self):
        """The x265-params / x264-params string (or, for the x265 CLI, its option list)."""
        return ":".join(f"{k}={v}" for k, v in self.encoder_param_dict().items())

    def to_json(self):
        """The settings; gop and crf only when not LDP at a QP (so LDP sidecars keep their form)."""
        d = dataclasses.asdict(self)
        if self.gop == "ldp":
            del d["gop"]
        if self.crf is None:
            del d["crf"]
        return d


def x265_cli():
    return os.environ.get("VCAR_X265_CLI") or shutil.which("x265")


def check_codec_available(settings):
    if settings.uses_x265_cli and not x265_cli():
        raise VcarError("--hm_ldp_offsets with x265 needs the x265 command (apt-get install x265)")
    if settings.encoder_name not in av.codecs_available:
        raise VcarError(f"codec {settings.encoder_name} is missing from this FFmpeg build")


class _RoiTagger:
    """Attaches a whole-frame ROI QP offset to frames through FFmpeg's addroi filter."""

    def __init__(self, width, height):
        self.width, self.height = width, height
        self.graphs = {}

    def _graph(self, offset):
        if offset not in self.graphs:
            g = av.filter.Graph()
            src = g.add_buffer(width=self.width, height=self.height, format="yuv420p",
                               time_base=Fraction(1, 25))
            roi = g.add("addroi", f"x=0:y=0:w=iw:h=ih:qoffset={offset}/{_ROI_QP_RANGE}:clear=1")
            sink = g.add("buffersink")
            src.link_to(roi)
            roi.link_to(sink)
            g.configure()
            self.graphs[offset] = g
        return self.graphs[offset]

    def __call__(self, frame, offset):
        if offset == 0:
            return frame
        g = self._graph(offset)
        g.push(frame)
        return g.pull()


_VERSION_RE = re.compile(rb"(x26[45][^\x00]{0,120}?) - H\.26[45]")


_OPTIONS_RE = re.compile(rb"x26[45][^\x00]{0,200}? options: ([ -~]+)")


def encoder_version(bitstream):
    """The encoder's version string from its user-data SEI, or 'unknown'."""
    m = _VERSION_RE.search(bitstream[:4096])
    return m.group(1).decode("ascii", "replace") if m else "unknown"


def encoder_options(bitstream):
    """Every option the encoder used, from the same SEI (x264/x265 write them all), or ''."""
    m = _OPTIONS_RE.search(bitstream[:8192])
    return m.group(1).decode("ascii").strip() if m else ""


def _encode_x265_cli(frames, settings, bitstream_path):
    """x265 CLI with a qpfile giving HM's per-frame QP; raw frames go in through stdin."""
    frames = list(frames)  # views into memory-mapped files; the qpfile needs the count first
    height, width = frames[0][0].shape
    qpfile = bitstream_path + ".qp.txt"
    args = [x265_cli(), "--input", "-", "--input-res", f"{width}x{height}", "--input-depth", "8",
            "--fps", str(settings.fps), "--preset", settings.preset, "--qpfile", qpfile,
            "--output", bitstream_path]
    for k, v in settings.encoder_param_dict().items():
        args += [f"--{k}"] if k.startswith("no-") else [f"--{k}", str(v)]
    # x265 refuses a picture smaller than one CTU (64 by default), which FFmpeg's libx265 encodes
    ctu = next(c for c in (64, 32, 16) if min(width, height) >= c)  # check_picture_size: at least 16
    if ctu < 64:
        args += ["--ctu", str(ctu)]
    try:
        with open(qpfile, "w") as f:
            for poc in range(len(frames)):
                f.write(f"{poc} {'I' if poc == 0 else 'P'} {hm_ldp_qp(settings.qp, poc)}\n")
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for y, u, v in frames:
                for plane in (y, u, v):
                    proc.stdin.write(np.ascontiguousarray(plane).tobytes())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        err = proc.stderr.read().decode("utf-8", "replace").strip()
        if proc.wait() != 0:
            raise VcarError(f"x265 failed: {err.splitlines()[-1] if err else proc.returncode}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(qpfile)
    return len(frames)


X265_MIN_SIZE = 16  # libx265 and the x265 CLI (at --ctu 16) refuse a smaller width or height


def check_picture_size(settings, width, height):
    if settings.codec == "x265" and min(width, height) < X265_MIN_SIZE:
        raise VcarError(f"x265 encodes pictures of at least {X265_MIN_SIZE}x{X265_MIN_SIZE}, not {width}x{height}")


def encode(frames, settings, bitstream_path):
    """Encode (y, u, v) frames into an elementary stream at `bitstream_path`; returns frame count."""
    check_codec_available(settings)
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise VcarError(f"{bitstream_path}: zero frames to encode")
    check_picture_size(settings, first[0].shape[1], first[0].shape[0])
    frames = itertools.chain([first], frames)
    if settings.uses_x265_cli:
        return _encode_x265_cli(frames, settings, bitstream_path)
    enc_name, fmt, params_key, _ = CODECS[settings.codec]
    tag_frame = None
    if settings.hm_ldp_offsets:
        taggers = {}

        def tag_frame(frame, poc):
            if (frame.width, frame.height) not in taggers:
                taggers[frame.width, frame.height] = _RoiTagger(frame.width, frame.height)
            return taggers[frame.width, frame.height](frame, hm_ldp_qp(settings.qp, poc) - settings.qp)

    options = {"preset": settings.preset, params_key: settings.encoder_params()}
    return encode_frames(bitstream_path, frames, enc_name, settings.fps, options, fmt, tag_frame)


def sidecar(settings, bitstream, num_frames, width, height):
    """The JSON sidecar of a bitstream: encoder version, settings and bitrate."""
    kbps = len(bitstream) * 8 * settings.fps / num_frames / 1000
    return {"encoder": settings.encoder_name, "encoder_version": encoder_version(bitstream),
            "pyav": av.__version__, "settings": settings.to_json(),
            "encoder_params": settings.encoder_params(),
            "encoder_options": encoder_options(bitstream), "frames": num_frames,
            "width": width, "height": height, "bytes": len(bitstream),
            "bitrate_kbps": round(kbps, 3)}


def dumps(obj):
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"
