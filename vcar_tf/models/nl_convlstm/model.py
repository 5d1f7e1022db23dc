"""NL-ConvLSTM (Xu et al., ICCV 2019): encoder, bidirectional non-local ConvLSTM, decoder.

The paper publishes the cell (3x3 gates, 64 channels, non-local warp of h and c) but not the
encoder and decoder; this plan is ours:

1. Encoder, shared by the 2R+1 frames (Conv3D with a 1x3x3 kernel = one 2D conv per frame):
   3x3 1 -> 64, 3x3 64 -> 64, ReLU, He init.
2. Two NL-ConvLSTM cells, forward over frames 0..R and backward over frames 2R..R, each ending on
   the centre frame. At each step after the first, h and c of the previous step are warped toward
   the current frame by the non-local warp (vcar_tf/ops/nonlocal_warp.py) with similarities from
   the encoder features of the two frames; then the gates i, f, g, o come from one 3x3 conv on
   [x_t, warped h] (64 + 64 -> 4·64), c = f·c_warped + i·g, h = o·tanh(c). The state starts at zero;
   the forget-gate bias starts at 1.
3. Decoder on the centre frame: 1x1 conv merging [h_forward, h_backward] (128 -> 64), two 3x3
   64 -> 64 convs, ReLU, and the zero-initialised 3x3 64 -> 1 residual head.

All convolutions have stride 1 and the warp pads internally (to multiples of p = 10, padded pixels
masked out), so any H and W work.

| variant | R | encoder | cell | decoder | parameters | MAC/pixel |
|---|---|---|---|---|---|---|
| nl_convlstm | 3 | 2 convs, 64 | 64, 3x3, p 10, k 4 | 1x1 + 2 convs, 64 | 710,593 | 3.2M |

Of the 3.2M MAC per pixel (TF's profiler count at 832x480, benchmarks/bench_models.py), the
convolutions are 2.70M (7 frames through the encoder, 2·(R+1) = 8 cell steps of 0.29M each) and
the 6 approximate warps about 77K each (k·p² candidates × (64 feature + 128 state channels)).
"""

import keras
import tensorflow as tf

from vcar_tf.errors import VcarError
from vcar_tf.models.blocks import FrameConv3D
from vcar_tf.models.layers import frames_input, residual_head, residual_output
from vcar_tf.models.registry import register
from vcar_tf.ops.nonlocal_warp import apply_approx_weights, apply_exact_weights, approx_weights, exact_weights

WARPS = ("approx", "exact", "none")


@keras.saving.register_keras_serializable(package="vcar_tf")
class NonLocalConvLSTM(keras.layers.Layer):
    """A ConvLSTM whose state is non-locally warped toward each new frame.

    Called on encoder features (B, T, H, W, C); runs over frames 0..T-1 (T-1..0 with
    reverse=True) and returns the last hidden state (B, H, W, filters). `warp` is "approx" (the
    two-stage approximation), "exact" (all pixels; small inputs only) or "none" (a plain ConvLSTM)."""

    def __init__(self, filters=64, kernel_size=3, block=10, top_k=4, warp="approx", reverse=False, **kwargs):
        super().__init__(**kwargs)
        if warp not in WARPS:
            raise VcarError(f"NonLocalConvLSTM warp={warp!r}; use one of {', '.join(WARPS)}")
        self.filters, self.kernel_size = int(filters), int(kernel_size)
        self.block, self.top_k, self.warp, self.reverse = int(block), int(top_k), warp, bool(reverse)
        bias = keras.initializers.Constant([0.0] * filters + [1.0] * filters + [0.0] * 2 * filters)  # i, f, g, o
        self.gates = keras.layers.Conv2D(4 * self.filters, self.kernel_size, padding="same",
                                         bias_initializer=bias, name="gates")

    def build(self, input_shape):
        self.gates.build(tuple(input_shape[:1]) + tuple(input_shape[2:-1]) + (input_shape[-1] + self.filters,))

    def warp_weights(self, prev_features, features, dtype=tf.float32):
        """What warping a state from the frame of `prev_features` to the frame of `features` needs
        (a tuple of tensors, empty for warp="none"), the weights cast to `dtype`."""
        if self.warp == "none":
            return ()
        if self.warp == "exact":
            return (tf.cast(exact_weights(prev_features, features), dtype),)
        weights, nearest, _, _ = approx_weights(prev_features, features, self.block, self.top_k)
        return tf.cast(weights, dtype), nearest

    def _warp(self, warp_weights, h, c):
        """h and c moved by `warp_weights`, summed in the weights' dtype."""
        if self.warp == "none":
            return h, c
        state = tf.concat([h, c], axis=-1)
        if self.warp == "exact":
            state = apply_exact_weights(*warp_weights, state)
        else:
            state = apply_approx_weights(*warp_weights, state, self.block)
        return tf.split(state, 2, axis=-1)

    def call(self, sequence):
        # unstack and split, not slices: a slice's gradient is a zero-padded copy of its whole input
        frames = tf.unstack(sequence, axis=1)
        order = reversed(frames) if self.reverse else frames
        h = c = prev = None
        for x in order:
            if h is None:
                h = c = tf.zeros_like(x[..., :1]) * tf.zeros([self.filters], x.dtype)
            else:
                h, c = self._warp(self.warp_weights(prev, x), h, c)
            h, c = self._update(self.gates(tf.concat([x, h], axis=-1)), c)
            prev = x
        return h

    @staticmethod
    def _update(gates, c):
        """The LSTM update from the gates' pre-activations (i, f, g, o): (h, c)."""
        i, f, g, o = tf.split(gates, 4, axis=-1)
        c = tf.sigmoid(i) * tf.tanh(g) if c is None else tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        return tf.sigmoid(o) * tf.tanh(c), c

    # The gates conv on [x, h] is a conv on x plus a conv on h (the kernel split along its input
    # channels). Streaming (window_cache.py) computes the x part once per frame, keeps each frame
    # pair's warp weights in the cells' dtype, and runs the steps below, whose update XLA fuses;
    # `call` keeps the one conv and the float32 warp.
    def input_gates(self, features):
        """W_x * x + bias for encoder features x (B, H, W, C): the part of the gates that sees only x."""
        kernel = tf.cast(self.gates.kernel[:, :, :-self.filters], features.dtype)
        return tf.nn.bias_add(tf.nn.conv2d(features, kernel, 1, "SAME"), tf.cast(self.gates.bias, features.dtype))

    def start(self, input_gates):
        """The first step, from the zero state (W_h * 0 = 0, f * 0 = 0): (h, c)."""
        return fused_first_update(input_gates)

    def step(self, warp_weights, input_gates, h, c):
        """A step after the first: warp h, c of the previous frame toward this one by its
        `warp_weights`, then update."""
        return self.recurrent_update(input_gates, *self._warp(warp_weights, h, c))

    def recurrent_update(self, input_gates, h, c):
        """(h, c) from the input gates and the warped state: W_h * h added, then the fused update."""
        kernel = tf.cast(self.gates.kernel[:, :, -self.filters:], h.dtype)
        return fused_update(input_gates + tf.nn.conv2d(h, kernel, 1, "SAME"), c)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:1]) + tuple(input_shape[2:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "block": self.block, "top_k": self.top_k, "warp": self.warp, "reverse": self.reverse}


# one XLA kernel instead of nine elementwise passes over frame-sized maps (bench_nonlocal.py --bound times both)
fused_update = tf.function(NonLocalConvLSTM._update, jit_compile=True)
fused_first_update = tf.function(lambda gates: NonLocalConvLSTM._update(gates, None), jit_compile=True)


@keras.saving.register_keras_serializable(package="vcar_tf")
class FrameRange(keras.layers.Layer):
    """(B, T, ...) -> (B, stop - start, ...): frames start..stop-1."""

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, x):
        return x[:, self.start:self.stop]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.stop - self.start) + tuple(input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


def build_nl_convlstm(radius=3, nf=64, n_enc=2, n_dec=2, block=10, top_k=4, warp="approx", name="nl_convlstm"):
    frames = frames_input(radius)
    x = frames
    for i in range(n_enc):
        x = FrameConv3D(nf, (1, 3, 3), padding="same", activation="relu", kernel_initializer="he_normal",
                                name=f"encoder_{i + 1}")(x)
    cell = dict(filters=nf, block=block, top_k=top_k, warp=warp)
    forward = NonLocalConvLSTM(**cell, name="forward")(FrameRange(0, radius + 1, name="past")(x))
    backward = NonLocalConvLSTM(**cell, reverse=True, name="backward")(
        FrameRange(radius, 2 * radius + 1, name="future")(x))
    y = keras.layers.Concatenate(name="directions")([forward, backward])
    y = keras.layers.Conv2D(nf, 1, activation="relu", kernel_initializer="he_normal", name="merge")(y)
    for i in range(n_dec):
        y = keras.layers.Conv2D(nf, 3, padding="same", activation="relu", kernel_initializer="he_normal",
                                name=f"decoder_{i + 1}")(y)
    y = residual_head(name="decoder_out")(y)
    return residual_output(frames, radius, y, name)


@register("nl_convlstm", radius=3, description="NL-ConvLSTM: bidirectional ConvLSTM with the non-local warp")
def build_nl_convlstm_r3(**overrides):
    return build_nl_convlstm(**{"name": "nl_convlstm", **overrides})
