import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("VCAR_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))


def shared_rows(split=None):
    """Rows of ../shared/data/MANIFEST.tsv (skips the test when the folder is absent)."""
    import csv

    manifest = os.path.join(SHARED_DATA, "MANIFEST.tsv")
    if not os.path.exists(manifest):
        pytest.skip("../shared/data is not present")
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [r for r in rows if split in (None, r["split"])]


def shared_file(name):
    row = next(r for r in shared_rows() if r["name"] == name)
    return os.path.join(SHARED_DATA, row["file"])


def load_script(name):
    """scripts/NAME.py as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(*args, env=None):
    """Run `python ...` in a fresh process; returns CompletedProcess with text output.
    env: variables to set over os.environ's; one given as None is removed."""
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full_env,
                          cwd=REPO, timeout=600)


# Runs a command (a module, or a script ending in .py) with TensorFlow and Keras unimportable: a
# command that needs them before its error line fails with a traceback instead.
WITHOUT_TF = ("import runpy, sys; sys.modules['tensorflow'] = sys.modules['keras'] = None; target = sys.argv.pop(1); "
              "runpy.run_path(target, run_name='__main__') if target.endswith('.py') else "
              "runpy.run_module(target, run_name='__main__', alter_sys=True)")


def run_without_tf(*argv):
    """A command run in a fresh process that cannot import TensorFlow or Keras (see WITHOUT_TF)."""
    return subprocess.run([sys.executable, "-c", WITHOUT_TF, *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


# TensorFlow's start-up log lines, printed on some CPUs whatever TF_CPP_MIN_LOG_LEVEL says (oneDNN's
# note on Intel CPUs, where its optimisations are on by default, comes before absl's logging is set up)
TF_STARTUP_LOG = re.compile(r"^(WARNING: All log messages before absl::InitializeLog|[IWEF]\d{4} \d\d:\d\d:\d\d"
                            r"|To enable the following instructions: )")  # the CPU-feature line continues


def own_stderr(stderr):
    """A command's stderr, stripped, without TensorFlow's start-up log lines."""
    return "\n".join(line for line in stderr.strip().splitlines() if not TF_STARTUP_LOG.match(line))


def make_planes(width, height, t, seed=0):
    """Deterministic (y, u, v) planes for frame t; y encodes t so tests can read indices back."""
    rng = np.random.default_rng([seed, t])
    y = rng.integers(0, 256, (height, width), dtype=np.uint8)
    u = rng.integers(0, 256, (height // 2, width // 2), dtype=np.uint8)
    v = rng.integers(0, 256, (height // 2, width // 2), dtype=np.uint8)
    return y, u, v


@pytest.fixture(scope="session")
def sample_cache(tmp_path_factory):
    """The embedded sample dataset, built once per test session in a private cache."""
    from vcar_tf.data.sample import ensure_sample_dataset

    cache = str(tmp_path_factory.mktemp("cache"))
    return cache, ensure_sample_dataset(cache_dir=cache)


@pytest.fixture(scope="session")
def shared_qp37(tmp_path_factory):
    """The shared train and test sets prepared at x265 QP37 (about 30 s on 2 cores)."""
    shared_rows()
    out = str(tmp_path_factory.mktemp("shared_qp37"))
    from vcar_tf.data.codec import CodecSettings
    from vcar_tf.data.prepare import find_sources, prepare_dataset

    summaries = {}
    for split in ("train", "test"):
        summaries[split] = prepare_dataset(find_sources([SHARED_DATA], split), os.path.join(out, split),
                                           [CodecSettings(qp=37)])
    return out, summaries


def fused_op_or_skip():
    """The fused deformable conv library; the test skips where no g++ can build it, and fails
    (VcarError) where g++ is there but the build or load fails."""
    from vcar_tf.ops import deform_conv_op

    if shutil.which("g++") is None:
        pytest.skip("no g++ to build the fused deformable conv: the composite is all there is")
    return deform_conv_op.load_deform_conv(required=True)


def built_or_skip(load, what):
    """The op library load() returns: skipped without g++, failed where g++ is there but it did not build."""
    if shutil.which("g++") is None:
        pytest.skip(f"no g++ to build the {what}")
    lib = load()
    assert lib is not None, f"g++ is there but the {what} did not build"
    return lib


def break_op_source(monkeypatch, tmp_path, source):
    """custom_ops/<source> replaced by a file that does not compile, with an empty op cache and no library
    loaded yet: the next load builds it and fails."""
    from vcar_tf.ops import build

    path = tmp_path / source
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not C++\n")
    monkeypatch.setattr(build, "source_dir", lambda: str(tmp_path))
    monkeypatch.setattr(build, "_OPTIONAL", {})
    monkeypatch.setenv("VCAR_TF_CACHE", str(tmp_path / "cache"))


def perturb_weights(model, seed=0, scale=0.05):
    """Add noise to every weight, so the zero-initialised residual head stops hiding errors in
    save/load and export tests; returns the model."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(np.asarray(w) + rng.normal(0.0, scale, w.shape).astype(w.dtype))
    return model
