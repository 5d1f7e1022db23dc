"""The serving contract: every signature and tensor name of a vcar_tf export, and the uint8 wrapper.

Exporters build their endpoints here; runners (vcar_tf.inference) read exports by these names.

Window models:
- serving_default: frames uint8 [2R+1, H, W] (Y, any H and W) -> enhanced uint8 [H, W];
- serve_float: frames float32 [B, 2R+1, H, W, 1] in [0, 1] -> enhanced float32 [B, H, W, 1].

Recurrent models (vcar_tf.models.recurrent) carry a hidden state, so a stateless server can serve
a stream:
- serving_default: frames uint8 [2R+1, H, W], hidden float32 [1, H', W', C] -> enhanced uint8
  [H, W], hidden (the next state); H', W' are H, W padded as the model pads them, and the first
  frame's state is zeros (initial_state returns it);
- step_float: frames float32 [B, 2R+1, H, W, 1], hidden [B, H', W', C] -> enhanced, hidden;
- initial_state: frames float32 [B, 2R+1, H, W, 1] -> hidden zeros;
- serve_clip: clip float32 [B, L, H, W, 1] -> enhanced [B, L, H, W, 1], every frame's window
  clipped inside the clip, the state carried from the first frame to the last.

Every endpoint checks its input inside the graph (a bad request is an InvalidArgument error naming
the expected shape, never a crash or a silent answer): the rank and the frame count, a frame of at
most MAX_FRAME_PIXELS pixels (2560x1600, the largest size of the field's test sets; a larger frame
is refused rather than risking the server's memory: tile it), finite float inputs (NaN or Inf are
refused); float inputs are clipped to [0, 1] and so are float outputs.

TFLite and ONNX files hold one function, float_function (without the in-graph checks,
which their runners make): serve_float for a window model, step_float
for a recurrent one (frames, hidden -> enhanced, hidden), with the same tensor names; batch, H and
W fixed or free as the exporter asks. A recurrent model's first state is zeros of the hidden
input's shape (TFLite: static; ONNX: H, W rounded up to the multiple in its metadata).
"""

import functools

import tensorflow as tf

from vcar_tf.models.recurrent import is_recurrent, state_channels

from vcar_tf.export.names import (  # noqa: F401  (the contract's names, re-exported)
    CLIP, ENHANCED, FRAMES, HIDDEN, INITIAL_STATE, MAX_FRAME_PIXELS, SERVE_CLIP, SERVE_FLOAT, SERVING_DEFAULT,
    STEP_FLOAT)


def _check_frames(x, rank, frames, layout):
    """Assert x's rank, its frame count (axis 1 of rank 5, axis 0 of rank 3; None: any) and its
    frame size in the graph, naming the expected layout in the message."""
    expected = f"expected {layout}"
    # A declared rank is not enforced on every path (a session feed, TF Serving), and a check of
    # it would be folded away at graph build: the shape is padded with zeros instead, so that a
    # tensor of another rank fails the size checks below with this message, not an index error.
    shape = tf.pad(tf.shape(x), [[0, rank]])
    frame_axis = 1 if rank == 5 else 0
    height, width = shape[frame_axis + 1], shape[frame_axis + 2]
    checks = [tf.debugging.assert_positive(tf.stack([height, width]), message=f"{FRAMES}: empty frame; {expected}"),
              tf.debugging.assert_less_equal(tf.cast(height, tf.int64) * tf.cast(width, tf.int64),
                                             tf.constant(MAX_FRAME_PIXELS, tf.int64),
                                             message=f"{FRAMES}: a frame has more than {MAX_FRAME_PIXELS} pixels; "
                                                     f"tile it")]
    if frames is not None:
        checks.append(tf.debugging.assert_equal(shape[frame_axis], frames,
                                                message=f"{FRAMES}: wrong number of frames; {expected}"))
    if rank == 5:
        checks.append(tf.debugging.assert_equal(shape[4], 1, message=f"{FRAMES}: not one channel; {expected}"))
    with tf.control_dependencies(checks):
        return tf.identity(x)


def checked_float(x, frames, name=FRAMES):
    """A float32 [B, frames, H, W, 1] input checked (see the module docstring), finite, clipped to [0, 1]."""
    x = _check_frames(x, 5, frames, f"float32 [batch, {frames or 'frames'}, height, width, 1] in [0, 1]")
    x = tf.debugging.assert_all_finite(x, f"{name}: NaN or Inf in the input")
    return tf.clip_by_value(x, 0.0, 1.0)


def checked_state(hidden):
    return tf.debugging.assert_all_finite(tf.cast(hidden, tf.float32), f"{HIDDEN}: NaN or Inf in the state")


def float_output(y):
    """A model's output as the signatures return it: float32 in [0, 1]."""
    return tf.clip_by_value(tf.cast(y, tf.float32), 0.0, 1.0)


def uint8_window_to_float(y_frames, frames=None):
    """uint8 [2R+1, H, W] (checked) -> float32 [1, 2R+1, H, W, 1] in [0, 1]."""
    y_frames = _check_frames(y_frames, 3, frames, f"uint8 [{frames or 'frames'}, height, width]")
    return tf.expand_dims(tf.expand_dims(tf.cast(y_frames, tf.float32) / 255.0, 0), -1)


def float_frame_to_uint8(y):
    """float32 [1, H, W, 1] -> uint8 [H, W], clipped to [0, 1] and rounded."""
    y = tf.squeeze(tf.cast(y, tf.float32), axis=[0, 3])
    return tf.cast(tf.round(tf.clip_by_value(y, 0.0, 1.0) * 255.0), tf.uint8)


def float_function(model, radius, batch=None, height=None, width=None, checked=True):
    """serve_float (window models) or step_float (recurrent) as one tf.function whose input
    signature fixes batch, height and width where given (None: free). `checked`: the in-graph
    input checks and the [0, 1] clipping of the module docstring (the SavedModel's; TFLite and
    ONNX files leave them to their runners, as their converters have no builtin Assert)."""
    n = 2 * radius + 1
    frames = tf.TensorSpec([batch, n, height, width, 1], tf.float32, name=FRAMES)
    check_in = functools.partial(checked_float, frames=n) if checked else tf.identity
    check_state = checked_state if checked else tf.identity
    out = float_output if checked else tf.identity
    if not is_recurrent(model):
        @tf.function(input_signature=[frames])
        def serve_float(x):
            return {ENHANCED: out(model(check_in(x), training=False))}

        return serve_float
    size = [None, None]
    if height is not None and width is not None:
        size = model.initial_state(tf.zeros([1, 2 * radius + 1, height, width, 1])).shape[1:3]
    state = tf.TensorSpec([batch, *size, state_channels(model)], tf.float32, name=HIDDEN)

    @tf.function(input_signature=[frames, state])
    def step_float(x, hidden):
        y, hidden = model.step(check_in(x), check_state(hidden))
        return {ENHANCED: out(y), HIDDEN: tf.cast(hidden, tf.float32)}

    return step_float


def state_multiple(model, radius):
    """The multiple a recurrent model rounds H and W of its state up to (1 when it does not pad)."""
    return int(model.initial_state(tf.zeros([1, 2 * radius + 1, 1, 1, 1])).shape[1])


def endpoints(model, radius):
    """{signature name: tf.function} of a model's export (see the module docstring)."""
    return recurrent_endpoints(model, radius) if is_recurrent(model) else window_endpoints(model, radius)


def window_endpoints(model, radius):
    frames = 2 * radius + 1

    @tf.function(input_signature=[tf.TensorSpec([frames, None, None], tf.uint8, name=FRAMES)])
    def serve_uint8(y_frames):
        return {ENHANCED: float_frame_to_uint8(model(uint8_window_to_float(y_frames, frames), training=False))}

    return {SERVING_DEFAULT: serve_uint8, SERVE_FLOAT: float_function(model, radius)}


def recurrent_endpoints(model, radius):
    frames = 2 * radius + 1
    channels = state_channels(model)
    window = tf.TensorSpec([None, frames, None, None, 1], tf.float32, name=FRAMES)

    @tf.function(input_signature=[tf.TensorSpec([frames, None, None], tf.uint8, name=FRAMES),
                                  tf.TensorSpec([1, None, None, channels], tf.float32, name=HIDDEN)])
    def step_uint8(y_frames, hidden):
        y, hidden = model.step(uint8_window_to_float(y_frames, frames), checked_state(hidden))
        return {ENHANCED: float_frame_to_uint8(y), HIDDEN: tf.cast(hidden, tf.float32)}

    @tf.function(input_signature=[window])
    def initial_state(x):
        return {HIDDEN: tf.cast(model.initial_state(checked_float(x, frames)), tf.float32)}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None, 1], tf.float32, name=CLIP)])
    def serve_clip(clip):
        return {ENHANCED: float_output(model(checked_float(clip, None, CLIP), training=False))}

    return {SERVING_DEFAULT: step_uint8, STEP_FLOAT: float_function(model, radius), INITIAL_STATE: initial_state,
            SERVE_CLIP: serve_clip}
