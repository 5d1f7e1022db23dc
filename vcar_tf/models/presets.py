"""Trained models shipped inside the package: `from_preset(name)` (KerasHub's convention).

A preset is a folder vcar_tf/presets/NAME/ holding `model.weights.h5` and `card.json`: the
registered model, the codec settings and QP it was trained for, the data and recipe, the steps,
wall time and machine, the val and test ΔPSNR/ΔSSIM, and the sha256 of the weights file, which is
checked before loading. scripts/make_preset.py writes one from a training run.
"""

import hashlib
import json
import os

from vcar_tf.errors import VcarError, first_line
from vcar_tf.fileutil import read_text
from vcar_tf.models.registry import build

WEIGHTS = "model.weights.h5"
CARD = "card.json"
CARD_KEYS = ("model", "qp")  # what listing and picking a preset read; loading also needs "sha256"


def presets_dir():
    """The presets shipped with the package (VCAR_TF_PRESETS names another folder, for tests)."""
    return os.environ.get("VCAR_TF_PRESETS") or os.path.join(os.path.dirname(os.path.dirname(__file__)), "presets")


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
    return card


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_preset_weights(model, folder):
    """Write the model's weights as a preset's weights file in folder; its sha256 (the card's)."""
    path = os.path.join(folder, WEIGHTS)
    model.save_weights(path)
    return file_sha256(path)


def from_preset(name):
    """The preset's model with its trained weights (the file's sha256 checked against its card)."""
    card = preset_card(name)
    path = os.path.join(presets_dir(), name, WEIGHTS)
    if "sha256" not in card:
        raise VcarError(f"preset {name}: {CARD} has no sha256 to check {WEIGHTS} against")
    if not os.path.isfile(path) or file_sha256(path) != card["sha256"]:
        raise VcarError(f"preset {name}: {WEIGHTS} is missing or corrupt (sha256 differs from its card)")
    model = build(card["model"], **card.get("overrides", {}))
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise VcarError(f"preset {name}: {WEIGHTS} does not load into {card['model']} ({first_line(e)})") from None
    return model
