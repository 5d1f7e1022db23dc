"""Write the legacy fixtures of tests/test_legacy_checkpoints.py: small variants of every
registered model with random weights, as a tf.train checkpoint and (some) as .keras files, with
their output on a fixed input; and a train_main.py-style run folder of full-size AR-CNN.

    python tests/legacy/make_legacy_fixtures.py --out tests/legacy

Run once, on main at 2aac3d0 (before the package was reorganised), so that the test proves that
files written by that code still load, by layer and variable path, and compute the same.
Uses only the public API that did not move: vcar_tf.models.build and TrainConfig.
"""

import argparse
import dataclasses
import json
import os

import numpy as np

# (overrides, input shape) per registered model: small, but every layer of the full model is there
SMALL = {
    "arcnn": ({"channels": (8, 4, 4, 1)}, (1, 1, 20, 24, 1)),
    "dncnn": ({"depth": 4, "channels": 8}, (1, 1, 20, 24, 1)),
    "stifn_r3": ({"nf3d": 4, "n3d": 1, "nf_fuse": 8, "nf_qe": 8, "n_res": 1}, (1, 7, 20, 24, 1)),
    "stifn_r3l": ({"nf3d": 4, "n3d": 2, "nf_fuse": 8, "nf_qe": 8, "n_res": 2}, (1, 7, 20, 24, 1)),
    "stdf_r3": ({"nf": 8, "out_nc": 8, "nf_qe": 8, "nb_qe": 3}, (1, 7, 20, 24, 1)),
    "stdf_r3l": ({"nf": 8, "out_nc": 8, "nf_qe": 8, "nb_qe": 4}, (1, 7, 20, 24, 1)),
    "nl_convlstm": ({"nf": 8, "n_enc": 1, "n_dec": 1}, (1, 7, 20, 24, 1)),
    "stdf_dsta": ({"nf": 8, "out_nc": 8, "nf_qe": 8, "nb_qe": 4}, (1, 7, 20, 24, 1)),
    "rfda": ({"nf": 8, "out_nc": 8, "nf_qe": 8, "nb_qe": 4}, (1, 4, 20, 24, 1)),
    "stdf_rf": ({"nf": 8, "out_nc": 8, "nf_qe": 8, "nb_qe": 3}, (1, 4, 20, 24, 1)),
}
KERAS_FILES = ("arcnn", "stdf_r3", "nl_convlstm", "rfda")
SIGNATURE_MODELS = ("arcnn", "rfda")  # a window model and a recurrent one


def describe_signatures(path):
    """{signature: {"inputs": {name: [dtype, shape]}, "outputs": {...}}} of a SavedModel."""
    import tensorflow as tf

    spec = lambda t: [t.dtype.name, t.shape.as_list() if t.shape.rank is not None else None]  # noqa: E731
    out = {}
    for key, fn in tf.saved_model.load(path).signatures.items():
        out[key] = {"inputs": {k: spec(v) for k, v in sorted(fn.structured_input_signature[1].items())},
                    "outputs": {k: spec(v) for k, v in sorted(fn.structured_outputs.items())}}
    return out


def randomise(model, rng):
    """Random values in every variable, so that a wrong mapping changes the output (the zero-initialised
    heads would otherwise hide it)."""
    for v in model.variables:
        values = rng.normal(0.0, 0.2, v.shape)
        if "variance" in v.path:  # batch-norm statistics must stay positive
            values = rng.uniform(0.5, 1.5, v.shape)
        v.assign(values.astype(np.float32))


def main():
    import tensorflow as tf

    from vcar_tf import models
    from vcar_tf.train.config import TrainConfig

    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = p.parse_args()
    rng = np.random.default_rng(2026)
    expected = {}
    for name, (overrides, shape) in SMALL.items():
        model = models.build(name, **overrides)
        x = rng.uniform(0.0, 1.0, shape).astype(np.float32)
        model(x)
        randomise(model, rng)
        expected[f"{name}/input"] = x
        expected[f"{name}/output"] = np.asarray(model(x, training=False))
        tf.train.Checkpoint(model=model).write(os.path.join(args.out, "checkpoints", name, "ckpt"))
        if name in KERAS_FILES:
            os.makedirs(os.path.join(args.out, "keras"), exist_ok=True)
            model.save(os.path.join(args.out, "keras", f"{name}.keras"))
    np.savez_compressed(os.path.join(args.out, "expected.npz"), **expected)

    from vcar_tf.export import export_saved_model
    import tempfile

    signatures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in SIGNATURE_MODELS:
            path = export_saved_model(models.build(name, **SMALL[name][0]), models.spec(name).radius,
                                      os.path.join(tmp, name))
            signatures[name] = describe_signatures(path)
    with open(os.path.join(args.out, "signatures.json"), "w") as f:
        json.dump(signatures, f, indent=1, sort_keys=True)

    run = os.path.join(args.out, "run_arcnn")
    cfg = TrainConfig(model="arcnn", steps=3, model_dir=run)
    model = models.build("arcnn")
    randomise(model, rng)
    step = tf.Variable(3, dtype=tf.int64, trainable=False, name="step")
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model, step=step), os.path.join(run, "checkpoints"),
                               max_to_keep=1).save(checkpoint_number=3)
    with open(os.path.join(run, "config.json"), "w") as f:
        f.write(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    x = rng.uniform(0.0, 1.0, (1, 1, 20, 24, 1)).astype(np.float32)
    np.savez_compressed(os.path.join(run, "expected.npz"), input=x, output=np.asarray(model(x, training=False)))


if __name__ == "__main__":
    main()
