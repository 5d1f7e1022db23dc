"""int8 inference of a functional Keras window model through oneDNN's integer convolutions.

Int8Model(model, windows) runs `model`'s graph layer by layer. Each Conv2D (channels last, any
stride, no dilation or groups, ReLU or no activation) whose input was never negative on the
calibration `windows` is an integer convolution: its input uint8 over [0, the largest value seen],
its weights int8, symmetric.
- With ReLU, the weights are scaled per output channel and the output is requantized to uint8 over
  [0, the largest output seen] (QuantizedConv2DWithBiasAndReluAndRequantize), so a chain of such
  convolutions stays in uint8 from one to the next.
- Without an activation (e.g. STDF's offset/mask head, a residual head), the weights share one
  scale and the int32 sums come back as float exactly (QuantizedConv2DWithBias); TF's per-channel
  variant of that op returns sums this module could not map back to floats, so it is not used.
- A Conv2D without activation whose one consumer is a BatchNormalization whose one consumer is a
  plain ReLU (DnCNN's blocks) gets the normalisation's inference-time scale and shift folded into
  its weights and bias and computes as a ReLU convolution; the two layers pass its output through.
Every other layer (the deformable conv, transposed convs, concatenations, sigmoids) computes in
float32 on dequantized inputs. Integer products need VNNI (AVX512-VNNI, AVX-VNNI) or AMX: without
them oneDNN's products saturate (under ONEDNN_MAX_CPU_ISA=AVX512_CORE or AVX2, 485 of the 7,140
outputs of tests/test_int8.py's ReLU convolution were off by more than half a step, 1.73 for 2.20
among them, where VNNI keeps every one within it), so Int8Model refuses such a CPU.
"""

import numpy as np
import tensorflow as tf

from vcar_tf import precision
from vcar_tf.errors import VcarError
from vcar_tf.models.blocks import SymmetricPadConv2D
from vcar_tf.models.recurrent import is_recurrent

INT8_MAX, INT32_SCALE = 127.0, 2.0 ** 31


class _Quantized:
    """A uint8 tensor (as tf.quint8) standing for values in [0, high]."""

    def __init__(self, q, high):
        self.q, self.high = q, high


def _float(value):
    if isinstance(value, _Quantized):
        return tf.raw_ops.Dequantize(input=value.q, min_range=0.0, max_range=value.high, mode="SCALED")
    return value


def _quantize(value, high):
    if isinstance(value, _Quantized) and value.high == high:
        return value.q
    return tf.raw_ops.QuantizeV2(input=_float(value), min_range=0.0, max_range=high, T=tf.quint8, mode="SCALED",
                                 round_mode="HALF_TO_EVEN")[0]


def normalised_chains(model):
    """{conv name: (its BatchNormalization, its ReLU)} for each Conv2D without activation whose one
    consumer is a batch normalisation whose one consumer is a plain ReLU (DnCNN's blocks): at
    inference the normalisation folds into the convolution, which then ends in the ReLU."""
    import keras

    def only_consumer(layer):
        nodes = layer._outbound_nodes
        return nodes[0].operation if len(nodes) == 1 else None

    chains = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Conv2D) or layer.activation.__name__ != "linear":
            continue
        norm = only_consumer(layer)
        relu = only_consumer(norm) if isinstance(norm, keras.layers.BatchNormalization) else None
        if (isinstance(relu, keras.layers.ReLU) and norm.axis in (-1, 3) and relu.max_value is None
                and relu.negative_slope == 0 and relu.threshold == 0):
            chains[layer.name] = (norm, relu)
    return chains


def integer_candidate(layer, chains=()):
    """Whether `layer` is a convolution Int8Model can compute in integers (its input's sign aside):
    with a bias and a ReLU or no activation, or heading one of `chains` (normalised_chains)."""
    import keras

    return (type(layer) in (keras.layers.Conv2D, SymmetricPadConv2D) and layer.groups == 1
            and tuple(layer.dilation_rate) == (1, 1) and layer.data_format == "channels_last"
            and (layer.name in chains or (layer.use_bias and layer.activation.__name__ in ("relu", "linear"))))


def _ends_in_relu(layer, norm):
    """Whether the integer convolution of `layer` (with `norm` folded in, then its ReLU) ends in a ReLU."""
    return norm is not None or layer.activation.__name__ == "relu"


def _folded(layer, norm):
    """(kernel, bias) of `layer` with the inference-time batch normalisation `norm` folded in."""
    kernel = layer.kernel.numpy()
    bias = layer.bias.numpy() if layer.use_bias else np.zeros(kernel.shape[-1], np.float32)
    if norm is None:
        return kernel, bias
    gain = (norm.gamma.numpy() if norm.scale else 1.0) / np.sqrt(norm.moving_variance.numpy() + norm.epsilon)
    shift = norm.beta.numpy() if norm.center else 0.0
    return kernel * gain, (bias - norm.moving_mean.numpy()) * gain + shift


class _IntegerConv:
    """One integer convolution (with `norm`, a BatchNormalization folded in and a ReLU after it):
    weights quantized once; `in_high`/`out_high` from calibration. Called inside a tf.function: the
    integer ops take their filter only as a constant of the graph."""

    def __init__(self, layer, in_high, out_high, norm=None):
        kernel, bias = _folded(layer, norm)
        self.relu = _ends_in_relu(layer, norm)
        axes = (0, 1, 2) if self.relu else None  # per output channel with ReLU, one scale without
        w_high = np.maximum(np.abs(kernel).max(axis=axes), 1e-12).astype(np.float32)
        self.kernel = np.clip(np.round(kernel / w_high * INT8_MAX), -INT8_MAX, INT8_MAX).astype(np.int8)
        self.w_high = w_high if self.relu else float(w_high)
        self.bias = bias.astype(np.float32)
        self.in_high, self.out_high = float(in_high), float(out_high)
        self.strides = [1, *layer.strides, 1]
        self.symmetric_pad = [(k - 1) // 2 for k in layer.kernel_size] if isinstance(layer, SymmetricPadConv2D) else None
        self.padding = "VALID" if self.symmetric_pad else layer.padding.upper()

    def __call__(self, x):
        q = _quantize(x, self.in_high)
        if self.symmetric_pad:  # zeros are uint8 0 over [0, high]
            py, px = self.symmetric_pad
            q = tf.bitcast(tf.pad(tf.bitcast(q, tf.uint8), [[0, 0], [py, py], [px, px], [0, 0]]), tf.quint8)
        args = dict(input=q, filter=tf.constant(self.kernel, tf.qint8), bias=tf.constant(self.bias), min_input=0.0,
                    max_input=self.in_high, min_filter=-self.w_high, max_filter=self.w_high, strides=self.strides,
                    padding=self.padding)
        if self.relu:
            y = tf.raw_ops.QuantizedConv2DWithBiasAndReluAndRequantize(
                min_freezed_output=0.0, max_freezed_output=self.out_high, out_type=tf.quint8, **args)[0]
            return _Quantized(y, self.out_high)
        y, _, high = tf.raw_ops.QuantizedConv2DWithBias(out_type=tf.qint32, **args)
        return tf.cast(tf.bitcast(y, tf.int32), tf.float32) * (high / INT32_SCALE)


def _passed_through(x, *args, **kwargs):
    return x


def _run_graph(model, x, replacement):
    """`model`'s outputs on `x`, each layer's call replaced by replacement(layer) where that is not
    None; every other layer gets float inputs."""

    def operation_fn(op):
        fn = replacement(op)
        if fn is not None:
            return fn
        return lambda *args, **kwargs: op(*tf.nest.map_structure(_float, args), **tf.nest.map_structure(_float, kwargs))

    return _float(model._run_through_graph(x, operation_fn))  # Keras 3's graph walk (keras pinned in setup.py)


def calibration_ranges(model, windows, chains):
    """{layer name: (least input, largest input, largest output)} over `windows` (float32
    [1, 2R+1, H, W, 1] each) in float32, for every integer candidate of `model` and the ReLU that
    ends each of `chains` (normalised_chains(model))."""
    watched = {relu.name for _, relu in chains.values()}
    seen = {}

    def recording(layer):
        if not (integer_candidate(layer, chains) or layer.name in watched):
            return None

        def call(x):
            y = layer(x)
            lo, hi, out = seen.get(layer.name, (np.inf, -np.inf, 0.0))
            seen[layer.name] = (min(lo, float(tf.reduce_min(x))), max(hi, float(tf.reduce_max(x))),
                                max(out, float(tf.reduce_max(y))))
            return y
        return call

    for window in windows:
        _run_graph(model, tf.convert_to_tensor(window, tf.float32), recording)
    return seen


def check_int8_model(model):
    """What Int8Model needs, checked before any calibration: a window model, and a CPU whose integer
    products do not saturate (VNNI or AMX)."""
    if is_recurrent(model):
        raise VcarError(f"int8 takes window models; {model.name} is recurrent")
    if not precision.native_int8_flags():
        raise VcarError(f"int8 needs a CPU with {', '.join(precision.NATIVE_INT8_FLAGS)} (none in /proc/cpuinfo): "
                        "without them oneDNN's integer products saturate; use --precision bf16 or fp32")


class Int8Model:
    """`model` (a window model) computed with integer convolutions where calibration allows (see the
    module docstring); called like the Keras model on float32 [B, 2R+1, H, W, 1]. `convs` names the
    integer ones, `float_convs` the candidates left in float (an input seen negative)."""

    def __init__(self, model, windows):
        check_int8_model(model)
        if not windows:
            raise VcarError("int8 needs calibration windows of real frames")
        chains = normalised_chains(model)
        ranges = calibration_ranges(model, windows, chains)
        self._convs, self._passed, self.float_convs = {}, set(), []
        for layer in model.layers:
            if layer.name not in ranges or not integer_candidate(layer, chains):
                continue
            norm, relu = chains.get(layer.name, (None, None))
            lo, hi, out = ranges[layer.name]
            if relu is not None:
                out = ranges[relu.name][2]
            if lo < 0 or hi <= 0 or (_ends_in_relu(layer, norm) and out <= 0):
                self.float_convs.append(layer.name)
            else:
                self._convs[layer.name] = _IntegerConv(layer, hi, out, norm)
                self._passed.update((norm.name, relu.name) if norm is not None else ())
        self.convs = list(self._convs)
        self.name = model.name
        self._model = model
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        self._fn = tf.function(self._call, input_signature=[spec], autograph=False)

    def _call(self, x):
        return _run_graph(self._model, x, lambda layer: self._convs.get(layer.name) or (
            _passed_through if layer.name in self._passed else None))

    def __call__(self, x, training=False):
        return self._fn(tf.cast(x, tf.float32))
