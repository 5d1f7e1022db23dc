"""x · sigmoid(logits) · channel (DSTA's output gate) for training: the fused CPU op VcarSigmoidGate
(custom_ops/gate/) on TF's intra-op threads, with its gradient; XLA kernels where it is not built or a GPU is
visible. Callers keep stock ops on the export path (converters know neither)."""

import tensorflow as tf

from vcar_tf.ops import build


def _as_float32(t):
    return tf.cast(t, tf.float32)


# One XLA kernel forward and one backward, in float32 inside, instead of a sigmoid, two products and their
# gradients' passes over memory.
@tf.function(jit_compile=True)
def _gated(x, logits, channel):
    return tf.cast(_as_float32(x) * tf.sigmoid(_as_float32(logits)) * _as_float32(channel), x.dtype)


@tf.function(jit_compile=True)
def _gated_gradients(dy, x, logits, channel):
    dy, x32, gate, channel32 = _as_float32(dy), _as_float32(x), tf.sigmoid(_as_float32(logits)), _as_float32(channel)
    dy_gate = dy * gate
    return (tf.cast(dy_gate * channel32, x.dtype),
            tf.cast(dy_gate * x32 * channel32 * (1.0 - gate), logits.dtype),
            tf.cast(tf.reduce_sum(dy_gate * x32, axis=[1, 2], keepdims=True), channel.dtype))


@tf.custom_gradient
def xla_sigmoid_gate(x, logits, channel):
    return _gated(x, logits, channel), lambda dy: _gated_gradients(dy, x, logits, channel)


def _register_gradient(lib):
    tf.RegisterGradient("VcarSigmoidGate")(lambda op, dy: lib.vcar_sigmoid_gate_grad(dy, *op.inputs))


def load_sigmoid_gate():
    """The loaded library with its gradient registered, or None (one warning per process) when it cannot be built."""
    return build.load_optional("sigmoid_gate", "gate/sigmoid_gate_op.cc", "fused sigmoid gate", "using XLA",
                               _register_gradient)


def sigmoid_gate(x, logits, channel):
    """x (B, H, W, n) · sigmoid(logits) (B, H, W, n) · channel (B, 1, 1, n), in x's dtype."""
    lib = None if tf.config.list_logical_devices("GPU") else load_sigmoid_gate()
    if lib is None or x.dtype not in (tf.float32, tf.bfloat16):
        return xla_sigmoid_gate(x, logits, channel)
    return lib.vcar_sigmoid_gate(x, logits, channel)
