"""What the TFLite and ONNX export tests share: real frames of the embedded sample, windows, PSNR,
and a fresh process that may import only numpy and one runtime (never vcar_tf nor tensorflow)."""

import os
import subprocess
import sys

import numpy as np

SIZE_A, SIZE_B = (37, 53), (30, 45)  # not multiples of 8

# Every registered model, by the export it gets (test_models_cover_the_registry keeps them complete).
WINDOW_MODELS = ("arcnn", "dncnn", "stifn_r3", "stifn_r3l", "stdf_r3", "stdf_r3l", "stdf_dsta", "nl_convlstm")
RECURRENT_MODELS = ("rfda", "stdf_rf")


def parity_model(name, seed=0):
    """build(name) with seeded initial weights, perturbed (tests.conftest.perturb_weights) so the
    zero-initialised residual heads do not hide export errors."""
    import keras

    from tests.conftest import perturb_weights
    from vcar_tf.models import build

    keras.utils.set_random_seed(seed)
    return perturb_weights(build(name), seed=seed, scale=0.02)


def sample_clips(root, size, frames=6, offset=(40, 60)):
    """(compressed, raw) float32 (T, H, W) crops of the sample's held-out test sequence."""
    from vcar_tf.data.layout import find_pairs

    raw, comp = find_pairs(os.path.join(root, "test"), 37)[0].open()
    (h, w), (top, left) = size, offset
    crop = lambda seq: np.stack([seq.y(t)[top:top + h, left:left + w] for t in range(frames)]).astype(np.float32) / 255
    return crop(comp), crop(raw)


def windows(clip, radius):
    """(T, 2R+1, H, W, 1) windows of a (T, H, W) clip, clipped at its ends (as streaming clips them)."""
    t = len(clip)
    return np.stack([clip[np.clip(np.arange(i - radius, i + radius + 1), 0, t - 1)] for i in range(t)])[..., None]


def psnr(a, b):
    """Mean per-frame PSNR (dB) of (T, H, W) clips in [0, 1]."""
    a, b = np.clip(np.asarray(a, np.float64), 0, 1), np.asarray(b, np.float64)
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)
    return float(np.mean(10 * np.log10(1.0 / mse)))


def run_fresh(script, *args, cwd):
    """Run `script` in a fresh interpreter that does not see the repository; it must not import
    vcar_tf or tensorflow (the export is self-contained)."""
    guard = ("\nimport sys as _s\nbad = [k for k in _s.modules if k.split('.')[0] in ('vcar_tf', 'tensorflow', 'keras')]"
             "\nassert not bad, bad[:5]\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", script + guard, *map(str, args)], capture_output=True, text=True,
                       cwd=str(cwd), env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r
