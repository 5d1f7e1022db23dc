"""`python -m vcar_tf.models`: the registry with parameter counts (vcar_tf/cli/models.py)."""

import sys

from vcar_tf.cli.models import main

sys.exit(main())
