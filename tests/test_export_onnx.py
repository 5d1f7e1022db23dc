import numpy as np
import pytest

from tests.conftest import fused_op_or_skip
from tests.export_parity import (RECURRENT_MODELS, SIZE_A, SIZE_B, WINDOW_MODELS, parity_model, psnr, run_fresh,
                                 sample_clips, windows)
from vcar_tf.errors import VcarError
from vcar_tf.export.onnx import export_onnx
from vcar_tf.models import spec

# Runs every input (a batch of windows, or a stream carrying the state) with onnxruntime only.
_FRESH = r'''
import sys, numpy as np, onnxruntime as ort
path, inp, outp = sys.argv[1:4]
s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
names = {i.name for i in s.get_inputs()}
meta = s.get_modelmeta().custom_metadata_map
data = np.load(inp)
out = {"ops": np.array(sorted({n.op_type for n in __import__("onnx").load(path).graph.node}))}
for key in data.files:
    ws = data[key]
    if "hidden" not in names:  # the whole batch at once: the batch is free
        out[key] = s.run(["enhanced"], {"frames": ws})[0][..., 0]
        continue
    m, c = int(meta["vcar_tf.state_multiple"]), int(meta["vcar_tf.state_channels"])
    hidden = np.zeros((1, -(-ws.shape[2] // m) * m, -(-ws.shape[3] // m) * m, c), np.float32)
    frames = []
    for w in ws:
        y, hidden = s.run(["enhanced", "next_hidden"], {"frames": w[None], "hidden": hidden})
        frames.append(y[0, ..., 0])
    out[key] = np.stack(frames)
np.savez(outp, **out)
'''


def _fresh(tmp_path, path, inputs):
    np.savez(tmp_path / "in.npz", **inputs)
    run_fresh(_FRESH, path, tmp_path / "in.npz", tmp_path / "out.npz", cwd=tmp_path)
    return np.load(tmp_path / "out.npz")


@pytest.fixture(scope="module")
def sample_root(sample_cache):
    return sample_cache[1]


@pytest.mark.parametrize("name", WINDOW_MODELS)
def test_onnx_matches_keras_on_real_frames_in_fresh_process(name, sample_root, tmp_path, record_property):
    """One file, free batch, H and W: two sizes that are not multiples of 8, each as a batch of
    windows, max |difference| <= 1e-4 and ΔPSNR equal to Keras's within 0.01 dB, in onnxruntime alone."""
    radius = spec(name).radius
    model = parity_model(name)
    path = export_onnx(model, radius, str(tmp_path / f"{name}.onnx"))
    clips = {k: sample_clips(sample_root, s, frames=3) for k, s in (("a", SIZE_A), ("b", SIZE_B))}
    inputs = {k: windows(comp, radius) for k, (comp, _) in clips.items()}
    out = _fresh(tmp_path, path, inputs)
    assert "DeformConv" not in set(out["ops"].tolist())
    for k, (comp, raw) in clips.items():
        want = np.asarray(model(inputs[k], training=False))[..., 0]
        assert out[k].shape == want.shape == comp.shape
        record_property(f"max_abs_diff_{comp.shape[1]}x{comp.shape[2]}", float(np.abs(out[k] - want).max()))
        assert np.abs(out[k] - want).max() <= 1e-4
        assert abs(psnr(out[k], raw) - psnr(want, raw)) <= 0.01
        assert abs(psnr(want, raw) - psnr(comp, raw)) > 0.01  # the model changes the frames


@pytest.mark.parametrize("name", RECURRENT_MODELS)
def test_recurrent_onnx_over_a_stream_equals_keras_clip_and_runner_checks_input(name, sample_root, tmp_path,
                                                                                 record_property):
    """The step file of RFDA and STDF+RF: a 10-frame stream carried by the fresh process (first
    state from the metadata) and by the runner equals the Keras model's whole-clip output; bad
    input is one clear error."""
    from vcar_tf.inference.exported import load_exported
    from vcar_tf.inference.streaming import enhance_frames

    model = parity_model(name)
    path = export_onnx(model, 3, str(tmp_path / f"{name}.onnx"))
    comp, _ = sample_clips(sample_root, SIZE_B, frames=10)
    want = np.asarray(model(comp[None, ..., None]))[0, ..., 0]
    got = _fresh(tmp_path, path, {"x": windows(comp, 3)})["x"]
    record_property(f"max_abs_diff_{SIZE_B[0]}x{SIZE_B[1]}", float(np.abs(got - want).max()))
    assert np.abs(got - want).max() <= 1e-4
    runner = load_exported(path)
    assert (runner.radius, runner.recurrent, runner.state_channels) == (3, True, 64)
    assert runner.initial_state(np.zeros((1, 7, *SIZE_B, 1))).shape == (1, 32, 48, 64)
    streamed = np.stack(list(enhance_frames(runner, comp, 3)))
    assert np.abs(streamed - np.clip(want, 0, 1)).max() <= 1e-4
    with pytest.raises(VcarError, match=r"hidden state must be 1x32x48x64 for a window of 30x45; got 1x30x45x64"):
        runner.step(windows(comp, 3)[:1], np.zeros((1, *SIZE_B, 64), np.float32))
    with pytest.raises(VcarError, match=r"frames must be \?x7x\?x\?x1; got 1x5x30x45x1"):
        runner.step(np.zeros((1, 5, *SIZE_B, 1), np.float32), runner.initial_state(np.zeros((1, 7, *SIZE_B, 1))))
    with pytest.raises(VcarError, match="NaN or Inf"):
        runner.step(np.full((1, 7, *SIZE_B, 1), np.nan, np.float32), np.zeros((1, 32, 48, 64), np.float32))
    with pytest.raises(VcarError, match=r"frames: an empty input \(0x7x30x45x1\)"):
        runner.step(np.zeros((0, 7, *SIZE_B, 1), np.float32), np.zeros((0, 32, 48, 64), np.float32))
    with pytest.raises(VcarError, match="must be float32"):
        runner.step(np.zeros((1, 7, *SIZE_B, 1), np.uint8), np.zeros((1, 32, 48, 64), np.float32))
    with pytest.raises(VcarError, match="recurrent step model"):
        runner(np.zeros((1, 7, *SIZE_B, 1), np.float32))
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(VcarError, match="not an ONNX model"):
        load_exported(str(tmp_path / "bad.onnx"))
    with pytest.raises(VcarError, match="not an export vcar_tf runs"):
        load_exported(str(tmp_path / "model.pt"))


def test_tflite_and_onnx_runners_load_without_tensorflow():
    """The runners of .tflite and .onnx files, and load_exported, do not import TensorFlow."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import sys, vcar_tf.inference.exported, vcar_tf.inference.tflite, vcar_tf.inference.onnx\n"
            "bad = [k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras')]\nassert not bad, bad[:3]")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_native_deformconv_onnx_matches_keras_in_fresh_process(sample_root, tmp_path):
    """deform="native": STDF-R3's deformable convs as ONNX DeformConv nodes (opset 19), run by
    onnxruntime alone at two sizes that are not multiples of 8, within 1e-4 of the Keras model."""
    fused_op_or_skip()
    model = parity_model("stdf_r3")
    path = export_onnx(model, 3, str(tmp_path / "stdf_r3_deformconv.onnx"), deform="native")
    inputs = {k: windows(sample_clips(sample_root, s, frames=3)[0], 3) for k, s in (("a", SIZE_A), ("b", SIZE_B))}
    out = _fresh(tmp_path, path, inputs)
    assert "DeformConv" in set(out["ops"].tolist()) and "GatherND" not in set(out["ops"].tolist())
    for k, ws in inputs.items():
        assert np.abs(out[k] - np.asarray(model(ws, training=False))[..., 0]).max() <= 1e-4
    with pytest.raises(VcarError, match="unknown deform"):
        export_onnx(model, 3, str(tmp_path / "x.onnx"), deform="cuda")


def _with_rank5_output(proto):
    """A copy of a window model's proto whose `enhanced` gains a leading axis, as tf2onnx's
    order-dependent transpose optimizer sometimes leaves it."""
    import onnx

    bad = onnx.ModelProto()
    bad.CopyFrom(proto)
    last = next(n for n in bad.graph.node if "enhanced" in n.output)
    last.output[list(last.output).index("enhanced")] = "enhanced_rank4"
    bad.graph.initializer.append(onnx.numpy_helper.from_array(np.array([0], np.int64), "lead_axis"))
    bad.graph.node.append(onnx.helper.make_node("Unsqueeze", ["enhanced_rank4", "lead_axis"], ["enhanced"]))
    return bad


def test_onnx_conversion_with_a_wrong_output_rank_is_converted_again_then_refused(monkeypatch):
    import tf2onnx

    from vcar_tf.export import onnx as onnx_export

    model = parity_model("arcnn")
    good = onnx_export.onnx_model(model, 0)
    assert onnx_export.inferred_output_ranks(good) == {"enhanced": 4}
    assert onnx_export.inferred_output_ranks(_with_rank5_output(good)) == {"enhanced": 5}

    real, calls = tf2onnx.convert.from_function, []

    def flaky(*args, **kwargs):  # the first conversion is broken, the next ones are real
        proto, storage = real(*args, **kwargs)
        calls.append(proto)
        return (_with_rank5_output(proto) if len(calls) == 1 else proto), storage

    monkeypatch.setattr(tf2onnx.convert, "from_function", flaky)
    assert onnx_export.inferred_output_ranks(onnx_export.onnx_model(model, 0)) == {"enhanced": 4}
    # the broken first one is converted again; a real conversion can itself come out wrong (why
    # the retry exists: CI at 08b16a3 needed a third), so at least two and at most ATTEMPTS
    assert 2 <= len(calls) <= onnx_export.ATTEMPTS

    monkeypatch.setattr(tf2onnx.convert, "from_function",
                        lambda *a, **k: (lambda p, s: (_with_rank5_output(p), s))(*real(*a, **k)))
    with pytest.raises(VcarError, match="wrong rank 5 times"):
        onnx_export.onnx_model(model, 0)
