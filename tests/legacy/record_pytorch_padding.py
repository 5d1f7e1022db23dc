"""Records expected_pytorch_padding.npz: the outputs of the legacy checkpoints of the models whose
stride-2 convs pad like PyTorch since 7232588 (tests/test_legacy_checkpoints.PADDING_CHANGED),
restored into today's models, on the inputs of expected.npz. Their pre-7232588 outputs can no
longer be reproduced, by design; these pin what the exact import made of them (whose arithmetic
tests/test_import_weights.py checks against the PyTorch release).

    python -m tests.legacy.record_pytorch_padding   # from the repository root
"""

import os

import numpy as np
import tensorflow as tf

from tests.legacy.make_legacy_fixtures import SMALL
from vcar_tf import models

LEGACY = os.path.dirname(os.path.abspath(__file__))
PADDING_CHANGED = ("stdf_r3", "stdf_r3l", "stdf_dsta", "rfda", "stdf_rf")
RECORD = os.path.join(LEGACY, "expected_pytorch_padding.npz")


def restored_output(name, x):
    model = models.build(name, **SMALL[name][0])
    tf.train.Checkpoint(model=model).read(os.path.join(LEGACY, "checkpoints", name, "ckpt")).assert_consumed()
    return np.asarray(model(x, training=False))


def main():
    expected = np.load(os.path.join(LEGACY, "expected.npz"))
    np.savez_compressed(RECORD, **{f"{n}/output": restored_output(n, expected[f"{n}/input"]) for n in PADDING_CHANGED})


if __name__ == "__main__":
    main()
