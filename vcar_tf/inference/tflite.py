"""Run a vcar-export .tflite file (LiteRT interpreter) in place of the Keras model.

Same interface as vcar_tf.inference.saved_model.SavedModelEnhancer: `enhancer(x)` for a window
model, `initial_state(window)` and `step(window, hidden)` for a recurrent one (the protocol of
vcar_tf.models.recurrent), `radius`, `recurrent`. Inputs are numpy-like float32; outputs numpy.
A file exported with fixed H and W runs only at that size (a clear VcarError otherwise); one
exported with free H and W is resized to each new input size (resize_tensor_input). It runs on
every core unless num_threads says otherwise.
"""

import os

import numpy as np

from vcar_tf.errors import VcarError
from vcar_tf.inference.input_checks import finite_input, refuse_integers
from vcar_tf.export.names import FRAMES, HIDDEN


class TFLiteEnhancer:
    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        if not os.path.isfile(path):
            raise VcarError(f"{path} is not a file (a vcar-export .tflite file)")
        try:  # LiteRT's default is one thread; onnxruntime's and TensorFlow's are every core
            self._interpreter = Interpreter(model_path=path, num_threads=num_threads or os.cpu_count() or 1)
        except ValueError as e:
            raise VcarError(f"{path} is not a TFLite model ({e})") from None
        inputs = {d["name"].split(":")[0]: d for d in self._interpreter.get_input_details()}
        if FRAMES not in inputs or len(inputs[FRAMES]["shape"]) != 5:
            raise VcarError(f"{path} has no {FRAMES} input [1, 2R+1, H, W, 1] (not a vcar-export TFLite file)")
        self.path = path
        self.recurrent = HIDDEN in inputs
        self._frames_index = inputs[FRAMES]["index"]
        self._hidden_index = inputs[HIDDEN]["index"] if self.recurrent else None
        self.radius = (int(inputs[FRAMES]["shape"][1]) - 1) // 2
        self._signature = {FRAMES: tuple(inputs[FRAMES]["shape_signature"])}
        if self.recurrent:
            self._signature[HIDDEN] = tuple(inputs[HIDDEN]["shape_signature"])
            self.state_channels = int(inputs[HIDDEN]["shape"][-1])
        self._interpreter.allocate_tensors()

    @property
    def input_size(self):
        """(H, W) the file was exported for, or None where they are free."""
        h, w = self._signature[FRAMES][2:4]
        return None if h < 0 or w < 0 else (int(h), int(w))

    def _check(self, name, array, index):
        """Validate dtype and shape against the file's signature; resize free dimensions."""
        array = np.asarray(array)
        refuse_integers(name, array.dtype)
        array = array.astype(np.float32, copy=False)
        signature = self._signature[name]
        if array.ndim != len(signature) or any(s >= 0 and s != a for s, a in zip(signature, array.shape)):
            want = "x".join("?" if s < 0 else str(s) for s in signature)
            raise VcarError(f"{os.path.basename(self.path)}: {name} must be {want}; got "
                            f"{'x'.join(map(str, array.shape))} (a TFLite file has the input size it was "
                            f"exported with: vcar-export --height/--width)")
        current = tuple(self._interpreter.get_input_details()[self._input_position(index)]["shape"])
        if current != array.shape:
            self._interpreter.resize_tensor_input(index, array.shape, strict=True)
            self._resized = True
        return finite_input(name, array)

    def _input_position(self, index):
        return [d["index"] for d in self._interpreter.get_input_details()].index(index)

    def _run(self, feeds):
        self._resized = False
        arrays = {index: self._check(name, value, index) for name, (value, index) in feeds.items()}
        if self._resized:
            self._interpreter.allocate_tensors()
        for index, array in arrays.items():
            self._interpreter.set_tensor(index, array)
        self._interpreter.invoke()
        outputs = [self._interpreter.get_tensor(d["index"]) for d in self._interpreter.get_output_details()]
        enhanced = np.clip(next(o for o in outputs if o.shape[-1] == 1), 0.0, 1.0)  # as the SavedModel clips; a state has C > 1
        hidden = next((o for o in outputs if o.shape[-1] != 1), None)
        return enhanced, hidden

    def __call__(self, x, training=False):
        if self.recurrent:
            raise VcarError(f"{self.path} is a recurrent step model: use step(window, hidden)")
        return self._run({FRAMES: (x, self._frames_index)})[0]

    def initial_state(self, window):
        """Zeros of the hidden input's shape (a recurrent TFLite file always has a fixed size)."""
        return np.zeros(self._signature[HIDDEN], np.float32)

    def step(self, window, hidden):
        return self._run({FRAMES: (window, self._frames_index), HIDDEN: (hidden, self._hidden_index)})
