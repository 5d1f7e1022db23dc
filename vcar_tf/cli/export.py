"""Export a trained run as a SavedModel that a stock TF Serving loads (stock ops only).

    vcar-export --model_dir RUN|--preset NAME --format saved_model --out DIR [--name NAME] [--version N]

Writes DIR/NAME/VERSION/ (TF Serving's layout; VERSION defaults to one more than the largest
there), with the signatures of vcar_tf/export/signatures.py.
"""

import os
import sys

from vcar_tf import models
from vcar_tf.errors import ArgumentParser, VcarError, cli_main
from vcar_tf.export.saved_model import export_saved_model
from vcar_tf.cli.common import add_model_flags, load_model


@cli_main
def main(argv=None):
    p = ArgumentParser(prog="vcar-export", description=__doc__.split("\n")[0])
    add_model_flags(p)
    p.add_argument("--format", default="saved_model", choices=["saved_model"])
    p.add_argument("--out", required=True, help="TF Serving model base folder")
    p.add_argument("--name", default=None, help="default: the model's registry name")
    p.add_argument("--version", type=int, default=None)
    args = p.parse_args(argv)
    if args.version is not None and args.version < 1:
        raise VcarError(f"--version must be 1 or more (TF Serving's version folders), not {args.version}")
    if args.name is not None and (not args.name or args.name in (".", "..") or os.sep in args.name
                                  or (os.altsep and os.altsep in args.name)):
        raise VcarError(f"--name must be a plain folder name, not {args.name!r}")
    model, cfg, radius = load_model(args)
    path = export_saved_model(model, radius, os.path.join(args.out, args.name or models.spec(cfg.model).name),
                              args.version)
    print(f"exported {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
