"""The fused sigmoid gate (custom_ops/gate/) against a float64 NumPy reference: values, gradients, the bits of
the channel gradient, bad shapes and the XLA fallback."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import break_op_source, built_or_skip
from vcar_tf.ops import sigmoid_gate as gate_ops

SHAPES = [(2, 5, 7, 48),  # DSTA's n: three blocks of 16 channels
          (3, 4, 6, 37),  # two blocks and a tail of 5
          (1, 1, 1, 1)]


@pytest.fixture
def fused():
    return built_or_skip(gate_ops.load_sigmoid_gate, "fused gate")


def inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x, logits, dy = (tf.constant(rng.normal(scale=2.0, size=shape), dtype) for _ in range(3))
    channel = tf.constant(rng.random((shape[0], 1, 1, shape[3])), dtype)
    return x, logits, channel, dy


def reference(x, logits, channel, dy):
    """y, dx, dlogits, dchannel in float64 from the same (rounded) inputs."""
    x, logits, channel, dy = (np.asarray(tf.cast(t, tf.float64)) for t in (x, logits, channel, dy))
    g = 1.0 / (1.0 + np.exp(-logits))
    dg = dy * g
    return x * g * channel, dg * channel, dg * x * channel * (1.0 - g), (dg * x).sum(axis=(1, 2), keepdims=True)


def gated_and_gradients(fn, x, logits, channel, dy):
    with tf.GradientTape() as tape:
        tape.watch([x, logits, channel])
        y = fn(x, logits, channel)
    return [y, *tape.gradient(y, [x, logits, channel], output_gradients=dy)]


@pytest.mark.parametrize("dtype,tolerance", [(tf.float32, 1e-6), (tf.bfloat16, 2.0 ** -7)])
@pytest.mark.parametrize("shape", SHAPES)
def test_fused_gate_matches_the_formula_with_its_gradients(fused, dtype, tolerance, shape):
    x, logits, channel, dy = inputs(shape, dtype, seed=sum(shape))
    got = gated_and_gradients(gate_ops.sigmoid_gate, x, logits, channel, dy)
    graph = tf.function(gate_ops.sigmoid_gate).get_concrete_function(x, logits, channel).graph
    assert "VcarSigmoidGate" in {op.type for op in graph.get_operations()}
    for name, g, want in zip(("y", "dx", "dlogits", "dchannel"), got, reference(x, logits, channel, dy)):
        assert g.dtype == dtype and g.shape == want.shape, name
        np.testing.assert_allclose(np.asarray(tf.cast(g, tf.float64)), want, rtol=tolerance,
                                   atol=tolerance * np.abs(want).max(), err_msg=name)


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_channel_gradient_bits_do_not_depend_on_the_batch(fused, dtype):
    """Rows are summed in order whatever the threads do: an image alone and in a batch, and a second call,
    give the same bits."""
    x, logits, channel, dy = inputs((4, 64, 64, 48), dtype)
    whole = fused.vcar_sigmoid_gate_grad(dy, x, logits, channel)
    again = fused.vcar_sigmoid_gate_grad(dy, x, logits, channel)
    alone = fused.vcar_sigmoid_gate_grad(dy[2:3], x[2:3], logits[2:3], channel[2:3])
    for a, b, c in zip(whole, again, alone):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a[2:3], c)


def test_fused_gate_rejects_bad_shapes(fused):
    x = tf.zeros([2, 4, 4, 3])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"channel must be \(B, 1, 1, C\)"):
        fused.vcar_sigmoid_gate(x, x, x)
    with pytest.raises(tf.errors.InvalidArgumentError, match="logits must have x's shape"):
        fused.vcar_sigmoid_gate(x, x[:, :2], tf.zeros([2, 1, 1, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="dy must have x's shape"):
        fused.vcar_sigmoid_gate_grad(x[:1], x, x, tf.zeros([2, 1, 1, 3]))


def test_failed_build_warns_once_and_falls_back_to_xla(monkeypatch, tmp_path):
    break_op_source(monkeypatch, tmp_path, "gate/sigmoid_gate_op.cc")
    x, logits, channel, dy = inputs((2, 3, 5, 4), tf.float32)
    with pytest.warns(RuntimeWarning, match="fused sigmoid gate unavailable .*building sigmoid_gate failed"):
        got = gated_and_gradients(gate_ops.sigmoid_gate, x, logits, channel, dy)
    want = gated_and_gradients(gate_ops.xla_sigmoid_gate, x, logits, channel, dy)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert gate_ops.load_sigmoid_gate() is None  # no second build, no second warning


def test_portable_build_without_avx512_matches_too(fused, tmp_path):
    """The plain C++ path (a CPU without AVX-512), built in a fresh process: the same comparisons."""
    env = dict(os.environ, VCAR_OPS_PORTABLE="1", VCAR_TF_CACHE=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                        "-k", "matches_the_formula or do_not_depend"], env=env, capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0 and f"{2 * len(SHAPES) + 2} passed" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert any(name.startswith("sigmoid_gate") for name in os.listdir(os.path.join(tmp_path, "ops")))
