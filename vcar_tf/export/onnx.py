"""ONNX export through tf2onnx (opset 18, the highest tf2onnx 1.17 writes), for onnxruntime.

export_onnx(model, radius, path) writes one .onnx file holding signatures.float_function with a
free batch, height and width:
- a window model: input `frames` float32 [B, 2R+1, H, W, 1] -> output `enhanced` [B, H, W, 1];
- a recurrent model: inputs `frames` and `hidden` [B, H', W', C] -> outputs `enhanced` and
  `next_hidden` (ONNX names are unique in a graph, so the next state cannot also be `hidden`).
  Its first state is zeros [B, H', W', C] with H', W' = H, W rounded up to the metadata's
  `vcar_tf.state_multiple`.
Metadata (model.metadata_props): vcar_tf.radius, vcar_tf.recurrent and, for a recurrent model,
vcar_tf.state_channels and vcar_tf.state_multiple. Deformable convolutions trace the stock-op
composite (ONNX's DeformConv is opset 19, beyond tf2onnx). The command is vcar-export --format onnx.
"""

import tensorflow as tf

from vcar_tf.errors import VcarError
from vcar_tf.export.names import (ENHANCED, HIDDEN, META_RADIUS, META_RECURRENT, META_STATE_CHANNELS,
                                  META_STATE_MULTIPLE, NEXT_HIDDEN)
from vcar_tf.export.signatures import float_function, state_multiple
from vcar_tf.fileutil import write_bytes_atomic
from vcar_tf.models.recurrent import is_recurrent, state_channels
from vcar_tf.ops.deform_conv import composite_only

OPSET = 18


def onnx_model(model, radius, opset=OPSET):
    """The onnx.ModelProto of `model` (see the module docstring)."""
    import tf2onnx

    fn = float_function(model, radius)
    recurrent = is_recurrent(model)
    if recurrent:  # rename the next state: an ONNX output may not share the input's name
        step = fn

        @tf.function(input_signature=fn.input_signature)
        def fn(x, hidden):
            out = step(x, hidden)
            return {ENHANCED: out[ENHANCED], NEXT_HIDDEN: out[HIDDEN]}

    with composite_only():  # stock ops only: no custom op in an exported graph
        try:
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=opset)
        except Exception as e:
            raise VcarError(f"ONNX conversion failed: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}") from e
    meta = {META_RADIUS: str(radius), META_RECURRENT: str(int(recurrent))}
    if recurrent:
        meta[META_STATE_CHANNELS] = str(state_channels(model))
        meta[META_STATE_MULTIPLE] = str(state_multiple(model, radius))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def export_onnx(model, radius, path, opset=OPSET):
    """Write the .onnx file to `path` atomically (temp name in its folder, then rename); returns path."""
    write_bytes_atomic(path, onnx_model(model, radius, opset).SerializeToString())
    return path
