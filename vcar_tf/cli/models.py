"""List the model registry with parameter counts: python -m vcar_tf.models."""

import sys

from vcar_tf.errors import cli_main
from vcar_tf.models import summary


@cli_main
def main(argv=None):
    for n, r, p, d in summary():
        print(f"{n:12s} R={r}  {p:>10,d} params  {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
