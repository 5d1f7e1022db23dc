"""One signature of a loaded SavedModel: its inputs' dtypes and shapes, the checks a request's
tensors pass before they reach the graph, and the run.

The checks answer INVALID_ARGUMENT with one line naming the expected shape; the graph checks the
same again (vcar_tf.export.signatures), and an error it raises is cut to one line too.
"""

import re

import numpy as np
import tensorflow as tf

from vcar_tf.errors import first_line
from vcar_tf.serving.status import invalid

# axes holding a frame's height and width, by rank: frames [N, H, W], hidden [B, H', W', C],
# frames [B, N, H, W, 1] (and clip [B, L, H, W, 1])
SPATIAL_AXES = {3: (1, 2), 4: (1, 2), 5: (2, 3)}


def shape_text(shape):
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def one_line_tf_error(error):
    """The message of an in-graph assertion ("assertion failed: [frames: ...] [Condition ...") or
    the first line of another TF error."""
    first = first_line(error)
    match = re.match(r"assertion failed: \[(.*?)\] \[", first)
    if match:
        return match.group(1)
    return re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", first)[:300]


class Signature:
    def __init__(self, name, function):
        self.name = name
        self.function = function
        specs = function.structured_input_signature[1]
        self.inputs = {k: (np.dtype(spec.dtype.as_numpy_dtype), spec.shape.as_list()) for k, spec in specs.items()}
        self.outputs = sorted(function.structured_outputs)
        # all inputs have a free batch axis: requests can be stacked along it
        self.batchable = all(shape and shape[0] is None for _, shape in self.inputs.values())

    def input_names(self):
        return sorted(self.inputs)

    def expected(self, name):
        dtype, shape = self.inputs[name]
        return f"{dtype.name} {shape_text(shape)}"

    def check(self, arrays, max_frame_pixels, strict_dtypes=False, names=None):
        """The request's {name: array} converted to the signature's dtypes, or INVALID_ARGUMENT.
        `strict_dtypes` (gRPC): the dtype must match exactly, as TF Serving requires; JSON numbers
        are converted when they fit. `names`: the inputs the client gives (default: all)."""
        names = sorted(names or self.inputs)
        unknown = sorted(set(arrays) - set(names))
        missing = [n for n in names if n not in arrays]
        if unknown or missing:
            raise invalid(f"signature {self.name} takes the inputs {', '.join(names)}"
                          + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                          + (f"; missing: {', '.join(missing)}" if missing else ""))
        return {n: self._check_one(n, arrays[n], max_frame_pixels, strict_dtypes) for n in names}

    def _check_one(self, name, array, max_frame_pixels, strict):
        dtype, shape = self.inputs[name]
        expected = f"{name}: expected {self.expected(name)}"
        array = np.asarray(array)
        if array.ndim != len(shape) or any(d is not None and d != a for d, a in zip(shape, array.shape)):
            raise invalid(f"{expected}, got shape {shape_text(array.shape)}")
        if strict and array.dtype != dtype:
            raise invalid(f"{expected}, got {array.dtype.name}")
        array = convert(array, dtype, expected)
        axes = SPATIAL_AXES.get(array.ndim)
        if axes and array.shape[axes[0]] * array.shape[axes[1]] > max_frame_pixels:
            raise invalid(f"{name}: a frame of {array.shape[axes[0]]}x{array.shape[axes[1]]} has more than "
                          f"{max_frame_pixels} pixels (--max_frame_pixels); tile it")
        return array

    def run(self, arrays):
        """{output name: numpy array}; an error of the graph (a failed check) is INVALID_ARGUMENT."""
        try:
            outputs = self.function(**{k: tf.constant(v) for k, v in arrays.items()})
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
            raise invalid(one_line_tf_error(e)) from None
        return {k: v.numpy() for k, v in outputs.items()}

    def run_batch(self, requests):
        """Run several requests' arrays (same shapes, batchable signature) as one batch; returns
        each request's outputs."""
        stacked = {k: np.concatenate([r[k] for r in requests]) for k in requests[0]}
        outputs = self.run(stacked)
        sizes = np.cumsum([len(next(iter(r.values()))) for r in requests])[:-1]
        split = {k: np.split(v, sizes) for k, v in outputs.items()}
        return [{k: split[k][i] for k in split} for i in range(len(requests))]


def convert(array, dtype, expected):
    """`array` as `dtype`: integers in range for an integer dtype, finite numbers for a float one."""
    kind = array.dtype.kind
    if array.size == 0:  # JSON's [[[]]] reads as float64: say what it is, not "non-integer numbers"
        raise invalid(f"{expected}: an empty frame (shape {list(array.shape)})")
    if dtype.kind in "iu":
        if kind not in "iu":
            raise invalid(f"{expected}, got {'non-integer numbers' if kind == 'f' else array.dtype.name}")
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise invalid(f"{expected}: values outside {info.min}..{info.max}")
        return array.astype(dtype, copy=False)
    if dtype.kind == "f":
        if kind not in "iuf":
            raise invalid(f"{expected}, got {array.dtype.name}")
        array = array.astype(dtype, copy=False)
        if not np.isfinite(array).all():
            raise invalid(f"{expected}: NaN or Inf in the input")
        return array
    raise invalid(f"{expected}: this server does not take {dtype.name} inputs")
