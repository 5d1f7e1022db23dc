"""Inference precision of a Keras model, chosen without TensorFlow: "fp32", "bf16" (bfloat16 compute,
float32 variables; vcar_tf.models.precision.precision_policy applies it) or "int8" (integer
convolutions calibrated on real frames, window models only: vcar_tf.models.int8). Native bfloat16
arithmetic needs AVX512-BF16 or AMX on the CPU, fast and exact int8 products VNNI or AMX; elsewhere
TF emulates bf16, slower than fp32. "auto" is bf16 where the CPU has it natively and a preset's card
records a bf16 cost on the val split within BF16_BUDGET_DB (scripts/preset_bf16.py measures it),
fp32 otherwise; it never picks int8.
"""

from vcar_tf.errors import VcarError

PRECISIONS = ("auto", "fp32", "bf16", "int8")
BF16_BUDGET_DB = 0.05  # the largest val ΔPSNR that bf16 may cost and still be the default (issue 21)
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


def bf16_val_cost(card):
    """The val ΔPSNR that bf16 costs a preset (its card's, from scripts/preset_bf16.py), or None."""
    return (card or {}).get("bf16", {}).get("val_cost_db")


def auto_precision(card=None, cpuinfo="/proc/cpuinfo"):
    """("bf16", why) where this CPU computes bfloat16 natively and `card` (a preset's) records a val
    cost of bf16 within BF16_BUDGET_DB; ("fp32", None) otherwise."""
    cost = bf16_val_cost(card)
    flags = native_bf16_flags(cpuinfo) if cost is not None and cost <= BF16_BUDGET_DB else ()
    if not flags:
        return "fp32", None
    return "bf16", f"this CPU has {' and '.join(flags)}; bf16 costs {cost:.3f} dB on val"


def check_precision(precision):
    if precision not in PRECISIONS:
        raise VcarError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
