"""Make a preset (vcar_tf/presets/NAME/: model.weights.h5 + card.json) from a training run.

    python scripts/make_preset.py RUN --name stdf_r3_x265_qp37 --test RUN/eval-test [--val RUN/eval]
        [--checkpoint latest|best] [--recipe "..."] [--wall "..."] [--machine "..."] [--out vcar_tf/presets]

--checkpoint best takes the run's checkpoint with the best val ΔPSNR (RunFolder.best) instead of its
latest; --val and --test must then be evaluations of that checkpoint (vcar-evaluate --checkpoint best).
--val defaults to the trainer's own validation of the checkpoint: RUN/eval (the last step's) for
latest, RUN/best/eval for best.
The card records the model, the codec settings and QP of the run, its data and recipe, the steps,
wall time and machine, the val and test averages (from their report.csv) and the weights' sha256.
"""

import glob
import json
import os
import shutil
import sys

from vcar_tf.data.codec import CodecSettings
from vcar_tf.data.layout import is_test_split
from vcar_tf.errors import ArgumentParser, VcarError, cli_main
from vcar_tf.fileutil import ensure_writable_dir, make_temp_dir, write_text_atomic
from vcar_tf.models.presets import save_preset_weights
from vcar_tf.presets import CARD
from vcar_tf.reporting import read_report
from vcar_tf.train.folder import RunFolder, imported_origin, read_config_dict
from vcar_tf.train.run import CHECKPOINTS, checkpoint_step, load_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from machine import describe  # noqa: E402  (the benchmarks' machine line)


def report_average(path, split="test"):
    """{'delta_psnr', 'delta_ssim_x100', 'sequences'} of a report's average over its test split
    (split="test") or over a held-out split that is not a test split (split="val"): a run without
    val/ evaluates on test, which is no val figure."""
    _, rows = read_report(path)
    averages = [r for r in rows if r["sequence"] == "average" and is_test_split(r["split"]) == (split == "test")]
    if not averages:
        found = sorted({r["split"] for r in rows})
        raise VcarError(f"{path}: no average over a {split} split (the report has {', '.join(found) or 'no rows'})")
    average = averages[0]
    return {"delta_psnr": float(average["delta_psnr"]), "delta_ssim_x100": float(average["delta_ssim_x100"]),
            "sequences": sum(1 for r in rows if r["split"] == average["split"] and r["sequence"] != "average")}


def codec_settings(data, codec, qp, codec_folder=None):
    """The codec settings (CodecSettings fields) the run's training data was compressed with, from
    the sidecars vcar-prepare wrote beside its bitstreams (they must agree), in the run's
    --codec_folder if it named one; the embedded sample's defaults when the run had no --data."""
    if data is None:
        return CodecSettings(codec=codec, qp=qp).to_json()
    found = set()
    folder = codec_folder or f"{codec}_*"
    for path in glob.glob(os.path.join(data, "*", folder, f"QP{qp}", "bitstreams", "*.json")):
        with open(path) as f:
            found.add(json.dumps(json.load(f)["settings"], sort_keys=True))
    if len(found) != 1:
        raise VcarError(f"{data}: expected one set of {codec} QP{qp} codec settings, found {len(found)}")
    return json.loads(found.pop())


def replace_folder(new, target):
    """Rename `new` onto `target`, an existing folder moved aside first and put back if the rename
    fails (an error or Ctrl-C between the two renames leaves the old preset in place)."""
    if not os.path.exists(target):
        os.replace(new, target)
        return
    old = make_temp_dir(os.path.dirname(target), ".tmp-old-preset-")
    os.replace(target, os.path.join(old, "preset"))
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(os.path.join(old, "preset"), target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def check_evaluated_weights(path, sha256, what):
    """An evaluation recorded by scripts/evaluate_recorded.py (its record.json) must be of the
    weights shipped (e.g. not of the latest checkpoint for a --checkpoint best preset)."""
    folder = os.path.dirname(path) if os.path.isfile(path) else path
    record = os.path.join(folder, "record.json")
    if not os.path.isfile(record):
        print(f"note: {what} {path} has no record.json: that it evaluated these weights is not checked", file=sys.stderr)
        return
    with open(record) as f:
        evaluated = json.load(f).get("weights_sha256")
    if evaluated != sha256:
        raise VcarError(f"{what} {path} evaluated other weights (sha256 {str(evaluated)[:12]}…) than the "
                        f"checkpoint shipped ({sha256[:12]}…): evaluate the same --checkpoint")


@cli_main
def main(argv=None):
    p = ArgumentParser(prog="make_preset.py", description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("--name", required=True)
    p.add_argument("--val", help="the run's evaluation on the val split (folder or report.csv); "
                                 "default: the trainer's, RUN/eval or with --checkpoint best RUN/best/eval")
    p.add_argument("--test", required=True, help="its evaluation on the test split")
    p.add_argument("--checkpoint", default="latest", choices=CHECKPOINTS)
    p.add_argument("--recipe", default="", help="free text: how it was trained")
    p.add_argument("--wall", default="", help="training wall time")
    p.add_argument("--machine", default=None,
                   help="what it trained on (default: this machine's CPU, cores and memory; give it where they differ)")
    p.add_argument("--out", default=os.path.join(REPO, "vcar_tf", "presets"))
    args = p.parse_args(argv)
    origin = imported_origin(args.run)
    if origin is not None:
        raise VcarError(f"{args.run} holds released weights or weights trained from them ({origin}/imported.json): "
                        "they are for tests and benchmarks only, never shipped as a preset")
    model, cfg, _ = load_run(args.run, args.checkpoint)
    folder = RunFolder(args.run)
    default_val = folder.best_eval if args.checkpoint == "best" else folder.eval  # the trainer's own validation
    args.val = args.val or default_val
    config = read_config_dict(args.run)
    target = os.path.join(args.out, args.name)
    ensure_writable_dir(args.out)
    tmp = make_temp_dir(args.out, ".tmp-preset-")
    try:
        sha256 = save_preset_weights(model, tmp)
        check_evaluated_weights(args.test, sha256, "--test")
        if args.val != default_val:
            check_evaluated_weights(args.val, sha256, "--val")
        card = {"name": args.name, "model": cfg.model, "codec": cfg.codec, "qp": cfg.qp,
                "codec_settings": codec_settings(cfg.data, cfg.codec, cfg.qp, cfg.codec_folder),
                "data": cfg.data, "train_config": config,
                "checkpoint": args.checkpoint, "step": checkpoint_step(args.run, args.checkpoint), "recipe": args.recipe, "wall_time": args.wall,
                "machine": args.machine or describe(),
                "val": report_average(args.val, "val"), "test": report_average(args.test),
                "sha256": sha256}
        if cfg.radius is not None:  # from_preset builds the model as it was trained
            card["overrides"] = {"radius": cfg.radius}
        write_text_atomic(os.path.join(tmp, CARD), json.dumps(card, indent=2) + "\n")
        replace_folder(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"preset {args.name}: {target} (test ΔPSNR {card['test']['delta_psnr']:+.3f} dB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
