"""ONNX export through tf2onnx (opset 18, the highest tf2onnx 1.17 writes), for onnxruntime.

export_onnx(model, radius, path) writes one .onnx file holding signatures.float_function with a
free batch, height and width:
- a window model: input `frames` float32 [B, 2R+1, H, W, 1] -> output `enhanced` [B, H, W, 1];
- a recurrent model: inputs `frames` and `hidden` [B, H', W', C] -> outputs `enhanced` and
  `next_hidden` (ONNX names are unique in a graph, so the next state cannot also be `hidden`).
  Its first state is zeros [B, H', W', C] with H', W' = H, W rounded up to the metadata's
  `vcar_tf.state_multiple`.
Metadata (model.metadata_props): vcar_tf.radius, vcar_tf.recurrent and, for a recurrent model,
vcar_tf.state_channels and vcar_tf.state_multiple.

Deformable convolutions: `deform="composite"` (the default) traces the stock-op composite, opset
18. `deform="native"` traces the fused op and maps each onto ONNX's DeformConv (opset 19, which
tf2onnx does not write itself: the model is converted at 18 and declared 19, whose changes to the
other ops used here only add types); onnxruntime has a CPU kernel for it. It needs the fused op to
build here (vcar_tf.ops.build).

Quantization: "fp32" (none) or "int8": every Conv node in int8 as QuantizeLinear/DequantizeLinear
pairs (onnxruntime.quantization.quantize_static, QDQ; weights int8 per output channel, activations
uint8 over the 99.999th percentile of their values on `representative`, real frames as for TFLite:
min/max ranges cost STDF-R3 twice as much, benchmarks/results/runtimes.md), which
onnxruntime runs as integer convolutions; every other op (DeformConv, the composite's sampling,
NL-ConvLSTM's warp) stays float32, as do the inputs and outputs. uint8 x int8 products are the
layout of CPUs with VNNI (AVX512-VNNI, AVX-VNNI) and ARM; older x86 cores may saturate them.
The command is vcar-export --format onnx [--onnx_deform native] [--quantization int8].
"""

import logging
import os
import tempfile

import tensorflow as tf

from vcar_tf.errors import VcarError, first_line
from vcar_tf.export.names import (ENHANCED, FRAMES, HIDDEN, META_RADIUS, META_RECURRENT, META_STATE_CHANNELS,
                                  META_STATE_MULTIPLE, NEXT_HIDDEN, ONNX_DEFORMS, ONNX_QUANTIZATIONS)
from vcar_tf.export.signatures import float_function, state_multiple
from vcar_tf.fileutil import write_bytes_atomic
from vcar_tf.models.recurrent import is_recurrent, state_channels
from vcar_tf.ops.deform_conv import composite_only, fused_only

OPSET = 18
DEFORMS = ONNX_DEFORMS
QUANTIZATIONS = ONNX_QUANTIZATIONS
FUSED_OP = "VcarDeformConv2D"
ATTEMPTS = 5


def _deform_conv_handler(ctx, node, name, args):
    """tf2onnx handler: VcarDeformConv2D (NHWC; kernel k, k, C/groups, O) -> ONNX DeformConv (NCHW;
    kernel O, C/groups, k, k), the same offset (dy, dx per tap and group) and mask channel order."""
    x, offset, mask, kernel, bias = node.input
    k = ctx.get_shape(kernel)[0]
    attr = {"kernel_shape": [k, k], "pads": [(k - 1) // 2] * 4, "group": node.get_attr_value("groups"),
            "offset_group": node.get_attr_value("deformable_groups")}
    shapes, dtypes = [ctx.get_shape(node.output[0])], [ctx.get_dtype(node.output[0])]
    ctx.remove_node(node.name)
    nchw = lambda t: ctx.make_node("Transpose", [t], attr={"perm": [0, 3, 1, 2]}).output[0]  # noqa: E731
    weight = ctx.make_node("Transpose", [kernel], attr={"perm": [3, 2, 0, 1]}).output[0]
    conv = ctx.make_node("DeformConv", [nchw(x), weight, nchw(offset), bias, nchw(mask)], attr=attr)
    ctx.make_node("Transpose", [conv.output[0]], attr={"perm": [0, 2, 3, 1]}, outputs=[node.output[0]],
                  shapes=shapes, dtypes=dtypes, name=name)


def inferred_output_ranks(proto):
    """{output name: rank} as ONNX shape inference derives it from the graph, ignoring the declared
    output shapes. tf2onnx 1.17's transpose optimizer depends on set order and, about one conversion
    in ten, drops a Squeeze before an output (a rank-5 `enhanced`): onnx_model converts again then."""
    import onnx

    bare = onnx.ModelProto()
    bare.CopyFrom(proto)
    for out in bare.graph.output:
        out.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(bare).graph.output
    return {o.name: len(o.type.tensor_type.shape.dim) if o.type.tensor_type.HasField("shape") else None
            for o in inferred}


def onnx_model(model, radius, opset=OPSET, deform="composite", quantization="fp32", representative=None):
    """The onnx.ModelProto of `model` (see the module docstring); `representative`: int8's
    calibration inputs, float32 windows [1, 2R+1, H, W, 1] (for a recurrent model (window, hidden))."""
    import tf2onnx

    if deform not in DEFORMS:
        raise VcarError(f"unknown deform {deform!r}; use one of {', '.join(DEFORMS)}")
    if quantization not in QUANTIZATIONS:
        raise VcarError(f"unknown ONNX quantization {quantization!r}; use one of {', '.join(QUANTIZATIONS)}")
    if quantization == "int8" and not representative:
        raise VcarError("int8 needs a representative dataset of real frames")

    fn = float_function(model, radius, checked=False)
    recurrent = is_recurrent(model)
    if recurrent:  # rename the next state: an ONNX output may not share the input's name
        step = fn

        @tf.function(input_signature=fn.input_signature)
        def fn(x, hidden):
            out = step(x, hidden)
            return {ENHANCED: out[ENHANCED], NEXT_HIDDEN: out[HIDDEN]}

    with composite_only() if deform == "composite" else fused_only():  # the trace picks its deform op
        ranks = {k: t.shape.rank for k, t in fn.get_concrete_function().structured_outputs.items()}
        for _ in range(ATTEMPTS):
            try:
                proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=opset,
                                                         custom_op_handlers={FUSED_OP: (_deform_conv_handler, [])})
            except Exception as e:
                raise VcarError(f"ONNX conversion failed: {first_line(e)}") from e
            got = inferred_output_ranks(proto)
            if all(got.get(k) in (None, rank) for k, rank in ranks.items()):  # None: inference cannot tell
                break
        else:
            raise VcarError(f"ONNX conversion gave outputs of the wrong rank {ATTEMPTS} times in a row "
                            f"(want {ranks}, got {got})")
    if any(n.op_type == "DeformConv" for n in proto.graph.node):
        for entry in proto.opset_import:
            if entry.domain in ("", "ai.onnx"):
                entry.version = max(entry.version, 19)
        proto.ir_version = max(proto.ir_version, 9)  # opset 19 needs IR 9 (onnx.helper.find_min_ir_version_for)
    meta = {META_RADIUS: str(radius), META_RECURRENT: str(int(recurrent))}
    if recurrent:
        meta[META_STATE_CHANNELS] = str(state_channels(model))
        meta[META_STATE_MULTIPLE] = str(state_multiple(model, radius))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return int8_convolutions(proto, representative, recurrent) if quantization == "int8" else proto


def int8_convolutions(proto, representative, recurrent):
    """`proto` with its Conv nodes quantized to int8 (see the module docstring)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    names = (FRAMES, HIDDEN) if recurrent else (FRAMES,)
    feeds = iter([dict(zip(names, sample if recurrent else (sample,))) for sample in representative])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    root = logging.getLogger()  # quantize_static's advice to pre-process goes to the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="vcar-onnx-int8-") as tmp:
            out = os.path.join(tmp, "int8.onnx")
            source = onnx.ModelProto()
            source.CopyFrom(proto)  # quantize_static moves the weights of the proto it is given to temp files
            quantize_static(source, out, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile)
            return onnx.load(out)
    except Exception as e:
        raise VcarError(f"ONNX int8 quantization failed: {first_line(e)}") from e
    finally:
        root.setLevel(level)


def export_onnx(model, radius, path, opset=OPSET, deform="composite", quantization="fp32", representative=None):
    """Write the .onnx file to `path` atomically (temp name in its folder, then rename); returns path."""
    write_bytes_atomic(path, onnx_model(model, radius, opset, deform, quantization, representative).SerializeToString())
    return path
