"""What the commands share: where the model comes from (--model_dir RUN or --preset NAME).
TensorFlow loads in load_model, not on import, so a command reports a bad argument or path first."""

import os
import sys

import numpy as np

from vcar_tf.errors import VcarError
from vcar_tf.precision import PRECISIONS, auto_precision, check_precision
from vcar_tf.presets import preset_card
from vcar_tf.train.config import CHECKPOINTS, TrainConfig


def add_model_flags(parser, precision=False):
    """--model_dir, --checkpoint, --preset and, with `precision`, --precision (a Keras model's compute)."""
    if precision:
        parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                            help="auto, fp32, bf16 or int8, with --model_dir or --preset: bf16 computes in bfloat16; int8 "
                            "computes convolutions in integers calibrated on the embedded sample (window models); "
                            "auto (default) is int8, else bf16, for a preset whose measured cost of it is within "
                            "budget on a CPU that computes it natively (see the README), fp32 otherwise")
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
            model = from_preset(args.preset)
        else:
            model, cfg, radius = load_run(args.model_dir, args.checkpoint)
    if precision == "int8":
        from vcar_tf.models.int8 import Int8Model, check_int8_model

        check_int8_model(model)
        model = Int8Model(model, calibration_windows(model, radius, *CALIBRATION_SIZE, CALIBRATION_WINDOWS))
    return model, cfg, radius


CALIBRATION_SIZE = (240, 416)  # the embedded sample's frames (ONNX files and int8 inference have no fixed size)
CALIBRATION_WINDOWS = 8  # int8 inference's, and vcar-export's --calibration_frames default


def calibration_windows(model, radius, height, width, count):
    """`count` float32 windows [1, 2R+1, H, W, 1] of the embedded sample dataset's compressed
    training frames, cropped or mirrored to H x W. A recurrent model gets (window, state) pairs:
    each sequence's first frames in order, the state carried by the float model from frame to
    frame, so that the state's ranges are those of a running stream, not only the zero start."""
    from tqdm import tqdm

    from vcar_tf.data.layout import find_pairs, prepared_codec_folder
    from vcar_tf.data.sample import ensure_sample_dataset
    from vcar_tf.models.recurrent import is_recurrent

    root = ensure_sample_dataset()
    # the sample's default compression (another codec may be cached beside it by a run's --codec)
    sequences = [pair.open()[1] for pair in find_pairs(os.path.join(root, "train"), 37, prepared_codec_folder(None))]

    def window(seq, t):
        index = np.clip(np.arange(t - radius, t + radius + 1), 0, seq.num_frames - 1)
        frames = np.stack([seq.y(int(j)) for j in index]).astype(np.float32) / 255.0
        frames = np.pad(frames, [(0, 0), (0, max(0, height - frames.shape[1])), (0, max(0, width - frames.shape[2]))],
                        mode="symmetric")[:, :height, :width]
        return frames[None, ..., None]

    with tqdm(total=count, desc="calibration windows", unit="window", file=sys.stderr, leave=False) as bar:
        if not is_recurrent(model):
            samples = []
            for i in range(count):
                seq = sequences[i % len(sequences)]
                samples.append(window(seq, (i * 7) % seq.num_frames))
                bar.update()
            return samples
        samples, per_sequence = [], -(-count // len(sequences))
        for seq in sequences:
            state = None
            for t in range(min(per_sequence, seq.num_frames)):
                x = window(seq, t)
                state = model.initial_state(x) if state is None else state
                samples.append((x, np.asarray(state)))
                bar.update()
                if len(samples) == count:
                    return samples
                state = model.step(x, state)[1]
        return samples
