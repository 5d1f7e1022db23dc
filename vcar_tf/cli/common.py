"""What the commands share: where the model comes from (--model_dir RUN or --preset NAME).
TensorFlow loads in load_model, not on import, so a command reports a bad argument or path first."""

import sys

from vcar_tf.errors import VcarError
from vcar_tf.precision import PRECISIONS, auto_precision, check_precision
from vcar_tf.presets import preset_card
from vcar_tf.train.config import CHECKPOINTS, TrainConfig


def add_model_flags(parser, precision=False):
    """--model_dir, --checkpoint, --preset and, with `precision`, --precision (a Keras model's compute)."""
    if precision:
        parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                            help="auto, fp32 or bf16, with --model_dir or --preset: bf16 computes in bfloat16; "
                            "auto (default) is bf16 for a preset whose measured bf16 cost is within budget on a "
                            "CPU with native bf16 (see the README), fp32 otherwise")
    parser.add_argument("--model_dir", default=None, help="a train_main.py (or vcar-import) run")
    parser.add_argument("--checkpoint", default="latest", choices=CHECKPOINTS,
                        help="with --model_dir: the run's latest checkpoint, or its best on val")
    parser.add_argument("--preset", default=None, help="a trained model shipped with the package "
                        "(python -m vcar_tf.models --presets lists them)")


def check_model_flags(args, others=()):
    """Says a wrong combination of the model flags (before TensorFlow loads); `others` names further
    flags that may stand in for --model_dir and --preset (e.g. --saved_model). Returns --precision."""
    given = [f for f in ("model_dir", "preset", *others) if getattr(args, f, None) is not None]
    if len(given) != 1:
        raise VcarError(f"pass exactly one of {', '.join('--' + f for f in ('model_dir', 'preset', *others))}")
    if getattr(args, "checkpoint", "latest") != "latest" and args.model_dir is None:
        raise VcarError("--checkpoint goes with --model_dir")
    precision = getattr(args, "precision", "fp32")
    check_precision(precision)
    if precision not in ("fp32", "auto") and args.model_dir is None and args.preset is None:
        raise VcarError(f"--precision {precision} goes with --model_dir or --preset (an export keeps its own)")
    return precision


def load_model(args, others=()):
    """(model, TrainConfig with its data/qp/codec, radius) from --model_dir or --preset, after
    check_model_flags(args, others); None when one of `others` was given instead."""
    precision = check_model_flags(args, others)
    if args.model_dir is None and args.preset is None:
        return None
    card = preset_card(args.preset) if args.preset is not None else None  # a card is read without TF
    from vcar_tf.models import spec
    from vcar_tf.models.precision import precision_policy
    from vcar_tf.models.presets import from_preset
    from vcar_tf.train.run import load_run

    if precision == "auto":
        precision, why = auto_precision(card)
        if precision != "fp32":
            print(f"note: computing in {precision} ({why}); --precision fp32 turns it off", file=sys.stderr)
    with precision_policy(precision):
        if card is not None:
            cfg = TrainConfig(model=card["model"], qp=card["qp"], codec=card.get("codec", "x265"))
            radius = card.get("overrides", {}).get("radius", spec(card["model"]).radius)
            return from_preset(args.preset), cfg, radius
        return load_run(args.model_dir, args.checkpoint)
