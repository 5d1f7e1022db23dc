"""`python -m vcar_tf.evaluate`: the vcar-evaluate command (vcar_tf/cli/evaluate.py)."""

import sys

from vcar_tf.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
