"""Exports of trained models: the serving contract (signatures.py) and the SavedModel writer."""

from vcar_tf.export.saved_model import export_saved_model, next_version

__all__ = ["export_saved_model", "next_version"]
