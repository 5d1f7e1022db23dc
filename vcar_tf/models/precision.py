"""precision_policy: Keras models built inside it compute in fp32 or bf16 (Keras's mixed_bfloat16 policy;
deformable convs, fused or composite, compute in float32 inside it); int8 models are built in fp32 and
then quantized (vcar_tf.models.int8). vcar_tf.precision chooses the precision."""

import contextlib
import sys

import keras

from vcar_tf.precision import check_precision, native_bf16_flags


@contextlib.contextmanager
def precision_policy(precision):
    """Models built inside this context compute in `precision` (the previous global policy is restored)."""
    check_precision(precision)
    if precision == "bf16" and not native_bf16_flags():
        print("warning: this CPU has no AVX512-BF16 or AMX: bf16 is emulated and slower than fp32", file=sys.stderr)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
