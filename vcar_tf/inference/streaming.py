"""Frame-by-frame inference with a lookahead of R frames; memory stays constant however long the video.

    enhancer = StreamingEnhancer(model, radius)
    for y in frames:                 # (H, W) float in [0, 1]
        for t, out in enhancer.push(y): ...
    for t, out in enhancer.flush(): ...

Frame t is enhanced once frame t+R has arrived (or at flush), from the window t-R..t+R clipped to
the video, exactly as whole-video inference clips it. Recurrent models (RFDA) carry their hidden
state from frame to frame; the first frame starts from the zero state. An untiled Keras NL-ConvLSTM
computes each frame's encoder features and each frame pair's warp weights once and reuses them
across windows (vcar_tf.models.nl_convlstm.window_cache); in float32 the output is the same up to
round-off (in bf16 the cache's warps also sum in bf16).
"""

import collections

import numpy as np
import tensorflow as tf

from vcar_tf.inference.tiling import tiled_step
from vcar_tf.models.nl_convlstm.window_cache import window_feature_cache
from vcar_tf.models.recurrent import is_recurrent


def inference_fn(model):
    """`model(x, training=False)` as one tf.function traced for any H and W.

    Eager Keras inference keeps per-call buffers: DnCNN on one 1920x1080 frame went past 24 GB
    and was killed, while this graph peaks at 1.7 GB (benchmarks/bench_models.py measures it)."""
    if not hasattr(model, "layers"):  # already a graph (an export's runner)
        return model
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def frame_step(model):
    """(window (1, 2R+1, H, W, 1) float32, hidden or None) -> (enhanced (1, H, W, 1), hidden or None).

    `model` is a Keras model (window or recurrent, vcar_tf.models.recurrent) or an export's runner
    (vcar_tf.inference.exported.load_exported: SavedModel, TFLite or ONNX)."""
    if is_recurrent(model):
        # a Keras model runs as one graph; a runner (SavedModel, TFLite, ONNX) runs as it is
        step = tf.function(lambda w, h: model.step(w, h), reduce_retracing=True) if hasattr(model, "layers") \
            else model.step
        return lambda w, h: step(w, model.initial_state(w) if h is None else h)
    run = inference_fn(model)
    return lambda w, h: (run(w), None)


class StreamingEnhancer:
    """`tile`: enhance each frame in tiles of that many pixels with `overlap` pixels of context
    (vcar_tf.inference.tiling); a recurrent model then keeps one frame-sized state (TiledState).
    `feature_cache=False` calls the model on every whole window even where it offers a window
    feature cache (the reference the cache is measured against). `batch`: a Keras window model
    (untiled, without a feature cache) enhances that many frames per call, stacked on the batch
    axis; the others take one frame per call whatever `batch` says."""

    def __init__(self, model, radius, tile=None, overlap=0, feature_cache=True, batch=1):
        self.radius = int(radius)
        self._step = frame_step(model)
        if tile:
            self._step = tiled_step(self._step, tile, overlap)
        self._window_cache = window_feature_cache(model) if feature_cache and not tile else None
        batchable = hasattr(model, "layers") and not is_recurrent(model) and not tile and self._window_cache is None
        self.batch = max(1, int(batch)) if batchable else 1
        # the newest frames received: a batch's windows reach from its first frame - R to its last + R
        self._frames = collections.deque(maxlen=2 * self.radius + self.batch)
        self._received = 0
        self._next = 0  # the next frame to enhance
        self._hidden = None

    def push(self, y):
        """Add the next frame (H, W); returns [(t, enhanced (H, W) float64 in [0, 1])] now ready."""
        y = np.asarray(y, np.float32)
        if self._frames and y.shape != self._frames[-1].shape:
            raise ValueError(f"frame {self._received} is {y.shape}, the stream is {self._frames[-1].shape}")
        self._frames.append(y)
        self._received += 1
        ready = []
        while self._next + self.radius + self.batch - 1 < self._received:
            ready += self._enhance_next(self.batch)
        return ready

    def flush(self):
        """The end of the video: enhance the last frames, clipping their windows at the end."""
        ready = []
        while self._next < self._received:
            ready += self._enhance_next(min(self.batch, self._received - self._next))
        if self._window_cache is not None:
            self._window_cache.clear()  # a sequence's maps freed before the next one's
        return ready

    def _enhance_next(self, count):
        """[(t, enhanced)] of the next `count` frames (1 unless self.batch > 1)."""
        first, last, first_held = self._next, self._received - 1, self._received - len(self._frames)
        indices = [np.clip(np.arange(t - self.radius, t + self.radius + 1), 0, last) for t in range(first, first + count)]
        if self._window_cache is not None:
            out = self._window_cache.enhance([int(i) for i in indices[0]], lambda i: self._frames[i - first_held])
        else:
            windows = np.stack([np.stack([self._frames[i - first_held] for i in index]) for index in indices])
            out, self._hidden = self._step(windows[..., None], self._hidden)
        self._next += count
        out = np.clip(np.asarray(out, np.float64)[..., 0], 0.0, 1.0)
        return [(first + k, out[k]) for k in range(count)]


def enhance_frames(model, frames, radius, tile=None, overlap=0, batch=1):
    """Yield the enhanced (H, W) planes of an iterable of (H, W) float frames, in order."""
    enhancer = StreamingEnhancer(model, radius, tile, overlap, batch=batch)
    for y in frames:
        for _, out in enhancer.push(y):
            yield out
    for _, out in enhancer.flush():
        yield out
