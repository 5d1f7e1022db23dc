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

TFLite and ONNX files hold one function, float_function: serve_float for a window model, step_float
for a recurrent one (frames, hidden -> enhanced, hidden), with the same tensor names; batch, H and
W fixed or free as the exporter asks. A recurrent model's first state is zeros of the hidden
input's shape (TFLite: static; ONNX: H, W rounded up to the multiple in its metadata).
"""

import tensorflow as tf

from vcar_tf.models.recurrent import is_recurrent, state_channels

from vcar_tf.export.names import (  # noqa: F401  (the contract's names, re-exported)
    CLIP, ENHANCED, FRAMES, HIDDEN, INITIAL_STATE, SERVE_CLIP, SERVE_FLOAT, SERVING_DEFAULT, STEP_FLOAT)


def uint8_window_to_float(y_frames):
    """uint8 [2R+1, H, W] -> float32 [1, 2R+1, H, W, 1] in [0, 1]."""
    return tf.expand_dims(tf.expand_dims(tf.cast(y_frames, tf.float32) / 255.0, 0), -1)


def float_frame_to_uint8(y):
    """float32 [1, H, W, 1] -> uint8 [H, W], clipped to [0, 1] and rounded."""
    y = tf.squeeze(y, axis=[0, 3])
    return tf.cast(tf.round(tf.clip_by_value(y, 0.0, 1.0) * 255.0), tf.uint8)


def float_function(model, radius, batch=None, height=None, width=None):
    """serve_float (window models) or step_float (recurrent) as one tf.function whose input
    signature fixes batch, height and width where given (None: free)."""
    frames = tf.TensorSpec([batch, 2 * radius + 1, height, width, 1], tf.float32, name=FRAMES)
    if not is_recurrent(model):
        @tf.function(input_signature=[frames])
        def serve_float(x):
            return {ENHANCED: model(x, training=False)}

        return serve_float
    size = [None, None]
    if height is not None and width is not None:
        size = model.initial_state(tf.zeros([1, 2 * radius + 1, height, width, 1])).shape[1:3]
    state = tf.TensorSpec([batch, *size, state_channels(model)], tf.float32, name=HIDDEN)

    @tf.function(input_signature=[frames, state])
    def step_float(x, hidden):
        y, hidden = model.step(x, hidden)
        return {ENHANCED: y, HIDDEN: hidden}

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
        return {ENHANCED: float_frame_to_uint8(model(uint8_window_to_float(y_frames), training=False))}

    return {SERVING_DEFAULT: serve_uint8, SERVE_FLOAT: float_function(model, radius)}


def recurrent_endpoints(model, radius):
    frames = 2 * radius + 1
    channels = state_channels(model)
    window = tf.TensorSpec([None, frames, None, None, 1], tf.float32, name=FRAMES)

    @tf.function(input_signature=[tf.TensorSpec([frames, None, None], tf.uint8, name=FRAMES),
                                  tf.TensorSpec([1, None, None, channels], tf.float32, name=HIDDEN)])
    def step_uint8(y_frames, hidden):
        y, hidden = model.step(uint8_window_to_float(y_frames), hidden)
        return {ENHANCED: float_frame_to_uint8(y), HIDDEN: hidden}

    @tf.function(input_signature=[window])
    def initial_state(x):
        return {HIDDEN: model.initial_state(x)}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None, 1], tf.float32, name=CLIP)])
    def serve_clip(clip):
        return {ENHANCED: model(clip, training=False)}

    return {SERVING_DEFAULT: step_uint8, STEP_FLOAT: float_function(model, radius), INITIAL_STATE: initial_state,
            SERVE_CLIP: serve_clip}
