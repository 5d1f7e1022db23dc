"""One entry point for every export: load_exported(path) returns the runner its kind needs (the
TFLite and ONNX runners load without TensorFlow)."""

import os

from vcar_tf.errors import VcarError


def load_exported(path, num_threads=None):
    """The runner of a vcar-export file or folder: .tflite -> TFLiteEnhancer, .onnx -> OnnxEnhancer,
    a SavedModel version folder -> SavedModelEnhancer (num_threads: TFLite and ONNX only)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".tflite":
        from vcar_tf.inference.tflite import TFLiteEnhancer

        return TFLiteEnhancer(path, num_threads)
    if ext == ".onnx":
        from vcar_tf.inference.onnx import OnnxEnhancer

        return OnnxEnhancer(path, num_threads)
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):  # said before TensorFlow loads
            raise VcarError(f"{path} is not a SavedModel (no saved_model.pb); pass DIR/NAME/VERSION")
        from vcar_tf.inference.saved_model import SavedModelEnhancer

        return SavedModelEnhancer(path)
    raise VcarError(f"{path}: not an export vcar_tf runs (a .tflite or .onnx file, or a SavedModel version folder)")
