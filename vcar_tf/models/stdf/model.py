"""STDF (Deng et al., AAAI 2020): spatio-temporal deformable fusion, then quality enhancement.

Built as the authors' published network (STDF-PyTorch) is laid out:
1. The 2R+1 Y frames are stacked as channels (B, H, W, T) and replicate-padded at the bottom and
   right to a multiple of 2^nb (the U-Net halves the size nb times); the output is cropped back.
2. Offset predictor, a U-Net of `nf` channels, ReLU after every conv: in_conv 3x3 (T -> nf);
   nb-1 down levels (3x3 stride-2 conv, 3x3 conv); a bottom level (3x3 stride-2 conv, 3x3 conv,
   4x4 stride-2 transposed conv); the stride-2 convs pad 1 on every side as PyTorch does; nb-1 up levels (3x3 conv on the concatenation with the down
   level's output, 4x4 stride-2 transposed conv); out_conv 3x3 (nf -> nf); then offset_mask 3x3
   (nf -> T·3·k², no ReLU): the first T·2·k² channels are the offsets (dy, dx per tap, frame by
   frame), the last T·k² pass a sigmoid and are the masks. offset_mask starts at zero, so the
   fusion starts as a plain conv with masks 0.5.
3. Fusion: DeformConv2D from the T frames to 64 channels, 3x3, deformable_groups = T, ReLU.
4. QE: 3x3 convs 64 -> nf_qe, (nb_qe - 2) x nf_qe -> nf_qe, nf_qe -> 1, ReLU between; the last
   (zero-initialised) is the residual added to the centre frame.

Parameters: stdf_r3 364,510 (paper 365K), stdf_r3l 1,274,622 (paper 1275K). The release's weights
import exactly (vcar_tf/models/stdf/pytorch.py, tests/test_import_weights.py).
"""

import keras

from vcar_tf.models.blocks import CropLike, DeformConv2D, FramesToChannels, PadToMultiple, conv3x3, offset_unet
from vcar_tf.models.layers import OUTPUT_DTYPE, frames_input, residual_head, residual_output
from vcar_tf.models.registry import register


def build_stdf(radius=3, nf=32, nb=3, out_nc=64, nf_qe=48, nb_qe=8, deform_ks=3, name="stdf_r3"):
    frames_n = 2 * radius + 1
    frames = frames_input(radius)
    stacked = FramesToChannels(name="stack")(frames)
    x = PadToMultiple(2 ** nb, name="pad")(stacked)
    head = offset_unet(x, frames_n, nf, nb, deform_ks * deform_ks)
    fused = DeformConv2D(out_nc, deform_ks, deformable_groups=frames_n, kernel_initializer="he_normal",
                         name="fusion")([x, head])
    y = keras.layers.ReLU(name="fusion_relu")(fused)
    y = conv3x3(nf_qe, "qe_1")(y)
    for i in range(2, nb_qe):
        y = conv3x3(nf_qe, f"qe_{i}")(y)
    y = residual_head(name=f"qe_{nb_qe}")(y)
    residual = CropLike(name="crop", dtype=OUTPUT_DTYPE)([y, stacked])
    return residual_output(frames, radius, residual, name)


@register("stdf_r3", radius=3, description="STDF-R3: deformable fusion of 7 frames + QE")
def build_stdf_r3(**overrides):
    return build_stdf(**{"name": "stdf_r3", **overrides})


@register("stdf_r3l", radius=3, description="STDF-R3L: the large variant")
def build_stdf_r3l(**overrides):
    return build_stdf(**{"nf": 64, "nf_qe": 64, "nb_qe": 16, "name": "stdf_r3l", **overrides})
