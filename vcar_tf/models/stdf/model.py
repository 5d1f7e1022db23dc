"""STDF (Deng et al., AAAI 2020): spatio-temporal deformable fusion, then quality enhancement.

Built as ../shared/docs/architectures.md describes the authors' network:
1. The 2R+1 Y frames are stacked as channels (B, H, W, T) and replicate-padded at the bottom and
   right to a multiple of 2^nb (the U-Net halves the size nb times); the output is cropped back.
2. Offset predictor, a U-Net of `nf` channels, ReLU after every conv: in_conv 3x3 (T -> nf);
   nb-1 down levels (3x3 stride-2 conv, 3x3 conv); a bottom level (3x3 stride-2 conv, 3x3 conv,
   4x4 stride-2 transposed conv); nb-1 up levels (3x3 conv on the concatenation with the down
   level's output, 4x4 stride-2 transposed conv); out_conv 3x3 (nf -> nf); then offset_mask 3x3
   (nf -> T·3·k², no ReLU): the first T·2·k² channels are the offsets (dy, dx per tap, frame by
   frame), the last T·k² pass a sigmoid and are the masks. offset_mask starts at zero, so the
   fusion starts as a plain conv with masks 0.5.
3. Fusion: DeformConv2D from the T frames to 64 channels, 3x3, deformable_groups = T, ReLU.
4. QE: 3x3 convs 64 -> nf_qe, (nb_qe - 2) x nf_qe -> nf_qe, nf_qe -> 1, ReLU between; the last
   (zero-initialised) is the residual added to the centre frame.

Parameters: stdf_r3 364,510 (paper 365K), stdf_r3l 1,274,622 (paper 1275K).
"""

import keras
from keras import ops

from vcar_tf.models.deform import DeformConv2D
from vcar_tf.models.layers import SelectFrame, frames_input, residual_head
from vcar_tf.models.registry import register


@keras.saving.register_keras_serializable(package="vcar_tf")
class PadToMultiple(keras.layers.Layer):
    """(B, H, W, C) -> (B, H', W', C) with H', W' the next multiples of `multiple`, by repeating
    the last row and column (a gather, so any size works, even smaller than the padding)."""

    def __init__(self, multiple, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def call(self, x):
        for axis in (1, 2):
            size = ops.shape(x)[axis]
            padded = (size + self.multiple - 1) // self.multiple * self.multiple
            x = ops.take(x, ops.minimum(ops.arange(padded), size - 1), axis=axis)
        return x

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="vcar_tf")
class CropLike(keras.layers.Layer):
    """Crop x (B, H', W', C) to the H and W of a reference (B, H, W, ...)."""

    def call(self, inputs):
        x, reference = inputs
        return x[:, :ops.shape(reference)[1], :ops.shape(reference)[2], :]


@keras.saving.register_keras_serializable(package="vcar_tf")
class FramesToChannels(keras.layers.Layer):
    """(B, T, H, W, 1) -> (B, H, W, T)."""

    def call(self, frames):
        return ops.transpose(ops.squeeze(frames, axis=-1), (0, 2, 3, 1))


@keras.saving.register_keras_serializable(package="vcar_tf")
class SplitOffsetMask(keras.layers.Layer):
    """(B, H, W, 3n/2) -> [offsets (the first `offset_channels`), sigmoid(the rest)]."""

    def __init__(self, offset_channels, **kwargs):
        super().__init__(**kwargs)
        self.offset_channels = int(offset_channels)

    def call(self, x):
        return [x[..., :self.offset_channels], ops.sigmoid(x[..., self.offset_channels:])]

    def compute_output_shape(self, input_shape):
        head = tuple(input_shape[:-1])
        return [head + (self.offset_channels,), head + (input_shape[-1] - self.offset_channels,)]

    def get_config(self):
        return {**super().get_config(), "offset_channels": self.offset_channels}


def conv3x3(filters, name, strides=1, activation="relu", **kw):
    """3x3 'same' conv; He-initialised when ReLU follows (Glorot halves the signal's variance per
    ReLU layer: STDF's QE went dead in training, see docs/models.md)."""
    if activation == "relu":
        kw.setdefault("kernel_initializer", "he_normal")
    return keras.layers.Conv2D(filters, 3, strides=strides, padding="same", activation=activation, name=name, **kw)


def _up(filters, name):
    return keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same", activation="relu",
                                        kernel_initializer="he_normal", name=name)


def offset_unet(x, groups, nf, nb, taps, prefix="offset"):
    """The STDF offset/mask predictor on (B, H, W, C) for `groups` deformable groups of `taps`
    taps; returns (offsets, masks). Layer names start with `prefix`."""
    skips = [conv3x3(nf, f"{prefix}_in_conv")(x)]
    for i in range(1, nb):
        y = conv3x3(nf, f"{prefix}_dn{i}_a", strides=2)(skips[-1])
        skips.append(conv3x3(nf, f"{prefix}_dn{i}_b")(y))
    y = conv3x3(nf, f"{prefix}_tr_a", strides=2)(skips[-1])
    y = conv3x3(nf, f"{prefix}_tr_b")(y)
    y = _up(nf, f"{prefix}_tr_up")(y)
    for i in range(nb - 1, 0, -1):
        y = keras.layers.Concatenate(name=f"{prefix}_cat{i}")([y, skips[i]])
        y = conv3x3(nf, f"{prefix}_up{i}_a")(y)
        y = _up(nf, f"{prefix}_up{i}_b")(y)
    y = conv3x3(nf, f"{prefix}_out_conv")(y)
    off_msk = conv3x3(groups * 3 * taps, f"{prefix}_mask", activation=None, kernel_initializer="zeros")(y)
    return SplitOffsetMask(groups * 2 * taps, name=f"split_{prefix}_mask")(off_msk)


def build_stdf(radius=3, nf=32, nb=3, out_nc=64, nf_qe=48, nb_qe=8, deform_ks=3, name="stdf_r3"):
    frames_n = 2 * radius + 1
    frames = frames_input(radius)
    stacked = FramesToChannels(name="stack")(frames)
    x = PadToMultiple(2 ** nb, name="pad")(stacked)
    offsets, masks = offset_unet(x, frames_n, nf, nb, deform_ks * deform_ks)
    fused = DeformConv2D(out_nc, deform_ks, deformable_groups=frames_n, kernel_initializer="he_normal",
                         name="fusion")([x, offsets, masks])
    y = keras.layers.ReLU(name="fusion_relu")(fused)
    y = conv3x3(nf_qe, "qe_1")(y)
    for i in range(2, nb_qe):
        y = conv3x3(nf_qe, f"qe_{i}")(y)
    y = residual_head(name=f"qe_{nb_qe}")(y)
    residual = CropLike(name="crop")([y, stacked])
    centre = SelectFrame(radius, name="centre")(frames)
    enhanced = keras.layers.Add(name="enhanced")([centre, residual])
    return keras.Model(frames, enhanced, name=name)


@register("stdf_r3", radius=3, description="STDF-R3: deformable fusion of 7 frames + QE")
def build_stdf_r3(**overrides):
    return build_stdf(**{"name": "stdf_r3", **overrides})


@register("stdf_r3l", radius=3, description="STDF-R3L: the large variant")
def build_stdf_r3l(**overrides):
    return build_stdf(**{"nf": 64, "nf_qe": 64, "nb_qe": 16, "name": "stdf_r3l", **overrides})
