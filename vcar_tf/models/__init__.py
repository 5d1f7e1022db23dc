"""Model registry: `build(name, **overrides)`, `from_preset(name)`; importing this package registers every
model."""

from vcar_tf.models.arcnn import model as _arcnn  # noqa: F401  (registers the model)
from vcar_tf.models.dncnn import model as _dncnn  # noqa: F401
from vcar_tf.models.nl_convlstm import model as _nl_convlstm  # noqa: F401
from vcar_tf.models.rfda import model as _rfda  # noqa: F401
from vcar_tf.models.stdf import model as _stdf  # noqa: F401
from vcar_tf.models.stifn import model as _stifn  # noqa: F401
from vcar_tf.models.presets import from_preset
from vcar_tf.models.registry import build, names, spec


def summary():
    """(name, radius, parameters, description) for every registered model."""
    rows = []
    for n in names():
        s = spec(n)
        rows.append((n, s.radius, build(n).count_params(), s.description))
    return rows


__all__ = ["build", "from_preset", "names", "spec", "summary"]
