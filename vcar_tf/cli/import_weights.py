"""Import a released PyTorch checkpoint as a vcar_tf run (or a .weights.h5 file).

    vcar-import stdf-pytorch CHECKPOINT --out DIR|FILE.weights.h5

CHECKPOINT is the STDF-PyTorch release's .pt (read without PyTorch and without running code from
the file) or a .safetensors conversion of it. DIR becomes a run folder that vcar-evaluate,
vcar-enhance, vcar-export (--model_dir) and train_main.py --init_from take.
"""

import json
import os
import sys

from vcar_tf.errors import ArgumentParser, VcarError, cli_main
from vcar_tf.fileutil import check_writable_dir, check_writable_file, ensure_writable_dir
from vcar_tf.presets import file_sha256
from vcar_tf.train.config import TrainConfig
from vcar_tf.weights.state_dict import read_state_dict

SOURCES = ("stdf-pytorch",)  # the releases whose checkpoints this command reads


def write_weights_h5(path, model):
    """model.save_weights to a temp name beside `path`, then renamed."""
    folder = os.path.dirname(os.path.abspath(path))
    ensure_writable_dir(folder)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def check_out(args):
    """--out before anything is read: not the checkpoint, not inside the package (release weights
    are never shipped), not an existing file (unless --overwrite) or a folder with files in it."""
    out = os.path.abspath(args.out)
    if out == os.path.abspath(args.checkpoint):
        raise VcarError("--out must differ from the checkpoint")
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.commonpath([out, package]) == package:
        raise VcarError(f"--out {args.out} is inside the vcar_tf package: imported release weights are never "
                        "shipped with it; write them under runs/")
    if args.out.endswith(".weights.h5"):
        check_writable_file(args.out, "a .weights.h5 file")
        if os.path.exists(args.out) and not args.overwrite:
            raise VcarError(f"{args.out} exists; pass --overwrite to replace it")
    else:
        if os.path.exists(args.out) and (not os.path.isdir(args.out) or os.listdir(args.out)):
            raise VcarError(f"{args.out} exists and is not an empty folder: give a new run folder")
        check_writable_dir(out)


@cli_main
def main(argv=None):
    p = ArgumentParser(prog="vcar-import", description=__doc__.split("\n")[0])
    p.add_argument("source", choices=SOURCES, help="which release the checkpoint comes from")
    p.add_argument("checkpoint", help=".pt/.pth or .safetensors file")
    p.add_argument("--out", required=True, help="a new run folder, or a file ending in .weights.h5")
    p.add_argument("--overwrite", action="store_true", help="replace an existing .weights.h5 file")
    args = p.parse_args(argv)
    check_out(args)
    state = read_state_dict(args.checkpoint)  # without TensorFlow: a missing or unreadable file is said first
    from vcar_tf.models.stdf.pytorch import stdf_from_state_dict  # TensorFlow loads here
    from vcar_tf.train.run import write_run

    name, model = stdf_from_state_dict(state)
    if args.out.endswith(".weights.h5"):
        write_weights_h5(args.out, model)
    else:
        write_run(args.out, model, TrainConfig(model=name, steps=0, model_dir=args.out),
                  extra={"imported.json": json.dumps({"source": args.source, "checkpoint": os.path.basename(
                      args.checkpoint), "sha256": file_sha256(args.checkpoint)}, indent=2) + "\n"})
    print(f"imported {args.checkpoint} as {name} ({model.count_params():,d} parameters) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
