"""The run folder that train_main.py writes: its paths and its config, read without TensorFlow
(vcar_tf.train.run restores its checkpoints).

    MODEL_DIR/config.json       the TrainConfig of the run
    MODEL_DIR/checkpoints/      tf.train checkpoints (model, optimizer, step)
    MODEL_DIR/best/             the checkpoint (model, step) with the best val ΔPSNR so far,
                                best.json: its step, val ΔPSNR and ΔSSIM, and eval/: that validation's report
    MODEL_DIR/logs/             TensorBoard
    MODEL_DIR/eval/             the evaluation report (report.csv, report.md, curves/)
    MODEL_DIR/serving/NAME/N/   TF Serving SavedModels
    MODEL_DIR/pending_validation.json  the step of a validation under way (a resume redoes it if killed)
    MODEL_DIR/imported.json     (vcar-import) the released checkpoint the weights come from; copied
                                into a run that --init_from starts from such weights
"""

import dataclasses
import json
import os

from vcar_tf.errors import VcarError
from vcar_tf.presets import preset_card
from vcar_tf.train.config import TrainConfig


class RunFolder:
    """The paths of a run folder (module docstring)."""

    def __init__(self, root):
        self.root = root
        self.config = os.path.join(root, "config.json")
        self.checkpoints = os.path.join(root, "checkpoints")
        self.best = os.path.join(root, "best")
        self.best_json = os.path.join(self.best, "best.json")
        self.best_eval = os.path.join(self.best, "eval")
        self.logs = os.path.join(root, "logs")
        self.eval = os.path.join(root, "eval")
        self.serving = os.path.join(root, "serving")
        self.imported = os.path.join(root, "imported.json")
        self.pending_validation = os.path.join(root, "pending_validation.json")


def imported_origin(run, seen=()):
    """The run folder holding released weights (vcar-import's imported.json) that `run` is, or
    starts from through its --init_from runs; None when its weights are this project's own."""
    if not os.path.isdir(run) or os.path.realpath(run) in seen:
        return None
    if os.path.exists(RunFolder(run).imported):
        return run
    source = (read_config_dict(run) or {}).get("init_from")
    if isinstance(source, str) and not source.startswith(PRESET_PREFIX):
        return imported_origin(source, (*seen, os.path.realpath(run)))
    return None


def read_json_object(path, what):
    """The JSON object in `path`, or None when there is no file; `what` names it in errors."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        try:
            values = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise VcarError(f"{path} is not valid JSON ({e}); it is not {what}") from None
    if not isinstance(values, dict):
        raise VcarError(f"{path} is not a JSON object; it is not {what}")
    return values


def read_config_dict(model_dir):
    """The raw config.json of a run, or None when there is none."""
    return read_json_object(RunFolder(model_dir).config, "a config.json that train_main.py wrote")


def read_config(model_dir):
    """The TrainConfig of a run."""
    values = read_config_dict(model_dir)
    if values is None:
        raise VcarError(f"{model_dir} is not a training run (no config.json)")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise VcarError(f"{RunFolder(model_dir).config}: unknown setting(s) {', '.join(unknown)}")
    if "model" not in values:
        raise VcarError(f"{RunFolder(model_dir).config} names no model")
    values["lr_milestones"] = tuple(values.get("lr_milestones", ()))
    try:
        return TrainConfig(**values).validate(min_steps=0)
    except (TypeError, ValueError) as e:
        raise VcarError(f"{RunFolder(model_dir).config}: {e}") from None


def run_label(run):
    """'MODEL (N steps)' of a run folder, or None for a folder that is not one."""
    values = read_config_dict(run) if os.path.isdir(run) else None
    if not values or not {"model", "steps"} <= set(values):
        return None
    return f"{values['model']} ({values['steps']} steps)"


PRESET_PREFIX = "preset:"  # --init_from=preset:NAME names a shipped preset instead of a run folder


def init_source_to_read(cfg, work_dir=None):
    """The --init_from source a run reads, checked (a one-line error before any data is prepared):
    None when it resumes without --init_lr, as the checkpoint then restores every weight. `work_dir`
    is the folder whose checkpoints this process restores (default --model_dir)."""
    if not cfg.init_from:
        return None
    resuming = os.path.exists(os.path.join(RunFolder(work_dir or cfg.model_dir).checkpoints, "checkpoint"))
    if resuming and cfg.init_lr is None:
        return None
    try:
        check_init_source(cfg.init_from)
    except VcarError as e:
        if not resuming:
            raise
        raise VcarError(f"{e} (resuming {cfg.model_dir} with --init_lr reads it to know which weights train "
                        "at --init_lr)") from None
    return cfg.init_from


def check_init_source(run_dir):
    """A one-line error now, before any data is prepared (or TensorFlow loaded), for an --init_from
    that names no preset or no run folder."""
    if run_dir.startswith(PRESET_PREFIX):
        preset_card(run_dir[len(PRESET_PREFIX):])
    else:
        read_config(run_dir)
