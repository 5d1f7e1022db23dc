"""STIFN: spatio-temporal fusion by 3D convolutions, then quality enhancement (QE).

The seed slides give only the idea (3D convolutions over (T, H, W) instead of flow or deformable
alignment) and the parameter counts (R3: 374K, R3L: 660K); this layer plan is ours:

1. 3D feature extraction on the 2R+1 Y frames, (B, T, H, W, 1):
   `n3d` Conv3D 3x3x3 layers of `nf3d` channels, 'same' padding in time and space, ReLU.
2. Temporal fusion: one Conv3D with kernel (T, 1, 1), 'valid' in time, to `nf_fuse` channels,
   ReLU: every output channel weighs every frame's features at the same pixel.
3. QE on the fused (B, H, W, 64) map: a 3x3 conv, `n_res` residual blocks (conv-ReLU-conv plus
   skip), and a 3x3 conv to 1 channel: the residual added to the centre frame.

Initialisation: He for the ReLU convs, the second conv of each residual block scaled by 0.1
(as in BasicSR), and the output conv zero, so an untrained model is the identity. A plain
13-layer ReLU stack with Keras's default Glorot init lost its signal with depth (the last
hidden layer was entirely zero after 400 steps) and never left the identity; this plan trains.

The 3D stage runs on all 2R+1 frames, so it costs T times a 2D layer of the same width; it is
kept narrow and shallow and most parameters sit in the single-frame QE. All convolutions have
stride 1, so any H and W work without padding.

| variant | R | nf3d | n3d | nf_fuse | nf_qe | n_res | parameters | MAC/pixel | published |
|---|---|---|---|---|---|---|---|---|---|
| stifn_r3 | 3 | 24 | 3 | 64 | 64 | 4 | 375,569 | 0.57M | 374K (+0.4%) |
| stifn_r3l | 3 | 32 | 4 | 64 | 64 | 7 | 652,833 | 1.15M | 660K (-1.1%) |
"""

import keras

from vcar_tf.models.blocks import FrameConv3D, conv3x3, he_init
from vcar_tf.models.layers import SelectFrame, frames_input, residual_head, residual_output
from vcar_tf.models.registry import register


def build_stifn(radius=3, nf3d=24, n3d=3, nf_fuse=64, nf_qe=64, n_res=4, name="stifn_r3"):
    frames = frames_input(radius)
    x = frames
    for i in range(n3d):
        x = FrameConv3D(nf3d, 3, padding="same", activation="relu", kernel_initializer="he_normal",
                                name=f"conv3d_{i + 1}")(x)
    x = FrameConv3D(nf_fuse, (2 * radius + 1, 1, 1), padding="valid", activation="relu",
                            kernel_initializer="he_normal", name="temporal_fusion")(x)
    x = SelectFrame(0, name="fused")(x)
    x = conv3x3(nf_qe, "qe_in", kernel_initializer=he_init())(x)
    for i in range(n_res):
        y = conv3x3(nf_qe, f"qe_res{i + 1}_a", kernel_initializer=he_init())(x)
        y = conv3x3(nf_qe, f"qe_res{i + 1}_b", activation=None, kernel_initializer=he_init(0.1))(y)
        x = keras.layers.Add(name=f"qe_res{i + 1}")([x, y])
    x = residual_head(name="qe_out")(x)
    return residual_output(frames, radius, x, name)


@register("stifn_r3", radius=3, description="STIFN-R3: 3D-conv fusion of 7 frames + QE", aliases=("stifn",))
def build_stifn_r3(**overrides):
    return build_stifn(**{"name": "stifn_r3", **overrides})


@register("stifn_r3l", radius=3, description="STIFN-R3L: the large variant")
def build_stifn_r3l(**overrides):
    return build_stifn(**{"nf3d": 32, "n3d": 4, "n_res": 7, "name": "stifn_r3l", **overrides})
