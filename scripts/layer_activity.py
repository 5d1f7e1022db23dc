"""Are a model's ReLU layers alive? Each layer's share of outputs above zero and their standard
deviation on one input: a dead layer has about none active and a constant output.

    python scripts/layer_activity.py --preset stdf_r3_x265_qp37 [--layers qe_ fusion_relu] [--size 64] [--seed 0]
    python scripts/layer_activity.py --model_dir RUN [--checkpoint best]

The input is one window of the model's 2R+1 frames (one frame for a single-frame model), uniform
noise in [0.2, 0.8] at --size x --size: a unit that never fires on it is dead for most inputs. By
default every layer with a ReLU (a ReLU layer or a layer whose activation is ReLU); --layers picks
layers by name prefix instead (the residual head, `qe_16` in STDF-R3L, has no ReLU: its share is of
positive outputs).
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # this checkout's code, whatever pip installed
from vcar_tf.cli.common import add_model_flags, load_model  # noqa: E402
from vcar_tf.errors import ArgumentParser, VcarError, cli_main  # noqa: E402
from vcar_tf.models.recurrent import is_recurrent  # noqa: E402


def relu_layers(model):
    import keras

    relu = keras.activations.get("relu")
    return [l.name for l in model.layers if isinstance(l, keras.layers.ReLU) or getattr(l, "activation", None) is relu]


def layer_activity(model, radius, names, size=64, seed=0):
    """[(layer, share of outputs > 0, mean, standard deviation)] on one noise window."""
    import keras
    import numpy as np

    window = np.random.default_rng(seed).uniform(0.2, 0.8, size=(1, 2 * radius + 1, size, size, 1)).astype(np.float32)
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outputs = probe([window], training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [(n, float(np.mean(np.asarray(o) > 0)), float(np.mean(o)), float(np.std(o))) for n, o in zip(names, outputs)]


@cli_main
def main(argv=None):
    p = ArgumentParser(prog="layer_activity.py", description=__doc__.split("\n")[0])
    add_model_flags(p)
    p.add_argument("--layers", nargs="+", default=None, help="name prefixes of the layers (default: every ReLU layer)")
    p.add_argument("--size", type=int, default=64, help="input height and width (default 64)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.size < 8:
        raise VcarError(f"--size must be at least 8, not {args.size}")
    model, cfg, radius = load_model(args)
    if is_recurrent(model):
        raise VcarError(f"{cfg.model} is recurrent: its clips and state are not one window")
    names = ([l.name for l in model.layers if l.name.startswith(tuple(args.layers))] if args.layers
             else relu_layers(model))
    if not names:
        raise VcarError(f"{cfg.model} has no layer named {' or '.join(f'{x}...' for x in args.layers)}")
    print(f"{cfg.model} ({args.preset or args.model_dir}), one {2 * radius + 1}-frame window of noise, "
          f"{args.size}x{args.size}, seed {args.seed}")
    print(f"{'layer':24s} {'active':>7s} {'mean':>9s} {'std':>9s}")
    for name, active, mean, std in layer_activity(model, radius, names, args.size, args.seed):
        print(f"{name:24s} {active:7.3f} {mean:+9.4f} {std:9.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
