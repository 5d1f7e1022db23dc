"""Exports of trained models: the serving contract (names.py, signatures.py), the SavedModel,
TFLite and ONNX writers. Imported lazily, so the runners of TFLite and ONNX files
(vcar_tf.inference) read names.py without loading TensorFlow."""

__all__ = ["export_saved_model", "next_version"]


def __getattr__(name):
    if name in __all__:
        from vcar_tf.export import saved_model

        return getattr(saved_model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
