"""vcar-serve in a thread: server-side streams of a recurrent export (state kept by the server,
bounded, idle timeout, close), batching of concurrent same-shape requests, and the overload answer."""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.conftest import perturb_weights

requests = pytest.importorskip("requests")
pytest.importorskip("tensorflow_serving.apis.predict_pb2")

TIMEOUT = 60


def start_server(models, **options):
    from vcar_tf.serving.server import ModelServer, ServerOptions

    server = ModelServer(models, ServerOptions(rest_api_port=0, grpc_port=0, **options), log=lambda line: None)
    rest_port, _ = server.start()
    return server, f"http://127.0.0.1:{rest_port}"


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    from vcar_tf.export import export_saved_model
    from vcar_tf.models import build
    from vcar_tf.serving.model_store import ModelConfig

    root = tmp_path_factory.mktemp("serving")
    export_saved_model(perturb_weights(build("stdf_rf"), scale=0.02), 3, str(root / "stdf_rf"))
    export_saved_model(perturb_weights(build("arcnn"), scale=0.02), 0, str(root / "arcnn"))
    return {name: ModelConfig(name, str(root / name)) for name in ("stdf_rf", "arcnn")}


def test_a_stream_keeps_the_recurrent_state_on_the_server(exports):
    import tensorflow as tf

    server, url = start_server([exports["stdf_rf"]], max_streams=1, stream_idle_timeout_s=1.0, poll_wait_s=0.2)
    try:
        rng = np.random.default_rng(0)
        windows = rng.integers(0, 256, (3, 7, 19, 26), dtype=np.uint8)  # H, W not multiples of 8
        signatures = tf.saved_model.load(f"{exports['stdf_rf'].base_path}/1").signatures
        hidden = signatures["initial_state"](frames=tf.constant(windows[0][None, ..., None] / 255.0, tf.float32))
        hidden, expected = hidden["hidden"], []
        for window in windows:
            out = signatures["serving_default"](frames=tf.constant(window), hidden=hidden)
            expected.append(out["enhanced"].numpy())
            hidden = out["hidden"]

        # the stateless predict (the client carries the state), columnar as it has two inputs
        zeros = np.zeros((1, 24, 32, 64), np.float32)  # the first state: 19 x 26 rounded up to 8
        r = requests.post(f"{url}/v1/models/stdf_rf:predict",
                          json={"inputs": {"frames": windows[0].tolist(), "hidden": zeros.tolist()}}, timeout=TIMEOUT)
        assert sorted(r.json()["outputs"]) == ["enhanced", "hidden"]
        np.testing.assert_array_equal(np.array(r.json()["outputs"]["enhanced"], np.uint8), expected[0])
        r = requests.post(f"{url}/v1/models/stdf_rf:predict", json={"instances": [{"frames": windows[0].tolist(),
                                                                                 "hidden": zeros[0].tolist()}]},
                          timeout=TIMEOUT)
        assert r.status_code == 400, r.text  # the row format adds a batch axis serving_default does not take

        opened = requests.post(f"{url}/v1/models/stdf_rf/streams", timeout=TIMEOUT).json()
        stream = f"{url}/v1/models/stdf_rf/streams/{opened['stream_id']}"
        assert opened["model_spec"] == {"name": "stdf_rf", "version": "1"}
        full = requests.post(f"{url}/v1/models/stdf_rf/streams", timeout=TIMEOUT)
        assert full.status_code == 503 and "--max_streams" in full.json()["error"]  # one stream at most
        for step, window in enumerate(windows):
            r = requests.post(f"{stream}:step", json={"inputs": {"frames": window.tolist()}}, timeout=TIMEOUT)
            assert r.status_code == 200, r.text
            assert r.json()["step"] == step
            np.testing.assert_array_equal(np.array(r.json()["outputs"], np.uint8), expected[step])
        for body, message in (({"inputs": windows[0, :, :10].tolist()}, "differs from the stream's"),
                              ({"inputs": windows[0, :3].tolist()}, "expected uint8 [7, ?, ?]"),
                              ({"frames": 1}, "a step takes")):
            r = requests.post(f"{stream}:step", json=body, timeout=TIMEOUT)
            assert r.status_code == 400 and message in r.json()["error"], r.text
        closed = requests.delete(stream, timeout=TIMEOUT).json()
        assert closed["steps"] == 3
        gone = requests.post(f"{stream}:step", json={"inputs": windows[0].tolist()}, timeout=TIMEOUT)
        assert gone.status_code == 404 and "no open stream" in gone.json()["error"]

        idle = requests.post(f"{url}/v1/models/stdf_rf/streams", timeout=TIMEOUT).json()["stream_id"]
        deadline = time.monotonic() + 20
        while server.streams.count() and time.monotonic() < deadline:
            time.sleep(0.1)
        r = requests.delete(f"{url}/v1/models/stdf_rf/streams/{idle}", timeout=TIMEOUT)
        assert r.status_code == 404  # closed by the idle timeout
        assert "vcar_serve_open_streams 0.0" in requests.get(f"{url}/monitoring/prometheus/metrics",
                                                             timeout=TIMEOUT).text
    finally:
        server.stop()


def test_concurrent_same_shape_requests_are_batched_and_answered_as_alone(exports):
    import tensorflow as tf

    server, url = start_server([exports["arcnn"]], enable_batching=True, max_batch_size=4, batch_timeout_s=0.2)
    try:
        frames = np.random.default_rng(1).integers(0, 256, (8, 1, 21, 27), dtype=np.uint8)
        fn = tf.saved_model.load(f"{exports['arcnn'].base_path}/1").signatures["serving_default"]
        expected = [fn(frames=tf.constant(f))["enhanced"].numpy() for f in frames]

        def ask(i):
            r = requests.post(f"{url}/v1/models/arcnn:predict", json={"inputs": frames[i].tolist()}, timeout=TIMEOUT)
            return np.array(r.json()["outputs"], np.uint8)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(8)))
        for got, want in zip(answers, expected):  # serve_float in a batch, rounded as serving_default rounds
            assert np.abs(got.astype(int) - want).max() <= 1 and (got != want).mean() < 0.01
        sizes = server.metrics.batch_size.collect()[0].samples
        count = next(s.value for s in sizes if s.name.endswith("_count"))
        total = next(s.value for s in sizes if s.name.endswith("_sum"))
        assert total == 8 and count < 8  # some requests shared a batch
    finally:
        server.stop()


def test_a_full_server_answers_503_a_slow_body_408_and_both_recover(exports):
    import http.client
    import socket

    server, url = start_server([exports["arcnn"]], max_inflight=1, body_timeout_s=1.0)
    try:
        body = {"inputs": [[[1, 2], [3, 4]]]}
        with server.predictor.slot():  # the one slot is taken
            r = requests.post(f"{url}/v1/models/arcnn:predict", json=body, timeout=TIMEOUT)
            assert r.status_code == 503 and "--max_inflight" in r.json()["error"]
        assert requests.post(f"{url}/v1/models/arcnn:predict", json=body, timeout=TIMEOUT).status_code == 200
        # a client that sends 5 of the 100 bytes it announced holds the slot for 1 s only
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=20) as slow:
            slow.sendall(b"POST /v1/models/arcnn:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inp")
            answer = http.client.HTTPResponse(slow)  # headers and body may come in separate packets
            answer.begin()
            assert answer.status == 408 and "--body_timeout_seconds" in answer.read().decode()
        assert requests.post(f"{url}/v1/models/arcnn:predict", json=body, timeout=TIMEOUT).status_code == 200
    finally:
        server.stop()


def test_the_batcher_groups_by_key_up_to_the_max_size():
    from vcar_tf.serving.batching import Batcher

    sizes, lock = [], threading.Lock()

    def run_batch(jobs):
        with lock:
            sizes.append(len(jobs))
        if any(j == "bad" for j in jobs):
            raise ValueError("bad")
        return [j * 2 for j in jobs]

    batcher = Batcher(max_batch_size=3, timeout_s=0.3)
    try:
        with ThreadPoolExecutor(7) as pool:
            results = list(pool.map(lambda i: batcher.run(("a" if i < 5 else "b"), i, run_batch), range(7)))
        assert results == [i * 2 for i in range(7)]
        assert max(sizes) <= 3 and sum(sizes) == 7 and len(sizes) < 7
        with pytest.raises(ValueError):
            batcher.run("c", "bad", run_batch)
        assert batcher.run("c", 5, run_batch) == 10  # the loop goes on after an error
    finally:
        batcher.close()


def test_a_batch_counts_rows_and_batches_run_on_several_threads():
    """--max_batch_size counts rows as TF Serving does: requests of 2 rows go 2 to a batch of 4, one
    of 5 rows is refused; two keys' batches run at the same time on two threads."""
    from vcar_tf.serving.batching import Batcher
    from vcar_tf.serving.status import ServingError

    sizes, running, overlapped, lock = [], [0], [False], threading.Lock()

    def run_batch(jobs):
        with lock:
            sizes.append(len(jobs))
            running[0] += 1
            overlapped[0] |= running[0] > 1
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return [j * 2 for j in jobs]

    batcher = Batcher(max_batch_size=4, timeout_s=0.2, threads=2)
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: batcher.run("a" if i < 6 else "b", i, run_batch, rows=2), range(8)))
        assert results == [i * 2 for i in range(8)]
        assert max(sizes) == 2 and sum(sizes) == 8 and overlapped[0]
        with pytest.raises(ServingError, match="Task size 5 is larger than maximum input batch size 4") as info:
            batcher.run("a", 1, run_batch, rows=5)
        assert info.value.code == "INVALID_ARGUMENT"
    finally:
        batcher.close()


def test_closing_the_batcher_fails_its_queued_requests_instead_of_leaving_them_waiting():
    """At shutdown, requests still queued behind a running batch get UNAVAILABLE (they waited for
    ever, and their non-daemon worker threads kept vcar-serve from exiting); the running batch ends."""
    from vcar_tf.serving.batching import Batcher
    from vcar_tf.serving.status import ServingError

    started = threading.Event()

    def run_batch(jobs):
        started.set()
        time.sleep(1.0)
        return [j * 2 for j in jobs]

    batcher = Batcher(max_batch_size=1, timeout_s=0.0)
    outcomes = []

    def request(i):
        try:
            outcomes.append(batcher.run("a", i, run_batch))
        except ServingError as e:
            outcomes.append(e.code)

    threads = [threading.Thread(target=request, args=(i,), daemon=True) for i in range(3)]  # daemon: a hang fails
    for thread in threads:
        thread.start()
    assert started.wait(10)
    time.sleep(0.2)  # the other two are queued behind the running batch
    batcher.close()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(map(str, outcomes))[-2:] == ["UNAVAILABLE"] * 2 and len(outcomes) == 3, outcomes


def test_a_replaced_version_is_unloaded_after_its_in_flight_requests(tmp_path):
    """ModelStore with a stand-in loader: version 2 takes new requests at once, version 1 lives
    until the request that holds it ends; a version failing to load leaves 2 serving."""
    from vcar_tf.serving.model_store import ModelConfig, ModelStore
    from vcar_tf.serving.status import ServingError

    loaded = []

    def loader(path):
        if os.path.basename(path) == "3":
            raise ValueError("corrupt")
        loaded.append(path)
        return object(), {}, {}

    base = tmp_path / "m"
    for version in ("1", "2", "3"):
        (base / version).mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"")
    log = []
    store = ModelStore([ModelConfig("m", str(base))], loader=loader, log=log.append)
    assert store.poll() == ["m"]
    old = store.pin("m")
    (base / "2" / "saved_model.pb").write_bytes(b"")
    assert store.poll() == ["m"] and store.served("m").version == 2
    assert old.signatures is not None and old.retired  # still in use
    with pytest.raises(ServingError, match=r"Specific\(m, 1\)"):
        store.pin("m", 1)  # a replaced version takes no new request
    store.unpin(old)
    assert old.signatures is None and any("unloaded m version 1" in line for line in log)
    (base / "3" / "saved_model.pb").write_bytes(b"")
    assert store.poll() == [] and store.served("m").version == 2
    assert store.status("m") == [(3, "END", "UNKNOWN", "ValueError: corrupt"), (2, "AVAILABLE", "OK", "")]
    assert store.poll() == [] and len(loaded) == 2  # an unchanged failed version is not retried
    labelled = ModelStore([ModelConfig("m", str(base), version_labels={"stable": 2, "canary": 3})], loader=loader,
                          log=log.append)
    labelled.poll()
    assert labelled.unserved_labels() == [("m", "canary", 3)]  # said at start; TF Serving refuses it


def test_version_folders_as_tf_serving_reads_them(tmp_path):
    """A zero-padded folder is its version, a non-ASCII digit name is ignored, a failed version is
    retried when any of its files changes (a copy that wrote saved_model.pb before variables/), and
    a model with no version is NOT_FOUND in its status."""
    from vcar_tf.serving.model_store import ModelConfig, ModelStore
    from vcar_tf.serving.status import ServingError

    loaded = []

    def loader(path):
        if not os.path.exists(os.path.join(path, "variables", "variables.index")):
            raise ValueError("no variables")
        loaded.append(os.path.basename(path))
        return object(), {}, {}

    base, empty = tmp_path / "m", tmp_path / "empty"
    for folder in ("0004", "²"):
        (base / folder / "variables").mkdir(parents=True)
        (base / folder / "saved_model.pb").write_bytes(b"")
    empty.mkdir()
    store = ModelStore([ModelConfig("m", str(base)), ModelConfig("e", str(empty))], loader=loader, log=lambda line: None)
    assert store.poll() == [] and store.status("m") == [(4, "END", "UNKNOWN", "ValueError: no variables")]
    assert store.poll() == []  # unchanged: not retried
    (base / "0004" / "variables" / "variables.index").write_bytes(b"x")
    assert store.poll() == ["m"] and loaded == ["0004"] and store.served("m").version == 4
    with pytest.raises(ServingError, match="Could not find any versions of model e") as info:
        store.status("e")
    assert info.value.code == "NOT_FOUND"


def test_in_flight_requests_are_counted_in_the_metrics():
    from vcar_tf.serving.metrics import ServingMetrics
    from vcar_tf.serving.predictor import Predictor
    from vcar_tf.serving.status import ServingError

    metrics = ServingMetrics()
    predictor = Predictor(None, 100, 2, in_flight=metrics.in_flight)
    gauge = lambda: metrics.registry.get_sample_value("vcar_serve_in_flight_requests")  # noqa: E731
    with predictor.slot():
        with predictor.slot():
            assert gauge() == 2
            with pytest.raises(ServingError, match="overloaded"):
                with predictor.slot():
                    pass
        assert gauge() == 1
    assert gauge() == 0


def test_command_errors_are_one_line_and_leave_nothing_running(exports, capsys):
    import socket

    from vcar_tf.cli.serve import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        base = exports["arcnn"].base_path
        threads = threading.active_count()
        for argv, message in ((["--model_base_path", "/nonexistent"], "is not a folder"),
                              (["--port", "-3"], "invalid port value"),
                              (["--model_config_file", base + "/1/saved_model.pb"], "not a text file"),
                              (["--model_base_path", base, "--rest_api_port", port, "--port", "0"], "already in use"),
                              (["--model_base_path", base, "--rest_api_port", "0", "--port", port], "cannot bind gRPC")):
            with pytest.raises(SystemExit) as info:
                main(argv)
            last = capsys.readouterr().err.strip().splitlines()[-1]
            assert info.value.code == 2 and last.startswith("error:") and message in last, last
        assert threading.active_count() <= threads + 1  # the gRPC server's pool may linger a moment
