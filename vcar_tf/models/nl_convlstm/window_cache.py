"""NL-ConvLSTM over a video: what a frame gives every window it is in, computed once.

The model's `call` takes one window of 2R+1 frames, so streaming it recomputes each frame's
encoder features 2R+1 times. WindowFeatureCache runs the same network from per-frame terms
kept in ring buffers keyed by frame index:
- once per frame: the encoder features x, and per direction the input half of the gates,
  W_x * x + b (the gates conv on [x, h] is a conv on x plus a conv on h);
- once per pair of neighbouring frames and direction: the warp's weights (they depend only on the
  two frames' features), kept in the cells' dtype;
- once per window (they depend on the whole window: each direction starts from the zero state
  at the window's edge): per direction the first step (input half only, h = 0) and R steps of
  warp + W_h * h + update, then the decoder.
In float32 the output equals `model(window)` up to round-off (tests/test_nonlocal.py); under
mixed_bfloat16 the warps also sum in bfloat16, where `model(window)` sums in float32. Memory:
(2R+1) feature maps, 2(R+1) input-gate maps and 2R warps' weights, (2R+1)·C + 2(R+1)·4C values
per pixel (about 4 GB at 832x480 in float32 for R 3, C 64) plus 2R·k·p² (2,400 for k 4, p 10:
3.8 GB at 832x480 in float32, 1.9 GB in bfloat16).
"""

import keras
import numpy as np
import tensorflow as tf

from vcar_tf.models.nl_convlstm.model import NonLocalConvLSTM

FORWARD, BACKWARD = "forward", "backward"  # the cells' layer names in build_nl_convlstm


def window_feature_cache(model):
    """A WindowFeatureCache for a Keras NL-ConvLSTM model (built by build_nl_convlstm), else None."""
    names = {layer.name for layer in getattr(model, "layers", ())}
    if not {FORWARD, BACKWARD, "past", "centre"} <= names:
        return None
    if not all(isinstance(model.get_layer(n), NonLocalConvLSTM) for n in (FORWARD, BACKWARD)):
        return None
    return WindowFeatureCache(model)


class WindowFeatureCache:
    """enhance(frame_indices, frame_of): the model's output on the window of those frames (clipped
    indices repeat a frame), reusing every frame's terms across windows; frame_of(i) is frame i
    (H, W) float32. Windows must come in order of their centre (terms older than the window are
    dropped)."""

    def __init__(self, model):
        self.radius = (model.input_shape[1] - 1) // 2
        self._encoder = keras.Model(model.inputs, model.get_layer("past").input).layers[1:]  # a chain of convs
        self._cells = {FORWARD: model.get_layer(FORWARD), BACKWARD: model.get_layer(BACKWARD)}
        self._decoder = keras.Model([model.get_layer("centre").output, self._cells[FORWARD].output,
                                     self._cells[BACKWARD].output], model.output)
        self._encode = tf.function(self.encode, reduce_retracing=True)
        self._input_gates = {d: tf.function(cell.input_gates, reduce_retracing=True) for d, cell in self._cells.items()}
        self._warp_weights = {d: tf.function(lambda p, f, cell=cell: cell.warp_weights(p, f, cell.compute_dtype),
                                             reduce_retracing=True) for d, cell in self._cells.items()}
        self._enhance = tf.function(self.enhance_from_terms, reduce_retracing=True)
        self._features, self._gates = {}, {FORWARD: {}, BACKWARD: {}}  # frame index -> map
        self._weights = {FORWARD: {}, BACKWARD: {}}  # (from frame, to frame) -> warp weights

    def encode(self, frame):
        """Encoder features (1, H, W, C) of one frame (1, H, W, 1)."""
        x = tf.expand_dims(frame, 1)  # a window of one frame
        for layer in self._encoder:
            x = layer(x)
        return x[:, 0]

    def enhance_from_terms(self, centre_frame, forward_gates, backward_gates, forward_weights, backward_weights):
        """The enhanced centre (1, H, W, 1) from the input gates of the window's frames 0..R (forward
        cell) and R..2R (backward cell), and the warp weights of the pairs (t-1, t), t = 1..R
        (forward) and (t+1, t), t = 2R-1..R (backward)."""
        r, forward, backward = self.radius, self._cells[FORWARD], self._cells[BACKWARD]
        h, c = forward.start(forward_gates[0])
        for t in range(1, r + 1):
            h, c = forward.step(forward_weights[t - 1], forward_gates[t], h, c)
        past = h
        h, c = backward.start(backward_gates[r])
        for t in range(2 * r - 1, r - 1, -1):
            h, c = backward.step(backward_weights[2 * r - 1 - t], backward_gates[t - r], h, c)
        return self._decoder([centre_frame, past, h], training=False)

    def enhance(self, frame_indices, frame_of):
        r = self.radius
        forward = [self._gates_of(FORWARD, i, frame_of) for i in frame_indices[:r + 1]]
        backward = [self._gates_of(BACKWARD, i, frame_of) for i in frame_indices[r:]]
        forward_weights = [self._weights_of(FORWARD, frame_indices[t - 1], frame_indices[t], frame_of)
                           for t in range(1, r + 1)]
        backward_weights = [self._weights_of(BACKWARD, frame_indices[t + 1], frame_indices[t], frame_of)
                            for t in range(2 * r - 1, r - 1, -1)]
        centre = frame_indices[r]
        out = self._enhance(self._frame(frame_of(centre)), forward, backward, forward_weights, backward_weights)
        # the next window starts at centre + 1 - R; its backward cell starts at its centre
        self._drop(self._features, centre + 1 - r)
        self._drop(self._gates[FORWARD], centre + 1 - r)
        self._drop(self._gates[BACKWARD], centre + 1)
        self._drop(self._weights[FORWARD], centre + 1 - r)
        self._drop(self._weights[BACKWARD], centre + 1)
        return out

    def clear(self):
        """Drop every kept term (the end of a video): the tf.functions hold this object in a
        reference cycle, so its maps would otherwise live until a garbage collection."""
        for buffer in (self._features, *self._gates.values(), *self._weights.values()):
            buffer.clear()

    @staticmethod
    def _frame(y):
        return tf.constant(np.asarray(y, np.float32)[None, ..., None])

    def _features_of(self, i, frame_of):
        if i not in self._features:
            self._features[i] = self._encode(self._frame(frame_of(i)))
        return self._features[i]

    def _gates_of(self, direction, i, frame_of):
        if i not in self._gates[direction]:
            self._gates[direction][i] = self._input_gates[direction](self._features_of(i, frame_of))
        return self._gates[direction][i]

    def _weights_of(self, direction, source, target, frame_of):
        key = (source, target)
        if key not in self._weights[direction]:
            self._weights[direction][key] = self._warp_weights[direction](
                self._features_of(source, frame_of), self._features_of(target, frame_of))
        return self._weights[direction][key]

    @staticmethod
    def _drop(buffer, first_kept):
        """Drop the terms of frames before `first_kept` (a pair's key: of its earlier frame)."""
        for key in [key for key in buffer if min(key if isinstance(key, tuple) else (key,)) < first_kept]:
            del buffer[key]
