"""The input checks the SavedModel, TFLite and ONNX runners share (vcar_tf.inference.input_checks)."""

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

from vcar_tf.errors import VcarError
from vcar_tf.inference.input_checks import finite_input, refuse_integers


@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64),
                                   np.dtype(ml_dtypes.bfloat16), tf.bfloat16, tf.float32])
def test_every_float_type_is_taken(dtype):
    refuse_integers("frames", dtype)  # NumPy's bfloat16 (ml_dtypes, kind 'V') included


@pytest.mark.parametrize("dtype", [np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(bool), tf.uint8, tf.int32])
def test_integers_and_booleans_are_refused_by_name(dtype):
    with pytest.raises(VcarError, match=f"frames must be float32 in \\[0, 1\\]; got {np.dtype(dtype.name).name}"):
        refuse_integers("frames", dtype)


def test_finite_input_refuses_empty_and_non_finite_and_clips_frames():
    with pytest.raises(VcarError, match="an empty input"):
        finite_input("frames", np.zeros((1, 0, 4, 4, 1), np.float32))
    with pytest.raises(VcarError, match="NaN or Inf"):
        finite_input("frames", np.array([0.5, np.nan], np.float32))
    np.testing.assert_array_equal(finite_input("frames", np.array([-1.0, 0.5, 2.0])), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(finite_input("hidden", np.array([-1.0, 2.0])), [-1.0, 2.0])
