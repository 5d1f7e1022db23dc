"""TF Serving's JSON formats for predict (https://www.tensorflow.org/tfx/serving/api_rest).

Request: {"signature_name": ..., "instances": [...]} (row format: each element is one row along
axis 0, a value for a one-input signature or {input: value}) or {"inputs": ...} (columnar: a
value for a one-input signature or {input: value}). Tensors are nested lists; {"b64": ...} is
for string tensors, which vcar_tf signatures do not take.
Response: {"predictions": [...]} (row: one element per row, {output: value} when there are
several outputs) or {"outputs": ...} (columnar).
"""

import numpy as np

from vcar_tf.serving.status import invalid


def to_array(value, name):
    """A nested list of numbers as an array, or INVALID_ARGUMENT."""
    if isinstance(value, dict):
        if "b64" in value:
            raise invalid(f'{name}: a {{"b64": ...}} value is for string tensors; this input is numeric')
        raise invalid(f"{name}: expected a (nested) list of numbers, got an object")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise invalid(f"{name}: not a rectangular nested list of numbers (rows of different lengths?)") from None
    if array.dtype.kind not in "iufb":
        raise invalid(f"{name}: expected numbers, got {_describe(array)}")
    if array.dtype.kind == "b":
        raise invalid(f"{name}: expected numbers, got booleans")
    return array


def reject_booleans(body, request):
    """INVALID_ARGUMENT where the parsed `request` holds a JSON true or false: every vcar_tf input is
    numeric, TF Serving refuses booleans there, and NumPy would read them as 1 and 0. `body` is the
    raw JSON, which spares the walk for the requests that have neither word."""
    if b"true" not in body and b"false" not in body:
        return
    pending = [request]
    while pending:
        value = pending.pop()
        if isinstance(value, bool):
            raise invalid(f"expected numbers, got a JSON boolean ({str(value).lower()})")
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


def _describe(array):
    if array.dtype.kind == "O":
        huge = next((v for v in array.flat if isinstance(v, int) and not -2 ** 63 <= v < 2 ** 64), None)
        if huge is not None:
            digits = str(huge)
            return f"an integer beyond 64 bits ({digits[:24]}{'...' if len(digits) > 24 else ''})"
        if any(v is None for v in array.flat):
            return "null"
    return {"U": "strings", "O": "mixed or non-numeric values (an object?)"}.get(array.dtype.kind, array.dtype.name)


def decode_predict(body, input_names):
    """(signature_name or None, {input: array}, row_format) of a predict request's parsed JSON."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    if ("instances" in body) == ("inputs" in body):
        raise invalid('the request needs exactly one of "instances" (row format) or "inputs" (columnar format)')
    signature_name = body.get("signature_name")
    if signature_name is not None and not isinstance(signature_name, str):
        raise invalid('"signature_name" must be a string')
    if "instances" in body:
        return signature_name, decode_rows(body["instances"], input_names), True
    return signature_name, decode_columns(body["inputs"], input_names), False


def _single_input(input_names):
    if len(input_names) != 1:
        raise invalid(f"this signature takes {len(input_names)} inputs ({', '.join(input_names)}): "
                      f"name them in an object")
    return input_names[0]


def decode_rows(instances, input_names):
    if not isinstance(instances, list) or not instances:
        raise invalid('"instances" must be a non-empty list')
    named = [isinstance(i, dict) and "b64" not in i for i in instances]
    if any(named) and not all(named):
        raise invalid('"instances" mixes objects and values')
    if not all(named):
        name = _single_input(input_names)
        return {name: to_array(instances, name)}
    keys = set(instances[0])
    if any(set(i) != keys for i in instances):
        raise invalid('every element of "instances" must name the same inputs')
    return {k: to_array([i[k] for i in instances], k) for k in sorted(keys)}


def decode_columns(inputs, input_names):
    if isinstance(inputs, dict) and "b64" not in inputs:
        return {k: to_array(v, k) for k, v in sorted(inputs.items())}
    name = _single_input(input_names)
    return {name: to_array(inputs, name)}


def encode_predict(outputs, row_format):
    """The response object of a predict's {output: array}."""
    if not row_format:
        if len(outputs) == 1:
            return {"outputs": next(iter(outputs.values())).tolist()}
        return {"outputs": {k: v.tolist() for k, v in sorted(outputs.items())}}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values())).tolist()}
    rows = {len(v) if v.ndim else 0 for v in outputs.values()}
    if len(rows) != 1:
        raise invalid("the outputs have different sizes along axis 0, which the row format cannot answer: "
                      'send "inputs" (columnar format) instead of "instances"')
    return {"predictions": [{k: v[i].tolist() for k, v in sorted(outputs.items())} for i in range(rows.pop())]}
