"""A custom training loop under tf.distribute; it builds models only through the registry.

Checkpoints (tf.train.CheckpointManager) hold the model, the optimizer and the step; the model with
the best val ΔPSNR so far is kept apart (RunFolder.best), so a run's length can be chosen on val. The input
stream is a pure function of (seed, sample index), so restoring the step restores the data
position and every random draw. SIGINT/SIGTERM save a checkpoint before exiting.
"""

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import time

import numpy as np
import tensorflow as tf
import keras
from tqdm import tqdm

from vcar_tf import models
from vcar_tf.data.codec import CodecSettings
from vcar_tf.data.layout import find_pairs, is_test_split, prepared_codec_folder, split_datasets
from vcar_tf.data.pipeline import PipelineConfig, make_dataset
from vcar_tf.errors import VcarError, first_line
from vcar_tf.fileutil import check_writable_dir, ensure_writable_dir, write_text_atomic
from vcar_tf.inference.sequence import enhance_sequence, evaluate_pairs
from vcar_tf.ops.bf16_kernels import load_bf16_kernels
from vcar_tf.reporting import write_report
from vcar_tf.train.losses import get_loss, per_example_loss
from vcar_tf.train.folder import RunFolder, imported_origin, init_source_to_read, read_config_dict, read_json_object
from vcar_tf.train.run import (CHECKPOINT_ERRORS, build_model, hold_run_lock, initialise_from, read_best, run_radius,
                               write_config)
from vcar_tf.train.strategy import make_strategy


def learning_rate_schedule(cfg):
    """Halvings at --lr_milestones if given; else linear warm-up then cosine decay to lr/10, or constant."""
    milestones = sorted(int(m) for m in cfg.lr_milestones)
    if milestones:
        values = [cfg.lr * 0.5 ** i for i in range(len(milestones) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(milestones, values)
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule != "cosine":
        raise VcarError(f"unknown lr_schedule {cfg.lr_schedule!r}; choose cosine or constant")
    warmup = min(cfg.warmup_steps, max(cfg.steps - 1, 0))
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else cfg.lr, decay_steps=max(cfg.steps - warmup, 1), alpha=0.1,
        warmup_target=cfg.lr if warmup else None, warmup_steps=warmup)


class Trainer:
    def __init__(self, cfg):
        self.cfg = cfg.validate()
        self.spec = models.spec(cfg.model)
        cfg.model = self.spec.name  # an alias resumes the run of its model
        if cfg.clip_length is not None and not self.spec.recurrent:
            raise VcarError(f"--clip_length is for the recurrent models; {cfg.model} trains on windows of "
                            "2R+1 frames")
        if cfg.model_dir is None:
            cfg.model_dir = os.path.join("runs", self.spec.name)
        self.radius = run_radius(cfg)
        clips = {"mode": "clip", "clip_length": cfg.clip_length or self.spec.clip_length} if self.spec.recurrent else {}
        self.pipeline = PipelineConfig(radius=self.radius, patch=cfg.patch, batch=cfg.batch, seed=cfg.seed,
                                       centre_noise=cfg.centre_noise, **clips)  # checked before data is prepared
        self.loss_fn = get_loss(cfg.loss)
        self.strategy = make_strategy(cfg.strategy)
        keras.utils.set_random_seed(cfg.seed)
        replicas = self.strategy.num_replicas_in_sync
        if cfg.batch % replicas:
            raise VcarError(f"global batch {cfg.batch} is not divisible by the {replicas} replicas")
        check_writable_dir(cfg.model_dir)  # these two before any data is prepared
        # Every worker saves (saving may run collectives); only the chief's files are kept.
        self.work_dir = cfg.model_dir if self.is_chief else os.path.join(
            cfg.model_dir, f".worker-{self.strategy.cluster_resolver.task_id}")
        self.init_source = init_source_to_read(cfg, self.work_dir)
        settings = CodecSettings(codec=cfg.codec, qp=cfg.qp)
        train_roots, val_roots = split_datasets(cfg.data, settings)
        codec_folder = prepared_codec_folder(cfg.data, settings, cfg.codec_folder)
        self.train_pairs = [p for r in train_roots.values() for p in find_pairs(r, cfg.qp, codec_folder)]
        # every choice is made on val/ where the dataset has one; test/ is then never seen in training.
        # Without one, validations report on test/ but choose nothing: no best/ is kept.
        val_roots = {k: v for k, v in val_roots.items() if not is_test_split(k)} or val_roots
        self.selects_on_val = any(not is_test_split(k) for k in val_roots)
        self.val_sets = {split: find_pairs(root, cfg.qp, codec_folder) for split, root in val_roots.items()}
        self.val_pairs = [p for pairs in self.val_sets.values() for p in pairs]
        if cfg.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
            load_bf16_kernels()  # before the step's graph is instantiated
        with self.strategy.scope():
            self.model = build_model(cfg)
            self.initialised = initialise_from(self.model, self.init_source) if self.init_source else []
            self.lr_schedule = learning_rate_schedule(cfg)
            self.groups = self._optimizer_groups()
            self.optimizer = self.groups[0][0]
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        optimizers = {"optimizer": self.optimizer, **({"init_optimizer": self.groups[1][0]} if len(self.groups) > 1 else {})}
        self.checkpoint = tf.train.Checkpoint(model=self.model, step=self.step, **optimizers)
        self.folder = RunFolder(ensure_writable_dir(self.work_dir))
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.folder.checkpoints, max_to_keep=3)
        self.best_manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=self.model, step=self.step),
                                                       self.folder.best, max_to_keep=1)
        self.writer = None  # made once the run's lock is held: a refused second run writes nothing
        self.losses = []
        self._stop = False

    def _optimizer_groups(self):
        """[(optimizer, variables)]: one Adam on the LR schedule, plus one at --init_lr for the
        variables copied by --init_from."""
        if self.cfg.init_lr is None:
            groups = [(keras.optimizers.Adam(self.lr_schedule), self.model.trainable_variables)]
        else:
            if not self.initialised:
                raise VcarError("--init_lr needs --init_from")
            copied = {id(v) for v in self.initialised}
            new = [v for v in self.model.trainable_variables if id(v) not in copied]
            old = [v for v in self.model.trainable_variables if id(v) in copied]
            if not new:
                raise VcarError(f"--init_from {self.cfg.init_from} fills every weight of {self.spec.name}, so --init_lr "
                                "would leave the schedule nothing to train: drop --init_lr to fine-tune all at --lr")
            groups = [(keras.optimizers.Adam(self.lr_schedule), new), (keras.optimizers.Adam(self.cfg.init_lr), old)]
        for optimizer, variables in groups:
            optimizer.build(variables)
        return groups

    @property
    def is_chief(self):
        resolver = getattr(self.strategy, "cluster_resolver", None)
        if resolver is None or not resolver.cluster_spec().as_dict():
            return True
        return resolver.task_type in ("chief", None) or (
            resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())

    def restore(self):
        latest = self.manager.latest_checkpoint
        if latest is None:
            if os.path.exists(os.path.join(self.manager.directory, "checkpoint")):
                raise VcarError(f"{self.manager.directory}: checkpoint index names no readable checkpoint")
            return False  # nothing trained yet: a retry with other settings starts afresh
        self._check_same_run()
        try:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        except CHECKPOINT_ERRORS as e:
            raise VcarError(f"cannot resume from {latest}: {first_line(e)}") from None
        return True

    # What a resume may change: where things go, how often it validates or saves, the devices, and
    # --steps (to extend a run; the cosine schedule then changes from where it is). Any other
    # setting changes the model, the optimizer, the loss or the data stream the checkpoint was on.
    RESUMABLE_CHANGES = ("model_dir", "export", "export_dir", "eval_every", "checkpoint_every", "strategy", "steps")

    def _check_same_run(self):
        """Resuming needs the settings of the run that wrote the checkpoints (RESUMABLE_CHANGES aside)."""
        saved = read_config_dict(self.work_dir)
        if saved is None:
            return
        current = dataclasses.asdict(self.cfg)
        if "model" in saved:
            with contextlib.suppress(VcarError):
                saved["model"] = models.spec(saved["model"]).name
        for key, now in current.items():
            if key in self.RESUMABLE_CHANGES or key not in saved:
                continue
            was = saved[key]
            if key == "lr_milestones":
                was, now = [int(m) for m in was or ()], [int(m) for m in now or ()]
            elif key in ("data", "init_from") and was and now:
                was, now = os.path.normpath(was), os.path.normpath(now)
            if was != now:
                raise VcarError(f"{self.work_dir} was trained with {key}={saved[key]!r}, not {current[key]!r}; "
                                f"resume with the same value or use another --model_dir")

    def batches(self, start_step=0):
        """The distributed iterator of training batches from step `start_step` on (deterministic)."""
        ds = make_dataset(self.train_pairs, self.pipeline, start_sample=start_step * self.cfg.batch)
        return iter(self.strategy.experimental_distribute_dataset(ds))

    def train_step_fn(self):
        """step(x, y) -> the batch's loss: one optimizer step (a tf.function), as run() calls it."""
        global_batch = self.cfg.batch

        def replica_step(x, y):
            with tf.GradientTape() as tape:
                pred = self.model(x, training=True)
                per_example = per_example_loss(self.loss_fn, y, pred)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            grads = iter(tape.gradient(loss, [v for _, group in self.groups for v in group]))
            for optimizer, variables in self.groups:
                optimizer.apply_gradients([(next(grads), v) for v in variables])
            return loss

        @tf.function
        def step(x, y):
            losses = self.strategy.run(replica_step, args=(x, y))
            self.step.assign_add(1)
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

        return step

    def _on_signal(self, signum, frame):
        self._stop = signum

    def validate(self):
        rows, curves = [], {}
        for split, pairs in self.val_sets.items():
            r, c = evaluate_pairs(self.model, pairs, self.radius, split)
            rows += r
            curves.update(c)
        dpsnr = float(np.mean([r["delta_psnr"] for r in rows]))
        dssim = float(np.mean([r["delta_ssim_x100"] for r in rows]))
        return rows, curves, dpsnr, dssim

    def run(self):
        with hold_run_lock(self.work_dir):
            self.writer = self.writer or tf.summary.create_file_writer(self.folder.logs)
            return self._run()

    def _run(self):
        cfg = self.cfg
        resumed = self.restore()
        start = int(self.step.numpy())
        if start > cfg.steps:
            raise VcarError(f"{self.work_dir} is at step {start}, past --steps {cfg.steps}: resume with --steps "
                            f"{start} or more (a finished run is evaluated with vcar-evaluate)")
        write_config(self.work_dir, cfg)
        self._mark_released_origin(resumed)
        if resumed:
            print(f"resumed from {self.manager.latest_checkpoint} at step {start}", file=sys.stderr)
        if not self.selects_on_val:
            print(f"note: {cfg.data or 'the embedded sample'} has no val/ split: validations report on "
                  f"{', '.join(self.val_sets)} and keep no best/ (a choice is made on val only)", file=sys.stderr)
        it = self.batches(start)
        train_step = self.train_step_fn()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        result = None
        try:
            self._redo_pending_validation(start)
            bar = tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.model}", unit="step", file=sys.stderr)
            t0, n0 = time.perf_counter(), start
            while int(self.step.numpy()) < cfg.steps and not self._stop:
                x, y = next(it)
                loss = float(train_step(x, y))
                if not np.isfinite(loss):
                    raise VcarError(f"the loss became {loss} at step {int(self.step.numpy())}: training stopped "
                                    f"without saving it (the last checkpoint is kept); a resume repeats it, so "
                                    f"start a new run from it at a lower rate: --init_from={self.work_dir} "
                                    f"--model_dir=NEW --lr=...")
                self.losses.append(loss)
                step = int(self.step.numpy())
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.5f}")
                if step % 20 == 0 or step == cfg.steps:
                    rate = (step - n0) / (time.perf_counter() - t0)
                    with self.writer.as_default(step=step):
                        tf.summary.scalar("loss", loss)
                        tf.summary.scalar("learning_rate", float(self._lr(step)))
                        tf.summary.scalar("steps_per_second", rate)
                    t0, n0 = time.perf_counter(), step
                if step % cfg.checkpoint_every == 0:
                    self.manager.save(checkpoint_number=step)
                if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps and self.val_pairs:
                    if step % cfg.checkpoint_every:  # a validation takes minutes: a kill during it loses nothing
                        self.manager.save(checkpoint_number=step)
                    self._mid_run_validation(step)
                    t0, n0 = time.perf_counter(), step  # steps/s counts training, not the validation
            bar.close()
            self.manager.save(checkpoint_number=int(self.step.numpy()))
            if self._stop:
                print(f"stopped by signal {self._stop} at step {int(self.step.numpy())}; checkpoint saved",
                      file=sys.stderr)
                return {"stopped_by": self._stop}
            step = int(self.step.numpy())
            result = self._log_validation(step) if self.val_pairs else {"step": step, "rows": []}
            if self._stop:  # a signal during the final validation: no report, no export (a rerun validates)
                print(f"stopped by signal {self._stop} after step {step}; checkpoint saved", file=sys.stderr)
                return {"stopped_by": self._stop}
            if result["rows"]:
                write_report(self.folder.eval, result["rows"], result["curves"],
                             f"{self.spec.name} at QP{cfg.qp} after {step} steps")
        finally:
            del it
            for s, handler in old.items():
                signal.signal(s, handler)
        return result

    def _keep_if_best(self, step, dpsnr, dssim, rows, curves):
        """Save the model to RunFolder.best when its val ΔPSNR beats every earlier validation's, with
        that validation's report in RunFolder.best_eval (removed first: never an older step's)."""
        best = read_best(self.work_dir)
        if best is not None and best["delta_psnr"] >= dpsnr:
            return
        shutil.rmtree(self.folder.best_eval, ignore_errors=True)
        self.best_manager.save(checkpoint_number=step)
        write_text_atomic(self.folder.best_json, json.dumps(
            {"step": step, "delta_psnr": dpsnr, "delta_ssim_x100": dssim}, indent=2) + "\n")
        if rows:
            write_report(self.folder.best_eval, rows, curves,
                         f"{self.spec.name} at QP{self.cfg.qp} after {step} steps (the best on val)")

    def _mark_released_origin(self, resumed):
        """Weights from released ones (vcar-import) keep their imported.json in this run, so the
        mark survives the source run's removal; a fresh start drops one left by an earlier attempt."""
        origin = imported_origin(self.init_source) if self.init_source else None
        if origin and os.path.realpath(origin) != os.path.realpath(self.work_dir):
            shutil.copyfile(RunFolder(origin).imported, self.folder.imported)
        elif not origin and not resumed and os.path.exists(self.folder.imported):
            os.remove(self.folder.imported)

    def _redo_pending_validation(self, start):
        """The validation at `start` that a kill cut short (its marker names `start`) runs before
        training goes on; a marker of any other step is stale and removed."""
        pending = read_json_object(self.folder.pending_validation, "a pending validation")
        if pending is None:
            return
        if pending.get("step") == start and self.cfg.eval_every and 0 < start < self.cfg.steps and self.val_pairs:
            print(f"redoing the validation at step {start}, which did not finish", file=sys.stderr)
            self._mid_run_validation(start)
        else:
            os.remove(self.folder.pending_validation)

    def _mid_run_validation(self, step):
        """A validation between training steps, marked while under way: a run killed during it (a
        scheduler's grace period is shorter than a validation) redoes it when resumed at `step`."""
        write_text_atomic(self.folder.pending_validation, json.dumps({"step": step}) + "\n")
        self._log_validation(step)
        os.remove(self.folder.pending_validation)

    def _lr(self, step):
        return float(self.lr_schedule(step)) if callable(self.lr_schedule) else float(self.lr_schedule)

    def _log_validation(self, step):
        rows, curves, dpsnr, dssim = self.validate()
        if self.selects_on_val:
            self._keep_if_best(step, dpsnr, dssim, rows, curves)
        with self.writer.as_default(step=step):
            tf.summary.scalar("val/delta_psnr", dpsnr)
            tf.summary.scalar("val/delta_ssim_x100", dssim)
            pair = self.val_pairs[0]
            raw, comp = pair.open()
            enhanced = next(enhance_sequence(self.model, pair, self.radius))
            triplet = np.concatenate([comp.y(0) / 255.0, enhanced, raw.y(0) / 255.0], axis=1)
            tf.summary.image("val/compressed_enhanced_raw", triplet[None, ..., None].astype(np.float32), step=step)
        return {"step": step, "delta_psnr": dpsnr, "delta_ssim_x100": dssim, "rows": rows, "curves": curves}
