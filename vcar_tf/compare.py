"""`python -m vcar_tf.compare`: the vcar-compare command (vcar_tf/cli/compare.py)."""

import sys

from vcar_tf.cli.compare import main

if __name__ == "__main__":
    sys.exit(main())
