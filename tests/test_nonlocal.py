"""The non-local warp of NL-ConvLSTM: exact reference, two-stage approximation, padding, gradients;
streaming NL-ConvLSTM with per-frame features reused across windows."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.ndimage import gaussian_filter

from tests.conftest import perturb_weights
from vcar_tf.errors import VcarError
from vcar_tf.inference.streaming import StreamingEnhancer
from vcar_tf.models.nl_convlstm.model import build_nl_convlstm, NonLocalConvLSTM
from vcar_tf.ops.nonlocal_warp import approx_warp, approx_weights, exact_warp, exact_weights


def _maps(rng, h, w, c, scale=1.0):
    return tf.constant(rng.normal(size=(2, h, w, c)).astype(np.float32) * scale)


@pytest.mark.parametrize("h,w", [(23, 17), (20, 30), (5, 3), (12, 41)])
def test_approx_equals_exact_when_every_block_is_kept(h, w):
    rng = np.random.default_rng(h * w)
    prev, cur, state = _maps(rng, h, w, 8, 0.4), _maps(rng, h, w, 8, 0.4), _maps(rng, h, w, 5)
    blocks = -(-h // 10) * -(-w // 10)
    exact = exact_warp(prev, cur, state).numpy()
    np.testing.assert_allclose(approx_warp(prev, cur, state, top_k=blocks).numpy(), exact, atol=1e-5)
    if blocks > 4:  # with fewer blocks kept it is an approximation, not the same function
        assert np.abs(approx_warp(prev, cur, state, top_k=4).numpy() - exact).max() > 1e-3


def test_weights_sum_to_one_and_padding_is_never_a_candidate():
    rng = np.random.default_rng(0)
    h, w = 240, 416  # 416 is not a multiple of p = 10: four padded columns
    prev, cur = _maps(rng, h, w, 4), _maps(rng, h, w, 4)
    weights, nearest, valid, _ = approx_weights(prev, cur, block=10, top_k=4)
    weights, valid = weights.numpy(), valid.numpy()
    assert weights.shape == (2, 24 * 42, 100, 400) and nearest.shape == (2, 24 * 42, 4)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert (~valid).any()  # right-edge blocks do offer padded pixels as candidates ...
    assert (np.broadcast_to(~valid[:, :, None, :], weights.shape) & (weights != 0)).sum() == 0  # ... weighted 0
    np.testing.assert_allclose(exact_weights(prev[:, :30, :40], cur[:, :30, :40]).numpy().sum(-1), 1.0, atol=1e-5)


def test_padded_zero_features_do_not_attract_pixels():
    """A zero feature vector at every pixel of frame t would match zero padding best; it must not get it."""
    rng = np.random.default_rng(1)
    prev = _maps(rng, 13, 14, 4, 3.0)
    cur = tf.zeros_like(prev)
    state = tf.ones_like(prev[..., :1])
    np.testing.assert_allclose(approx_warp(prev, cur, state).numpy(), 1.0, atol=1e-5)  # a padded pixel would add 0


def test_warp_follows_motion():
    """Frame t is frame t−1 moved by (2, 3) px: the exact warp recovers the moved state everywhere,
    the approximation (top-4 of the blocks) on most pixels of smooth content."""
    rng = np.random.default_rng(0)
    h, w, dy, dx = 47, 63, 2, 3
    noise = rng.normal(size=(1, h + dy, w + dx, 16))
    smooth = gaussian_filter(noise, (0, 3, 3, 0))
    scene = (3 * (smooth / smooth.std() + 0.3 * noise)).astype(np.float32)
    prev, cur = scene[:, dy:, dx:], scene[:, :h, :w]  # cur(y, x) = prev(y − dy, x − dx)
    inner = np.s_[:, dy:, dx:]

    def recovered(out):
        return np.mean(np.all(np.isclose(out.numpy(), cur, atol=1e-3), -1)[inner])

    assert recovered(exact_warp(prev, cur, prev)) > 0.99
    assert recovered(approx_warp(prev, cur, prev)) > 0.7


def test_gradients_are_finite_even_for_peaked_weights():
    rng = np.random.default_rng(2)
    prev, cur, state = _maps(rng, 23, 31, 8, 10.0), _maps(rng, 23, 31, 8, 10.0), _maps(rng, 23, 31, 6)
    with tf.GradientTape() as tape:
        tape.watch([prev, cur, state])
        loss = tf.reduce_sum(approx_warp(prev, cur, state) ** 2)
    grads = tape.gradient(loss, [prev, cur, state])
    for g in grads:
        assert g is not None and np.isfinite(g.numpy()).all()
    assert np.abs(grads[2].numpy()).max() > 0


def test_cell_warp_choice_and_bad_warp():
    rng = np.random.default_rng(3)
    seq = tf.constant(rng.normal(size=(1, 4, 12, 13, 8)).astype(np.float32))
    outs = {}
    kernel = None
    for warp in ("approx", "exact", "none"):
        cell = NonLocalConvLSTM(filters=6, top_k=100, warp=warp, name="cell")
        cell.build(seq.shape)
        if kernel is None:  # the same kernel for every variant
            kernel = rng.normal(size=cell.gates.kernel.shape).astype(np.float32) * 0.3
        cell.gates.kernel.assign(kernel)
        outs[warp] = cell(seq).numpy()
        assert outs[warp].shape == (1, 12, 13, 6)
    np.testing.assert_allclose(outs["approx"], outs["exact"], atol=1e-5)  # every block kept
    assert np.abs(outs["approx"] - outs["none"]).max() > 1e-3
    with pytest.raises(VcarError, match="warp='flow'"):
        NonLocalConvLSTM(warp="flow")


@pytest.mark.parametrize("reverse", [False, True])
def test_cell_gradient_copies_no_zero_padded_sequence_or_state(reverse):
    """The cell unstacks its frames and splits its warped state: a slice's gradient would be a
    zero-padded copy of the whole sequence or state per step (NL-ConvLSTM's training step spent
    12% of its op time in them, benchmarks/bench_train.py --profile)."""
    seq = tf.constant(np.random.default_rng(5).normal(size=(1, 3, 10, 10, 4)).astype(np.float32))
    cell = NonLocalConvLSTM(filters=6, block=4, top_k=2, reverse=reverse)
    cell.build(seq.shape)

    @tf.function
    def gradients(s):
        with tf.GradientTape() as tape:
            tape.watch(s)
            loss = tf.reduce_sum(cell(s))
        return tape.gradient(loss, [s, *cell.trainable_variables])

    graph = gradients.get_concrete_function(tf.TensorSpec(seq.shape)).graph
    padded = [op.outputs[0].shape.as_list() for op in graph.get_operations() if op.type == "StridedSliceGrad"]
    assert [1, 3, 10, 10, 4] not in padded and [1, 10, 10, 12] not in padded, padded
    assert all(np.isfinite(g.numpy()).all() for g in gradients(seq))


@pytest.mark.parametrize("frames", [9, 2])  # longer than a window (terms dropped as it slides); shorter than R
def test_streaming_with_the_feature_cache_equals_the_model_on_each_clipped_window(frames):
    radius = 3
    model = perturb_weights(build_nl_convlstm(radius, nf=8), seed=1, scale=0.2)  # 23x17: 6 blocks, top 4 kept
    video = np.random.default_rng(frames).random((frames, 23, 17), dtype=np.float32)
    enhancer = StreamingEnhancer(model, radius)
    assert enhancer._window_cache is not None
    cache, streamed, computed = enhancer._window_cache, [], []
    for direction, weights_of in list(cache._warp_weights.items()):
        cache._warp_weights[direction] = lambda p, f, d=direction, w=weights_of: computed.append(d) or w(p, f)
    for y in video:
        streamed += [out for _, out in enhancer.push(y)]
        assert len(cache._features) <= 2 * radius + 1
        assert all(len(pairs) <= radius for pairs in cache._weights.values())
    streamed += [out for _, out in enhancer.flush()]
    assert len(streamed) == frames
    # each direction's weights once per pair of frames: (t-1, t) forward and (t+1, t) backward, clipped at the ends
    assert sorted(computed) == sorted(["forward", "backward"] * frames)
    assert not cache._features and not any(cache._gates.values()) and not any(cache._weights.values())
    for t, out in enumerate(streamed):
        window = video[np.clip(np.arange(t - radius, t + radius + 1), 0, frames - 1)][None, ..., None]
        whole = np.clip(model(window, training=False).numpy()[0, ..., 0], 0.0, 1.0)
        assert np.abs(whole - window[0, radius, ..., 0]).max() > 1e-2  # the weights do something
        np.testing.assert_allclose(out, whole, atol=2e-6)
    assert StreamingEnhancer(model, radius, tile=16, overlap=8)._window_cache is None  # tiles: whole windows


def test_feature_cache_under_mixed_bfloat16_keeps_and_sums_the_warp_weights_in_bfloat16():
    from vcar_tf.models.precision import precision_policy

    radius, frames = 3, 5
    keras.utils.set_random_seed(0)  # the initial weights, whatever ran before
    with precision_policy("bf16"):
        model = perturb_weights(build_nl_convlstm(radius, nf=8), seed=1, scale=0.2)
    reference = build_nl_convlstm(radius, nf=8)  # float32, the same weights
    reference.set_weights(model.get_weights())
    video = np.random.default_rng(3).random((frames, 23, 17), dtype=np.float32)
    enhancer = StreamingEnhancer(model, radius)
    streamed = [out for y in video for _, out in enhancer.push(y)]
    cache = enhancer._window_cache
    assert {w[0].dtype for pairs in cache._weights.values() for w in pairs.values()} == {tf.bfloat16}
    assert {w[1].dtype for pairs in cache._weights.values() for w in pairs.values()} == {tf.int32}
    streamed += [out for _, out in enhancer.flush()]
    for t, out in enumerate(streamed):
        window = video[np.clip(np.arange(t - radius, t + radius + 1), 0, frames - 1)][None, ..., None]
        whole = np.clip(reference(window, training=False).numpy()[0, ..., 0], 0.0, 1.0)
        assert np.abs(whole - window[0, radius, ..., 0]).max() > 1e-1  # the weights do something
        assert 0.05 < (whole > 0).mean() and (whole < 1).mean() > 0.05  # not all clipped
        # bfloat16 round-off, not a wrong warp (pairing is checked in float32 above, to 2e-6)
        error = np.abs(out - whole)
        assert error.mean() < 5e-3 and error.max() < 0.05, (error.mean(), error.max())


def test_evaluation_report_is_unchanged_by_the_feature_cache(tmp_path, monkeypatch):
    """evaluate_pairs streams through StreamingEnhancer: the cache gives the same report values."""
    from vcar_tf.data.layout import find_pairs
    from vcar_tf.inference import streaming
    from vcar_tf.inference.sequence import evaluate_pairs

    rng = np.random.default_rng(5)
    raw = rng.integers(0, 256, (6, 32 * 48 * 3 // 2), dtype=np.uint8)  # 6 frames of 48x32 YUV 4:2:0
    comp = np.clip(raw + rng.integers(-12, 13, raw.shape), 0, 255).astype(np.uint8)
    for folder, frames in (("raw", raw), ("codec/QP37", comp)):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "clip_48x32_6.yuv").write_bytes(frames.tobytes())
    model = perturb_weights(build_nl_convlstm(3, nf=8), seed=2, scale=0.2)
    cached = evaluate_pairs(model, find_pairs(str(tmp_path)), 3)[0][0]
    monkeypatch.setattr(streaming, "window_feature_cache", lambda model: None)  # whole windows, as before
    whole = evaluate_pairs(model, find_pairs(str(tmp_path)), 3)[0][0]
    assert abs(whole["delta_psnr"]) > 0.01  # the weights change the frames
    assert cached.keys() == whole.keys()
    for key, value in whole.items():
        assert cached[key] == value if isinstance(value, str) else abs(cached[key] - value) < 1e-4, key
