"""Building blocks shared by the models: the STDF family's framing, padding and offset U-Net, the
3x3 conv with its initialisation, the modulated deformable convolution (DeformConv2D, over
vcar_tf.ops.deform_conv) and the 3D convolution that exports as 2D ones (FrameConv3D). Every layer
serialises through get_config."""

import keras
from keras import ops

from vcar_tf.errors import VcarError
from vcar_tf.ops.deform_conv import check_shapes, deform_conv2d, deform_conv2d_head
from vcar_tf.ops.trace_mode import TraceMode


@keras.saving.register_keras_serializable(package="vcar_tf")
class DeformConv2D(keras.layers.Layer):
    """Modulated deformable 3x3 (or k x k) conv, stride 1, 'same' padding.

    Called on [x (B, H, W, C), offset (B, H, W, 2·D·k²), mask (B, H, W, D·k²) in [0, 1]], or on
    [x, head] with head (B, H, W, 3·D·k²) the offset/mask conv's output: offsets, then the masks' logits
    (vcar_tf.ops.deform_conv.split_head); layout in vcar_tf/ops/deform_conv.py. The kernel is
    (k, k, C / groups, filters)."""

    def __init__(self, filters, kernel_size=3, groups=1, deformable_groups=1, use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.groups = int(groups)
        self.deformable_groups = int(deformable_groups)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        if self.kernel_size % 2 == 0:
            raise VcarError(f"DeformConv2D kernel_size must be odd ('same' padding); got {kernel_size}")

    def build(self, input_shape):
        channels = input_shape[0][-1]
        for what, n in (("groups", self.groups), ("deformable_groups", self.deformable_groups)):
            if channels % n:
                raise VcarError(f"DeformConv2D: {channels} input channels are not divisible by {what}={n}")
        if self.filters % self.groups:
            raise VcarError(f"DeformConv2D: filters={self.filters} is not divisible by groups={self.groups}")
        k = self.kernel_size
        self.kernel = self.add_weight(name="kernel", shape=(k, k, channels // self.groups, self.filters),
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None

    def call(self, inputs):
        x, offset, mask = inputs if len(inputs) == 3 else (*inputs, None)
        check_shapes(x, offset, mask, self.kernel_size, self.deformable_groups)
        if mask is None:
            return deform_conv2d_head(x, offset, self.kernel, self.bias, self.deformable_groups, self.groups)
        return deform_conv2d(x, offset, mask, self.kernel, self.bias, self.deformable_groups, self.groups)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "groups": self.groups, "deformable_groups": self.deformable_groups, "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


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
    """(B, H, W, 3n/2) -> [offsets (the first `offset_channels`), sigmoid(the rest)]. The models' graphs
    before DeformConv2D took the head whole (OffsetMaskHead) held it, and so do configs saved then
    (e.g. tests/legacy/keras/)."""

    def __init__(self, offset_channels, **kwargs):
        super().__init__(**kwargs)
        self.offset_channels = int(offset_channels)

    def call(self, x):
        # one split, not two slices: a slice's gradient is a zero-padded copy of the whole input
        offsets, masks = ops.split(x, [self.offset_channels], axis=-1)
        return [offsets, ops.sigmoid(masks)]

    def compute_output_shape(self, input_shape):
        head = tuple(input_shape[:-1])
        return [head + (self.offset_channels,), head + (input_shape[-1] - self.offset_channels,)]

    def get_config(self):
        return {**super().get_config(), "offset_channels": self.offset_channels}


@keras.saving.register_keras_serializable(package="vcar_tf")
class OffsetMaskHead(keras.layers.Layer):
    """The offset/mask conv's output (B, H, W, 3·D·k²), offsets then mask logits, passed on unchanged as
    DeformConv2D's [x, head] takes it. It stands where SplitOffsetMask stood: tf.train checkpoints key a
    functional model's layers by position, so older ones (training runs, tests/legacy/) still restore."""

    def call(self, head):
        return head


def he_init(scale=1.0):
    """He (truncated normal, fan-in) initialisation scaled by `scale` (0.1 on residual branches, as
    in BasicSR); scale 1 is Keras's he_normal."""
    return keras.initializers.VarianceScaling(2.0 * scale ** 2, "fan_in", "truncated_normal")


def conv3x3(filters, name, strides=1, activation="relu", **kw):
    """3x3 conv with PyTorch's padding=1 (output ceil(H / strides)); He-initialised when ReLU follows
    (Glorot halves the signal's variance per ReLU layer: STDF's QE went dead in training, see
    docs/models.md). Returns a callable on a tensor.

    With stride 2, TF's 'same' pads 0 before and 1 after (for even sizes) where PyTorch's
    Conv2d(padding=1) pads 1 on every side: the published networks' stride-2 convs are
    SymmetricPadConv2D."""
    if activation == "relu":
        kw.setdefault("kernel_initializer", "he_normal")
    layer = keras.layers.Conv2D if strides == 1 else SymmetricPadConv2D
    return layer(filters, 3, strides=strides, padding="same", activation=activation, name=name, **kw)


@keras.saving.register_keras_serializable(package="vcar_tf")
class SymmetricPadConv2D(keras.layers.Conv2D):
    """Conv2D with PyTorch's padding: (k - 1) / 2 zeros on every side, then a 'valid' conv. One layer
    with Conv2D's variables, so checkpoints of the 'same'-padded model still restore."""

    def __init__(self, filters, kernel_size, **kwargs):
        kwargs["padding"] = "valid"
        super().__init__(filters, kernel_size, **kwargs)

    def _pad(self, x):
        p = [(k - 1) // 2 for k in self.kernel_size]
        return ops.pad(x, [[0, 0], [p[0], p[0]], [p[1], p[1]], [0, 0]])

    def call(self, x):
        return super().call(self._pad(x))

    def compute_output_shape(self, input_shape):
        p = [k - 1 for k in self.kernel_size]
        padded = [None if n is None else n + q for n, q in zip(input_shape[1:3], p)]
        return super().compute_output_shape((input_shape[0], *padded, input_shape[3]))


def upconv4x4(filters, name):
    """4x4 stride-2 transposed conv, ReLU: the U-Net's upsampling."""
    return keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same", activation="relu",
                                        kernel_initializer="he_normal", name=name)


def offset_unet(x, groups, nf, nb, taps, prefix="offset"):
    """The STDF offset/mask predictor on (B, H, W, C) for `groups` deformable groups of `taps`
    taps; returns its head (B, H, W, 3·groups·taps), offsets then mask logits, for DeformConv2D's
    [x, head] call. Layer names start with `prefix`."""
    skips = [conv3x3(nf, f"{prefix}_in_conv")(x)]
    for i in range(1, nb):
        y = conv3x3(nf, f"{prefix}_dn{i}_a", strides=2)(skips[-1])
        skips.append(conv3x3(nf, f"{prefix}_dn{i}_b")(y))
    y = conv3x3(nf, f"{prefix}_tr_a", strides=2)(skips[-1])
    y = conv3x3(nf, f"{prefix}_tr_b")(y)
    y = upconv4x4(nf, f"{prefix}_tr_up")(y)
    for i in range(nb - 1, 0, -1):
        y = keras.layers.Concatenate(name=f"{prefix}_cat{i}")([y, skips[i]])
        y = conv3x3(nf, f"{prefix}_up{i}_a")(y)
        y = upconv4x4(nf, f"{prefix}_up{i}_b")(y)
    y = conv3x3(nf, f"{prefix}_out_conv")(y)
    head = conv3x3(groups * 3 * taps, f"{prefix}_mask", activation=None, kernel_initializer="zeros")(y)
    return OffsetMaskHead(name=f"split_{prefix}_mask")(head)


_FRAMEWISE = TraceMode()  # True inside framewise_conv3d()


def framewise_conv3d():
    """Inside this context every FrameConv3D traces as 2D convolutions (the TFLite export)."""
    return _FRAMEWISE.forced(True)


@keras.saving.register_keras_serializable(package="vcar_tf")
class FrameConv3D(keras.layers.Conv3D):
    """Conv3D (stride 1, no dilation, channels last) that, inside framewise_conv3d(), traces as one 2D
    convolution per output frame and temporal tap, summed: the same function and variables. TFLite's
    CONV_3D unrolls its whole (T, H, W) input into one im2col buffer of T*H*W*k^3*C floats (7 GB for
    STIFN-R3 at 832x480, and its int8 calibrator crashes on STIFN-R3L's); a CONV_2D's holds one frame's
    H*W*k^2*C. Keras, the SavedModel and ONNX keep the Conv3D op."""

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        if (any(s != 1 for s in self.strides) or any(d != 1 for d in self.dilation_rate) or self.groups != 1
                or self.data_format != "channels_last"):
            raise VcarError("FrameConv3D takes stride 1, dilation 1, one group and channels_last only")

    def call(self, x):
        frames = x.shape[1]
        if not _FRAMEWISE.current or frames is None:
            return super().call(x)
        taps = self.kernel_size[0]
        before = (taps - 1) // 2 if self.padding == "same" else 0
        out_frames = frames if self.padding == "same" else frames - taps + 1
        outputs = []
        for t in range(out_frames):
            acc = None
            for tap in range(taps):
                source = t + tap - before
                if 0 <= source < frames:  # 'same' pads time with zero frames: their taps add nothing
                    y = ops.conv(x[:, source], self.kernel[tap], padding=self.padding)
                    acc = y if acc is None else acc + y
            outputs.append(acc)
        y = ops.stack(outputs, axis=1)
        if self.use_bias:
            y = y + self.bias
        return self.activation(y) if self.activation is not None else y
