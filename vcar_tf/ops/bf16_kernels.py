"""TF's own ReluGrad and AddN on bfloat16, with AVX-512 (custom_ops/bf16_kernels/): the same values as TF's
kernels, registered with a higher priority, so graphs instantiated after load_bf16_kernels() run them. Training
in bf16 loads them; where they cannot be built, TF's kernels run (one warning)."""

from vcar_tf.ops import build


def load_bf16_kernels():
    """The loaded library, or None (one warning per process) when it cannot be built."""
    return build.load_optional("bf16_kernels", "bf16_kernels/bf16_kernels_op.cc", "bf16 ReluGrad and AddN kernels",
                               "TensorFlow's run")
