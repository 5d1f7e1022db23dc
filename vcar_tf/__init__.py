"""vcar_tf: compression-artifact removal for video, in TensorFlow/Keras."""

__version__ = "0.1.0"
