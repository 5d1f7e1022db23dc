"""A run's learning curve on val, as the trainer logged it to TensorBoard: one line per validation.

    python scripts/val_curve.py RUN        # e.g. runs/presets/stifn_r3_x265_qp37

Prints `step  ΔPSNR dB  ΔSSIM×10⁻²` from RUN/logs (every stint of a resumed run; a step validated
twice keeps its latest value). A run without a val split (no RUN/best/) validated on test: refused.
"""

import glob
import os
import re
import sys

import tensorflow as tf

TAGS = ("val/delta_psnr", "val/delta_ssim_x100")


def val_curve(run):
    """{step: {tag: value}} of every validation logged under RUN/logs."""
    curve = {}
    # in the order written: the name's creation time, not the file's mtime (a copy or checkout sets that)
    files = sorted(glob.glob(os.path.join(run, "logs", "events.out.tfevents.*")),
                   key=lambda p: (int(re.search(r"tfevents\.(\d+)\.", p)[1]), p))
    for path in files:
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag in TAGS:
                    curve.setdefault(event.step, {})[value.tag] = float(tf.make_ndarray(value.tensor))
    return curve


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("error: usage: python scripts/val_curve.py RUN", file=sys.stderr)
        return 2
    if not os.path.isdir(os.path.join(argv[0], "logs")):
        print(f"error: {argv[0]} is not a train_main.py run (no logs/ folder)", file=sys.stderr)
        return 2
    curve = val_curve(argv[0])
    if curve and not os.path.isfile(os.path.join(argv[0], "best", "best.json")):
        print(f"error: {argv[0]} kept no best/: it had no val split, so its validations were on test, "
              "which no choice may read", file=sys.stderr)
        return 2
    print("step  ΔPSNR dB  ΔSSIM×10⁻²")
    for step in sorted(curve):
        v = curve[step]
        print(f"{step}  {v.get(TAGS[0], float('nan')):+.3f}  {v.get(TAGS[1], float('nan')):+.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
