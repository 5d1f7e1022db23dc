"""The run folder that train_main.py writes, and what reads it back.

    MODEL_DIR/config.json       the TrainConfig of the run
    MODEL_DIR/checkpoints/      tf.train checkpoints (model, optimizer, step)
    MODEL_DIR/logs/             TensorBoard
    MODEL_DIR/eval/             the evaluation report (report.csv, report.md, curves/)
    MODEL_DIR/serving/NAME/N/   TF Serving SavedModels
"""

import dataclasses
import json
import os
import shutil
import sys
import tempfile

import tensorflow as tf

from vcar_tf import models
from vcar_tf.errors import VcarError
from vcar_tf.models.presets import from_preset
from vcar_tf.fileutil import ensure_writable_dir, write_text_atomic
from vcar_tf.train.config import TrainConfig


class RunFolder:
    """The paths of a run folder (module docstring)."""

    def __init__(self, root):
        self.root = root
        self.config = os.path.join(root, "config.json")
        self.checkpoints = os.path.join(root, "checkpoints")
        self.logs = os.path.join(root, "logs")
        self.eval = os.path.join(root, "eval")
        self.serving = os.path.join(root, "serving")


def read_config_dict(model_dir):
    """The raw config.json of a run, or None when there is none."""
    path = RunFolder(model_dir).config
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_config(model_dir):
    """The TrainConfig of a run."""
    values = read_config_dict(model_dir)
    if values is None:
        raise VcarError(f"{model_dir} is not a training run (no config.json)")
    return TrainConfig(**values)


def write_config(model_dir, cfg):
    write_text_atomic(RunFolder(model_dir).config, json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")


def write_run(model_dir, model, cfg, step=0):
    """A run folder holding `model` as its latest checkpoint, that load_run, --init_from and every
    command read; written beside model_dir and renamed, so it is never half there."""
    parent = os.path.dirname(os.path.abspath(model_dir))
    if os.path.exists(model_dir) and os.listdir(model_dir):
        raise VcarError(f"{model_dir} exists and is not empty")
    ensure_writable_dir(parent)
    tmp = tempfile.mkdtemp(prefix=".tmp-run-", dir=parent)
    try:
        write_config(tmp, cfg)
        checkpoint = tf.train.Checkpoint(model=model, step=tf.Variable(step, dtype=tf.int64, trainable=False))
        tf.train.CheckpointManager(checkpoint, RunFolder(tmp).checkpoints, max_to_keep=1).save(checkpoint_number=step)
        if os.path.isdir(model_dir):
            os.rmdir(model_dir)
        os.replace(tmp, model_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model_dir


def run_label(run):
    """'MODEL (N steps)' of a run folder, or None for a folder that is not one."""
    values = read_config_dict(run) if os.path.isdir(run) else None
    return f"{values['model']} ({values['steps']} steps)" if values else None


def run_radius(cfg):
    """The radius a config's model uses: --radius, or the registered model's."""
    return models.spec(cfg.model).radius if cfg.radius is None else cfg.radius


def build_model(cfg):
    """The registered model of a config, with its --radius override."""
    return models.build(cfg.model, **({} if cfg.radius is None else {"radius": cfg.radius}))


def load_run(model_dir):
    """(model restored from the latest checkpoint, its TrainConfig, its radius) of a train_main.py run."""
    cfg = read_config(model_dir)
    model = build_model(cfg)
    latest = tf.train.latest_checkpoint(RunFolder(model_dir).checkpoints)
    if latest is None:
        raise VcarError(f"{model_dir} has no checkpoint")
    try:
        tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        raise VcarError(f"cannot load {latest}: {str(e).splitlines()[0]}") from None
    return model, cfg, run_radius(cfg)


PRESET_PREFIX = "preset:"


def initialise_from(model, run_dir):
    """Copy into `model` every variable of run_dir's latest checkpoint (or of the preset named by
    'preset:NAME') with the same path and shape; returns the copied variables of `model`."""
    if run_dir.startswith(PRESET_PREFIX):
        source = from_preset(run_dir[len(PRESET_PREFIX):])
    else:
        source, _, _ = load_run(run_dir)
    by_path = {v.path: v for v in source.variables}
    copied = []
    for v in model.variables:
        w = by_path.get(v.path)
        if w is not None and tuple(w.shape) == tuple(v.shape):
            v.assign(w)
            copied.append(v)
    if not copied:
        raise VcarError(f"--init_from {run_dir}: no variable of {source.name} matches {model.name}")
    print(f"initialised {len(copied)} of {len(model.variables)} variables from {run_dir} ({source.name})",
          file=sys.stderr)
    return copied
