"""Non-local warp (NL-ConvLSTM, Xu et al. ICCV 2019): move states of frame t−1 toward frame t.

Every pixel j of frame t takes a weighted sum of the states at pixels i of frame t−1, with
weights softmax_i(−d(i, j)) and d(i, j) = ‖f_{t−1}(i) − f_t(j)‖² on encoder features, computed as
‖a‖² + ‖b‖² − 2aᵀb (one matmul).

- `exact_warp`: over all H·W candidates. O((HW)²) time and memory: the reference, small inputs.
- `approx_warp`: the paper's two-stage approximation, vectorised over blocks:
  1. average-pool both feature maps into p×p blocks (p = `block`, 10 in the paper);
  2. for each block of frame t keep the `top_k` (4) nearest blocks of frame t−1 by block
     distance (the same ‖a‖² + ‖b‖² − 2aᵀb on the pooled features);
  3. softmax(−d) per pixel over the top_k·p² pixels of those blocks (the pixel's own ‖a‖² is
     the same for all its candidates and cancels in the softmax, so it is not added).
  Any H and W: both maps are zero-padded at the bottom and right to multiples of p; padded pixels
  are left out of the block means and get weight exactly 0 as candidates, and the output is
  cropped back. An input smaller than one block is one (padded) block. top_k is capped at the
  number of blocks; with top_k ≥ the number of blocks the result equals `exact_warp`.

Stock TF ops only (matmul, top_k, gather, softmax), so both export. Distances and weights are
computed in float32 whatever the caller's dtype; `approx_warp` and `exact_warp` also sum in float32,
while `apply_*_weights` sum in the dtype of the weights they are given (the window feature cache
keeps them in the cells' dtype, bfloat16 under mixed precision).
"""

import tensorflow as tf

_EXCLUDED = -1e30  # logit of a padded candidate: its softmax weight is exactly 0


def _squared_distances(a, b):
    """a (..., N, C), b (..., M, C) -> (..., N, M): ‖a‖² + ‖b‖² − 2aᵀb."""
    return (tf.expand_dims(tf.reduce_sum(a * a, -1), -1) + tf.expand_dims(tf.reduce_sum(b * b, -1), -2)
            - 2.0 * tf.matmul(a, b, transpose_b=True))


def _flat(x):
    s = tf.shape(x)
    return tf.reshape(x, [s[0], s[1] * s[2], x.shape[-1] or s[3]])


def exact_weights(prev_features, cur_features):
    """(B, H·W of frame t, H·W of frame t−1) softmax weights over every pixel."""
    prev = _flat(tf.cast(prev_features, tf.float32))
    cur = _flat(tf.cast(cur_features, tf.float32))
    return tf.nn.softmax(-_squared_distances(cur, prev), axis=-1)


def apply_exact_weights(weights, state):
    """`state` (B, H, W, Cs) of frame t−1 moved by `exact_weights`, summed in the weights' dtype."""
    out = tf.matmul(weights, _flat(tf.cast(state, weights.dtype)))
    return tf.cast(tf.reshape(out, tf.shape(state)), state.dtype)


def exact_warp(prev_features, cur_features, state):
    """Warp `state` (B, H, W, Cs) of frame t−1 toward frame t using features (B, H, W, C)."""
    return apply_exact_weights(exact_weights(prev_features, cur_features), state)


class _Blocks:
    """Zero-pad (B, H, W, C) maps to multiples of p and cut them into (B, nb, p², C) blocks."""

    def __init__(self, like, block):
        self.block = block
        s = tf.shape(like)
        self.batch, self.height, self.width = s[0], s[1], s[2]
        self.rows = (self.height + block - 1) // block
        self.cols = (self.width + block - 1) // block
        self.count = self.rows * self.cols

    def split(self, x):
        p, channels = self.block, x.shape[-1]
        x = tf.pad(x, [[0, 0], [0, self.rows * p - self.height], [0, self.cols * p - self.width], [0, 0]])
        x = tf.reshape(x, [self.batch, self.rows, p, self.cols, p, channels])
        x = tf.transpose(x, [0, 1, 3, 2, 4, 5])
        return tf.reshape(x, [self.batch, self.count, p * p, channels])

    def merge(self, x):
        p, channels = self.block, x.shape[-1]
        x = tf.reshape(x, [self.batch, self.rows, self.cols, p, p, channels])
        x = tf.transpose(x, [0, 1, 3, 2, 4, 5])
        x = tf.reshape(x, [self.batch, self.rows * p, self.cols * p, channels])
        return x[:, :self.height, :self.width, :]

    def valid(self):
        """(B, nb, p², 1): 1 on image pixels, 0 on padding."""
        return self.split(tf.ones([self.batch, self.height, self.width, 1], tf.float32))


def approx_weights(prev_features, cur_features, block=10, top_k=4):
    """The two-stage weights: (weights (B, nb, p², k·p²), candidate blocks (B, nb, k),
    candidate validity (B, nb, k·p²), the _Blocks geometry)."""
    prev = tf.cast(prev_features, tf.float32)
    cur = tf.cast(cur_features, tf.float32)
    blocks = _Blocks(cur, block)
    valid = blocks.valid()
    prev_b, cur_b = blocks.split(prev), blocks.split(cur)
    # stage 1: block means over image pixels only, and the top_k nearest blocks of frame t−1
    count = tf.reduce_sum(valid, axis=2)
    prev_mean = tf.reduce_sum(prev_b * valid, axis=2) / count
    cur_mean = tf.reduce_sum(cur_b * valid, axis=2) / count
    k = tf.minimum(top_k, blocks.count)
    _, nearest = tf.math.top_k(-_squared_distances(cur_mean, prev_mean), k=k)  # (B, nb, k)
    # stage 2: pixel-wise softmax(−d) over the k·p² candidate pixels
    def candidates(x):
        g = tf.gather(x, nearest, batch_dims=1)  # (B, nb, k, p², C)
        s = tf.shape(g)
        return tf.reshape(g, [s[0], s[1], s[2] * s[3], x.shape[-1]])

    # −d = 2aᵀb − ‖b‖² − ‖a‖²; ‖a‖² (the pixel of frame t) is the same for all its candidates, so
    # the softmax drops it. A padded candidate gets ‖b‖² = 1e30: weight exactly 0, no extra pass.
    prev_norm = tf.where(valid > 0, tf.reduce_sum(prev_b * prev_b, -1, keepdims=True), -_EXCLUDED)
    cand_norm = tf.squeeze(candidates(prev_norm), -1)  # (B, nb, k·p²)
    logits = 2.0 * tf.matmul(cur_b, candidates(prev_b), transpose_b=True) - tf.expand_dims(cand_norm, 2)
    return tf.nn.softmax(logits, axis=-1), nearest, cand_norm < -_EXCLUDED, blocks


def apply_approx_weights(weights, nearest, state, block=10):
    """`state` (B, H, W, Cs) of frame t−1 moved by the weights and candidate blocks of
    `approx_weights`, summed in the weights' dtype."""
    blocks = _Blocks(state, block)
    cand = tf.gather(blocks.split(tf.cast(state, weights.dtype)), nearest, batch_dims=1)
    s = tf.shape(cand)
    cand = tf.reshape(cand, [s[0], s[1], s[2] * s[3], state.shape[-1]])
    return tf.cast(blocks.merge(tf.matmul(weights, cand)), state.dtype)


def approx_warp(prev_features, cur_features, state, block=10, top_k=4):
    """Warp `state` (B, H, W, Cs) of frame t−1 toward frame t with the two-stage approximation."""
    weights, nearest, _, _ = approx_weights(prev_features, cur_features, block, top_k)
    return apply_approx_weights(weights, nearest, state, block)
