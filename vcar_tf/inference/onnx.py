"""Run a vcar-export .onnx file (onnxruntime, CPU) in place of the Keras model.

Same interface as vcar_tf.inference.saved_model.SavedModelEnhancer: `enhancer(x)` for a window
model, `initial_state(window)` and `step(window, hidden)` for a recurrent one, `radius`,
`recurrent`. Batch, H and W are free; inputs are numpy-like float32; outputs numpy.
"""

import os

import numpy as np

from vcar_tf.errors import VcarError, first_line
from vcar_tf.inference.input_checks import finite_input, refuse_integers
from vcar_tf.export.names import ENHANCED, FRAMES, HIDDEN, META_RADIUS, META_STATE_CHANNELS, META_STATE_MULTIPLE, NEXT_HIDDEN


class OnnxEnhancer:
    def __init__(self, path, num_threads=None):
        import onnxruntime as ort

        if not os.path.isfile(path):
            raise VcarError(f"{path} is not a file (a vcar-export .onnx file)")
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        try:
            self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise VcarError(f"{path} is not an ONNX model onnxruntime loads ({first_line(e)})") from None
        self.path = path
        inputs = {i.name: i for i in self._session.get_inputs()}
        meta = self._session.get_modelmeta().custom_metadata_map
        if FRAMES not in inputs or META_RADIUS not in meta:
            raise VcarError(f"{path} has no {FRAMES} input or {META_RADIUS} metadata (not a vcar-export ONNX file)")
        self.radius = int(meta[META_RADIUS])
        self.recurrent = HIDDEN in inputs
        self._shapes = {name: i.shape for name, i in inputs.items()}
        if self.recurrent:
            self.state_channels = int(meta[META_STATE_CHANNELS])
            self._multiple = int(meta[META_STATE_MULTIPLE])

    def _check(self, name, array):
        array = np.asarray(array)
        refuse_integers(name, array.dtype)
        want = self._shapes[name]
        if array.ndim != len(want) or any(isinstance(s, int) and s != a for s, a in zip(want, array.shape)):
            raise VcarError(f"{os.path.basename(self.path)}: {name} must be "
                            f"{'x'.join(str(s) if isinstance(s, int) else '?' for s in want)}; "
                            f"got {'x'.join(map(str, array.shape))}")
        return finite_input(name, array.astype(np.float32, copy=False))

    def __call__(self, x, training=False):
        if self.recurrent:
            raise VcarError(f"{self.path} is a recurrent step model: use step(window, hidden)")
        return np.clip(self._session.run([ENHANCED], {FRAMES: self._check(FRAMES, x)})[0], 0.0, 1.0)

    def initial_state(self, window):
        """Zeros [B, H', W', C], H' and W' being H and W rounded up to the state's multiple."""
        b, _, h, w = np.shape(window)[:4]
        m = self._multiple
        return np.zeros((b, -(-h // m) * m, -(-w // m) * m, self.state_channels), np.float32)

    def step(self, window, hidden):
        window, hidden = self._check(FRAMES, window), self._check(HIDDEN, hidden)
        want = self.initial_state(window).shape
        if hidden.shape != want:
            raise VcarError(f"hidden state must be {'x'.join(map(str, want))} for a window of "
                            f"{window.shape[2]}x{window.shape[3]}; got {'x'.join(map(str, hidden.shape))}")
        enhanced, hidden = self._session.run([ENHANCED, NEXT_HIDDEN], {FRAMES: window, HIDDEN: hidden})
        return np.clip(enhanced, 0.0, 1.0), hidden  # frames in [0, 1], as the SavedModel's signatures clip them
