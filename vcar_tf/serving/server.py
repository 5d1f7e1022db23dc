"""A model server: the model store and its polling, the REST app under uvicorn and the gRPC server,
started and stopped together (vcar-serve runs one; tests run one in a thread)."""

import socket
import sys
import threading
import time
from dataclasses import dataclass

import uvicorn

from vcar_tf.export.names import MAX_FRAME_PIXELS
from vcar_tf.serving.batching import Batcher
from vcar_tf.serving.grpc_service import start_grpc_server
from vcar_tf.serving.metrics import ServingMetrics
from vcar_tf.serving.model_store import ModelStore
from vcar_tf.serving.predictor import Predictor
from vcar_tf.serving.rest import RestApi
from vcar_tf.serving.streams import StreamStore


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    rest_api_port: int = 8501  # 0: a free port
    grpc_port: int = 8500
    poll_wait_s: float = 1.0  # 0: poll once at start
    enable_batching: bool = False
    max_batch_size: int = 8
    batch_timeout_s: float = 0.005
    num_batch_threads: int = 1
    max_request_bytes: int = 64 << 20
    body_timeout_s: float = 60.0
    max_frame_pixels: int = MAX_FRAME_PIXELS
    max_inflight: int = 16
    max_streams: int = 8
    stream_idle_timeout_s: float = 300.0
    shutdown_grace_s: float = 30.0  # in-flight requests may finish this long after SIGTERM


def bind_socket(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


class ModelServer:
    def __init__(self, models, options=None, log=None):
        self.options = options = options or ServerOptions()
        self.metrics = ServingMetrics()
        self.store = ModelStore(models, log=log)
        self.batcher = (Batcher(options.max_batch_size, options.batch_timeout_s, self.metrics.batch_size.observe,
                                options.num_batch_threads)
                        if options.enable_batching else None)
        self.predictor = Predictor(self.store, options.max_frame_pixels, options.max_inflight, self.batcher,
                                   in_flight=self.metrics.in_flight)
        self.streams = StreamStore(self.store, options.max_streams, options.stream_idle_timeout_s,
                                   options.max_frame_pixels, on_count=self.metrics.open_streams.set)
        self.rest_port = self.grpc_port = None
        self._stopping = threading.Event()
        self._threads = []
        self._uvicorn = self._grpc = None

    def start(self):
        """Load the models (first poll), then serve; returns (REST port, gRPC port). A port that
        cannot be bound is an OSError, with nothing left running."""
        self.store.poll()
        for name, label, version in self.store.unserved_labels():
            print(f"vcar-serve: warning: label {label!r} of model {name} names version {version}, which is not "
                  f"served (only the newest version is): requests to it answer 404", file=sys.stderr, flush=True)
        try:
            return self._start_servers()
        except BaseException:
            self.stop()
            raise

    def _start_servers(self):
        options = self.options
        self._grpc, self.grpc_port = start_grpc_server(self.store, self.predictor, self.metrics, options.host,
                                                       options.grpc_port, options.max_request_bytes,
                                                       workers=options.max_inflight + 4)
        sock = bind_socket(options.host, options.rest_api_port)
        self.rest_port = sock.getsockname()[1]
        app = RestApi(self.store, self.predictor, self.streams, self.metrics, options.max_request_bytes,
                      options.body_timeout_s).app()
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False,
                                timeout_graceful_shutdown=options.shutdown_grace_s)
        self._uvicorn = uvicorn.Server(config)
        self._spawn("vcar-serve-rest", lambda: self._uvicorn.run(sockets=[sock]))
        self._spawn("vcar-serve-poll", self._poll_loop)
        deadline = time.monotonic() + 30
        while not self._uvicorn.started and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._uvicorn.started:
            raise OSError(f"the REST server did not start on {options.host}:{self.rest_port}")
        return self.rest_port, self.grpc_port

    def _spawn(self, name, target):
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll_loop(self):
        wait = self.options.poll_wait_s
        while not self._stopping.wait(wait if wait > 0 else 1.0):
            try:
                if wait > 0:
                    self.store.poll()
                self.streams.close_idle()
            except Exception as e:  # noqa: BLE001  (the next poll tries again; reloads and expiry go on)
                print(f"vcar-serve: poll failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)

    def request_stop(self):
        """Make wait() return (safe in a signal handler); stop() then shuts down."""
        self._stopping.set()

    def wait(self):
        """Block until request_stop() or stop()."""
        while not self._stopping.wait(0.5):
            pass

    def stop(self):
        self._stopping.set()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        grace = self.options.shutdown_grace_s
        if self._grpc is not None:  # both stop listening at once; in-flight calls get `grace` to finish
            self._grpc.stop(grace=grace).wait(grace + 5)
        for thread in self._threads:
            thread.join(timeout=grace + 10)
        if self.batcher is not None:
            self.batcher.close()
        self.streams.close_all()
