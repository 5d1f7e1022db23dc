"""Serve vcar-export SavedModels over TF Serving's REST and gRPC protocols.

    vcar-serve --model_name NAME --model_base_path DIR/NAME [--rest_api_port 8501] [--port 8500]
    vcar-serve --model_config_file models.config [...]

Flags are named as tensorflow_model_server's. DIR/NAME/VERSION/saved_model.pb is a version (what
vcar-export writes); the newest is served and a new one is picked up every
--file_system_poll_wait_seconds. Binds 127.0.0.1 unless --host says otherwise; port 0 picks a free
port. Prints one line with both addresses once serving; stops on SIGINT or SIGTERM.
"""

import signal
import sys

from vcar_tf.errors import ArgumentParser, VcarError, cli_main
from vcar_tf.export.names import MAX_FRAME_PIXELS

PROTOS_MISSING = ("TF Serving's protos are not installed: pip install --no-deps tensorflow-serving-api==2.21.0 "
                  "(--no-deps: it would pull a second TensorFlow wheel)")


def positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise ValueError(text)
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def port(text):
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(text)
    return value


def parse_args(argv):
    p = ArgumentParser(prog="vcar-serve", description=__doc__.split("\n")[0])
    p.add_argument("--model_name", default="default", help="the model's name in request paths (default: default)")
    p.add_argument("--model_base_path", default=None, help="the folder holding VERSION/saved_model.pb (vcar-export's "
                   "OUT/NAME)")
    p.add_argument("--model_config_file", default=None, help="several models: TF Serving's ModelServerConfig in text "
                   "format (model_config_list { config { name: ... base_path: ... } })")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for every "
                   "interface)")
    p.add_argument("--rest_api_port", type=port, default=8501, help="REST port (default 8501; 0: a free port)")
    p.add_argument("--port", type=port, default=8500, help="gRPC port (default 8500; 0: a free port)")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                   help="seconds between polls of the base paths for new versions (default 1; 0: once at start)")
    p.add_argument("--enable_batching", action="store_true", help="batch concurrent requests of the same shape")
    p.add_argument("--max_batch_size", type=positive(int), default=8,
                   help="largest batch in rows: requests times their own batch rows (default 8)")
    p.add_argument("--num_batch_threads", type=positive(int), default=1,
                   help="batches run at once, each on its own thread (default 1)")
    p.add_argument("--batch_timeout_micros", type=int, default=5000,
                   help="how long a batch waits for more requests after its first (default 5000)")
    p.add_argument("--max_request_bytes", type=positive(int), default=64 << 20,
                   help="largest request body or gRPC message (default 64 MiB); larger: 413 / RESOURCE_EXHAUSTED")
    p.add_argument("--body_timeout_seconds", type=positive(float), default=60.0,
                   help="a REST body that takes longer to arrive is answered 408 (default 60)")
    p.add_argument("--max_frame_pixels", type=positive(int), default=MAX_FRAME_PIXELS,
                   help=f"largest frame, H*W (default {MAX_FRAME_PIXELS}, 2560x1600); larger: 400")
    p.add_argument("--max_inflight", type=positive(int), default=16,
                   help="requests answered at once (default 16); more: 503 / UNAVAILABLE")
    p.add_argument("--max_streams", type=positive(int), default=8, help="open streams of recurrent models (default 8)")
    p.add_argument("--stream_idle_timeout_seconds", type=positive(float), default=300.0,
                   help="a stream idle this long is closed (default 300)")
    p.add_argument("--shutdown_grace_seconds", type=positive(float), default=30.0,
                   help="on SIGTERM or Ctrl-C, requests in flight may finish this long (default 30)")
    args = p.parse_args(argv)
    if args.batch_timeout_micros < 0:
        p.error("--batch_timeout_micros must be 0 or more")
    return args


@cli_main
def main(argv=None):
    args = parse_args(argv)
    try:
        from vcar_tf.serving.config import models_from_flags

        models = models_from_flags(args.model_name, args.model_base_path, args.model_config_file)
        from vcar_tf.serving.server import ModelServer, ServerOptions  # TensorFlow loads here, after the checks
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("tensorflow_serving"):
            raise VcarError(PROTOS_MISSING) from None
        raise
    options = ServerOptions(host=args.host, rest_api_port=args.rest_api_port, grpc_port=args.port,
                            poll_wait_s=args.file_system_poll_wait_seconds, enable_batching=args.enable_batching,
                            max_batch_size=args.max_batch_size, batch_timeout_s=args.batch_timeout_micros / 1e6,
                            num_batch_threads=args.num_batch_threads,
                            max_request_bytes=args.max_request_bytes,
                            body_timeout_s=args.body_timeout_seconds, max_frame_pixels=args.max_frame_pixels,
                            max_inflight=args.max_inflight, max_streams=args.max_streams,
                            stream_idle_timeout_s=args.stream_idle_timeout_seconds,
                            shutdown_grace_s=args.shutdown_grace_seconds)
    server = ModelServer(models, options)
    try:
        rest_port, grpc_port = server.start()
    except OSError as e:
        raise VcarError(f"cannot serve on {args.host}: {e.strerror or e}"
                        + (" (is another server on that port?)" if e.strerror else "")) from None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.request_stop())
    names = ", ".join(m.name for m in models)
    print(f"vcar-serve: serving {names}; REST on http://{args.host}:{rest_port}, gRPC on {args.host}:{grpc_port}",
          flush=True)
    try:
        server.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
