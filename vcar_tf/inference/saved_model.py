"""Run a vcar-export SavedModel in place of the Keras model (evaluation, enhancement)."""

import tensorflow as tf

from vcar_tf.errors import VcarError
from vcar_tf.export.names import MAX_FRAME_PIXELS
from vcar_tf.inference.input_checks import refuse_integers
from vcar_tf.export.signatures import ENHANCED, FRAMES, HIDDEN, INITIAL_STATE, SERVE_FLOAT, STEP_FLOAT


class SavedModelEnhancer:
    """A vcar-export SavedModel used like a Keras model: `enhancer(x)` runs its serve_float
    signature; a recurrent export's step_float and initial_state serve `step` and `initial_state`
    (the protocol of vcar_tf.models.recurrent)."""

    def __init__(self, path):
        signatures = tf.saved_model.load(path).signatures
        self.recurrent = STEP_FLOAT in signatures
        name = STEP_FLOAT if self.recurrent else SERVE_FLOAT
        if name not in signatures:
            raise VcarError(f"{path} has no {SERVE_FLOAT} or {STEP_FLOAT} signature (not a vcar-export SavedModel)")
        self._fn = signatures[name]
        self.max_frame_pixels = MAX_FRAME_PIXELS  # what its signatures take a call (larger frames are tiled)
        self._initial = signatures.get(INITIAL_STATE)
        inputs = self._fn.structured_input_signature[1]
        self.radius = (inputs[FRAMES].shape[1] - 1) // 2
        if self.recurrent:
            self.state_channels = inputs[HIDDEN].shape[-1]

    def __call__(self, x, training=False):
        return self._fn(**{FRAMES: float32(FRAMES, x)})[ENHANCED]

    def initial_state(self, window):
        return self._initial(**{FRAMES: float32(FRAMES, window)})[HIDDEN]

    def step(self, window, hidden):
        out = self._fn(**{FRAMES: float32(FRAMES, window), HIDDEN: float32(HIDDEN, hidden)})
        return out[ENHANCED], out[HIDDEN]


def float32(name, array):
    """A float input as float32; integers are refused as the TFLite and ONNX runners refuse them."""
    tensor = tf.convert_to_tensor(array)
    refuse_integers(name, tensor.dtype)
    return tf.cast(tensor, tf.float32)
