"""vcar-serve end to end: a perturbed AR-CNN export served by the command on 127.0.0.1 (free ports),
queried over REST with `requests` and over gRPC with tensorflow-serving-api's own stubs; answers
equal the SavedModel run directly (and saved_model_cli run); bad requests are one-line 4xx; a new
version is picked up by polling, a half-written or broken one ignored; the metrics count it all."""

import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.conftest import REPO, perturb_weights

requests = pytest.importorskip("requests")
pytest.importorskip("tensorflow_serving.apis.predict_pb2",
                    reason="pip install --no-deps tensorflow-serving-api==2.21.0 (see the README's set-up)")

TIMEOUT = 60  # seconds, for any one request


@contextlib.contextmanager
def serving(name, base, *flags):
    """(REST url, gRPC address, stderr lines) of a vcar-serve process serving `base` as `name`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vcar_tf.cli.serve", "--model_name", name, "--model_base_path", str(base),
         "--rest_api_port", "0", "--port", "0", *flags],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    stderr = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()
    try:
        line = lines.get(timeout=120)
        match = re.search(r"REST on (http://127\.0\.0\.1:\d+), gRPC on (127\.0\.0\.1:\d+)", line)
        assert match, line
        yield match[1], match[2], stderr
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=20) == 0, "".join(stderr)[-2000:]
        finally:
            proc.kill()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(REST url, gRPC address, base path, version 1's folder) of a vcar-serve process."""
    from vcar_tf.export import export_saved_model
    from vcar_tf.models import build

    base = tmp_path_factory.mktemp("serving") / "arcnn"
    path = export_saved_model(perturb_weights(build("arcnn"), scale=0.02), 0, str(base))
    with serving("arcnn", base, "--file_system_poll_wait_seconds", "0.3", "--max_request_bytes", "300000",
                 "--max_frame_pixels", "4096") as (rest, grpc_address, stderr):
        yield rest, grpc_address, base, path, stderr


def saved_model_cli_run(path, signature, inputs, outdir):
    """{output name: array} from `saved_model_cli run`, the C++ loader TF Serving uses."""
    np.savez(os.path.join(outdir, "in.npz"), **inputs)
    r = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run", "--dir", path,
                        "--tag_set", "serve", "--signature_def", signature, "--inputs",
                        ";".join(f"{k}={outdir}/in.npz[{k}]" for k in inputs), "--outdir", os.path.join(outdir, "cli")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return {f[:-4]: np.load(os.path.join(outdir, "cli", f)) for f in os.listdir(os.path.join(outdir, "cli"))}


def direct(path, signature, **inputs):
    import tensorflow as tf

    fn = tf.saved_model.load(path).signatures[signature]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def test_rest_predict_equals_the_saved_model_and_saved_model_cli(served, tmp_path):
    url, _, base, path, _ = served
    frames = np.random.default_rng(0).integers(0, 256, (1, 23, 31), dtype=np.uint8)
    expected = direct(path, "serving_default", frames=frames)["enhanced"]
    assert np.abs(expected.astype(int) - frames[0]).max() > 0  # the perturbed model is not the identity
    columnar = requests.post(f"{url}/v1/models/arcnn:predict", json={"inputs": frames.tolist()}, timeout=TIMEOUT)
    assert columnar.status_code == 200, columnar.text
    np.testing.assert_array_equal(np.array(columnar.json()["outputs"], np.uint8), expected)
    rows = requests.post(f"{url}/v1/models/arcnn/versions/1:predict",
                         json={"signature_name": "serving_default", "instances": frames.tolist()}, timeout=TIMEOUT)
    np.testing.assert_array_equal(np.array(rows.json()["predictions"], np.uint8), expected)
    # saved_model_cli, the C++ loader TF Serving uses, on the same input
    np.testing.assert_array_equal(saved_model_cli_run(path, "serving_default", {"frames": frames}, tmp_path)["enhanced"],
                                  expected)

    # serve_float, a batch of two in the row format
    windows = np.random.default_rng(1).random((2, 1, 9, 13, 1), dtype=np.float32)
    expected = direct(path, "serve_float", frames=windows)["enhanced"]
    r = requests.post(f"{url}/v1/models/arcnn:predict",
                      json={"signature_name": "serve_float", "instances": windows.tolist()}, timeout=TIMEOUT)
    got = np.array(r.json()["predictions"], np.float32)
    assert got.shape == (2, 9, 13, 1)
    np.testing.assert_array_equal(got, expected)


def test_rest_status_and_metadata_as_tf_serving_answers(served):
    url = served[0]
    assert requests.get(f"{url}/v1/models/arcnn", timeout=TIMEOUT).json() == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    meta = requests.get(f"{url}/v1/models/arcnn/versions/1/metadata", timeout=TIMEOUT).json()
    assert meta["model_spec"] == {"name": "arcnn", "signature_name": "", "version": "1"}
    default = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["frames"]["dtype"] == "DT_UINT8"
    assert [d["size"] for d in default["inputs"]["frames"]["tensor_shape"]["dim"]] == ["1", "-1", "-1"]
    assert default["outputs"]["enhanced"]["dtype"] == "DT_UINT8"


def test_grpc_with_the_official_stubs(served):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                         predict_pb2, prediction_service_pb2_grpc)

    _, _, _, path, _ = served
    channel = grpc.insecure_channel(served[1])
    prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    frames = np.random.default_rng(2).integers(0, 256, (1, 17, 21), dtype=np.uint8)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "arcnn"
    request.model_spec.signature_name = "serving_default"
    request.inputs["frames"].CopyFrom(tf.make_tensor_proto(frames))
    response = prediction.Predict(request, timeout=TIMEOUT)
    assert response.model_spec.version.value == 1
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["enhanced"]),
                                  direct(path, "serving_default", frames=frames)["enhanced"])

    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "arcnn"}), timeout=TIMEOUT)
    [row] = status.model_version_status
    assert row.version == 1 and row.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert row.status.error_code == 0

    metadata = prediction.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": "arcnn"}, metadata_field=["signature_def"]), timeout=TIMEOUT)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signature_map)
    assert {"serving_default", "serve_float"} <= set(signature_map.signature_def)

    for mutate, code in ((lambda r: r.inputs["frames"].CopyFrom(tf.make_tensor_proto(frames.astype(np.float32))),
                          grpc.StatusCode.INVALID_ARGUMENT),
                         (lambda r: r.inputs["frames"].CopyFrom(tf.make_tensor_proto(np.zeros((2, 5, 5), np.uint8))),
                          grpc.StatusCode.INVALID_ARGUMENT),
                         (lambda r: r.inputs["frames"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 99, 99), np.uint8))),
                          grpc.StatusCode.INVALID_ARGUMENT),
                         (lambda r: setattr(r.model_spec, "name", "nope"), grpc.StatusCode.NOT_FOUND),
                         (lambda r: r.model_spec.version.__setattr__("value", 7), grpc.StatusCode.NOT_FOUND),
                         (lambda r: setattr(r.model_spec, "signature_name", "nope"),
                          grpc.StatusCode.FAILED_PRECONDITION)):
        bad = predict_pb2.PredictRequest()
        bad.CopyFrom(request)
        mutate(bad)
        with pytest.raises(grpc.RpcError) as info:
            prediction.Predict(bad, timeout=TIMEOUT)
        assert info.value.code() == code and "\n" not in info.value.details()
    big = predict_pb2.PredictRequest()
    big.CopyFrom(request)
    big.inputs["frames"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 600, 600), np.uint8)))  # > --max_request_bytes
    with pytest.raises(grpc.RpcError) as info:
        prediction.Predict(big, timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    tiny = predict_pb2.PredictRequest()  # a few bytes whose one repeated value stands for a 1 MB shape
    tiny.CopyFrom(request)
    tiny.inputs["frames"].Clear()
    tiny.inputs["frames"].dtype = tf.uint8.as_datatype_enum
    tiny.inputs["frames"].tensor_shape.dim.add(size=1)
    tiny.inputs["frames"].tensor_shape.dim.add(size=1000)
    tiny.inputs["frames"].tensor_shape.dim.add(size=1000)
    tiny.inputs["frames"].int_val.append(7)
    with pytest.raises(grpc.RpcError) as info:
        prediction.Predict(tiny, timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shape [1, 1000, 1000] holds more than" in info.value.details() and "--max_request_bytes" in info.value.details()
    negative = predict_pb2.PredictRequest()  # negative sizes skip the byte cap unless refused first
    negative.CopyFrom(tiny)
    negative.inputs["frames"].tensor_shape.Clear()
    for size in (-1, -1, 5):
        negative.inputs["frames"].tensor_shape.dim.add(size=size)
    with pytest.raises(grpc.RpcError) as info:
        prediction.Predict(negative, timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shape [-1, -1, 5] has a negative dimension" in info.value.details()
    assert prediction.Predict(request, timeout=TIMEOUT).model_spec.version.value == 1  # still serving
    channel.close()


BAD_REQUESTS = [
    ("POST", "/v1/models/arcnn:predict", b'{"inputs": [[[1, 2]]', 400, "malformed JSON"),
    ("POST", "/v1/models/arcnn:predict", b'[1, 2]', 400, "JSON object"),
    ("POST", "/v1/models/arcnn:predict", b'{"inputs": [[1, 2]], "instances": [[1, 2]]}', 400, "exactly one of"),
    ("POST", "/v1/models/arcnn:predict", b'{"inputs": [[[1, 2], [3]]]}', 400, "rectangular"),
    ("POST", "/v1/models/arcnn:predict", b'{"inputs": [[[1, 2], [3, 4]]], "signature_name": "nope"}', 400,
     '"nope" not found'),
    ("POST", "/v1/models/arcnn:predict", b'{"inputs": [[[1.5, 2], [3, 4]]]}', 400, "non-integer"),
    ("POST", "/v1/models/arcnn:predict", b'{"inputs": [[[]]]}', 400, "an empty frame (shape [1, 1, 0])"),
    ("POST", "/v1/models/arcnn:predict", b'{"inputs": [[[1, 2], [3, 256]]]}', 400, "0..255"),
    ("POST", "/v1/models/arcnn:predict", b'{"inputs": [[1, 2], [3, 4]]}', 400, "expected uint8 [1, ?, ?]"),
    ("POST", "/v1/models/arcnn:predict", b'{"inputs": [[[1, 2]], [[3, 4]]]}', 400, "expected uint8 [1, ?, ?]"),
    ("POST", "/v1/models/arcnn:predict", b'{"inputs": {"b64": "AAAA"}}', 400, "string tensors"),
    ("POST", "/v1/models/arcnn:predict", b'{"inputs": [[["a", "b"]]]}', 400, "strings"),
    ("POST", "/v1/models/arcnn:predict", b'{"inputs": [[[1, true], [3, 4]]]}', 400, "JSON boolean (true)"),
    ("POST", "/v1/models/arcnn:predict", b'{"inputs": [[[1, 2], [3, 123456789012345678901234567890]]]}', 400,
     "an integer beyond 64 bits (123456789012345678901234..."),
    ("POST", "/v1/models/arcnn:predict", b'{"inputs": [[[1, 2], [3, null]]]}', 400, "expected numbers, got null"),
    ("POST", "/v1/models/arcnn:predict", b'{"instances": [[[0, 2], [false, 4]]]}', 400, "JSON boolean (false)"),
    ("POST", "/v1/models/arcnn:predict", b'{"inputs": {"frames": [[[1]]], "x": 1}}', 400, "unknown: x"),
    ("POST", "/v1/models/arcnn:predict", b'{"signature_name": "serve_float", "inputs": [[[[[NaN]]]]]}', 400, "NaN"),
    ("POST", "/v1/models/arcnn:predict", json.dumps({"inputs": [[[0] * 65] * 65]}).encode(), 400, "more than 4096"),
    ("POST", "/v1/models/arcnn:predict", b'{"inputs": [' + b"0," * 200000 + b"0]}", 413, "--max_request_bytes"),
    ("POST", "/v1/models/arcnn:classify", b'{"inputs": 1}', 400, "use :predict"),
    ("POST", "/v1/models/nope:predict", b'{"inputs": 1}', 404, "Servable not found"),
    ("POST", "/v1/models/arcnn/versions/9:predict", b'{"inputs": 1}', 404, "Specific(arcnn, 9)"),
    ("POST", "/v1/models/arcnn/labels/stable:predict", b'{"inputs": 1}', 404, "label"),
    ("GET", "/v1/models/nope", None, 404, "nope"),
    ("GET", "/v1/models/arcnn/versions/9", None, 404, "version 9"),
    ("GET", "/v1/nothing", None, 404, "Not Found"),
    ("POST", "/v1/models/arcnn/streams", None, 400, "not recurrent"),
]


@pytest.mark.parametrize("method,path,body,status,message", BAD_REQUESTS, ids=[c[4] for c in BAD_REQUESTS])
def test_bad_rest_requests_are_one_line_4xx(served, method, path, body, status, message):
    r = requests.request(method, served[0] + path, data=body, timeout=TIMEOUT)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error and "\n" not in error


def test_a_new_version_is_picked_up_and_half_written_or_broken_ones_are_not(served):
    url, _, base, path, stderr = served
    os.makedirs(base / "7" / "variables")  # half-written: no saved_model.pb yet
    shutil.copytree(path, base / ".tmp-export-x")  # a temp name
    broken = base / "9"
    os.makedirs(broken)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    shutil.copytree(path, base / ".tmp-copy")
    os.rename(base / ".tmp-copy", base / "2")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = requests.get(f"{url}/v1/models/arcnn", timeout=TIMEOUT).json()["model_version_status"]
        if any(r["version"] == "2" and r["state"] == "AVAILABLE" for r in rows):
            break
        time.sleep(0.2)
    assert [(r["version"], r["state"]) for r in rows] == [("9", "END"), ("2", "AVAILABLE")], rows
    assert rows[0]["status"]["error_code"] == "UNKNOWN" and rows[0]["status"]["error_message"]
    r = requests.post(f"{url}/v1/models/arcnn:predict", json={"inputs": [[[1, 2], [3, 4]]]}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert requests.post(f"{url}/v1/models/arcnn/versions/1:predict", json={"inputs": [[[1]]]},
                         timeout=TIMEOUT).status_code == 404  # version 1 is unloaded
    log = "".join(stderr)
    assert "version 9 failed to load" in log and "unloaded arcnn version 1" in log


def test_metrics_count_requests_by_model_method_protocol_and_code(served):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    def counts():
        text = requests.get(f"{url}/monitoring/prometheus/metrics", timeout=TIMEOUT).text
        found = {m.groups()[:4]: float(m[5]) for m in re.finditer(
            r'^vcar_serve_requests_total\{code="(\w+)",method="(\w+)",model="(\w*)",protocol="(\w+)"\} ([0-9.]+)$',
            text, re.M)}
        return found, text

    url = served[0]
    before, _ = counts()
    for body in ({"inputs": [[[1, 2]]]}, {"inputs": [[[1.5]]]}):  # one good and one bad request
        requests.post(f"{url}/v1/models/arcnn:predict", json=body, timeout=TIMEOUT)
    requests.post(f"{url}/v1/models/nope:predict", json={"inputs": 1}, timeout=TIMEOUT)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "arcnn"
    request.inputs["frames"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 3, 4), np.uint8)))
    with grpc.insecure_channel(served[1]) as channel:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=TIMEOUT)
    after, text = counts()
    for key in (("OK", "predict", "arcnn", "rest"), ("INVALID_ARGUMENT", "predict", "arcnn", "rest"),
                ("OK", "predict", "arcnn", "grpc"), ("NOT_FOUND", "predict", "", "rest")):
        assert after[key] - before.get(key, 0) == 1, (key, before.get(key), after.get(key))
    assert 'vcar_serve_request_latency_seconds_bucket{' in text
