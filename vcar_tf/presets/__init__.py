"""The trained models shipped in this folder, read without TensorFlow: their names and cards.

A preset is a folder NAME/ here holding `model.weights.h5` and `card.json`: the registered model,
the codec settings and QP it was trained for, the data and recipe, the steps, wall time and
machine, the val and test ΔPSNR/ΔSSIM, and the sha256 of the weights file. Loading one (the sha256
checked first) is vcar_tf.models.presets.from_preset; scripts/make_preset.py writes one.
"""

import hashlib
import json
import os

from vcar_tf.errors import VcarError
from vcar_tf.fileutil import read_text

WEIGHTS = "model.weights.h5"
CARD = "card.json"
CARD_KEYS = ("model", "qp")  # what listing and picking a preset read; loading also needs "sha256"


def presets_dir():
    """The presets shipped with the package (VCAR_TF_PRESETS names another folder, for tests)."""
    return os.environ.get("VCAR_TF_PRESETS") or os.path.dirname(os.path.abspath(__file__))


def preset_names():
    root = presets_dir()
    if not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, CARD)))


def preset_card(name):
    """The card (dict) of a preset; an unknown name is an error that lists the known ones."""
    path = os.path.join(presets_dir(), name, CARD)
    if name not in preset_names():
        raise VcarError(f"unknown preset {name!r}; the package has: {', '.join(preset_names()) or 'none'}")
    try:
        card = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise VcarError(f"preset {name}: {CARD} is not JSON ({e})") from None
    missing = [k for k in CARD_KEYS if k not in card] if isinstance(card, dict) else list(CARD_KEYS)
    if missing:
        raise VcarError(f"preset {name}: {CARD} is not a preset card (no {', '.join(missing)})")
    if not isinstance(card.get("overrides", {}), dict):
        raise VcarError(f"preset {name}: {CARD}'s overrides must be an object of the model's settings")
    return card


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
