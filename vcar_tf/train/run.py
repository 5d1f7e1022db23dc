"""The run folder that train_main.py writes (its layout: vcar_tf.train.folder), its checkpoints
and the models they restore."""

import contextlib
import dataclasses
import json
import os
import shutil
import sys

import tensorflow as tf

from vcar_tf import models
from vcar_tf.errors import VcarError, first_line
from vcar_tf.models.presets import from_preset
from vcar_tf.fileutil import ensure_writable_dir, hold_folder_lock, make_temp_dir, sweep_temps, write_text_atomic
from vcar_tf.train.config import CHECKPOINTS
from vcar_tf.train.folder import PRESET_PREFIX, RunFolder, read_config, read_json_object


# What a missing, truncated or foreign checkpoint raises when it is restored.
CHECKPOINT_ERRORS = (tf.errors.OpError, AssertionError, ValueError, IndexError)


@contextlib.contextmanager
def hold_run_lock(model_dir):
    """The run folder's lock, held while training (two trainings never write one folder); what
    killed checkpoint writes left (tf.train's `ckpt-N_temp/` folders) is swept once it is held."""
    with hold_folder_lock(model_dir, "training"):
        for folder in (RunFolder(model_dir).checkpoints, RunFolder(model_dir).best):
            sweep_temps(folder, ("*_temp",))
        yield


def write_config(model_dir, cfg):
    write_text_atomic(RunFolder(model_dir).config, json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")


def write_run(model_dir, model, cfg, step=0, extra=None):
    """A run folder holding `model` as its latest checkpoint, that load_run, --init_from and every
    command read, and `extra` {file name: text}; written beside model_dir and renamed, so it is
    never half there."""
    parent = os.path.dirname(os.path.abspath(model_dir))
    if os.path.exists(model_dir) and os.listdir(model_dir):
        raise VcarError(f"{model_dir} exists and is not empty")
    ensure_writable_dir(parent)
    tmp = make_temp_dir(parent, ".tmp-run-")
    try:
        write_config(tmp, cfg)
        for name, text in (extra or {}).items():
            write_text_atomic(os.path.join(tmp, name), text)
        checkpoint = tf.train.Checkpoint(model=model, step=tf.Variable(step, dtype=tf.int64, trainable=False))
        tf.train.CheckpointManager(checkpoint, RunFolder(tmp).checkpoints, max_to_keep=1).save(checkpoint_number=step)
        if os.path.isdir(model_dir):
            os.rmdir(model_dir)
        os.replace(tmp, model_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model_dir


def run_radius(cfg):
    """The radius a config's model uses: --radius, or the registered model's."""
    return models.spec(cfg.model).radius if cfg.radius is None else cfg.radius


def build_model(cfg):
    """The registered model of a config, with its --radius override."""
    return models.build(cfg.model, **({} if cfg.radius is None else {"radius": cfg.radius}))


def read_best(model_dir):
    """best.json of a run ({'step', 'delta_psnr', 'delta_ssim_x100'}), or None before its first validation."""
    return read_json_object(RunFolder(model_dir).best_json, "a best.json that training wrote")


def load_run(model_dir, checkpoint="latest"):
    """(model restored from the run's latest checkpoint, or from its best on val, its TrainConfig,
    its radius) of a train_main.py run."""
    if checkpoint not in CHECKPOINTS:
        raise VcarError(f"unknown checkpoint {checkpoint!r}; use one of {', '.join(CHECKPOINTS)}")
    cfg = read_config(model_dir)
    model = build_model(cfg)
    folder = RunFolder(model_dir)
    latest = tf.train.latest_checkpoint(folder.best if checkpoint == "best" else folder.checkpoints)
    if latest is None:
        raise VcarError(f"{model_dir} has no best checkpoint (a run keeps one from its first validation on)"
                        if checkpoint == "best" else f"{model_dir} has no checkpoint")
    try:
        tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    except CHECKPOINT_ERRORS as e:
        raise VcarError(f"cannot load {latest}: {first_line(e)}") from None
    return model, cfg, run_radius(cfg)


def checkpoint_step(model_dir, checkpoint="latest"):
    """The training step saved in a run's latest (or best) checkpoint."""
    folder = RunFolder(model_dir)
    path = tf.train.latest_checkpoint(folder.best if checkpoint == "best" else folder.checkpoints)
    if path is None:
        raise VcarError(f"{model_dir} has no {checkpoint} checkpoint")
    return int(tf.train.load_checkpoint(path).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


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
