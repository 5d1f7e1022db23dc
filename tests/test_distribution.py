import json
import os
import socket
import subprocess
import sys

import numpy as np

from tests.conftest import REPO
from tests.test_trainer import tiny_dataset  # noqa: F401  (fixture)

WORKER = os.path.join(REPO, "tests", "dist_worker.py")


def _run(args, env=None):
    return subprocess.Popen([sys.executable, WORKER, *args], cwd=REPO, env=dict(os.environ, **(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _load(out):
    weights = np.load(out)
    return [weights[k] for k in sorted(weights.files, key=lambda k: int(k.split("_")[1]))], json.load(open(out + ".json"))


def test_mirrored_over_two_logical_cpus_matches_one_device(tiny_dataset, tmp_path):  # noqa: F811
    results = {}
    for mode in ("one_device", "mirrored"):
        p = _run([mode, tiny_dataset, str(tmp_path / mode), str(tmp_path / f"{mode}.npz")])
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        results[mode] = _load(str(tmp_path / f"{mode}.npz"))
    (w1, m1), (w2, m2) = results["one_device"], results["mirrored"]
    assert m1["replicas"] == 1 and m2["replicas"] == 2
    np.testing.assert_allclose(m1["losses"], m2["losses"], rtol=1e-4)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_local_workers_train_together(tiny_dataset, tmp_path):  # noqa: F811
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        procs.append(_run(["multi_worker", tiny_dataset, str(tmp_path / "run"), str(tmp_path / f"w{i}.npz")],
                          env={"TF_CONFIG": tf_config}))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    (w0, m0), (w1, m1) = _load(str(tmp_path / "w0.npz")), _load(str(tmp_path / "w1.npz"))
    assert m0["replicas"] == m1["replicas"] == 2 and m0["chief"] and not m1["chief"]
    assert m0["losses"] == m1["losses"]
    for a, b in zip(w0, w1):
        np.testing.assert_array_equal(a, b)
    assert os.path.exists(tmp_path / "run" / "checkpoints" / "checkpoint")
