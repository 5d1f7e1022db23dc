"""The package's layering (tools/import_graph.py) and the recurrent protocol's one definition."""

import os
import subprocess
import sys

import pytest

from vcar_tf import models
from vcar_tf.models.recurrent import PROTOCOL, is_recurrent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_graph_has_no_circle_and_keeps_the_layers():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "import_graph.py"), "--root", ROOT, "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 circles" in r.stdout


def test_import_graph_finds_a_circle_and_an_upward_import(tmp_path):
    """The checker is not blind: a package with a circle and a layer break fails it."""
    pkg = tmp_path / "vcar_tf"
    (pkg / "models").mkdir(parents=True)
    (pkg / "train").mkdir()
    for path in (pkg / "__init__.py", pkg / "models" / "__init__.py", pkg / "train" / "__init__.py"):
        path.write_text("")
    (pkg / "models" / "a.py").write_text("from vcar_tf.train import b\n")
    (pkg / "train" / "b.py").write_text("def f():\n    from vcar_tf.models import a\n")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "import_graph.py"), "--root", str(tmp_path),
                        "--check"], capture_output=True, text=True)
    assert r.returncode == 1
    assert "import circles: 1" in r.stdout and "vcar_tf.models.a -> vcar_tf.train.b (layer 4 imports layer 7)" in r.stdout
    assert "lazy imports that dodge a circle: 1" in r.stdout


@pytest.mark.parametrize("name", models.names())
def test_registry_and_model_agree_on_the_recurrent_protocol(name):
    model = models.build(name)
    assert is_recurrent(model) == models.spec(name).recurrent
    if is_recurrent(model):
        assert all(hasattr(model, attr) for attr in PROTOCOL)
