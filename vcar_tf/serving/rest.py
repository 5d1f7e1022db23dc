"""TF Serving's REST API v1 as a Starlette app (run by uvicorn; see server.py).

    GET    /v1/models/NAME[/versions/N|/labels/L]            model status
    GET    /v1/models/NAME[/versions/N|/labels/L]/metadata   signature defs
    POST   /v1/models/NAME[/versions/N|/labels/L]:predict    predict (row or columnar JSON)
    GET    /monitoring/prometheus/metrics                    Prometheus metrics
vcar_tf's extension for recurrent models (streams.py):
    POST   /v1/models/NAME[/versions/N|/labels/L]/streams    open a stream -> {"stream_id": ...}
    POST   /v1/models/NAME/streams/ID:step                   {"inputs": window} -> {"outputs": frame}
    DELETE /v1/models/NAME/streams/ID                        close it
Every error is {"error": "one line"} with the HTTP status of its canonical code (status.py).
"""

import asyncio
import json
import re
import sys
import time

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vcar_tf.serving.json_tensors import decode_columns, decode_predict, encode_predict, reject_booleans
from vcar_tf.serving.status import ServingError, invalid, not_found

MODEL_PATH = re.compile(r"^(?P<name>[^/:]+)(?:/versions/(?P<version>\d{1,18})|/labels/(?P<label>[^/:]+))?"
                        r"(?P<rest>.*)$")
STREAM_PATH = re.compile(r"^/streams(?:/(?P<id>[0-9a-f]{1,64}))?(?P<step>:step)?$")


def json_response(obj, status=200):
    return Response(json.dumps(obj, separators=(",", ":")), status_code=status, media_type="application/json")


def error_response(error):
    return JSONResponse({"error": error.message}, status_code=error.http_status)


def parse_json(body):
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise invalid(f"malformed JSON: {' '.join(str(e).split())[:200]}") from None


async def read_body(request, limit, timeout_s):
    """The request body, or RESOURCE_EXHAUSTED (413) past `limit` bytes (read no further), or
    DEADLINE_EXCEEDED (408) when it takes more than `timeout_s` to arrive (a slow client holds an
    in-flight slot no longer than that)."""
    try:
        return await asyncio.wait_for(_read_body(request, limit), timeout_s)
    except asyncio.TimeoutError:
        raise ServingError("DEADLINE_EXCEEDED", f"the request body did not arrive within {timeout_s:g} s "
                                                f"(--body_timeout_seconds)") from None


async def _read_body(request, limit):
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ServingError("RESOURCE_EXHAUSTED", f"request of {declared} bytes is larger than {limit} "
                                                 f"(--max_request_bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServingError("RESOURCE_EXHAUSTED", f"request larger than {limit} bytes (--max_request_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def signature_defs_json(loaded):
    """The signature defs as TF Serving's metadata answer writes them (SignatureDefMap in JSON)."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, value in loaded.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(value)
    return json_format.MessageToDict(signature_map, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


class RestApi:
    def __init__(self, store, predictor, streams, metrics, max_request_bytes, body_timeout_s=60.0):
        self.store, self.predictor, self.streams, self.metrics = store, predictor, streams, metrics
        self.max_request_bytes, self.body_timeout_s = max_request_bytes, body_timeout_s

    def app(self):
        async def http_error(request, exc):
            return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path}"},
                                status_code=exc.status_code)

        return Starlette(routes=[Route("/v1/models/{path:path}", self.models, methods=["GET", "POST", "DELETE"]),
                                 Route("/monitoring/prometheus/metrics", self.prometheus, methods=["GET"])],
                         exception_handlers={HTTPException: http_error})

    async def prometheus(self, request):
        body, content_type = self.metrics.exposition()
        return Response(body, media_type=content_type)

    async def models(self, request):
        started, model, method, code = time.perf_counter(), "", "unknown", "OK"
        try:
            match = MODEL_PATH.match(request.path_params["path"])
            if not match:
                raise not_found(f"no such path: {request.url.path}")
            name, label = match["name"], match["label"]
            version = int(match["version"]) if match["version"] else None
            model = name if name in self.store.models else ""  # unknown names share one label
            method, handler = self.route(match["rest"], request.method)
            stream = STREAM_PATH.match(match["rest"])
            extra = (stream["id"],) if stream and stream["id"] else ()
            answer = await handler(request, name, version, label, *extra)
            return await run_in_threadpool(json_response, answer)  # a large answer encodes off the event loop
        except ServingError as e:
            code = e.code
            return error_response(e)
        except Exception as e:  # noqa: BLE001  (a bug answers 500 with one line; the server goes on)
            code = "INTERNAL"
            print(f"vcar-serve: internal error on {request.method} {request.url.path}: {type(e).__name__}: {e}",
                  file=sys.stderr, flush=True)
            return error_response(ServingError("INTERNAL", f"internal error: {type(e).__name__}"))
        except BaseException:  # cancelled (a shutdown's grace ran out, the client left): not an OK
            code = "CANCELLED"
            raise
        finally:
            self.metrics.observe(model, method, "rest", code, time.perf_counter() - started)

    def route(self, rest, http_method):
        """(metric name, handler) for the part of the path after NAME[/versions/N|/labels/L]."""
        stream = STREAM_PATH.match(rest)
        routes = {
            ("", "GET"): ("status", self.status),
            ("/metadata", "GET"): ("metadata", self.metadata),
            (":predict", "POST"): ("predict", self.predict),
        }
        if stream and stream["id"] is None and not stream["step"]:
            routes[(rest, "POST")] = ("stream_open", self.stream_open)
        elif stream and stream["id"] and stream["step"]:
            routes[(rest, "POST")] = ("stream_step", self.stream_step)
        elif stream and stream["id"]:
            routes[(rest, "DELETE")] = ("stream_close", self.stream_close)
        if (rest, http_method) in routes:
            return routes[(rest, http_method)]
        if rest in (":classify", ":regress"):
            raise invalid(f"{rest[1:]} needs a classification or regression signature; vcar_tf models have "
                          f"predict signatures only: use :predict")
        if any(path == rest for path, _ in routes):
            raise invalid(f"{http_method} is not allowed here")
        raise not_found(f"no such path: /v1/models/...{rest}")

    async def status(self, request, name, version, label):
        if label is not None:
            version = self.store.models[name].version_labels.get(label) if name in self.store.models else None
            if version is None:
                raise not_found(f"Unrecognized servable version label: {label} (model {name})")
        rows = self.store.status(name, version)
        return {"model_version_status": [{"version": str(v), "state": state,
                                          "status": {"error_code": code, "error_message": message}}
                                         for v, state, code, message in rows]}

    async def metadata(self, request, name, version, label):
        with self.store.use(name, version, label) as loaded:
            signature_defs = await run_in_threadpool(signature_defs_json, loaded)
            return {"model_spec": {"name": name, "signature_name": "", "version": str(loaded.version)},
                    "metadata": {"signature_def": signature_defs}}

    async def predict(self, request, name, version, label):
        with self.predictor.slot():
            body = await read_body(request, self.max_request_bytes, self.body_timeout_s)
            return await run_in_threadpool(self._predict, body, name, version, label)

    def _predict(self, body, name, version, label):
        request = parse_json(body)
        reject_booleans(body, request)
        with self.store.use(name, version, label) as loaded:
            signature_name = request.get("signature_name") if isinstance(request, dict) else None
            signature = loaded.signature(signature_name if isinstance(signature_name, str) else None)
            _, arrays, row_format = decode_predict(request, signature.input_names())
            outputs = self.predictor.run(loaded, signature, arrays)
            return encode_predict(outputs, row_format)

    async def stream_open(self, request, name, version, label):
        return await run_in_threadpool(self.streams.open, name, version, label)

    async def stream_step(self, request, name, version, label, stream_id):
        with self.predictor.slot():
            body = await read_body(request, self.max_request_bytes, self.body_timeout_s)
            return await run_in_threadpool(self._stream_step, body, name, stream_id)

    def _stream_step(self, body, name, stream_id):
        request = parse_json(body)
        reject_booleans(body, request)
        if not isinstance(request, dict) or "inputs" not in request:
            raise invalid('a step takes {"inputs": window} or {"inputs": {"frames": window}}')
        outputs, step = self.streams.step(name, stream_id, decode_columns(request["inputs"], ["frames"]))
        return {**encode_predict(outputs, False), "step": step}

    async def stream_close(self, request, name, version, label, stream_id):
        return await run_in_threadpool(self.streams.close, name, stream_id)  # waits for a step in progress
