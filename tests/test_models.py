import numpy as np
import pytest

import keras
from vcar_tf.errors import VcarError
from vcar_tf.models import build, names, spec, summary
from tests.conftest import perturb_weights


def test_registry_names_aliases_and_errors():
    assert names() == ["arcnn", "dncnn", "nl_convlstm", "rfda", "stdf_dsta", "stdf_r3", "stdf_r3l", "stdf_rf", "stifn_r3",
                       "stifn_r3l"]
    assert spec("stifn").name == "stifn_r3"
    with pytest.raises(VcarError, match="unknown model 'nope'; the registry has: arcnn, dncnn, nl_convlstm, rfda, stdf_dsta, stdf_r3, stdf_r3l, stdf_rf, "
                       "stifn_r3, stifn_r3l"):
        build("nope")
    with pytest.raises(VcarError, match="bad override"):
        build("arcnn", widht=3)


@pytest.mark.parametrize("name,expected,tolerance", [
    ("arcnn", 106_561, 0), ("dncnn", 556_000, 0.01),
    ("stifn_r3", 374_000, 0.05), ("stifn_r3l", 660_000, 0.05),
    ("stdf_r3", 364_510, 0), ("stdf_r3l", 1_274_622, 0), ("nl_convlstm", 710_593, 0),
    ("rfda", 1_270_430, 0), ("stdf_rf", 782_270, 0), ("stdf_dsta", 852_670, 0),
])
def test_parameter_counts(name, expected, tolerance):
    model = build(name)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert abs(trainable - expected) <= tolerance * expected, trainable


@pytest.mark.parametrize("name", ["arcnn", "dncnn", "stifn_r3", "stdf_r3", "nl_convlstm", "stdf_dsta"])
def test_any_size_residual_and_keras_roundtrip(name, tmp_path):
    model = build(name)
    radius = spec(name).radius
    x = np.random.default_rng(0).random((2, 2 * radius + 1, 21, 19, 1), dtype=np.float32)
    # untrained, the zero-initialised residual head makes the model the identity
    np.testing.assert_array_equal(model(x), x[:, radius])
    perturb_weights(model)
    rng = np.random.default_rng(0)
    for h, w in ((37, 53), (24, 18), (5, 3)):  # not multiples of 8; smaller than STDF's padding
        x = rng.random((2, 2 * radius + 1, h, w, 1), dtype=np.float32)
        y = model(x, training=False)
        assert y.shape == (2, h, w, 1)
    assert np.abs(np.asarray(model(x)) - x[:, radius]).max() > 1e-3
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-6)


def test_summary_lists_every_model_with_counts():
    rows = {n: p for n, _, p, _ in summary()}
    assert set(rows) == set(names()) and all(p > 100_000 for p in rows.values())


@pytest.mark.parametrize("kernel, padding", [((3, 3, 3), "same"), ((7, 1, 1), "valid"), ((1, 3, 3), "same"),
                                             ((3, 3, 3), "valid")])
def test_frame_conv3d_traces_as_2d_convs_with_the_same_function(kernel, padding):
    import keras
    import tensorflow as tf

    from vcar_tf.models.blocks import FrameConv3D, framewise_conv3d

    layer = FrameConv3D(6, kernel, padding=padding, activation="relu", bias_initializer="random_normal")
    x = np.random.default_rng(0).random((2, 7, 11, 13, 5)).astype(np.float32)
    want = np.asarray(layer(x))
    with framewise_conv3d():
        got = np.asarray(layer(x))
        graph = tf.function(layer).get_concrete_function(tf.TensorSpec([None, 7, None, None, 5])).graph
    np.testing.assert_allclose(got, want, atol=2e-6)
    ops = {op.type for op in graph.get_operations()}
    assert "Conv3D" not in ops and "Conv2D" in ops
    assert "Conv3D" in {op.type for op in tf.function(layer).get_concrete_function(
        tf.TensorSpec([None, 7, None, None, 5])).graph.get_operations()}
    clone = FrameConv3D.from_config(layer.get_config())
    assert clone.kernel_size == layer.kernel_size and clone.padding == padding
    with pytest.raises(VcarError, match="stride 1"):
        FrameConv3D(4, 3, strides=2)
    assert keras.saving.get_registered_object("vcar_tf>FrameConv3D") is FrameConv3D
