"""int8 inference (vcar_tf.models.int8): oneDNN's integer convolutions as the module maps them, which
parts of a model go integer, and what --precision int8 costs a shipped preset on the sample."""

import os
from types import SimpleNamespace

import numpy as np
import pytest

from tests.export_parity import SIZE_A, parity_model, psnr, sample_clips, windows
from vcar_tf.errors import VcarError
from vcar_tf.precision import native_int8_flags

# Without VNNI or AMX oneDNN's integer products saturate and Int8Model refuses the CPU (tested below).
needs_vnni = pytest.mark.skipif(not native_int8_flags(), reason="this CPU has no VNNI or AMX")


def _fake_quantized(x, high, steps):
    return np.round(np.clip(x, -high, high) / high * steps) * high / steps


@needs_vnni
@pytest.mark.parametrize("kind", ["relu", "relu_stride2_symmetric", "linear"])
def test_an_integer_conv_is_the_float_conv_of_its_quantized_input_and_weights(kind):
    import keras
    import tensorflow as tf

    from vcar_tf.models.blocks import SymmetricPadConv2D
    from vcar_tf.models.int8 import _IntegerConv, _float

    rng = np.random.default_rng(0)
    relu = kind != "linear"
    if kind == "relu_stride2_symmetric":
        layer = SymmetricPadConv2D(5, 3, strides=2, activation="relu")
    else:
        layer = keras.layers.Conv2D(5, 3, padding="same", activation="relu" if relu else None)
    layer.build((None, 21, 34, 8))
    kernel = rng.normal(0, 0.2, (3, 3, 8, 5)).astype(np.float32) * np.array([0.1, 1, 3, 0.5, 2], np.float32)
    bias = rng.normal(0, 0.3, 5).astype(np.float32)
    layer.set_weights([kernel, bias])
    x = rng.uniform(0, 2, (2, 21, 34, 8)).astype(np.float32)
    in_high = float(x.max())
    reference = layer(x).numpy()
    out_high = float(reference.max()) * 0.9  # the largest outputs saturate, as beyond calibration

    # what the integer op should compute: the float conv of the quantized input and weights
    per_channel = np.abs(kernel).max(axis=(0, 1, 2)) if relu else np.abs(kernel).max()
    twin = keras.layers.Conv2D.from_config(layer.get_config()) if kind != "relu_stride2_symmetric" else \
        SymmetricPadConv2D.from_config(layer.get_config())
    twin.build((None, 21, 34, 8))
    twin.set_weights([_fake_quantized(kernel, per_channel, 127), bias])
    expected = twin(_fake_quantized(x, in_high, 255)).numpy()

    conv = _IntegerConv(layer, in_high, out_high)
    got = tf.function(lambda v: _float(conv(v)))(tf.constant(x)).numpy()  # its ops take a graph's constant filter
    assert got.shape == expected.shape == reference.shape
    if relu:  # requantized to uint8 over [0, out_high]: within half a step
        np.testing.assert_allclose(got, np.clip(expected, 0, out_high), atol=out_high / 255 / 2 + 1e-5)
    else:  # int32 sums back to float: exact but for float rounding
        np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())
    near = np.clip(reference, 0, out_high) if relu else reference
    assert np.abs(got - near).max() < 0.05 * np.abs(reference).max()  # and near the float layer


@needs_vnni
def test_stdf_r3_runs_every_convolution_in_integers_and_stays_near_fp32_on_real_frames(sample_cache):
    import tensorflow as tf

    from vcar_tf.models.int8 import Int8Model

    model = parity_model("stdf_r3")
    comp, raw = sample_clips(sample_cache[1], SIZE_A)
    x = windows(comp, 3).astype(np.float32)
    int8 = Int8Model(model, [x[i:i + 1] for i in range(0, len(x), 2)])
    convs = [layer for layer in model.layers if type(layer).__name__ in ("Conv2D", "SymmetricPadConv2D")]
    assert sorted(int8.convs) == sorted(layer.name for layer in convs) and int8.float_convs == []
    ops = [op.type for op in int8._fn.get_concrete_function().graph.get_operations()]
    relu = sum(layer.activation.__name__ == "relu" for layer in convs)
    assert ops.count("QuantizedConv2DWithBiasAndReluAndRequantize") == relu
    assert ops.count("QuantizedConv2DWithBias") == len(convs) - relu == 2  # offset_mask and the residual head
    assert "Conv2D" not in ops
    fp32 = model(x, training=False).numpy()[..., 0]
    got = int8(x).numpy()[..., 0]
    assert got.shape == fp32.shape
    assert psnr(got, fp32) > 45  # dB, int8 against fp32
    assert abs((psnr(got, raw) - psnr(comp, raw)) - (psnr(fp32, raw) - psnr(comp, raw))) < 0.05
    batched = int8(tf.constant(x[:3])).numpy()[..., 0]  # any batch and size, one trace
    np.testing.assert_allclose(batched, got[:3], atol=1e-6)


@needs_vnni
def test_dncnn_folds_each_batch_normalisation_into_its_conv_and_stays_near_fp32(sample_cache):
    from vcar_tf.models.int8 import Int8Model, normalised_chains

    model = parity_model("dncnn")
    chains = normalised_chains(model)
    norms = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    assert len(chains) == len(norms) == 15
    assert all(chains[f"conv{i}"][0].name == f"bn{i}" and chains[f"conv{i}"][1].name == f"relu{i}" for i in range(2, 17))
    for layer in norms:  # statistics far from the initial ones, so that a fold that drops them fails
        layer.moving_mean.assign(np.linspace(-0.2, 0.2, layer.moving_mean.shape[0]))
        layer.moving_variance.assign(np.linspace(0.5, 2.0, layer.moving_variance.shape[0]))
    comp, _ = sample_clips(sample_cache[1], SIZE_A)
    x = windows(comp, 0).astype(np.float32)
    int8 = Int8Model(model, [x[i:i + 1] for i in range(len(x))])
    convs = [layer.name for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert sorted(int8.convs) == sorted(convs) and int8.float_convs == []
    ops = [op.type for op in int8._fn.get_concrete_function().graph.get_operations()]
    assert ops.count("QuantizedConv2DWithBiasAndReluAndRequantize") == 16 and ops.count("QuantizedConv2DWithBias") == 1
    assert not {"FusedBatchNormV3", "Conv2D", "Relu"} & set(ops)
    fp32 = model(x, training=False).numpy()[..., 0]
    assert psnr(int8(x).numpy()[..., 0], fp32) > 40  # dB


@needs_vnni
def test_a_conv_whose_input_goes_negative_stays_float_and_a_recurrent_model_is_refused():
    import keras

    from vcar_tf.models.blocks import FramesToChannels
    from vcar_tf.models.int8 import Int8Model

    keras.utils.set_random_seed(0)
    frames = keras.Input((3, None, None, 1))
    linear = keras.layers.Conv2D(4, 3, padding="same", name="linear")(FramesToChannels()(frames))
    out = keras.layers.Conv2D(1, 3, padding="same", activation="relu", name="after_linear")(linear)
    model = keras.Model(frames, out)
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 16, 24, 1)).astype(np.float32)
    int8 = Int8Model(model, [x[:1], x[1:]])
    assert int8.convs == ["linear"] and int8.float_convs == ["after_linear"]
    np.testing.assert_allclose(int8(x).numpy(), model(x).numpy(), atol=0.02)
    with pytest.raises(VcarError, match="int8 takes window models; rfda is recurrent"):
        Int8Model(SimpleNamespace(recurrent=True, name="rfda"), [x])
    with pytest.raises(VcarError, match="int8 needs calibration windows"):
        Int8Model(model, [])


@needs_vnni
def test_vcar_evaluate_precision_int8_costs_the_stdf_r3_preset_little_on_the_sample(tmp_path):
    """Without --data both runs evaluate the sample's preset compression, though int8's calibration
    caches the sample's default one beside it (vcar-evaluate used to stop at the two folders)."""
    from vcar_tf.cli.evaluate import main as evaluate
    from vcar_tf.reporting import read_report

    delta = {}
    for precision in ("fp32", "int8"):
        out = tmp_path / precision
        assert evaluate(["--preset", "stdf_r3_x265_qp37", "--precision", precision, "--out", str(out)]) == 0
        rows = read_report(str(out))[1]
        delta[precision] = float(next(r for r in rows if r["sequence"] == "average")["delta_psnr"])
    assert delta["fp32"] > 0.1
    assert abs(delta["fp32"] - delta["int8"]) < 0.02, delta



def test_precision_int8_refuses_a_recurrent_preset_before_calibrating_and_leaves_no_output(tmp_path, capsys):
    from vcar_tf.cli.enhance import main as enhance
    from vcar_tf.cli.evaluate import main as evaluate

    from tests.test_enhance import make_video

    video = tmp_path / "in.mp4"
    make_video(str(video), frames=2, audio=False)
    before = video.read_bytes()
    for command, argv in ((evaluate, ["--out", str(tmp_path / "e")]), (enhance, [str(video), str(tmp_path / "o.mp4")])):
        with pytest.raises(SystemExit) as refused:
            command(["--preset", "rfda_x265_qp37", "--precision", "int8", *argv])
        err = capsys.readouterr().err
        assert refused.value.code == 2 and "error: int8 takes window models; rfda is recurrent" in err
        assert "calibration windows" not in err
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"] and video.read_bytes() == before


def test_int8_refuses_a_cpu_without_vnni_or_amx_before_calibrating(monkeypatch):
    from vcar_tf import precision
    from vcar_tf.models.int8 import Int8Model

    monkeypatch.setattr(precision, "native_int8_flags", lambda cpuinfo=None: ())
    with pytest.raises(VcarError, match="int8 needs a CPU with avx512_vnni, avx_vnni, amx_int8 .* saturate"):
        Int8Model(parity_model("arcnn"), windows=None)  # refused before the windows are looked at
