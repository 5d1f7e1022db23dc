"""RFDA (Zhao et al., ACM MM 2021): STDF + Recursive Fusion + Deformable Spatio-Temporal Attention.

Built as the authors' published network (RFDA-PyTorch) is laid out, from three functional sub-models:
1. `frontend`: STDF-R3's U-Net offset predictor and deformable fusion of the 2R+1 frames -> h_t
   (64 channels, ReLU). The window is replicate-padded to a multiple of 8 and cropped back.
2. `recursive_fusion` (RF): h'_t = h_t + 0.2 · F_fe([h_t, F_sf(h_t, h'_{t-1})]). F_sf is a second
   STDF U-Net (nf 32, nb 3) over the 128-channel [h_t, h'_{t-1}] whose head predicts a 1x1
   deformable conv with 128 deformable groups (128 -> 64, ReLU); F_fe is 3x3 128 -> 64, ReLU,
   3x3 64 -> 64, ReLU. 417,760 parameters.
3. `qe`: STDF's QE (64 -> 48, 6 x 48 -> 48, 48 -> 1, 3x3, ReLU) with a DSTA block after each of
   the 6 hidden convs when `dsta` is set. DSTA (n = 48, f = 12), 81,360 parameters each:
   1x1 n -> f (c1); 3x3 stride-2 f -> f, ReLU (c2); fine branch: 3x3 f -> f, ReLU, then an
   offset/mask head; coarse branch: max-pool 7 stride 3 ('same'), three 3x3 f -> f, ReLU, an
   offset/mask head, bilinearly resized to c2's size and summed with the fine head; a modulated
   3x3 deformable conv on c2 (f -> f, f deformable groups) -> attention features a;
   channel weights: global average pool of a -> 1x1 f -> 2f, ReLU -> 1x1 2f -> n -> sigmoid;
   spatial mask: a resized bilinearly to the input size + 1x1 f -> f skip from c1 -> 1x1 f -> n
   -> sigmoid; output = x · spatial mask · channel weights. The heads start at zero, so every
   deformable conv starts as a plain conv with masks 0.5; both sigmoid gates start open
   (bias 3, see GATE_BIAS). The paper names the layers but not
   the fine branch's extra conv; with it the block has the 81,360 parameters derived from the
   authors' network.

The first frame: the hidden state h'_0 fed to RF at t = 1 is zero, as in the official code (the
paper writes h'_1 = h_1). A zero state is what a stateless server can send without a special
first-frame path, and the step signature needs no flag; the released weights were trained so.

Parameters: rfda 1,270,430 (paper 1.25M) = STDF-R3 364,510 + RF 417,760 + 6 DSTA x 81,360;
stdf_rf 782,270; stdf_dsta 852,670.

Window models (stdf_dsta) map (B, 2R+1, H, W, 1) to the centre frame. Recurrent ones (RF set)
map a clip (B, L, H, W, 1) to all L enhanced frames, each frame's window clipped inside the
clip; `step(window, hidden)` is one frame of it, `initial_state(window)` the zero state.
"""

import keras
import tensorflow as tf
from keras import ops

from vcar_tf.errors import VcarError
from vcar_tf.models.blocks import DeformConv2D, FramesToChannels, OffsetMaskHead, PadToMultiple, conv3x3, offset_unet
from vcar_tf.models.layers import OUTPUT_DTYPE, residual_head
from vcar_tf.models.registry import register
from vcar_tf.ops.resize_bilinear import resize_bilinear
from vcar_tf.ops.sigmoid_gate import sigmoid_gate

UNROLL_CHUNK = 5  # frames per front-end and QE batch of a training clip (_call_unrolled); 3 and 15 measured slower
UNET_LEVELS = 3  # the U-Nets halve the size 3 times: pad to a multiple of 8
RF_BETA = 0.2


@keras.saving.register_keras_serializable(package="vcar_tf")
class ResizeLike(keras.layers.Layer):
    """Bilinear resize of x (B, h, w, C) to the H and W of a reference (B, H, W, ...); in training through
    the fused op (vcar_tf.ops.resize_bilinear), elsewhere tf.image.resize (exports: stock ops only)."""

    def call(self, inputs, training=False):
        x, reference = inputs
        if training:
            return resize_bilinear(x, tf.shape(reference)[1:3])
        return tf.image.resize(x, tf.shape(reference)[1:3], method="bilinear")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1][:3]) + (input_shape[0][-1],)


@keras.saving.register_keras_serializable(package="vcar_tf")
class ScaledAdd(keras.layers.Layer):
    """[a, b] -> a + scale · b."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs):
        return inputs[0] + self.scale * inputs[1]

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="vcar_tf")
class SigmoidGate(keras.layers.Layer):
    """[x, logits, channel] -> x · sigmoid(logits) · channel (sigmoid_gate in training)."""

    def call(self, inputs, training=False):
        x, logits, channel = inputs
        return sigmoid_gate(x, logits, channel) if training else x * ops.sigmoid(logits) * channel

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


def feature_input(channels, name):
    """A sub-model's input in the compute dtype: Keras casts what a sub-model is called on to its Inputs'
    dtype, so float32 Inputs cost a bf16 model two casts per input and two more in the gradient."""
    return keras.Input((None, None, channels), dtype=keras.mixed_precision.dtype_policy().compute_dtype, name=name)


def build_frontend(frames, nf, nb, out_nc):
    """STDF alignment and fusion: padded (B, H, W, T) -> h (B, H, W, out_nc)."""
    x = feature_input(frames, "stacked")
    head = offset_unet(x, frames, nf, nb, 9)
    h = DeformConv2D(out_nc, 3, deformable_groups=frames, kernel_initializer="he_normal", name="fusion")([x, head])
    return keras.Model(x, keras.layers.ReLU(name="fusion_relu")(h), name="frontend")


def build_recursive_fusion(channels, nf, nb):
    """RF: [h_t, h'_{t-1}] -> h'_t = h_t + 0.2 · F_fe([h_t, F_sf(h_t, h'_{t-1})])."""
    h = feature_input(channels, "h")
    previous = feature_input(channels, "previous")
    both = keras.layers.Concatenate(name="rf_cat")([h, previous])
    head = offset_unet(both, 2 * channels, nf, nb, 1, prefix="rf_offset")
    aligned = DeformConv2D(channels, 1, deformable_groups=2 * channels, kernel_initializer="he_normal",
                           name="rf_align")([both, head])
    aligned = keras.layers.ReLU(name="rf_align_relu")(aligned)
    y = keras.layers.Concatenate(name="rf_fe_cat")([h, aligned])
    y = conv3x3(channels, "rf_fe_1")(y)
    y = conv3x3(channels, "rf_fe_2")(y)
    return keras.Model([h, previous], ScaledAdd(RF_BETA, name="rf_out")([h, y]), name="recursive_fusion")


# Both DSTA gates start open (sigmoid(3) = 0.95): with zero biases each block scaled its input by
# about 0.5 x 0.5, six blocks by about 2e-4, and STDF+DSTA stayed at the identity (+0.000 dB
# after 500 steps on the shared split, where STDF-R3 reached +0.529). The same idea as an LSTM's
# forget-gate bias of 1.
GATE_BIAS = keras.initializers.Constant(3.0)


def dsta_block(x, name, reduction=4):
    """Deformable spatio-temporal attention on (B, H, W, n); see the module docstring."""
    n = x.shape[-1]
    f = n // reduction
    c1 = keras.layers.Conv2D(f, 1, name=f"{name}_reduce")(x)
    c2 = conv3x3(f, f"{name}_stride", strides=2)(c1)
    head = 3 * 9 * f

    fine = conv3x3(f, f"{name}_fine")(c2)
    fine = conv3x3(head, f"{name}_fine_head", activation=None, kernel_initializer="zeros")(fine)
    coarse = keras.layers.MaxPooling2D(7, 3, padding="same", name=f"{name}_pool")(c2)
    for i in range(1, 4):
        coarse = conv3x3(f, f"{name}_coarse_{i}")(coarse)
    coarse = conv3x3(head, f"{name}_coarse_head", activation=None, kernel_initializer="zeros")(coarse)
    coarse = ResizeLike(name=f"{name}_coarse_up")([coarse, c2])
    heads = OffsetMaskHead(name=f"{name}_split")(keras.layers.Add(name=f"{name}_heads")([fine, coarse]))
    attention = DeformConv2D(f, 3, deformable_groups=f, name=f"{name}_deform")([c2, heads])

    channel = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_gap")(attention)
    channel = keras.layers.Conv2D(2 * f, 1, activation="relu", name=f"{name}_ca_1")(channel)
    channel = keras.layers.Conv2D(n, 1, activation="sigmoid", bias_initializer=GATE_BIAS, name=f"{name}_ca_2")(channel)
    spatial = ResizeLike(name=f"{name}_up")([attention, x])
    spatial = keras.layers.Add(name=f"{name}_skip_add")([spatial, keras.layers.Conv2D(f, 1, name=f"{name}_skip")(c1)])
    spatial = keras.layers.Conv2D(n, 1, bias_initializer=GATE_BIAS, name=f"{name}_sa")(spatial)
    return SigmoidGate(name=f"{name}_out")([x, spatial, channel])


def build_qe(channels, nf_qe, nb_qe, dsta):
    """QE: h (B, H, W, channels) -> residual (B, H, W, 1), with DSTA after each hidden conv."""
    h = feature_input(channels, "features")
    y = conv3x3(nf_qe, "qe_1")(h)
    for i in range(2, nb_qe):
        y = conv3x3(nf_qe, f"qe_{i}")(y)
        if dsta:
            y = dsta_block(y, f"dsta_{i - 1}")
    return keras.Model(h, residual_head(name=f"qe_{nb_qe}")(y), name="qe")


@keras.saving.register_keras_serializable(package="vcar_tf")
class DeformableEnhancer(keras.Model):
    """STDF front end, optional recursive fusion (recurrent: clips in, clips out), QE with optional DSTA."""

    def __init__(self, radius=3, nf=32, nb=3, out_nc=64, nf_qe=48, nb_qe=8, recursive_fusion=True, dsta=True,
                 **kwargs):
        super().__init__(**kwargs)
        if nb != UNET_LEVELS:
            raise VcarError(f"DeformableEnhancer pads to a multiple of {2 ** UNET_LEVELS}; nb must be {UNET_LEVELS}")
        self.radius, self.nf, self.nb, self.out_nc = int(radius), int(nf), int(nb), int(out_nc)
        self.nf_qe, self.nb_qe = int(nf_qe), int(nb_qe)
        self.recursive_fusion, self.dsta = bool(recursive_fusion), bool(dsta)
        self.stack = FramesToChannels(name="stack")
        self.pad = PadToMultiple(2 ** nb, name="pad")
        self.frontend = build_frontend(2 * self.radius + 1, self.nf, self.nb, self.out_nc)
        self.rf = build_recursive_fusion(self.out_nc, self.nf, self.nb) if self.recursive_fusion else None
        self.qe = build_qe(self.out_nc, self.nf_qe, self.nb_qe, self.dsta)
        self.built = True  # every weight exists: the sub-models are functional

    @property
    def recurrent(self):
        """The recurrent protocol (vcar_tf.models.recurrent) holds when RF is on."""
        return self.recursive_fusion

    @property
    def input_dtype(self):
        return OUTPUT_DTYPE  # frames stay float32 through __call__: the centre is added in float32

    @property
    def state_channels(self):
        return self.out_nc

    def build(self, input_shape=None):
        pass  # built in __init__

    def initial_state(self, window):
        """The zero hidden state (B, H', W', out_nc) for a window (B, 2R+1, H, W, 1); H', W' = H, W
        rounded up to a multiple of 8."""
        shape = tf.shape(window)
        m = 2 ** self.nb
        size = (shape[2:4] + m - 1) // m * m
        return tf.zeros(tf.stack([shape[0], size[0], size[1], self.out_nc]), window.dtype)

    def step(self, window, hidden=None):
        """One frame: (window (B, 2R+1, H, W, 1), h'_{t-1}) -> (enhanced (B, H, W, 1), h'_t)."""
        centre = tf.cast(ops.take(window, self.radius, axis=1), OUTPUT_DTYPE)
        window = tf.cast(window, self.compute_dtype)  # called directly, not through __call__'s autocast
        h = self._fused_features(window)
        if self.rf is not None:
            hidden = tf.zeros_like(h) if hidden is None else tf.cast(hidden, h.dtype)  # bf16 under mixed precision
            check = tf.debugging.assert_equal(
                tf.shape(hidden), tf.shape(h),
                message=f"hidden state must be (B, ceil(H/{2 ** self.nb})*{2 ** self.nb}, "
                        f"ceil(W/{2 ** self.nb})*{2 ** self.nb}, {self.out_nc}) for a window of H x W")
            with tf.control_dependencies([check]):
                h = self.rf([h, hidden])
        return centre + self._residual(h, tf.shape(window)[2:4]), h

    def _fused_features(self, windows):
        """STDF's alignment and fusion: windows (N, 2R+1, H, W, 1) -> h (N, H', W', out_nc), padded."""
        return self.frontend(self.pad(self.stack(windows)))

    def _residual(self, h, size):
        """QE on h, cropped back to size (H, W)."""
        return self.qe(h)[:, :size[0], :size[1], :]

    def call(self, x, training=False):
        if not self.recurrent:
            return self.step(x)[0]
        if x.shape[1] is not None:  # training clips
            return self._call_unrolled(x)
        return self._call_dynamic(x)

    def _call_unrolled(self, clip):
        """A clip of static length T: the values of T calls of step, but the front end and QE each run
        once per run of UNROLL_CHUNK frames on all their B·UNROLL_CHUNK windows (they do not depend on
        the state) and only RF steps through time. A chunk's front end and QE have no edge to the RF
        steps of other chunks, so TF runs them beside the recurrence, whose small ops leave cores idle."""
        length, size = clip.shape[1], tf.shape(clip)
        index = [[min(max(i, 0), length - 1) for i in range(t - self.radius, t + self.radius + 1)]
                 for t in range(length)]
        windows = tf.gather(tf.cast(clip, self.compute_dtype), index, axis=1)  # (B, T, 2R+1, H, W, 1)
        hidden, residuals = None, []
        for start in range(0, length, UNROLL_CHUNK):
            chunk = windows[:, start:start + UNROLL_CHUNK]
            frames = chunk.shape[1]
            h = self._fused_features(tf.reshape(chunk, tf.concat([[-1], tf.shape(chunk)[2:]], 0)))  # B·frames
            fused = []
            for h_t in tf.unstack(tf.reshape(h, tf.concat([size[:1], [frames], tf.shape(h)[1:]], 0)), frames, axis=1):
                hidden = self.rf([h_t, tf.zeros_like(h_t) if hidden is None else hidden])
                fused.append(hidden)
            residual = self._residual(tf.reshape(tf.stack(fused, axis=1), tf.shape(h)), size[2:4])
            residuals.append(tf.reshape(residual, tf.concat([size[:1], [frames], size[2:]], 0)))
        return tf.cast(clip, OUTPUT_DTYPE) + tf.concat(residuals, axis=1)

    def _call_dynamic(self, clip):
        n = tf.shape(clip)[1]
        offsets = tf.range(-self.radius, self.radius + 1)

        def body(t, hidden, frames):
            window = tf.gather(clip, tf.clip_by_value(t + offsets, 0, n - 1), axis=1)
            out, hidden = self.step(window, hidden)
            return t + 1, hidden, frames.write(t, out)

        first = tf.gather(clip, tf.clip_by_value(offsets, 0, n - 1), axis=1)
        _, _, frames = tf.while_loop(lambda t, *_: t < n, body,
                                     (tf.constant(0), self.initial_state(first), tf.TensorArray(clip.dtype, n)))
        return tf.transpose(frames.stack(), [1, 0, 2, 3, 4])

    def get_config(self):
        return {**super().get_config(), "radius": self.radius, "nf": self.nf, "nb": self.nb, "out_nc": self.out_nc,
                "nf_qe": self.nf_qe, "nb_qe": self.nb_qe, "recursive_fusion": self.recursive_fusion,
                "dsta": self.dsta}


CLIP_LENGTH = 15


@register("rfda", radius=3, clip_length=CLIP_LENGTH,
          description="RFDA: STDF-R3 + recursive fusion + DSTA (recurrent; 15-frame clips)")
def build_rfda(**overrides):
    return DeformableEnhancer(**{"name": "rfda", **overrides})


@register("stdf_rf", radius=3, clip_length=CLIP_LENGTH, description="ablation: STDF-R3 + recursive fusion")
def build_stdf_rf(**overrides):
    return DeformableEnhancer(**{"name": "stdf_rf", "dsta": False, **overrides})


@register("stdf_dsta", radius=3, description="ablation: STDF-R3 + DSTA (RFDA's stage 1)")
def build_stdf_dsta(**overrides):
    return DeformableEnhancer(**{"name": "stdf_dsta", "recursive_fusion": False, **overrides})
