import os
import subprocess
import sys

import numpy as np
import pytest

from vcar_tf.models import build
from vcar_tf.export import export_saved_model
from tests.conftest import perturb_weights

_FRESH = r'''
import json, sys, numpy as np, tensorflow as tf
d = sys.argv[1]
m = tf.saved_model.load(d)
out = {}
for key in ("a", "b"):
    data = np.load(f"{d}/../in_{key}.npz")
    out[key + "_uint8"] = m.signatures["serving_default"](frames=tf.constant(data["frames"]))["enhanced"].numpy()
    out[key + "_float"] = m.signatures["serve_float"](frames=tf.constant(data["float"]))["enhanced"].numpy()
np.savez(f"{d}/../fresh_out.npz", **out)
assert not [k for k in sys.modules if k.startswith("vcar_tf")]
'''


def _fresh_env():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env


@pytest.mark.parametrize("name,radius", [("stifn_r3", 3), ("arcnn", 0), ("stdf_r3", 3), ("nl_convlstm", 3),
                                         ("stdf_dsta", 3)])
def test_saved_model_matches_keras_in_fresh_process(name, radius, tmp_path, monkeypatch):
    from vcar_tf.errors import VcarError

    if name.startswith("stdf"):  # the Keras side runs the fused op where it builds; the export never does
        from vcar_tf.ops.deform_conv_op import load_deform_conv

        try:
            load_deform_conv(required=True)
            monkeypatch.setenv("VCAR_DEFORM_IMPL", "fused")
        except VcarError:
            pass
    model = perturb_weights(build(name))
    rng = np.random.default_rng(1)
    base = tmp_path / "serving" / name
    path = export_saved_model(model, radius, str(base))
    assert path == str(base / "1") and os.path.exists(base / "1" / "saved_model.pb")
    assert b"VcarDeformConv2D" not in (base / "1" / "saved_model.pb").read_bytes()
    assert export_saved_model(model, radius, str(base)).endswith("2")  # next version
    os.rename(base / "2", base / "0003")  # TF Serving's version 3; a version folder is a number, not a name
    with pytest.raises(VcarError, match="version 3 already exists"):
        export_saved_model(model, radius, str(base), version=3)
    os.rename(base / "0003", base / "2")
    with pytest.raises(Exception):
        export_saved_model(object(), radius, str(tmp_path / "serving" / "never"))
    assert not (tmp_path / "serving" / "never").exists()  # a failed first export leaves no base folder
    expected = {}
    for key, (h, w) in (("a", (37, 53)), ("b", (30, 45))):  # not multiples of 8
        frames = rng.integers(0, 256, (2 * radius + 1, h, w), dtype=np.uint8)
        x = (frames.astype(np.float32) / 255.0)[None, ..., None]
        y = np.asarray(model(x, training=False))
        expected[key + "_float"] = np.clip(y, 0, 1)  # the signatures clip their float output
        expected[key + "_uint8"] = np.round(np.clip(y[0, ..., 0], 0, 1) * 255).astype(np.uint8)
        np.savez(base / f"in_{key}.npz", frames=frames, float=x)
    r = subprocess.run([sys.executable, "-c", _FRESH, str(base / "1")], capture_output=True, text=True,
                       cwd=str(tmp_path), env=_fresh_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    fresh = np.load(base / "fresh_out.npz")
    for key in ("a", "b"):
        np.testing.assert_allclose(fresh[key + "_float"], expected[key + "_float"], atol=1e-5)
        assert fresh[key + "_uint8"].dtype == np.uint8
        assert np.abs(fresh[key + "_uint8"].astype(int) - expected[key + "_uint8"]).max() <= 1
    # saved_model_cli, the C++ session loader that TF Serving uses
    for key in ("a", "b"):
        out = tmp_path / f"cli_{key}"
        r = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run",
                            "--dir", str(base / "1"), "--tag_set", "serve", "--signature_def", "serving_default",
                            "--inputs", f"frames={base}/in_{key}.npz[frames]", "--outdir", str(out)],
                           capture_output=True, text=True, cwd=str(tmp_path), env=_fresh_env(), timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        got = np.load(out / "enhanced.npy")
        assert got.shape == expected[key + "_uint8"].shape
        assert np.abs(got.astype(int) - expected[key + "_uint8"]).max() <= 1


_FRESH_RECURRENT = r'''
import sys, numpy as np, tensorflow as tf
d = sys.argv[1]
m = tf.saved_model.load(d)
data = np.load(f"{d}/../in.npz")
sig = m.signatures
hidden = sig["initial_state"](frames=tf.constant(data["windows"][:1]))["hidden"]
steps = []
for window in data["windows"]:  # a stateless server: the client carries the state
    out = sig["step_float"](frames=tf.constant(window[None]), hidden=hidden)
    steps.append(out["enhanced"].numpy()[0])
    hidden = out["hidden"]
clip = sig["serve_clip"](clip=tf.constant(data["clip"]))["enhanced"].numpy()
np.savez(f"{d}/../fresh_out.npz", steps=np.stack(steps), clip=clip)
assert not [k for k in sys.modules if k.startswith("vcar_tf")]
'''


def test_recurrent_saved_model_step_and_clip_signatures(tmp_path):
    """RFDA's step signature (window, state) -> (frame, next state) and its whole-clip signature,
    loaded in a fresh process and by saved_model_cli, equal the Keras model."""
    model = perturb_weights(build("stdf_rf"), scale=0.02)
    base = tmp_path / "serving" / "stdf_rf"
    path = export_saved_model(model, 3, str(base))
    assert b"VcarDeformConv2D" not in (base / "1" / "saved_model.pb").read_bytes()
    rng = np.random.default_rng(2)
    clip = rng.random((1, 4, 19, 26, 1), dtype=np.float32)  # H, W not multiples of 8
    expected = np.clip(np.asarray(model(clip)), 0, 1)
    windows = np.stack([clip[0, np.clip(np.arange(t - 3, t + 4), 0, 3)] for t in range(4)])
    np.savez(base / "in.npz", windows=windows, clip=clip)
    r = subprocess.run([sys.executable, "-c", _FRESH_RECURRENT, path], capture_output=True, text=True,
                       cwd=str(tmp_path), env=_fresh_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    fresh = np.load(base / "fresh_out.npz")
    np.testing.assert_allclose(fresh["clip"], expected, atol=1e-5)
    np.testing.assert_allclose(fresh["steps"], expected[0], atol=1e-5)

    # saved_model_cli: the uint8 step with a zero state (24 x 32 = 19 x 26 rounded up to 8), then the clip
    frames = np.round(windows[0, ..., 0] * 255).astype(np.uint8)
    np.savez(base / "step.npz", frames=frames, hidden=np.zeros((1, 24, 32, 64), np.float32))
    first, _ = model.step(frames.astype(np.float32)[None, ..., None] / 255.0, np.zeros((1, 24, 32, 64), np.float32))
    for signature, inputs, check in (
            ("serving_default", f"frames={base}/step.npz[frames];hidden={base}/step.npz[hidden]",
             lambda out: np.abs(np.load(out / "enhanced.npy").astype(int)
                                - np.round(np.clip(np.asarray(first)[0, ..., 0], 0, 1) * 255)).max() <= 1),
            ("serve_clip", f"clip={base}/in.npz[clip]",
             lambda out: np.allclose(np.load(out / "enhanced.npy"), expected, atol=1e-5))):
        out = tmp_path / f"cli_{signature}"
        r = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run",
                            "--dir", path, "--tag_set", "serve", "--signature_def", signature,
                            "--inputs", inputs, "--outdir", str(out)],
                           capture_output=True, text=True, cwd=str(tmp_path), env=_fresh_env(), timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert check(out), signature


def test_recurrent_saved_model_rejects_a_state_of_the_wrong_shape(tmp_path):
    import tensorflow as tf

    model = build("stdf_rf")
    path = export_saved_model(model, 3, str(tmp_path / "stdf_rf"))
    step = tf.saved_model.load(path).signatures["step_float"]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"hidden state must be \(B, ceil\(H/8\)\*8, ceil\(W/8\)\*8, 64\) for a window of H x W"):
        step(frames=tf.zeros([1, 7, 19, 26, 1]), hidden=tf.zeros([1, 19, 26, 64]))


def test_signatures_check_their_inputs_in_the_graph(tmp_path):
    """A wrong frame count or rank, a too large frame, NaN, or a wrong dtype is an error naming the
    expected shape (the declared signature shape is not enforced on every path); float inputs and
    outputs are clipped to [0, 1]."""
    import tensorflow as tf

    from vcar_tf.export.signatures import MAX_FRAME_PIXELS

    path = export_saved_model(perturb_weights(build("dncnn")), 0, str(tmp_path / "dncnn"))
    sig = tf.saved_model.load(path).signatures
    u8, f32 = sig["serving_default"], sig["serve_float"]
    side = int(MAX_FRAME_PIXELS ** 0.5) + 2
    for fn, x, message in (
            (u8, np.zeros((2, 9, 11), np.uint8), r"wrong number of frames; expected uint8 \[1, height, width\]"),
            (u8, np.zeros((9, 11), np.uint8), r"expected uint8 \[1, height, width\]"),
            (u8, np.zeros((1, side, side), np.uint8), f"more than {MAX_FRAME_PIXELS} pixels"),
            (u8, np.zeros((1, 0, 11), np.uint8), "empty frame"),
            (f32, np.zeros((1, 3, 9, 11, 1), np.float32), r"wrong number of frames; expected float32 \[batch, 1,"),
            (f32, np.zeros((1, 1, 9, 11), np.float32), r"expected float32 \[batch, 1, height, width, 1\]"),
            (f32, np.full((1, 1, 9, 11, 1), np.nan, np.float32), "NaN or Inf"),
            (f32, np.full((1, 1, 9, 11, 1), np.inf, np.float32), "NaN or Inf")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            fn(frames=tf.constant(x))
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        f32(frames=tf.zeros((1, 1, 9, 11, 1), tf.int32))
    out = f32(frames=tf.constant(np.full((1, 1, 9, 11, 1), 5.0, np.float32)))["enhanced"].numpy()
    inside = f32(frames=tf.constant(np.ones((1, 1, 9, 11, 1), np.float32)))["enhanced"].numpy()
    assert out.min() >= 0 and out.max() <= 1 and np.array_equal(out, inside)  # 5.0 is read as 1.0
    from vcar_tf.errors import VcarError
    from vcar_tf.inference.saved_model import SavedModelEnhancer

    runner = SavedModelEnhancer(path)  # as vcar-enhance --saved_model calls it: integers are refused
    with pytest.raises(VcarError, match="frames must be float32 in \\[0, 1\\]; got uint8"):
        runner(np.full((1, 1, 9, 11, 1), 200, np.uint8))
    np.testing.assert_array_equal(runner(np.ones((1, 1, 9, 11, 1), np.float64)), inside)
