"""The input checks the TFLite and ONNX runners share (the SavedModel makes them in its graph)."""

import numpy as np

from vcar_tf.errors import VcarError
from vcar_tf.export.names import FRAMES


def finite_input(name, array):
    """What the TFLite and ONNX runners feed, checked as the SavedModel's signatures check it:
    an empty input or NaN or Inf is an error; frames are clipped to [0, 1]."""
    if array.size == 0:  # the SavedModel's "empty frame"; ONNX Runtime and LiteRT would fail inside
        raise VcarError(f"{name}: an empty input ({'x'.join(map(str, array.shape))})")
    if not np.isfinite(array).all():
        raise VcarError(f"{name}: NaN or Inf in the input")
    return np.clip(array, 0.0, 1.0) if name == FRAMES else array
