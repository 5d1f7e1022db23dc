"""One registry of model builders: `build(name, **overrides)` is the only way entry points make a model."""

import dataclasses
from typing import Optional

from vcar_tf.errors import VcarError

_BUILDERS = {}
_ALIASES = {}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: object
    radius: int
    description: str
    clip_length: Optional[int] = None  # recurrent models: trained on clips of this many frames

    @property
    def recurrent(self):
        """Registered with a clip length: its models follow vcar_tf.models.recurrent's protocol."""
        return self.clip_length is not None


def register(name, radius, description, aliases=(), clip_length=None):
    """Decorator: register `builder(**overrides) -> keras.Model` under `name` (and aliases).

    Window models map (B, 2R+1, H, W, 1) to the centre frame (B, H, W, 1). Recurrent models
    (clip_length set) follow the protocol of vcar_tf.models.recurrent; the trainer feeds them
    clips and sums the loss over the frames."""

    def wrap(builder):
        if name in _BUILDERS or name in _ALIASES:
            raise ValueError(f"model {name!r} registered twice")
        _BUILDERS[name] = ModelSpec(name, builder, radius, description, clip_length)
        for alias in aliases:
            _ALIASES[alias] = name
        return builder

    return wrap


def names():
    return sorted(_BUILDERS)


def spec(name):
    key = _ALIASES.get(name, name)
    if key not in _BUILDERS:
        raise VcarError(f"unknown model {name!r}; the registry has: {', '.join(names())}"
                        + (f" (aliases: {', '.join(f'{a}={t}' for a, t in sorted(_ALIASES.items()))})"
                           if _ALIASES else ""))
    return _BUILDERS[key]


def build(name, **overrides):
    """Build a registered model; overrides go to its builder."""
    s = spec(name)
    try:
        return s.builder(**overrides)
    except TypeError as e:
        raise VcarError(f"{s.name}: bad override ({e})") from None
