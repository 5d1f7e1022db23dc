"""RFDA and its ablations: recurrent clip inference, streaming, the first frame's state, bad input."""

import numpy as np
import pytest
import tensorflow as tf

import keras
from vcar_tf.models import build
from vcar_tf.inference.streaming import StreamingEnhancer, enhance_frames
from vcar_tf.ops import resize_bilinear
from tests.conftest import perturb_weights

R = 3


@pytest.fixture(scope="module")
def rfda():
    return perturb_weights(build("rfda"), scale=0.02)


def clip(length, h=21, w=19, seed=0):
    return np.random.default_rng(seed).random((1, length, h, w, 1), dtype=np.float32)


def test_clip_call_unrolled_equals_while_loop(rfda):
    x = clip(5)
    unrolled = np.asarray(rfda(x))
    dynamic = tf.function(rfda, input_signature=[tf.TensorSpec([1, None, None, None, 1])])(x)
    assert unrolled.shape == (1, 5, 21, 19, 1)
    np.testing.assert_allclose(dynamic, unrolled, atol=1e-5)
    assert np.abs(unrolled - x).max() > 1e-3  # not the identity


@pytest.mark.parametrize("length", [4, 7])  # 7: chunks of UNROLL_CHUNK = 5 frames, then 2
def test_clip_call_batches_the_front_end_and_qe_to_the_values_of_step(rfda, length):
    """Training's unrolled call runs the front end and QE once per chunk of frames on all their B·T
    windows, with DSTA's fused resizes and gate: the outputs and every weight's gradient must be those
    of stepping the frames one by one through the stock ops (batch 2, to catch a mixed-up B·T order)."""
    from vcar_tf.models.rfda.model import UNROLL_CHUNK

    assert UNROLL_CHUNK < 7
    x = tf.constant(np.concatenate([clip(length, seed=1), clip(length, seed=2)]))

    def stepped(x):
        hidden, outs = None, []
        for t in range(length):
            window = tf.gather(x, [min(max(i, 0), length - 1) for i in range(t - R, t + R + 1)], axis=1)
            out, hidden = rfda.step(window, hidden)
            outs.append(out)
        return tf.stack(outs, axis=1)

    def trained(x):
        return rfda(x, training=True)

    if resize_bilinear.load_resize_bilinear() is not None:  # DSTA's resizes: the fused op in training only
        types = {op.type for op in tf.function(trained).get_concrete_function(x).graph.get_operations()}
        assert "VcarResizeBilinear" in types and "ResizeBilinear" not in types, types
    results = []
    for fn in (trained, stepped):
        with tf.GradientTape() as tape:
            y = fn(x)
            loss = tf.reduce_sum(tf.square(y - 0.5))
        results.append((np.asarray(y), tape.gradient(loss, rfda.trainable_weights)))
    (y, grads), (y_ref, grads_ref) = results
    np.testing.assert_allclose(y, y_ref, atol=1e-5)
    assert np.abs(y[0] - y[1]).max() > 1e-2  # two different clips
    for w, g, g_ref in zip(rfda.trainable_weights, grads, grads_ref):
        assert_gradients_agree(np.asarray(g), np.asarray(g_ref), w.path)


def assert_gradients_agree(g, g_ref, name):
    """Equal to 1e-3 in relative L2 norm, not value by value: bilinear sampling's derivative jumps at pixel
    edges, and the two paths' offsets differ in the last bits (their convs run on different batches), so a
    sample within that noise of an edge steps the gradient there and, through the offset U-Net, a few
    percent of an earlier layer's values (fresh-clone CI saw 1 of 2016 and 32 of 9216). Locally the
    largest difference was 1.6e-4 (DSTA's fused resize and gate against the stock ops)."""
    assert np.linalg.norm(g - g_ref) <= 1e-3 * np.linalg.norm(g_ref) + 1e-7, (
        f"{name}: relative L2 difference {np.linalg.norm(g - g_ref) / (np.linalg.norm(g_ref) + 1e-30):.2e}")
