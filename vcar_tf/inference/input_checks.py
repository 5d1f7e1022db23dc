"""The input checks the TFLite and ONNX runners share (the SavedModel makes most in its graph)."""

import numpy as np

from vcar_tf.errors import VcarError
from vcar_tf.export.names import FRAMES


def refuse_integers(name, dtype):
    """Frames and states are floats in [0, 1]: integers (uint8 0..255) would be read as floats and
    clipped to a white frame. `dtype` is a NumPy dtype or a tf.DType."""
    floating = dtype.is_floating if hasattr(dtype, "is_floating") else (
        np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16")  # ml_dtypes' bfloat16 is kind 'V'
    if not floating:
        raise VcarError(f"{name} must be float32 in [0, 1]; got {dtype.name}")


def finite_input(name, array):
    """What the TFLite and ONNX runners feed, checked as the SavedModel's signatures check it:
    an empty input or NaN or Inf is an error; frames are clipped to [0, 1]."""
    if array.size == 0:  # the SavedModel's "empty frame"; ONNX Runtime and LiteRT would fail inside
        raise VcarError(f"{name}: an empty input ({'x'.join(map(str, array.shape))})")
    if not np.isfinite(array).all():
        raise VcarError(f"{name}: NaN or Inf in the input")
    return np.clip(array, 0.0, 1.0) if name == FRAMES else array
