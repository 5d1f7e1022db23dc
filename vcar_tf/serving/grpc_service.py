"""TF Serving's gRPC API with the official protos (tensorflow-serving-api, installed without its
`tensorflow` dependency: it needs only protobuf, grpcio and tensorflow-cpu's tensorflow.core protos):
tensorflow.serving.PredictionService/Predict and /GetModelMetadata, ModelService/GetModelStatus.
A client written for TF Serving works unchanged."""

import math
import sys
import time
from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from vcar_tf.serving.signature import shape_text
from vcar_tf.serving.status import ServingError, invalid

GRPC_CODE = {name: getattr(grpc.StatusCode, name) for name in
             ("INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNIMPLEMENTED",
              "UNAVAILABLE", "INTERNAL")}


def version_of(model_spec):
    """(version or None, label or None) of a ModelSpec."""
    version = model_spec.version.value if model_spec.HasField("version") else None
    return version, (model_spec.version_label or None)


def tensor_to_array(name, proto, max_bytes):
    """The TensorProto as an array; one whose shape declares more than `max_bytes` of values is
    refused before anything is allocated (a single repeated value may stand for the whole shape)."""
    if proto.dtype == tf.string.as_datatype_enum:
        raise invalid(f"{name}: a string tensor; this input is numeric")
    dims = [d.size for d in proto.tensor_shape.dim]
    try:
        itemsize = tf.dtypes.as_dtype(proto.dtype).size
    except TypeError:
        itemsize = 0  # an unknown dtype: make_ndarray names it
    if min(dims, default=0) < 0:  # TF Serving refuses them; make_ndarray would allocate prod(dims) values
        raise invalid(f"{name}: shape {shape_text(dims)} has a negative dimension")
    if itemsize * math.prod(dims) > max_bytes:
        raise invalid(f"{name}: shape {shape_text(dims)} holds more than {max_bytes} bytes (--max_request_bytes)")
    try:
        return tf.make_ndarray(proto)
    except Exception as e:  # noqa: BLE001  (a malformed TensorProto is the client's error)
        raise invalid(f"{name}: malformed TensorProto: {' '.join(str(e).split())[:200]}") from None


class _Handler:
    """Runs one RPC with the metrics and the error mapping shared by the services."""

    def __init__(self, metrics):
        self.metrics = metrics

    def call(self, method, model_spec, context, fn):
        started, code = time.perf_counter(), "OK"
        model = model_spec.name if model_spec.name in self.known_models() else ""
        try:
            return fn()
        except ServingError as e:
            code = e.code
            context.abort(GRPC_CODE[e.code], e.message)
        except Exception as e:  # noqa: BLE001  (a bug answers INTERNAL with one line; the server goes on)
            code = "INTERNAL"
            print(f"vcar-serve: internal error in gRPC {method}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}")
        finally:
            self.metrics.observe(model, method, "grpc", code, time.perf_counter() - started)

    def known_models(self):
        raise NotImplementedError


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer, _Handler):
    def __init__(self, store, predictor, metrics, max_request_bytes):
        _Handler.__init__(self, metrics)
        self.store, self.predictor, self.max_request_bytes = store, predictor, max_request_bytes

    def known_models(self):
        return self.store.models

    def Predict(self, request, context):
        def predict():
            spec = request.model_spec
            version, label = version_of(spec)
            arrays = {name: tensor_to_array(name, proto, self.max_request_bytes) for name, proto in request.inputs.items()}
            served, signature, outputs = self.predictor.predict(spec.name, version, label, spec.signature_name,
                                                                arrays, strict_dtypes=True)
            wanted = set(request.output_filter)
            unknown = wanted - set(outputs)
            if unknown:
                raise invalid(f"output_filter names unknown outputs: {', '.join(sorted(unknown))}")
            response = predict_pb2.PredictResponse()
            response.model_spec.name = spec.name
            response.model_spec.version.value = served
            response.model_spec.signature_name = signature
            for name, value in outputs.items():
                if not wanted or name in wanted:
                    response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response

        return self.call("predict", request.model_spec, context, predict)

    def GetModelMetadata(self, request, context):
        def metadata():
            if list(request.metadata_field) != ["signature_def"]:
                raise invalid('metadata_field must be ["signature_def"], the only metadata served')
            version, label = version_of(request.model_spec)
            with self.store.use(request.model_spec.name, version, label) as loaded:
                signature_map = get_model_metadata_pb2.SignatureDefMap()
                for key, value in loaded.signature_defs.items():
                    signature_map.signature_def[key].CopyFrom(value)
                response = get_model_metadata_pb2.GetModelMetadataResponse()
                response.model_spec.name = request.model_spec.name
                response.model_spec.version.value = loaded.version
                response.metadata["signature_def"].Pack(signature_map)
                return response

        return self.call("metadata", request.model_spec, context, metadata)

    def Classify(self, request, context):
        return self.call("classify", request.model_spec, context, self._predict_only)

    def Regress(self, request, context):
        return self.call("regress", request.model_spec, context, self._predict_only)

    def MultiInference(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "vcar_tf models have predict signatures only: use Predict")

    def _predict_only(self):
        raise invalid("vcar_tf models have predict signatures only: use Predict")


class ModelService(model_service_pb2_grpc.ModelServiceServicer, _Handler):
    def __init__(self, store, metrics):
        _Handler.__init__(self, metrics)
        self.store = store

    def known_models(self):
        return self.store.models

    def GetModelStatus(self, request, context):
        def status():
            version, label = version_of(request.model_spec)
            if label is not None:
                config = self.store.models.get(request.model_spec.name)
                version = config.version_labels.get(label) if config else None
                if version is None:
                    raise ServingError("NOT_FOUND", f"Unrecognized servable version label: {label}")
            response = get_model_status_pb2.GetModelStatusResponse()
            states = get_model_status_pb2.ModelVersionStatus.State
            for served, state, code, message in self.store.status(request.model_spec.name, version):
                row = response.model_version_status.add(version=served, state=states.Value(state))
                row.status.error_code = 0 if code == "OK" else 2  # tensorflow.error.Code: OK, UNKNOWN
                row.status.error_message = message
            return response

        return self.call("status", request.model_spec, context, status)

    def HandleReloadConfigRequest(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "reloading the config is not supported: restart vcar-serve")


def start_grpc_server(store, predictor, metrics, host, port, max_request_bytes, workers):
    """A started grpc.Server and its port (port 0: a free one)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vcar-serve-grpc"),
                         options=[("grpc.max_receive_message_length", max_request_bytes),
                                  ("grpc.max_send_message_length", max(max_request_bytes, 256 << 20))])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(store, predictor, metrics, max_request_bytes), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(store, metrics), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # grpcio raises it for an address in use
        bound = 0
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {host}:{port} (in use?)")
    server.start()
    return server, bound
