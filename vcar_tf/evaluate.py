"""Evaluate a trained run on whole sequences: PSNR/SSIM before and after, Δ, SD and PVD.

    python -m vcar_tf.evaluate --model_dir RUN [--data DIR] [--qp 37] [--out RUN/eval]
    python -m vcar_tf.evaluate --saved_model DIR/NAME/VERSION [--data DIR] [--qp 37] --out DIR

Writes the same report as vcar-report (CSV, Markdown, per-frame PSNR curves) with the enhanced
columns. With no --data it evaluates on the held-out split of the run's own dataset (for a
SavedModel: of the embedded sample dataset).
"""

import argparse
import json
import os
import sys

from vcar_tf.errors import VcarError, cli_main


def load_run(model_dir):
    """(model restored from the latest checkpoint, its TrainConfig) of a train_main.py run."""
    import tensorflow as tf

    from vcar_tf import models
    from vcar_tf.train.config import TrainConfig

    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        raise VcarError(f"{model_dir} is not a training run (no config.json)")
    with open(path) as f:
        cfg = TrainConfig(**json.load(f))
    model = models.build(cfg.model, **({} if cfg.radius is None else {"radius": cfg.radius}))
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if latest is None:
        raise VcarError(f"{model_dir} has no checkpoint")
    try:
        tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        raise VcarError(f"cannot load {latest}: {str(e).splitlines()[0]}") from None
    return model, cfg


class SavedModelEnhancer:
    """A TF Serving export used like a Keras model: `enhancer(x)` runs its serve_float signature;
    a recurrent export's step_float and initial_state serve `step` and `initial_state`."""

    def __init__(self, path):
        import tensorflow as tf

        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise VcarError(f"{path} is not a SavedModel (no saved_model.pb); pass DIR/NAME/VERSION")
        signatures = tf.saved_model.load(path).signatures
        self.recurrent = "step_float" in signatures
        name = "step_float" if self.recurrent else "serve_float"
        if name not in signatures:
            raise VcarError(f"{path} has no serve_float or step_float signature (not a vcar-export SavedModel)")
        self._fn = signatures[name]
        self._initial = signatures.get("initial_state")
        self.radius = (self._fn.structured_input_signature[1]["frames"].shape[1] - 1) // 2

    def __call__(self, x, training=False):
        import tensorflow as tf

        return self._fn(frames=tf.convert_to_tensor(x, tf.float32))["enhanced"]

    def initial_state(self, window):
        import tensorflow as tf

        return self._initial(frames=tf.convert_to_tensor(window, tf.float32))["hidden"]

    def step(self, window, hidden):
        import tensorflow as tf

        out = self._fn(frames=tf.convert_to_tensor(window, tf.float32), hidden=tf.convert_to_tensor(hidden))
        return out["enhanced"], out["hidden"]


def load_model_and_config(args):
    """(model or SavedModelEnhancer, radius, TrainConfig giving data/qp) from --model_dir or --saved_model."""
    from vcar_tf import models
    from vcar_tf.train.config import TrainConfig

    if (args.model_dir is None) == (args.saved_model is None):
        raise VcarError("pass exactly one of --model_dir and --saved_model")
    if args.saved_model is not None:
        if args.out is None:
            raise VcarError("--saved_model needs --out")
        model = SavedModelEnhancer(args.saved_model)
        return model, model.radius, TrainConfig(model=os.path.basename(os.path.dirname(args.saved_model)))
    model, cfg = load_run(args.model_dir)
    return model, models.spec(cfg.model).radius if cfg.radius is None else cfg.radius, cfg


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m vcar_tf.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model_dir", default=None, help="a train_main.py run (latest checkpoint)")
    p.add_argument("--saved_model", default=None, help="a vcar-export SavedModel version folder")
    p.add_argument("--data", default=None, help="dataset folder (default: the run's own, held-out split)")
    p.add_argument("--qp", type=int, default=None, help="default: the run's QP")
    p.add_argument("--out", default=None, help="default: MODEL_DIR/eval")
    args = p.parse_args(argv)
    from vcar_tf.data.layout import find_pairs
    from vcar_tf.evaluation import evaluate_pairs
    from vcar_tf.report import write_report
    from vcar_tf.train.trainer import split_datasets

    model, radius, cfg = load_model_and_config(args)
    if args.data is not None:
        cfg.data = args.data
    cfg.qp = args.qp if args.qp is not None else cfg.qp
    train_roots, val_roots = split_datasets(cfg)
    roots = val_roots or train_roots
    rows, curves = [], {}
    for split, root in roots.items():
        r, c = evaluate_pairs(model, find_pairs(root, cfg.qp), radius, split)
        rows += r
        curves.update(c)
    out = args.out or os.path.join(args.model_dir, "eval")
    print(write_report(out, rows, curves, f"{cfg.model} at QP{cfg.qp}"))
    print(f"wrote {out}/report.csv, report.md and curves/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
