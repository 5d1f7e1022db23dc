"""scripts/layer_activity.py: a layer whose units never fire reads as dead, live ones do not, and
what it cannot probe is a one-line error."""

import os

import numpy as np

from tests.conftest import REPO, load_script, run_cli

SCRIPT = os.path.join(REPO, "scripts", "layer_activity.py")


def test_a_layer_killed_by_its_bias_reads_dead_and_the_others_alive():
    from vcar_tf.models import build

    script = load_script("layer_activity")
    model = build("stdf_r3")
    names = script.relu_layers(model)
    assert "fusion_relu" in names and "qe_7" in names and "qe_8" not in names  # qe_8: the residual head, no ReLU
    kernel, bias = model.get_layer("qe_3").get_weights()
    model.get_layer("qe_3").set_weights([kernel, np.full_like(bias, -1e3)])
    rows = [(active, std) for _, active, _, std in script.layer_activity(model, 3, names, size=32)]
    killed = names.index("qe_3")
    assert rows[killed:] == [(0.0, 0.0)] * (len(names) - killed)  # and every layer after it (zero biases)
    assert killed > 3 and all(active > 0.2 and std > 0 for active, std in rows[:killed]), rows


def test_the_command_prints_a_row_per_layer_and_refuses_what_it_cannot_probe():
    r = run_cli(SCRIPT, "--preset", "dncnn_x265_qp37", "--size", "32")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split() for line in r.stdout.splitlines()[2:]]
    assert len(rows) >= 10 and all(0 < float(row[1]) < 1 for row in rows), r.stdout
    for argv, message in ((["--preset", "stdf_r3_x265_qp37", "--layers", "nope"], "has no layer named nope..."),
                          (["--preset", "rfda_x265_qp37"], "is recurrent"),
                          (["--preset", "stdf_r3_x265_qp37", "--size", "4"], "--size must be at least 8")):
        r = run_cli(SCRIPT, *argv)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and lines[-1].startswith("error: ") and message in lines[-1], (argv, r.stderr[-1000:])
