"""--mixed_precision (Keras mixed_bfloat16) for every registered model: the output added in float32, a
training step, streaming inference (window and recurrent) and the export signatures, which stay float32."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from vcar_tf import models
from vcar_tf.export.signatures import ENHANCED, HIDDEN, SERVE_FLOAT, STEP_FLOAT, endpoints
from vcar_tf.inference.streaming import enhance_frames
from vcar_tf.models.recurrent import is_recurrent


@pytest.fixture
def bfloat16_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name", models.names())
def test_mixed_precision_trains_streams_and_exports_float32(name, bfloat16_policy):
    model = models.build(name)
    radius = models.spec(name).radius
    assert model.compute_dtype == "bfloat16" and model.trainable_variables[0].dtype == "float32"
    rng = np.random.default_rng(0)
    frames = 2 * radius + 1
    clip = models.spec(name).clip_length if models.spec(name).recurrent else None
    x = rng.random((1, clip or frames, 20, 28, 1), np.float32)
    # untrained, the residual is zero: the output is the centre frame to the bit, not rounded to bf16
    np.testing.assert_array_equal(model(x), x if clip else x[:, radius])
    planes = [rng.random((19, 27), np.float32) for _ in range(3)]  # odd sizes, a stream of 3 frames
    for enhanced, plane in zip(enhance_frames(model, planes, radius), planes, strict=True):
        np.testing.assert_array_equal(enhanced, plane)
    with tf.GradientTape() as tape:
        y = model(x, training=True)
        loss = tf.reduce_mean(tf.square(tf.cast(y, tf.float32) - 0.5))
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss)) and all(g is not None for g in grads)
    before = [v.numpy() for v in model.trainable_variables]
    keras.optimizers.Adam(1e-3).apply(grads, model.trainable_variables)  # one training step
    assert all(v.dtype == "float32" and np.isfinite(v.numpy()).all() for v in model.trainable_variables)
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))

    out = list(enhance_frames(model, planes, radius))
    assert len(out) == 3 and all(o.shape == (19, 27) and np.isfinite(o).all() for o in out)

    fns = endpoints(model, radius)
    window = tf.constant(rng.random((1, frames, 19, 27, 1), np.float32))
    if is_recurrent(model):
        hidden = fns["initial_state"](window)[HIDDEN]
        result = fns[STEP_FLOAT](window, hidden)
        assert result[HIDDEN].dtype == tf.float32
    else:
        result = fns[SERVE_FLOAT](window)
    assert result[ENHANCED].dtype == tf.float32 and result[ENHANCED].shape == (1, 19, 27, 1)
