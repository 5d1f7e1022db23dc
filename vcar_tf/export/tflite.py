"""TFLite (LiteRT) export: builtin ops only, fp32, fp16 weights or int8.

export_tflite(model, radius, path, height, width) writes one .tflite file holding
signatures.float_function: serve_float for a window model (frames float32 [1, 2R+1, H, W, 1] ->
enhanced [1, H, W, 1]), step_float for a recurrent one (frames, hidden [1, H', W', C] -> enhanced,
hidden). H and W are fixed (TFLite plans its memory for static shapes); `height=None, width=None`
leaves them free for the interpreter's resize_tensor_input (window models, NL-ConvLSTM's
non-local warp included; a recurrent step model is always fixed, so its first state is zeros of
its hidden input's shape).

The converter may use only TFLITE_BUILTINS (no Flex/SELECT_TF_OPS), so a graph that needs a TF op
fails at conversion rather than on the phone. Deformable convolutions trace the stock-op composite,
and 3D convolutions (models.blocks.FrameConv3D: STIFN, NL-ConvLSTM's encoder) trace as 2D ones, one
per output frame and temporal tap: LiteRT's CONV_3D unrolls the whole (T, H, W) input into one im2col
buffer, GBs at 416x240, past int32 at 832x480 for STIFN-R3L.

Quantization:
- "fp32": none;
- "fp16": weights stored as float16 (half the file), computed in float32;
- "int8": integer weights and activations, calibrated on `representative` (an iterable of
  float32 windows [1, 2R+1, H, W, 1], real frames, and for a recurrent model (window, hidden)
  pairs); the inputs and outputs stay float32, so runners treat every variant alike. Ops without
  an int8 kernel (the composite's index arithmetic) stay float32, and so do the deformable
  composite's sampling positions (ops under ops.deform_conv.SAMPLING_SCOPE, kept float by
  selective quantization: tf.lite.experimental.QuantizationDebugger with denylisted_nodes):
  in int8 a position of a W-pixel-wide frame rounds to W/255 pixels, which cost STDF-R3 1.95 dB
  at 416x240 (benchmarks/results/runtimes.md);
- "int8_full": the same without that exception, every op with an int8 kernel in int8.
The command is vcar-export --format tflite (vcar_tf/cli/export.py).
"""

import tensorflow as tf

from vcar_tf.errors import VcarError, first_line
from vcar_tf.export.names import TFLITE_QUANTIZATIONS
from vcar_tf.export.signatures import float_function
from vcar_tf.fileutil import write_bytes_atomic
from vcar_tf.models.blocks import framewise_conv3d
from vcar_tf.models.recurrent import is_recurrent
from vcar_tf.ops.deform_conv import SAMPLING_SCOPE, composite_only

QUANTIZATIONS = TFLITE_QUANTIZATIONS


def frozen_function(model, radius, batch=1, height=None, width=None):
    """float_function traced with the composite and FrameConv3D's 2D convs, its variables folded into constants."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    with composite_only(), framewise_conv3d():  # stock ops only; 2D convs, not CONV_3D (FrameConv3D)
        concrete = float_function(model, radius, batch, height, width, checked=False).get_concrete_function()
        return convert_variables_to_constants_v2(concrete)


def tflite_bytes(model, radius, height=None, width=None, quantization="fp32", representative=None):
    """The .tflite flatbuffer of `model` (see the module docstring)."""
    if quantization not in QUANTIZATIONS:
        raise VcarError(f"unknown TFLite quantization {quantization!r}; use one of {', '.join(QUANTIZATIONS)}")
    if (height is None) != (width is None):
        raise VcarError("give both height and width, or neither")
    if height is None and is_recurrent(model):
        raise VcarError("a recurrent model exports to TFLite at a fixed size: give height and width")
    if quantization.startswith("int8") and representative is None:
        raise VcarError("int8 needs a representative dataset of real frames")
    concrete = frozen_function(model, radius, 1, height, width)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization.startswith("int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        recurrent = is_recurrent(model)
        samples = list(representative)

        def dataset():
            for sample in samples:
                yield [tf.constant(s, tf.float32) for s in (sample if recurrent else (sample,))]

        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        if quantization == "int8" and any(SAMPLING_SCOPE in op.name for op in concrete.graph.get_operations()):
            return _int8_with_float_sampling(converter, dataset)
        return converter.convert()
    except Exception as e:  # the converter raises ConverterError and friends with MLIR dumps
        raise VcarError(f"TFLite conversion failed (builtin ops only): {first_line(e)}") from e


def _int8_with_float_sampling(converter, dataset):
    """The int8 flatbuffer with every tensor under SAMPLING_SCOPE left float (selective quantization)."""
    from ai_edge_litert.interpreter import Interpreter

    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
    calibrated = Interpreter(model_content=debugger.calibrated_model).get_tensor_details()
    float_nodes = sorted({t["name"] for t in calibrated if f"/{SAMPLING_SCOPE}/" in t["name"]})
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=float_nodes)
    return debugger.get_nondebug_quantized_model()


def export_tflite(model, radius, path, height=None, width=None, quantization="fp32", representative=None):
    """Write the .tflite file to `path` atomically (temp name in its folder, then rename); returns path."""
    write_bytes_atomic(path, tflite_bytes(model, radius, height, width, quantization, representative))
    return path
