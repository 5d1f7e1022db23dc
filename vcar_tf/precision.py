"""Inference precision of a Keras model, chosen without TensorFlow: "fp32", "bf16" (bfloat16 compute,
float32 variables; vcar_tf.models.precision.precision_policy applies it) or "int8" (integer
convolutions calibrated on real frames, window models only: vcar_tf.models.int8). Native bfloat16
arithmetic needs AVX512-BF16 or AMX on the CPU, exact int8 products VNNI or AMX; elsewhere TF
emulates bf16, slower than fp32, and int8 is refused. "auto" is int8, else bf16, where the CPU has
it natively and a preset's card records its cost on the val split within PRECISION_BUDGET_DB
(scripts/preset_precision.py measures it), fp32 otherwise.
"""

from vcar_tf.errors import VcarError

PRECISIONS = ("auto", "fp32", "bf16", "int8")
PRECISION_BUDGET_DB = 0.05  # the largest val ΔPSNR that int8 or bf16 may cost and still be the default (issue 21)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
NATIVE_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags(names, cpuinfo="/proc/cpuinfo"):
    """The CPU flags among `names` this machine has (empty where it has none or no cpuinfo)."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return ()
    return tuple(f for f in names if f in flags)


def native_bf16_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU flags of NATIVE_BF16_FLAGS this machine has."""
    return cpu_flags(NATIVE_BF16_FLAGS, cpuinfo)


def native_int8_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU flags of NATIVE_INT8_FLAGS this machine has."""
    return cpu_flags(NATIVE_INT8_FLAGS, cpuinfo)


def val_cost(card, precision):
    """The val ΔPSNR that `precision` costs a preset (its card's, from scripts/preset_precision.py), or None."""
    return (card or {}).get(precision, {}).get("val_cost_db")


def auto_precision(card=None, cpuinfo="/proc/cpuinfo"):
    """(precision, why) for the first of int8 and bf16 that this CPU computes natively and whose val
    cost `card` (a preset's) records within PRECISION_BUDGET_DB; ("fp32", None) otherwise."""
    for precision, native in (("int8", native_int8_flags), ("bf16", native_bf16_flags)):
        cost = val_cost(card, precision)
        flags = native(cpuinfo) if cost is not None and cost <= PRECISION_BUDGET_DB else ()
        if flags:
            return precision, f"this CPU has {' and '.join(flags)}; {precision} costs {cost:.3f} dB on val"
    return "fp32", None


def check_precision(precision):
    if precision not in PRECISIONS:
        raise VcarError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
