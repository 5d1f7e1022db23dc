"""The tensor and signature names of every vcar_tf export, without importing TensorFlow, so the
TFLite and ONNX runners (vcar_tf.inference) load without it. signatures.py documents them."""

SERVING_DEFAULT = "serving_default"
SERVE_FLOAT = "serve_float"
STEP_FLOAT = "step_float"
INITIAL_STATE = "initial_state"
SERVE_CLIP = "serve_clip"

FRAMES = "frames"
HIDDEN = "hidden"
CLIP = "clip"
ENHANCED = "enhanced"
NEXT_HIDDEN = "next_hidden"  # ONNX: an output may not share the input `hidden`'s name

# The largest frame a signature (and whole-frame evaluation) takes: 2560x1600, the largest size of
# the field's test sets; larger frames are refused rather than risking the process (tile them).
MAX_FRAME_PIXELS = 2560 * 1600

TFLITE_QUANTIZATIONS = ("fp32", "fp16", "int8", "int8_full")
ONNX_QUANTIZATIONS = ("fp32", "int8")
ONNX_DEFORMS = ("composite", "native")  # the stock-op composite (opset 18), or ONNX DeformConv (opset 19)

# ONNX metadata (model.metadata_props)
META_RADIUS = "vcar_tf.radius"
META_RECURRENT = "vcar_tf.recurrent"
META_STATE_CHANNELS = "vcar_tf.state_channels"
META_STATE_MULTIPLE = "vcar_tf.state_multiple"
