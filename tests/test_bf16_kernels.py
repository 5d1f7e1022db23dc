"""vcar_tf.ops.bf16_kernels: TF's ReluGrad and AddN on bfloat16, registered above TF's own kernels, give
TF's values bit for bit (a NaN may differ in sign and payload: TF's own vector and scalar paths do).
TF's results come from a fresh process that never loads the library."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import kernels

from tests.conftest import break_op_source, built_or_skip
from vcar_tf.ops.bf16_kernels import load_bf16_kernels

SHAPE = (3, 37, 41, 5)  # 22,755 values: several work units and a tail after the last 16
ADDN_COUNTS = (2, 3, 8, 9, 10, 17)  # TF's groups: the first n % 8 (8 or 9), then 8 at a time

# The same graphs in both processes.
PROGRAM = """
import numpy as np, tensorflow as tf
from tensorflow.python.ops import gen_math_ops, gen_nn_ops

def results(path):
    data = np.load(path)
    dy, x = (tf.constant(data[k].view(np.uint16)) for k in ("dy", "x"))
    as_bf16 = lambda t: tf.bitcast(t, tf.bfloat16)
    out = {"relu_grad": tf.function(lambda a, b: gen_nn_ops.relu_grad(as_bf16(a), as_bf16(b)))(dy, x)}
    ones = as_bf16(tf.fill(SHAPE, tf.constant(0x3F80, tf.uint16)))
    for n in COUNTS:
        terms = as_bf16(tf.constant(data[f"terms_{n}"].view(np.uint16)))
        # the first two terms are arguments, which TF cannot forward; the products can be: TF forwards the
        # first of them and sums it first (with only the first two swapped, the sum would not change)
        fn = tf.function(lambda a, b, rest, ones: gen_math_ops.add_n([a, b] + [rest[i] * ones for i in range(n - 2)]))
        out[f"add_n_{n}"] = fn(terms[0], terms[1], terms[2:], ones)
    return {k: tf.bitcast(v, tf.uint16).numpy() for k, v in out.items()}
""".replace("COUNTS", repr(ADDN_COUNTS)).replace("SHAPE", repr(SHAPE))


def special_bf16(rng, shape):
    """Random bf16 bits: normal values with ties for rounding, zeros of both signs, infinities, NaNs and
    subnormals."""
    values = rng.normal(scale=4.0, size=shape).astype(np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    flat = bits.reshape(-1)
    specials = np.array([0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x0001, 0x8003, 0x7F7F], np.uint16)
    picks = rng.choice(flat.size, size=flat.size // 20, replace=False)
    flat[picks] = rng.choice(specials, size=picks.size)
    return bits


def as_float(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def assert_same_bits(got, want, name):
    nan = np.isnan(as_float(want))
    np.testing.assert_array_equal(np.isnan(as_float(got)), nan, err_msg=f"{name}: NaN positions")
    np.testing.assert_array_equal(got[~nan], want[~nan], err_msg=name)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    rng = np.random.default_rng(0)
    data = {"dy": special_bf16(rng, SHAPE), "x": special_bf16(rng, SHAPE)}
    for n in ADDN_COUNTS:
        terms = special_bf16(rng, (n, *SHAPE))
        terms[:, :, :2] = terms[0, :, :2]  # equal terms: sums that sit on rounding ties
        data[f"terms_{n}"] = terms
    path = tmp_path_factory.mktemp("bf16") / "cases.npz"
    np.savez(path, **data)
    script = PROGRAM + f"\nnp.savez({str(path) + '.tf.npz'!r}, **results({str(path)!r}))\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return path


def fused_or_skip():
    return built_or_skip(load_bf16_kernels, "bf16 kernels")


def test_the_kernels_are_registered_above_tfs_for_bfloat16_on_the_cpu():
    fused_or_skip()
    for op in ("ReluGrad", "AddN"):
        registered = [(k.priority, k.constraint[0].allowed_values.list.type[0])
                      for k in kernels.get_registered_kernels_for_op(op).kernel if k.device_type == "CPU"]
        bf16 = tf.bfloat16.as_datatype_enum
        assert max(p for p, t in registered if t == bf16) == 1, op
        assert all(p == 0 for p, t in registered if t != bf16), op  # other dtypes keep TF's kernels


def test_relu_grad_and_add_n_give_tfs_bits(cases):
    fused_or_skip()
    namespace = {}
    exec(PROGRAM, namespace)
    got, want = namespace["results"](cases), np.load(str(cases) + ".tf.npz")
    assert set(got) == set(want.files)
    for name in want.files:
        assert_same_bits(got[name], want[name], name)


def test_relu_grad_keeps_the_gradient_only_where_the_feature_is_positive():
    fused_or_skip()
    x = tf.constant([1.0, 0.0, -0.0, -2.0, float("nan"), 1e-40], tf.bfloat16)
    dy = tf.constant([3.0, 3.0, 3.0, -3.0, 3.0, 5.0], tf.bfloat16)
    from tensorflow.python.ops import gen_nn_ops
    got = tf.function(lambda a, b: gen_nn_ops.relu_grad(a, b))(dy, x)
    # a subnormal feature counts as 0: TF's threads treat subnormals as zero, as TF's own kernel does
    np.testing.assert_array_equal(tf.cast(got, tf.float32), [3.0, 0.0, 0.0, -0.0, 0.0, 0.0])
    assert np.signbit(tf.cast(got, tf.float32).numpy()[3])


def test_a_failed_build_warns_once_and_leaves_tfs_kernels(monkeypatch, tmp_path):
    break_op_source(monkeypatch, tmp_path, "bf16_kernels/bf16_kernels_op.cc")
    with pytest.warns(RuntimeWarning, match="bf16 ReluGrad and AddN kernels unavailable .*; TensorFlow's run"):
        assert load_bf16_kernels() is None
    assert load_bf16_kernels() is None  # no second build, no second warning
