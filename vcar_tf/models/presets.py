"""Loading the trained models shipped inside the package: `from_preset(name)` (KerasHub's
convention), and saving a model's weights as one. Their names and cards: vcar_tf.presets.
"""

import os

from vcar_tf.errors import VcarError, first_line
from vcar_tf.models.registry import build
from vcar_tf.presets import CARD, WEIGHTS, file_sha256, preset_card, presets_dir


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
        reason = first_line(e).split(" Example error message")[0]  # Keras's list of every object follows
        raise VcarError(f"preset {name}: {WEIGHTS} does not load into {card['model']} ({reason})") from None
    return model
