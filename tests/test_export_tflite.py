import os

import numpy as np
import pytest

from tests.export_parity import (RECURRENT_MODELS, SIZE_A, SIZE_B, WINDOW_MODELS, parity_model, psnr, run_fresh,
                                 sample_clips, windows)
from tests.conftest import run_without_tf
from tests.test_enhance import make_video
from vcar_tf.errors import VcarError
from vcar_tf.export.tflite import export_tflite
from vcar_tf.models import build, spec

# Runs each window (or each step of a stream, carrying the state) with ai-edge-litert only.
_FRESH = r'''
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType
path, inp, outp = sys.argv[1:4]
ops = sorted({o["op_name"] for o in Interpreter(
    model_path=path, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)._get_ops_details()})
it = Interpreter(model_path=path)
inputs = {d["name"]: d for d in it.get_input_details()}
data = np.load(inp)
out = {"ops": np.array(ops)}
for key in data.files:
    ws = data[key]
    if tuple(inputs["frames"]["shape"]) != (1, *ws.shape[1:]):
        it.resize_tensor_input(inputs["frames"]["index"], (1, *ws.shape[1:]), strict=True)
    it.allocate_tensors()
    hidden = np.zeros(inputs["hidden"]["shape"], np.float32) if "hidden" in inputs else None
    frames = []
    for w in ws:
        it.set_tensor(inputs["frames"]["index"], w[None])
        if hidden is not None:
            it.set_tensor(inputs["hidden"]["index"], hidden)
        it.invoke()
        outs = [it.get_tensor(d["index"]) for d in it.get_output_details()]
        frames.append(next(o for o in outs if o.shape[-1] == 1)[0, ..., 0])
        hidden = next((o for o in outs if o.shape[-1] != 1), None)
    out[key] = np.stack(frames)
np.savez(outp, **out)
'''


def _builtin_names():
    from tensorflow.lite.python.schema_py_generated import BuiltinOperator

    return {k for k in vars(BuiltinOperator) if k.isupper()} - {"CUSTOM", "DELEGATE"}


def _sampling_dtypes(path):
    """The dtypes of a TFLite file's deformable sampling-position tensors."""
    from ai_edge_litert.interpreter import Interpreter

    from vcar_tf.ops.deform_conv import SAMPLING_SCOPE

    return {t["dtype"].__name__ for t in Interpreter(model_path=path).get_tensor_details()
            if f"/{SAMPLING_SCOPE}/" in t["name"]}


def _keras_frames(model, ws):
    return np.concatenate([np.asarray(model(w[None], training=False))[..., 0] for w in ws])


def _fresh(tmp_path, path, inputs):
    np.savez(tmp_path / "in.npz", **inputs)
    run_fresh(_FRESH, path, tmp_path / "in.npz", tmp_path / "out.npz", cwd=tmp_path)
    out = np.load(tmp_path / "out.npz")
    ops = set(out["ops"].tolist())
    assert ops and ops <= _builtin_names(), sorted(ops - _builtin_names())  # no Flex or custom op
    return out


@pytest.fixture(scope="module")
def sample_root(sample_cache):
    return sample_cache[1]


def test_models_cover_the_registry():
    """Every registered model has its parity tests: a new model must join one list."""
    from vcar_tf.models import names

    assert sorted(WINDOW_MODELS + RECURRENT_MODELS) == sorted(names())


@pytest.mark.parametrize("name", WINDOW_MODELS)
def test_fp32_tflite_matches_keras_on_real_frames_in_fresh_process(name, sample_root, tmp_path, record_property):
    """Fixed-size files at two sizes that are not multiples of 8: max |difference| <= 1e-4 and
    ΔPSNR equal to the Keras model's within 0.01 dB, run by ai-edge-litert alone, builtin ops only."""
    radius = spec(name).radius
    model = parity_model(name)
    for size in (SIZE_A, SIZE_B):
        comp, raw = sample_clips(sample_root, size, frames=4)
        ws = windows(comp, radius)
        path = export_tflite(model, radius, str(tmp_path / f"{name}.tflite"), *size)
        out = _fresh(tmp_path, path, {"x": ws})
        assert "CONV_3D" not in set(out["ops"].tolist())  # FrameConv3D: LiteRT's CONV_3D im2col takes GBs
        got, want = out["x"], _keras_frames(model, ws)
        assert got.shape == want.shape == comp.shape
        record_property(f"max_abs_diff_{size[0]}x{size[1]}", float(np.abs(got - want).max()))
        assert np.abs(got - want).max() <= 1e-4
        assert abs(psnr(got, raw) - psnr(want, raw)) <= 0.01
        assert abs(psnr(want, raw) - psnr(comp, raw)) > 0.01  # the model changes the frames


def test_free_size_tflite_resizes_and_runner_rejects_bad_input(sample_root, tmp_path):
    """A file exported without --height/--width runs at any size (resize_tensor_input), in a fresh
    process and through the runner; a fixed-size file rejects another size with a clear error."""
    from vcar_tf.inference.exported import load_exported
    from vcar_tf.inference.streaming import enhance_frames

    model = parity_model("stdf_r3")
    free = export_tflite(model, 3, str(tmp_path / "free.tflite"))
    inputs = {k: windows(sample_clips(sample_root, s, frames=3)[0], 3) for k, s in (("a", SIZE_A), ("b", SIZE_B))}
    out = _fresh(tmp_path, free, inputs)
    for k, ws in inputs.items():
        assert np.abs(out[k] - _keras_frames(model, ws)).max() <= 1e-4
    runner = load_exported(free)
    assert (runner.radius, runner.recurrent, runner.input_size) == (3, False, None)
    comp = sample_clips(sample_root, SIZE_B, frames=3)[0]
    streamed = np.stack(list(enhance_frames(runner, comp, 3)))
    assert np.abs(streamed - np.clip(_keras_frames(model, windows(comp, 3)), 0, 1)).max() <= 1e-4
    edges = np.indices((1, 7, *SIZE_A, 1)).sum(axis=0) % 2 * np.float32(1.0)  # a checkerboard: 0 and 1
    raw_keras = _keras_frames(model, edges.astype(np.float32))
    assert raw_keras.min() < 0 or raw_keras.max() > 1  # the model overshoots [0, 1] here
    np.testing.assert_allclose(np.asarray(runner(edges.astype(np.float32)))[..., 0], np.clip(raw_keras, 0, 1),
                               atol=1e-4)  # the runner's frames are clipped, as the SavedModel's

    nl_model = parity_model("nl_convlstm")  # its non-local warp converts with free H and W too
    nl_free = export_tflite(nl_model, 3, str(tmp_path / "nl_free.tflite"))
    out = _fresh(tmp_path, nl_free, inputs)
    for k, ws in inputs.items():
        assert np.abs(out[k] - _keras_frames(nl_model, ws)).max() <= 1e-4

    fixed_path = export_tflite(build("arcnn"), 0, str(tmp_path / "fixed.tflite"), *SIZE_A)
    fixed = load_exported(fixed_path)
    # vcar-enhance says so before TensorFlow loads: another size, or tiles of the file's own size
    for (h, w), extra, message in ((SIZE_B, [], "exported for 53x37 frames, the video's are 45x30: export it with "
                                    "--height 30 --width 45"),
                                   (SIZE_A, ["--tile", "16"], "--tile needs a free-size export"),
                                   (SIZE_A, ["--max_memory", "4G"], "--max_memory needs a free-size export")):
        clip = str(tmp_path / f"clip_{w}x{h}.mkv")
        make_video(clip, width=w, height=h, frames=2, codec="ffv1", options={}, audio=False)
        r = run_without_tf("vcar_tf.cli.enhance", clip, str(tmp_path / "o.y4m"), "--exported", fixed_path, *extra)
        lines = r.stderr.strip().splitlines()  # LiteRT's INFO line on the XNNPACK delegate may come first
        assert r.returncode == 2 and lines[-1].startswith("error: ") and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert message in lines[-1] and not os.path.exists(tmp_path / "o.y4m")
    assert fixed.input_size == SIZE_A
    with pytest.raises(VcarError, match=r"frames must be 1x1x37x53x1; got 1x1x30x45x1"):
        fixed(np.zeros((1, 1, *SIZE_B, 1), np.float32))
    with pytest.raises(VcarError, match="must be float32"):
        fixed(np.zeros((1, 1, *SIZE_A, 1), np.uint8))
    with pytest.raises(VcarError, match="NaN or Inf"):
        fixed(np.full((1, 1, *SIZE_A, 1), np.inf, np.float32))
    assert np.array_equal(fixed(np.full((1, 1, *SIZE_A, 1), 5.0, np.float32)),
                          fixed(np.ones((1, 1, *SIZE_A, 1), np.float32)))  # clipped to [0, 1] like the SavedModel
    with pytest.raises(VcarError, match="not a TFLite model"):
        (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer")
        load_exported(str(tmp_path / "bad.tflite"))


@pytest.mark.parametrize("name", RECURRENT_MODELS)
def test_recurrent_step_tflite_over_a_stream_equals_keras_clip(name, sample_root, tmp_path, record_property):
    """The step file (window, state) -> (frame, next state) of RFDA and STDF+RF: a 10-frame stream
    carried by the fresh process and by the runner equals the Keras model's whole-clip output."""
    from vcar_tf.inference.exported import load_exported
    from vcar_tf.inference.streaming import enhance_frames

    model = parity_model(name)
    comp, _ = sample_clips(sample_root, SIZE_A, frames=10)
    want = np.asarray(model(comp[None, ..., None]))[0, ..., 0]
    path = export_tflite(model, 3, str(tmp_path / f"{name}.tflite"), *SIZE_A)
    got = _fresh(tmp_path, path, {"x": windows(comp, 3)})["x"]
    record_property(f"max_abs_diff_{SIZE_A[0]}x{SIZE_A[1]}", float(np.abs(got - want).max()))
    assert np.abs(got - want).max() <= 1e-4
    runner = load_exported(path)
    assert runner.recurrent and runner.initial_state(None).shape == (1, 40, 56, runner.state_channels)
    streamed = np.stack(list(enhance_frames(runner, comp, 3)))
    assert np.abs(streamed - np.clip(want, 0, 1)).max() <= 1e-4
    with pytest.raises(VcarError, match="hidden must be 1x40x56x64"):
        runner.step(windows(comp, 3)[:1], np.zeros((1, 37, 53, 64), np.float32))
    with pytest.raises(VcarError, match="fixed size"):
        export_tflite(model, 3, str(tmp_path / "free_rfda.tflite"))


def test_fp16_and_int8_variants_are_builtin_and_close_to_fp32(sample_root, tmp_path, record_property):
    """fp16 weights: ΔPSNR within 0.05 dB of fp32; int8 and int8_full (calibrated on real frames):
    builtin ops, float in and out, finite frames of the right shape; int8 keeps the deformable
    sampling positions float, int8_full rounds them to int8 (the loss on trained weights is
    measured by the benchmark); both within 0.02 of fp32 on average (measured 0.0064-0.0065 on
    2026-12-04), well under what the model changes the frames by."""
    model = parity_model("stdf_r3")
    comp, raw = sample_clips(sample_root, SIZE_A, frames=4)
    ws = windows(comp, 3)
    fp32 = export_tflite(model, 3, str(tmp_path / "fp32.tflite"), *SIZE_A)
    fp16 = export_tflite(model, 3, str(tmp_path / "fp16.tflite"), *SIZE_A, quantization="fp16")
    calibration, _ = sample_clips(sample_root, SIZE_A, frames=4, offset=(100, 120))
    int8 = {q: export_tflite(model, 3, str(tmp_path / f"{q}.tflite"), *SIZE_A, quantization=q,
                             representative=[w[None] for w in windows(calibration, 3)]) for q in ("int8", "int8_full")}
    sizes = [(tmp_path / f).stat().st_size for f in ("fp32.tflite", "fp16.tflite", "int8.tflite")]
    assert sizes[1] < sizes[0] and sizes[2] < sizes[1]
    out = {q: _fresh(tmp_path, p, {"x": ws})["x"] for q, p in (("fp32", fp32), ("fp16", fp16), *int8.items())}
    assert abs(psnr(out["fp16"], raw) - psnr(out["fp32"], raw)) <= 0.05
    change = float(np.abs(out["fp32"] - ws[:, 3, ..., 0]).mean())  # what the model does to the centre frames
    record_property("mean_abs_change_fp32", change)
    for q in int8:
        assert out[q].shape == out["fp32"].shape and np.isfinite(out[q]).all()
        diff = float(np.abs(out[q] - out["fp32"]).mean())
        record_property(f"mean_abs_diff_{q}_fp32", diff)
        assert diff <= 0.02 and diff <= change / 2, (q, diff, change)
    assert "int8" not in _sampling_dtypes(int8["int8"]) and "int8" in _sampling_dtypes(int8["int8_full"])
    with pytest.raises(VcarError, match="representative"):
        export_tflite(model, 3, str(tmp_path / "x.tflite"), *SIZE_A, quantization="int8")



def test_recurrent_calibration_carries_the_state_from_frame_to_frame():
    """int8 calibration of a recurrent model sees the state of a running stream, not only the zero
    state of its first frame (whose range [0, 0] would leave every later state's scale arbitrary)."""
    from vcar_tf.cli.common import calibration_windows
    from vcar_tf.models import build

    model = build("rfda")
    samples = calibration_windows(model, 3, 32, 48, 4)  # two frames of each of the first two sequences
    assert len(samples) == 4 and samples[0][0].shape == (1, 7, 32, 48, 1)
    states = [np.asarray(state) for _, state in samples]
    assert not states[0].any() and states[1].any() and not states[2].any() and states[3].any()
    np.testing.assert_allclose(states[1], np.asarray(model.step(samples[0][0], states[0])[1]), atol=1e-5)


def test_the_tflite_runner_uses_every_core_unless_told(tmp_path, monkeypatch):
    """LiteRT's Interpreter runs on one thread when given none; vcar-enhance and vcar-evaluate
    --exported give it every core, as onnxruntime and TensorFlow have."""
    import ai_edge_litert.interpreter as litert

    from vcar_tf.inference.tflite import TFLiteEnhancer

    seen = []

    def interpreter(model_path, num_threads):
        seen.append(num_threads)
        raise ValueError("a stand-in")

    monkeypatch.setattr(litert, "Interpreter", interpreter)
    path = tmp_path / "x.tflite"
    path.write_bytes(b"x")
    for threads in (None, 1):
        with pytest.raises(VcarError, match="is not a TFLite model"):
            TFLiteEnhancer(str(path), threads)
    assert seen == [os.cpu_count(), 1]
