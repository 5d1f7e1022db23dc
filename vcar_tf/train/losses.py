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


def per_example_loss(loss_fn, target, pred):
    """(B,) loss: for clips (B, L, H, W, C) the per-frame losses are summed over the L frames."""
    if target.shape.rank == 5:
        b, length = tf.shape(target)[0], tf.shape(target)[1]
        flat = loss_fn(tf.reshape(target, tf.concat([[-1], tf.shape(target)[2:]], 0)),
                       tf.reshape(pred, tf.concat([[-1], tf.shape(pred)[2:]], 0)))
        return tf.reduce_sum(tf.reshape(flat, [b, length]), axis=1)
    return loss_fn(target, pred)


def get_loss(name):
    if name not in LOSSES:
        raise VcarError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
