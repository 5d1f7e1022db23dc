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


@pytest.mark.parametrize("dtype,tolerance", [(tf.float32, 1e-6), (tf.bfloat16, 1e-2)])
def test_dsta_gate_in_training_equals_the_stock_ops_with_their_gradients(dtype, tolerance):
    """DSTA's output x · sigmoid(logits) · channel: the fused op (XLA kernels where it is not built) in
    training, stock ops otherwise (exports). Both give the same values and gradients (bf16: to its rounding)."""
    from vcar_tf.models.rfda.model import SigmoidGate

    rng = np.random.default_rng(0)
    x, logits = (tf.constant(rng.normal(size=(2, 5, 7, 8)), dtype) for _ in range(2))
    channel = tf.constant(rng.random((2, 1, 1, 8)), dtype)
    upstream = tf.constant(rng.normal(size=(2, 5, 7, 8)), dtype)
    gate, results = SigmoidGate(dtype="mixed_bfloat16" if dtype == tf.bfloat16 else "float32"), []
    for training in (True, False):
        with tf.GradientTape() as tape:
            tape.watch([x, logits, channel])
            y = gate([x, logits, channel], training=training)
        grads = tape.gradient(y, [x, logits, channel], output_gradients=upstream)
        results.append([np.asarray(tf.cast(t, tf.float32)) for t in [y, *grads]])
    for name, fused, stock in zip(("y", "dx", "dlogits", "dchannel"), *results):
        assert fused.shape == stock.shape, name
        np.testing.assert_allclose(fused, stock, rtol=tolerance, atol=tolerance * np.abs(stock).max(), err_msg=name)


@pytest.mark.parametrize("length", [9, 2])  # 2 < 2R+1: windows clipped inside the clip
def test_streaming_equals_whole_video(rfda, length):
    x = clip(length, seed=length)
    whole = np.clip(np.asarray(rfda(x))[0, ..., 0], 0, 1)
    streamed = np.stack(list(enhance_frames(rfda, x[0, ..., 0], R)))
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_output_depends_on_the_carried_state(rfda):
    window = clip(7)
    state = rfda.initial_state(window)
    assert np.abs(np.asarray(rfda.step(window, state)[1]) - np.asarray(rfda.step(window, state + 1.0)[1])).max() > 1e-3
    # STDF+RF shows it without the six DSTA blocks in between
    stdf_rf = perturb_weights(build("stdf_rf"), scale=0.02)
    out_zero, _ = stdf_rf.step(window, state)
    out_other, _ = stdf_rf.step(window, state + 1.0)
    assert np.abs(np.asarray(out_zero) - np.asarray(out_other)).max() > 1e-4
    # without recursive fusion the state is not an input
    window_model = perturb_weights(build("stdf_dsta"), scale=0.02)
    assert not window_model.recurrent
    np.testing.assert_array_equal(window_model.step(window)[0], window_model(window))


def test_first_frame_starts_from_a_zero_state(rfda):
    """t = 1 uses h'_0 = 0 (the official code), not h'_1 = h_1 (the paper)."""
    x = clip(4)
    first_window = x[:, [0, 0, 0, 0, 1, 2, 3]]
    state = rfda.initial_state(first_window)
    assert state.shape == (1, 24, 24, 64) and not np.any(state)
    out, hidden = rfda.step(first_window, state)
    np.testing.assert_allclose(np.asarray(rfda(x))[:, 0], out, atol=1e-6)
    frontend_only = rfda.frontend(rfda.pad(rfda.stack(first_window)))
    assert np.abs(np.asarray(hidden) - np.asarray(frontend_only)).max() > 1e-6  # RF ran on the zero state


def test_wrong_hidden_state_shape_is_a_clear_error(rfda):
    x = clip(1)[:, [0] * 7]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"hidden state must be \(B, ceil\(H/8\)\*8, ceil\(W/8\)\*8, 64\) for a window of H x W"):
        rfda.step(x, tf.zeros([1, 21, 19, 64]))


def test_streaming_memory_is_constant(rfda):
    enhancer = StreamingEnhancer(rfda, radius=R)
    frames = np.random.default_rng(0).random((40, 8, 8), dtype=np.float32)
    out = [t for y in frames for t, _ in enhancer.push(y)]
    assert len(enhancer._frames) == 2 * R + 1 and out == list(range(40 - R))
    assert [t for t, _ in enhancer.flush()] == list(range(40 - R, 40))


def test_streaming_rejects_a_frame_of_another_size():
    enhancer = StreamingEnhancer(build("arcnn"), radius=0)
    enhancer.push(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match=r"frame 1 is \(8, 9\), the stream is \(8, 8\)"):
        enhancer.push(np.zeros((8, 9), np.float32))


@pytest.mark.parametrize("name", ["rfda", "stdf_rf"])
def test_recurrent_keras_roundtrip(name, tmp_path):
    model = perturb_weights(build(name), scale=0.02)
    x = clip(3, 13, 10)
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.recurrent
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_dsta_gates_start_open():
    """Six DSTA blocks in a row must not hide the features at initialisation (gate bias 3)."""
    import keras

    from vcar_tf.models.rfda.model import dsta_block

    x = keras.Input((None, None, 48))
    y = x
    for i in range(6):
        y = dsta_block(y, f"d{i}")
    model = keras.Model(x, y)
    features = np.random.default_rng(0).random((1, 24, 32, 48)).astype(np.float32)
    ratio = float(np.mean(np.asarray(model(features)) / features))
    assert 0.4 < ratio < 1.0, ratio  # sigmoid(3)^2 = 0.907 per block, 0.56 for six; 2e-4 with bias 0
