"""The fused bilinear resize (custom_ops/resize/) against tf.image.resize: values and gradients."""


import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import break_op_source, built_or_skip
from vcar_tf.ops import resize_bilinear

CASES = [((3, 11, 11, 70), (32, 32)),  # DSTA's coarse head: 11 -> 32 and channels over one run of 64
         ((2, 32, 32, 12), (64, 64)),  # DSTA's attention map: x2
         ((2, 5, 7, 3), (3, 20)),  # down in H, up in W
         ((1, 1, 1, 2), (4, 4))]


@pytest.fixture
def fused():
    return built_or_skip(resize_bilinear.load_resize_bilinear, "fused resize")


def resized_and_gradient(fn, x, size, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x, size)
    return y, tape.gradient(y, x, output_gradients=tf.cast(upstream, y.dtype))


@pytest.mark.parametrize("dtype,tolerance", [(tf.float32, 1e-5), (tf.bfloat16, 2.0 ** -7)])
@pytest.mark.parametrize("shape,size", CASES)
def test_fused_resize_matches_tf_image_resize(fused, dtype, tolerance, shape, size):
    rng = np.random.default_rng(sum(shape))
    x = tf.constant(rng.normal(size=shape), dtype)
    upstream = tf.constant(rng.normal(size=(shape[0], *size, shape[3])), tf.float32)
    y, dx = resized_and_gradient(resize_bilinear.resize_bilinear, x, size, upstream)
    want, want_dx = resized_and_gradient(lambda t, s: tf.image.resize(t, s, method="bilinear"), x, size, upstream)
    assert y.dtype == dtype and dx.dtype == dtype and y.shape == want.shape
    assert "VcarResizeBilinear" in {op.type for op in tf.function(resize_bilinear.resize_bilinear).get_concrete_function(
        tf.TensorSpec(shape, dtype), tf.constant(size)).graph.get_operations()}
    for got, ref, name in ((y, want, "y"), (dx, want_dx, "dx")):
        got, ref = np.asarray(tf.cast(got, tf.float32)), np.asarray(tf.cast(ref, tf.float32))
        np.testing.assert_allclose(got, ref, rtol=tolerance, atol=tolerance * np.abs(ref).max(), err_msg=name)


def test_fused_resize_rejects_bad_shapes(fused):
    with pytest.raises(tf.errors.InvalidArgumentError, match="size must be positive"):
        fused.vcar_resize_bilinear(tf.zeros([1, 4, 4, 1]), tf.constant([0, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch and channels"):
        fused.vcar_resize_bilinear_grad(tf.zeros([1, 8, 8, 2]), tf.zeros([1, 4, 4, 1]))


def test_failed_build_warns_once_and_falls_back_to_tf_image_resize(monkeypatch, tmp_path):
    break_op_source(monkeypatch, tmp_path, "resize/resize_bilinear_op.cc")
    x = tf.random.normal([1, 3, 3, 2])
    with pytest.warns(RuntimeWarning, match="fused bilinear resize unavailable .*building resize_bilinear failed"):
        y = resize_bilinear.resize_bilinear(x, [5, 5])
    np.testing.assert_array_equal(y, tf.image.resize(x, [5, 5]))
    assert resize_bilinear.load_resize_bilinear() is None  # no second build, no second warning
