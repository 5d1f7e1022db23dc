"""vcar-serve under load and under fuzz, over loopback (127.0.0.1 only, bounded in requests and time).

    python benchmarks/bench_serve.py [--requests_per_client 2] [--fuzz 1200] [--out benchmarks/results/serve.md]

Load: STDF-R3 (the stock-op export a TF Serving deployment runs; random weights, the same compute as
trained ones) served by the `vcar-serve` command in its own process; 1, 4 and 16 concurrent
clients each send --requests_per_client serving_default requests (uint8 [7, 240, 416]: 416x240)
over REST (requests, JSON) and, at 4 clients, over gRPC (the official stubs), with and without
--enable_batching (max 16, 20 ms); throughput, p50/p95/p99 latency, and the server's RSS before and
after (VmRSS; VmHWM for the peak). Clients are a thread pool (no load-testing tool is installed
here, and a fixed count of requests per client is all this needs).

Fuzz: --fuzz malformed requests, half REST and half gRPC, drawn at random from the kinds below,
against a server without batching and with small limits (--max_request_bytes 2000000
--max_frame_pixels 100000, so that requests over them stay cheap to send): counts of answers by status, crashes (the process gone),
5xx other than the documented 503, the RSS before and after, then a valid request whose answer
must equal the one given before the fuzz.
"""

import json
import os
import queue
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import publish  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "stdf_r3"
HEIGHT, WIDTH, FRAMES = 240, 416, 7
TIMEOUT = 300  # seconds, any one request
CONFIG_BUDGET = 240  # seconds, any one load configuration
FUZZ_MAX_REQUEST_BYTES, FUZZ_MAX_FRAME_PIXELS = 2_000_000, 100_000  # the fuzzed server's limits


def export(folder):
    from vcar_tf.export import export_saved_model
    from vcar_tf.models import build

    return export_saved_model(build(MODEL), 3, os.path.join(folder, MODEL))


class ServeProcess:
    """The vcar-serve command on free loopback ports."""

    def __init__(self, base, *flags):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vcar_tf.cli.serve", "--model_name", MODEL, "--model_base_path", base,
             "--rest_api_port", "0", "--port", "0", "--max_inflight", "64", *flags],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout], daemon=True).start()
        match = re.search(r"REST on (http://127\.0\.0\.1:\d+), gRPC on (127\.0\.0\.1:\d+)", lines.get(timeout=300))
        self.url, self.grpc = match[1], match[2]

    def memory_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def rest_client(url):
    import requests

    session = requests.Session()

    def call(frames):
        r = session.post(f"{url}/v1/models/{MODEL}:predict", data=json.dumps({"inputs": frames.tolist()}),
                         timeout=TIMEOUT)
        r.raise_for_status()
        return np.array(r.json()["outputs"], np.uint8)

    return call


def grpc_client(address):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))

    def call(frames):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        request.inputs["frames"].CopyFrom(tf.make_tensor_proto(frames))
        return tf.make_ndarray(stub.Predict(request, timeout=TIMEOUT).outputs["enhanced"])

    return call


def load(server, protocol, clients, per_client):
    """{requests, seconds, throughput, p50, p95, p99} of `clients` threads sending `per_client` each."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (FRAMES, HEIGHT, WIDTH), dtype=np.uint8)
    make = rest_client if protocol == "rest" else grpc_client
    calls = [make(server.url if protocol == "rest" else server.grpc) for _ in range(clients)]
    calls[0](frames)  # warm-up (tracing)
    deadline = time.monotonic() + CONFIG_BUDGET
    latencies = []

    def client(call):
        for _ in range(per_client):
            if time.monotonic() > deadline:
                return
            started = time.perf_counter()
            call(frames)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, calls))
    seconds = time.perf_counter() - started
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {"requests": len(latencies), "seconds": seconds, "throughput": len(latencies) / seconds,
            "p50": p50, "p95": p95, "p99": p99}


# --- fuzz ---------------------------------------------------------------------------------------

def rest_fuzz_case(rng):
    """(method, path, body bytes) of one malformed REST request."""
    good = {"inputs": [[[1, 2], [3, 4]]] * FRAMES}
    path = f"/v1/models/{MODEL}:predict"
    kind = rng.randrange(16)
    if kind == 0:
        return "POST", path, json.dumps(good).encode()[:rng.randrange(1, 40)]  # truncated JSON
    if kind == 1:
        return "POST", path, bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200)))  # random bytes
    if kind == 2:
        return "POST", path, json.dumps({"inputs": [[[rng.choice([1.5, -1, 256, 1e30, "x", None, True])]]] * FRAMES})\
            .encode()
    if kind == 3:
        return "POST", path, json.dumps({"inputs": [[[1, 2], [3]]] * FRAMES}).encode()  # ragged
    if kind == 4:
        return "POST", path, json.dumps({"inputs": [[1, 2]] * rng.randrange(1, 10)}).encode()  # wrong rank
    if kind == 5:
        return "POST", path, json.dumps({"inputs": [[[1]]] * rng.choice([1, 2, 6, 8, 20])}).encode()  # frame count
    if kind == 6:
        return "POST", path, json.dumps({"inputs": {"b64": "!!notbase64"}}).encode()
    if kind == 7:
        return "POST", path, json.dumps({**good, "signature_name": rng.choice(["nope", 3, "", "step_float"])}).encode()
    if kind == 8:
        return "POST", path, json.dumps({"signature_name": "serve_float",
                                         "inputs": [[[[[float("nan")]]]] * FRAMES]}).encode()
    if kind == 9:
        return "POST", path, b"[" * rng.randrange(100, 100000) + b"]" * 3  # deep nesting
    if kind == 10:
        return "POST", path, json.dumps({"instances": [], "inputs": 1}).encode()
    if kind == 11:
        if rng.random() < 0.5:  # a frame over the fuzz server's --max_frame_pixels
            return "POST", path, json.dumps({"inputs": [[[0] * 400] * 300] * FRAMES}).encode()
        return "POST", path, b" " * (FUZZ_MAX_REQUEST_BYTES + 1)  # over its --max_request_bytes
    if kind == 12:
        return "POST", rng.choice(["/v1/models/nope:predict", f"/v1/models/{MODEL}/versions/99:predict",
                                   f"/v1/models/{MODEL}/labels/x:predict", f"/v1/models/{MODEL}:regress",
                                   "/v1/models/", "/v2/x", f"/v1/models/{MODEL}/streams/zz:step"]), b"{}"
    if kind == 13:
        return rng.choice(["PUT", "DELETE", "PATCH"]), path, b"{}"
    if kind == 14:
        return "GET", rng.choice([f"/v1/models/{MODEL}/versions/abc", f"/v1/models/{MODEL}/metadata/x",
                                  "/v1/models/" + "a" * 5000]), None
    return "POST", path, json.dumps({"inputs": {"frames": [[[1]]], "extra": [1]}}).encode()


def grpc_fuzz_case(rng):
    """A malformed PredictRequest."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    kind = rng.randrange(9)
    frames = np.zeros((FRAMES, 4, 5), np.uint8)
    if kind == 0:
        request.inputs["frames"].CopyFrom(tf.make_tensor_proto(frames.astype(rng.choice([np.float32, np.int32]))))
    elif kind == 1:
        request.inputs["frames"].CopyFrom(tf.make_tensor_proto(frames[:rng.randrange(1, FRAMES)]))
    elif kind == 2:
        proto = tf.make_tensor_proto(frames)
        proto.tensor_content = proto.tensor_content[:rng.randrange(0, 50)]  # content shorter than the shape
        request.inputs["frames"].CopyFrom(proto)
    elif kind == 3:
        request.inputs["frames"].CopyFrom(tf.make_tensor_proto([b"abc"]))
    elif kind == 4:
        request.model_spec.name = rng.choice(["nope", ""])
        request.inputs["frames"].CopyFrom(tf.make_tensor_proto(frames))
    elif kind == 5:
        request.model_spec.signature_name = "nope"
        request.inputs["frames"].CopyFrom(tf.make_tensor_proto(frames))
    elif kind == 6:
        request.model_spec.version.value = rng.randrange(2, 10**12)
        request.inputs["frames"].CopyFrom(tf.make_tensor_proto(frames))
    elif kind == 7:
        request.inputs["other"].CopyFrom(tf.make_tensor_proto(frames))
    else:
        proto = tf.make_tensor_proto(frames)
        proto.tensor_shape.dim[1].size = 10**6  # a shape that claims far more than the content
        request.inputs["frames"].CopyFrom(proto)
    return request


def fuzz(server, count, seed=0):
    import grpc
    import requests
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    rng = random.Random(seed)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.grpc))
    session = requests.Session()
    codes, server_errors = {}, []
    started = time.perf_counter()
    for i in range(count):
        if i % 2 == 0:
            method, path, body = rest_fuzz_case(rng)
            try:
                r = session.request(method, server.url + path, data=body, timeout=TIMEOUT)
                code = f"REST {r.status_code}"
                one_line = "\n" not in r.text.strip()
            except requests.RequestException as e:
                code, one_line = f"REST {type(e).__name__}", True
        else:
            try:
                stub.Predict(grpc_fuzz_case(rng), timeout=TIMEOUT)
                code, one_line = "gRPC OK", True
            except grpc.RpcError as e:
                code, one_line = f"gRPC {e.code().name}", "\n" not in (e.details() or "")
        codes[code] = codes.get(code, 0) + 1
        if re.match(r"REST 5(?!03)|gRPC (INTERNAL|UNKNOWN)|REST [A-Z]", code) or not one_line:
            server_errors.append(code)
        if not server.alive():
            break
    return codes, server_errors, time.perf_counter() - started


def fuzz_report(server, count):
    valid = np.random.default_rng(5).integers(0, 256, (FRAMES, 24, 40), dtype=np.uint8)
    before = rest_client(server.url)(valid)
    rss_before, _ = server.memory_mb()
    codes, errors, seconds = fuzz(server, count)
    alive = server.alive()
    rss_after, peak = server.memory_mb() if alive else (float("nan"),) * 2
    after = rest_client(server.url)(valid) if alive else None
    notes = [f"- {count} malformed requests ({count - count // 2} REST, {count // 2} gRPC) in {seconds:.0f} s: "
             f"crashes {0 if alive else 1}; 5xx other than 503, gRPC INTERNAL/UNKNOWN, broken connections or "
             f"multi-line errors: {len(errors)}" + (f" ({', '.join(sorted(set(errors)))})" if errors else ""),
             "- answers: " + ", ".join(f"{k} × {v}" for k, v in sorted(codes.items())),
             f"- server RSS {rss_before:.0f} MB before the fuzz, {rss_after:.0f} MB after (peak {peak:.0f} MB)",
             f"- a valid request afterwards: answered, equal to the answer before the fuzz: "
             f"{after is not None and np.array_equal(before, after)}"]
    print("\n".join(notes), flush=True)
    return notes


def main():
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests_per_client", type=int, default=2)
    p.add_argument("--fuzz", type=int, default=1200)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as folder:
        path = export(folder)
        base = os.path.dirname(path)
        for batching in (False, True):
            flags = ["--enable_batching", "--max_batch_size", "16", "--batch_timeout_micros", "20000"] if batching else []
            server = ServeProcess(base, *flags)
            try:
                rss_before, _ = server.memory_mb()
                for protocol, clients in (("rest", 1), ("rest", 4), ("rest", 16), ("grpc", 4)):
                    result = load(server, protocol, clients, args.requests_per_client * (1 if clients > 1 else 3))
                    rss, peak = server.memory_mb()
                    rows.append((protocol, "on" if batching else "off", clients, result, rss_before, rss, peak))
                    print(rows[-1], flush=True)
            finally:
                server.stop()
        server = ServeProcess(base, "--max_request_bytes", str(FUZZ_MAX_REQUEST_BYTES), "--max_frame_pixels",
                              str(FUZZ_MAX_FRAME_PIXELS))
        try:
            notes = fuzz_report(server, args.fuzz)
        finally:
            server.stop()
    table = ["| protocol | batching | clients | requests | throughput (req/s) | p50 (s) | p95 (s) | p99 (s) "
             "| server RSS before / after / peak (MB) |", "|---|---|---|---|---|---|---|---|---|"]
    for protocol, batching, clients, r, before, after, peak in rows:
        table.append(f"| {protocol} | {batching} | {clients} | {r['requests']} | {r['throughput']:.3f} | "
                     f"{r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {before:.0f} / {after:.0f} / {peak:.0f} |")
    body = (f"STDF-R3 export (stock-op composite deformable conv, as TF Serving runs it), serving_default, "
            f"uint8 [7, {HEIGHT}, {WIDTH}] per request, vcar-serve in its own process on 127.0.0.1; "
            f"batching: --enable_batching --max_batch_size 16 --batch_timeout_micros 20000. Percentiles of "
            f"few requests are rough (p99 of 2 to 16 samples is the maximum).\n\n" + "\n".join(table)
            + "\n\n## Fuzz\n\n" + "\n".join(notes) + "\n")
    publish("vcar-serve: loopback load and fuzz", body, args.out)


if __name__ == "__main__":
    main()
