"""vcar_tf: compression-artifact removal for video, in TensorFlow/Keras."""

from vcar_tf.allocator import cap_onednn_allocator

__version__ = "0.1.0"

cap_onednn_allocator()  # before TensorFlow creates its CPU allocator: vcar_tf/allocator.py
