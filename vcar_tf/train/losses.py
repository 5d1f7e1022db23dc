"""Per-example losses: (B, ...) target and prediction -> (B,)."""

import tensorflow as tf

from vcar_tf.errors import VcarError


def charbonnier(target, pred, eps=1e-6):
    """mean(sqrt((pred - target)^2 + eps)) per example, eps = 1e-6 as in STDF/RFDA."""
    d = tf.cast(pred, tf.float32) - tf.cast(target, tf.float32)
    return tf.reduce_mean(tf.sqrt(d * d + eps), axis=tf.range(1, tf.rank(d)))


def l2(target, pred):
    d = tf.cast(pred, tf.float32) - tf.cast(target, tf.float32)
    return tf.reduce_mean(d * d, axis=tf.range(1, tf.rank(d)))


LOSSES = {"charbonnier": charbonnier, "l2": l2}


def get_loss(name):
    if name not in LOSSES:
        raise VcarError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
