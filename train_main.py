"""Train a registered model: python train_main.py --model=stifn [--data DIR] [--steps N] ...

Flags mirror vcar_tf.train.config.TrainConfig. With no --data it trains on the embedded sample
dataset and validates on its held-out sequence.
"""

import dataclasses
import os
import sys

from absl import app, flags

from vcar_tf.data.codec import CODECS
from vcar_tf.data.layout import check_dataset_folder
from vcar_tf.errors import VcarError, cli_main
from vcar_tf.train.config import TrainConfig
from vcar_tf.fileutil import check_writable_dir
from vcar_tf.train.folder import RunFolder, init_source_to_read

_D = TrainConfig()
flags.DEFINE_string("model", _D.model, "registered model name (python -m vcar_tf.models lists them)")
flags.DEFINE_string("data", _D.data, "dataset folder with train/ and test/ (default: embedded sample)")
flags.DEFINE_integer("qp", _D.qp, "QP of the compressed inputs")
flags.DEFINE_enum("codec", _D.codec, sorted(CODECS), "codec of the embedded sample dataset")
flags.DEFINE_string("codec_folder", _D.codec_folder, "the compressed folder of --data's roots, e.g. "
                    "x265_LDP_dbk_sao (default: the only one they have at --qp)")
flags.DEFINE_integer("radius", _D.radius, "frames on each side (default: the model's)")
flags.DEFINE_integer("clip_length", _D.clip_length, "recurrent models: frames per training clip (default: "
                     "the model's, 15 for RFDA)")
flags.DEFINE_integer("patch", _D.patch, "training crop size")
flags.DEFINE_integer("batch", _D.batch, "global batch size")
flags.DEFINE_integer("steps", _D.steps, "total training steps")
flags.DEFINE_float("lr", _D.lr, "Adam learning rate")
flags.DEFINE_enum("lr_schedule", _D.lr_schedule, ["cosine", "constant"],
                  "cosine: linear warm-up, then cosine decay to lr/10 at --steps")
flags.DEFINE_integer("warmup_steps", _D.warmup_steps, "linear warm-up steps of the cosine schedule")
flags.DEFINE_list("lr_milestones", [], "steps at which the learning rate halves (replaces --lr_schedule)")
flags.DEFINE_enum("loss", _D.loss, ["charbonnier", "l2"], "training loss: l2, or charbonnier (sqrt(d^2 + 1e-6), "
                "STDF/RFDA's)")
flags.DEFINE_bool("mixed_precision", _D.mixed_precision, "bfloat16 compute")
flags.DEFINE_enum("strategy", _D.strategy, ["auto", "mirrored", "multi_worker", "one_device"], "tf.distribute")
flags.DEFINE_string("model_dir", _D.model_dir, "checkpoints and TensorBoard logs (default: runs/MODEL)")
flags.DEFINE_integer("eval_every", _D.eval_every, "validate every N steps (0: at the end only)")
flags.DEFINE_integer("checkpoint_every", _D.checkpoint_every, "checkpoint every N steps")
flags.DEFINE_string("export_dir", _D.export_dir, "TF Serving model base: writes DIR/NAME/VERSION "
                    "(default: MODEL_DIR/serving)")
flags.DEFINE_bool("export", _D.export, "export a SavedModel after training (--noexport to skip)")
flags.DEFINE_integer("seed", _D.seed, "data and initialisation seed")
flags.DEFINE_string("init_from", _D.init_from, "start from another run's latest checkpoint: every variable with "
                    "the same path and shape is copied (e.g. RFDA stage 2 from stage 1), or a "
                    "shipped preset's weights with preset:NAME")
flags.DEFINE_float("init_lr", _D.init_lr, "constant learning rate of the variables copied by --init_from "
                   "(default: the same schedule as the rest)")
flags.DEFINE_float("centre_noise", _D.centre_noise, "window models: Gaussian noise of this std (0..1 scale) on "
                   "the centre frame of half the training windows, an experiment in making the model use its "
                   "neighbours (0: off)")
FLAGS = flags.FLAGS


def config_from_flags():
    values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(TrainConfig)}
    try:
        values["lr_milestones"] = tuple(int(m) for m in FLAGS.lr_milestones)
    except ValueError:
        raise VcarError(f"--lr_milestones takes step numbers, not {','.join(FLAGS.lr_milestones)}") from None
    return TrainConfig(**values).validate()


def parse_flags(argv):
    """absl's parser, but a bad flag ends like every other bad input: one error line, exit code 2."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


@cli_main
def main(argv):
    del argv
    cfg = config_from_flags()
    if cfg.model_dir is not None:  # else the Trainer checks it, once it has named the run folder
        init_source_to_read(cfg)
    if cfg.export and cfg.export_dir:
        check_writable_dir(cfg.export_dir)  # now, not after the training
    check_dataset_folder(cfg.data)
    if cfg.model_dir is not None:
        check_writable_dir(cfg.model_dir)
    from vcar_tf.export.saved_model import export_saved_model  # TensorFlow loads here, after the flags' checks
    from vcar_tf.train.trainer import Trainer

    trainer = Trainer(cfg)
    result = trainer.run()
    if "stopped_by" in result:
        return 128 + result["stopped_by"]  # the shell's convention for a signal, so schedulers see it
    exported = None
    if cfg.export and trainer.is_chief:  # one export per run, not one per worker
        export_dir = cfg.export_dir or RunFolder(cfg.model_dir).serving
        exported = export_saved_model(trainer.model, trainer.radius, os.path.join(export_dir, trainer.spec.name))
    if result["rows"]:
        for row in result["rows"]:
            print(f"{row['sequence']}: PSNR {row['psnr']:.3f} -> {row['psnr_enh']:.3f} dB "
                  f"(ΔPSNR {row['delta_psnr']:+.3f} dB, ΔSSIM {row['delta_ssim_x100']:+.3f} x1e-2)")
        print(f"validation ΔPSNR {result['delta_psnr']:+.3f} dB, ΔSSIM {result['delta_ssim_x100']:+.3f} x1e-2 "
              f"after {result['step']} steps")
    print(f"checkpoints in {cfg.model_dir}/checkpoints")
    if exported:
        print(f"exported SavedModel {exported}")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
