"""Commands: thin argparse mains over the library (installed as the vcar-* entry points)."""
