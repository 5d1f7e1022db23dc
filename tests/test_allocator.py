"""vcar_tf caps TensorFlow's oneDNN allocator (vcar_tf/allocator.py), and TensorFlow honours the cap."""

import os

import pytest

from tests.conftest import run_cli
from vcar_tf import allocator


def test_the_cap_is_a_fraction_of_memory_and_a_users_value_is_kept(tmp_path):
    limit = allocator.memory_limit_bytes()
    assert limit and limit > 2**28
    env = {}
    assert allocator.cap_onednn_allocator(env) == str(int(limit * allocator.FRACTION))
    env = {allocator.ENV: "12345"}
    assert allocator.cap_onednn_allocator(env) == "12345" and env == {allocator.ENV: "12345"}
    # a container's limit below the machine's memory wins; "max" means none
    cgroup = tmp_path / "memory.max"
    cgroup.write_text(f"{2**30}\n")
    assert allocator.memory_limit_bytes(str(cgroup)) == min(limit, 2**30)
    assert allocator.cap_onednn_allocator({}, str(cgroup)) == str(int(min(limit, 2**30) * allocator.FRACTION))
    cgroup.write_text("max\n")
    assert allocator.memory_limit_bytes(str(cgroup)) == limit


def run_python(code, cap=None):
    """code run in a fresh process whose environment sets the cap, or (None) leaves it unset."""
    return run_cli("-c", code, env={allocator.ENV: cap, "TF_CPP_MIN_LOG_LEVEL": "2"})


@pytest.mark.skipif(os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0", reason="oneDNN's allocator is off")
def test_importing_vcar_tf_caps_tensorflow_and_tensorflow_honours_the_cap():
    # a 512 MB tensor under a 256 MB cap set by the environment: ResourceExhausted, not a kill
    code = ("import os, vcar_tf, tensorflow as tf\n"
            "print(os.environ['TF_MKL_ALLOC_MAX_BYTES'])\n"
            "try:\n"
            "    print(float(tf.reduce_sum(tf.ones([2**27]))))\n"
            "except tf.errors.ResourceExhaustedError:\n"
            "    print('exhausted')\n")
    capped = run_python(code, cap=str(2**28))
    assert capped.returncode == 0, capped.stderr
    assert capped.stdout.split() == [str(2**28), "exhausted"]
    default = run_python(code)  # the cap vcar_tf sets leaves room for it
    assert default.returncode == 0, default.stderr
    expected = str(int(allocator.memory_limit_bytes() * allocator.FRACTION))
    assert default.stdout.split() == [expected, str(float(2**27))]
