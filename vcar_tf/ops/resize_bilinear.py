"""tf.image.resize(method="bilinear") for training: the fused CPU op VcarResizeBilinear (custom_ops/resize/)
on TF's intra-op threads, its output in the input's dtype, with its gradient; stock ops where it is not built
or a GPU is visible. Callers keep tf.image.resize on the export path (stock ops only)."""

import tensorflow as tf

from vcar_tf.ops import build


def _register_gradient(lib):
    tf.RegisterGradient("VcarResizeBilinear")(
        lambda op, grad: (lib.vcar_resize_bilinear_grad(grad, op.inputs[0]), None))


def load_resize_bilinear():
    """The loaded library with its gradient registered, or None (one warning per process) when it cannot be built."""
    return build.load_optional("resize_bilinear", "resize/resize_bilinear_op.cc", "fused bilinear resize",
                               "using tf.image.resize", _register_gradient)


def resize_bilinear(x, size):
    """x (B, h, w, C) float32 or bfloat16 resized bilinearly to size (H, W), in x's dtype."""
    lib = None if tf.config.list_logical_devices("GPU") else load_resize_bilinear()
    if lib is None or x.dtype not in (tf.float32, tf.bfloat16):
        return tf.cast(tf.image.resize(x, size, method="bilinear"), x.dtype)
    return lib.vcar_resize_bilinear(x, tf.cast(size, tf.int32))
