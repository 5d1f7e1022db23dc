"""STIFN: spatio-temporal fusion by 3D convolutions, then quality enhancement (QE).

The seed slides give only the idea (3D convolutions over (T, H, W) instead of flow or deformable
alignment) and the parameter counts (R3: 374K, R3L: 660K); this layer plan is ours:

1. 3D feature extraction on the 2R+1 Y frames, (B, T, H, W, 1):
   `n3d` Conv3D 3x3x3 layers of `nf3d` channels, 'same' padding in time and space, ReLU.
2. Temporal fusion: one Conv3D with kernel (T, 1, 1), 'valid' in time, to `nf_fuse` channels,
   ReLU: every output channel weighs every frame's features at the same pixel.
3. QE: `n_qe` 3x3 Conv2D layers, `nf_qe` channels with ReLU, the last to 1 channel: the
   residual added to the centre frame.

All convolutions have stride 1, so any H and W work without padding.

| variant | R | nf3d | n3d | nf_fuse | nf_qe | n_qe | parameters | published |
|---|---|---|---|---|---|---|---|---|
| stifn_r3 | 3 | 32 | 5 | 64 | 64 | 8 | 385,089 | 374K (+3.0%) |
| stifn_r3l | 3 | 48 | 6 | 64 | 64 | 10 | 667,121 | 660K (+1.1%) |
"""

import keras

from vcar_tf.models.layers import SelectFrame, frames_input, residual_output
from vcar_tf.models.registry import register


def build_stifn(radius=3, nf3d=32, n3d=5, nf_fuse=64, nf_qe=64, n_qe=8, name="stifn_r3"):
    frames = frames_input(radius)
    x = frames
    for i in range(n3d):
        x = keras.layers.Conv3D(nf3d, 3, padding="same", activation="relu", name=f"conv3d_{i + 1}")(x)
    x = keras.layers.Conv3D(nf_fuse, (2 * radius + 1, 1, 1), padding="valid", activation="relu",
                            name="temporal_fusion")(x)
    x = SelectFrame(0, name="fused")(x)
    for i in range(n_qe - 1):
        x = keras.layers.Conv2D(nf_qe, 3, padding="same", activation="relu", name=f"qe_{i + 1}")(x)
    x = keras.layers.Conv2D(1, 3, padding="same", name=f"qe_{n_qe}")(x)
    return residual_output(frames, radius, x, name)


@register("stifn_r3", radius=3, description="STIFN-R3: 3D-conv fusion of 7 frames + QE", aliases=("stifn",))
def build_stifn_r3(**overrides):
    return build_stifn(**{"name": "stifn_r3", **overrides})


@register("stifn_r3l", radius=3, description="STIFN-R3L: the large variant")
def build_stifn_r3l(**overrides):
    return build_stifn(**{"nf3d": 48, "n3d": 6, "n_qe": 10, "name": "stifn_r3l", **overrides})
