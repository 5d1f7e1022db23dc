"""The embedded default dataset: real photographs shipped in scikit-image, moved along camera
trajectories (pan, zoom, slight rotation) with an independently moving object, then compressed
through the same codec path as any dataset. Built deterministically and cached.

    ROOT/train/raw/..., ROOT/train/x265_LDP/QP37/...   (3 sequences)
    ROOT/test/raw/...,  ROOT/test/x265_LDP/QP37/...    (1 held-out sequence)
"""

import dataclasses
import os

import numpy as np
from scipy import ndimage

from vcar_tf.data.codec import CodecSettings
from vcar_tf.data.prepare import compress_all
from vcar_tf.fileutil import ensure_writable_dir
from vcar_tf.video.yuv import write_yuv, yuv_name

SAMPLE_VERSION = "sample-v1"


@dataclasses.dataclass(frozen=True)
class Shot:
    name: str
    split: str
    background: str  # skimage.data function name
    sprite: str
    width: int
    height: int
    frames: int
    pan: tuple  # total (dy, dx) of the camera in source pixels
    zoom: tuple  # (start, end) magnification
    rotation_deg: float  # amplitude of the slow camera roll
    seed: int


SHOTS = (
    Shot("astronaut-pan", "train", "astronaut", "coffee", 352, 256, 40, (40, 90), (1.0, 1.1), 2.0, 1),
    Shot("coffee-zoom", "train", "coffee", "chelsea", 384, 256, 40, (20, -40), (1.0, 1.35), 1.0, 2),
    Shot("rocket-roll", "train", "rocket", "astronaut", 256, 352, 40, (-60, 10), (1.15, 1.0), 3.0, 3),
    Shot("motorcycle-pan", "test", "motorcycle", "rocket", 416, 240, 32, (10, 120), (1.05, 1.2), 1.5, 4),
)


def default_cache_dir():
    return os.environ.get("VCAR_TF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vcar_tf")


def _photo(name):
    from skimage import data

    img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    return img[..., :3].astype(np.float32) / 255.0


def _warp(img, out_hw, center, zoom, angle, offset=(0.0, 0.0)):
    """Sample `img` (H, W, C) on an output grid rotated by `angle` and magnified by `zoom`."""
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.array([[c, -s], [s, c]]) / zoom
    out_center = (np.array(out_hw) - 1) / 2.0
    shift = np.asarray(center) + np.asarray(offset) - matrix @ out_center
    return np.stack([ndimage.affine_transform(img[..., k], matrix, shift, output_shape=out_hw,
                                              order=1, mode="reflect") for k in range(img.shape[2])], -1)


def render_shot(shot):
    """The RGB frames (T, H, W, 3) float32 in [0, 1] of one shot; deterministic."""
    rng = np.random.default_rng(shot.seed)
    bg, fg = _photo(shot.background), _photo(shot.sprite)
    hw = (shot.height, shot.width)
    r = min(hw) // 6  # moving object: a disc cut from another photo
    sprite_src = np.array(fg.shape[:2]) / 2 + rng.uniform(-0.15, 0.15, 2) * np.array(fg.shape[:2])
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    alpha = np.clip(r + 0.5 - np.hypot(yy, xx), 0, 1)[..., None].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    frames = []
    for t in range(shot.frames):
        u = t / max(shot.frames - 1, 1)
        zoom = shot.zoom[0] + (shot.zoom[1] - shot.zoom[0]) * u
        angle = np.deg2rad(shot.rotation_deg) * np.sin(2 * np.pi * u + phase)
        center = np.array(bg.shape[:2]) / 2 + (u - 0.5) * np.array(shot.pan)
        frame = _warp(bg, hw, center, zoom, angle)
        sprite = _warp(fg, (2 * r + 1, 2 * r + 1), sprite_src, 1.0, 3 * angle)
        py = int(round(r + (hw[0] - 2 * r - 1) * (0.5 + 0.35 * np.sin(2 * np.pi * u * 1.3 + phase))))
        px = int(round(r + (hw[1] - 2 * r - 1) * (0.1 + 0.8 * u)))
        region = frame[py - r: py + r + 1, px - r: px + r + 1]
        region[...] = alpha * sprite + (1 - alpha) * region
        frames.append(np.clip(frame, 0, 1))
    return np.stack(frames)


def rgb_to_yuv420(rgb):
    """BT.601 limited-range YUV 4:2:0 planes (uint8) of one RGB frame in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    cb = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    cr = 128 + 112.0 * r - 93.786 * g - 18.214 * b

    def sub(p):
        return p.reshape(p.shape[0] // 2, 2, p.shape[1] // 2, 2).mean(axis=(1, 3))

    q = lambda p: np.clip(np.round(p), 0, 255).astype(np.uint8)  # noqa: E731
    return q(y), q(sub(cb)), q(sub(cr))


def ensure_sample_dataset(settings_list=(CodecSettings(),), cache_dir=None, workers=None):
    """Build (once) and return the root of the embedded sample dataset for these codec settings."""
    root = os.path.join(cache_dir or default_cache_dir(), SAMPLE_VERSION)
    ensure_writable_dir(root)
    raw_paths = {}
    for shot in SHOTS:
        out = os.path.join(root, shot.split, "raw", yuv_name(shot.name, shot.width, shot.height, shot.frames))
        if not os.path.exists(out):
            write_yuv(out, (rgb_to_yuv420(f) for f in render_shot(shot)))
        raw_paths.setdefault(shot.split, []).append(out)
    for split, paths in raw_paths.items():
        compress_all(paths, os.path.join(root, split), list(settings_list), workers)
    return root
