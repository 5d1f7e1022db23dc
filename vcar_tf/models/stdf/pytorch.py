"""STDF-PyTorch (the authors' release) state_dict -> our stdf_r3 / stdf_r3l, tensor for tensor.

The release names its layers `ffnet.*` (alignment and fusion) and `qenet.*` (quality enhancement);
every one has a layer of ours (`PYTORCH_LAYERS`). Kernels move from PyTorch's (O, I, kH, kW) to
Keras's (kH, kW, I, O); ConvTranspose2d's (I, O, kH, kW) to Conv2DTranspose's (kH, kW, O, I): both
are the same axis permutation. The offsets keep their layout (deformable group g, tap k: channel
g·18 + 2k is dy, the next dx; masks are the last 63 channels), which is also ours.
"""

import re

import numpy as np

from vcar_tf.errors import VcarError
from vcar_tf.models.registry import build, spec
from vcar_tf.weights.state_dict import read_state_dict

# what each registered STDF variant is, in the release's terms
VARIANTS = {"stdf_r3": {"nf": 32, "nb": 3, "nf_qe": 48, "nb_qe": 8},
            "stdf_r3l": {"nf": 64, "nb": 3, "nf_qe": 64, "nb_qe": 16}}
PYTORCH_LAYERS = [
    (r"ffnet\.in_conv\.0", lambda m: "offset_in_conv"),
    (r"ffnet\.dn_conv(\d+)\.0", lambda m: f"offset_dn{m[1]}_a"),
    (r"ffnet\.dn_conv(\d+)\.2", lambda m: f"offset_dn{m[1]}_b"),
    (r"ffnet\.tr_conv\.0", lambda m: "offset_tr_a"),
    (r"ffnet\.tr_conv\.2", lambda m: "offset_tr_b"),
    (r"ffnet\.tr_conv\.4", lambda m: "offset_tr_up"),
    (r"ffnet\.up_conv(\d+)\.0", lambda m: f"offset_up{m[1]}_a"),
    (r"ffnet\.up_conv(\d+)\.2", lambda m: f"offset_up{m[1]}_b"),
    (r"ffnet\.out_conv\.0", lambda m: "offset_out_conv"),
    (r"ffnet\.offset_mask", lambda m: "offset_mask"),
    (r"ffnet\.deform_conv", lambda m: "fusion"),
    (r"qenet\.in_conv\.0", lambda m: "qe_1"),
    (r"qenet\.hid_conv\.(\d*[02468])", lambda m: f"qe_{int(m[1]) // 2 + 2}"),  # odd indices are ReLUs
]


def keras_layer_of(key, nb_qe):
    """(our layer name, 'kernel' | 'bias') of a release key, or None for a key that is not one."""
    layer, _, kind = key.rpartition(".")
    if kind not in ("weight", "bias"):
        return None
    if layer == "qenet.out_conv":
        return f"qe_{nb_qe}", "kernel" if kind == "weight" else "bias"
    for pattern, name in PYTORCH_LAYERS:
        match = re.fullmatch(pattern, layer)
        if match:
            return name(match), "kernel" if kind == "weight" else "bias"
    return None


def variant_of(state):
    """The registered name whose shapes the release state_dict has (stdf_r3 or stdf_r3l)."""
    try:
        first, qe_first = state["ffnet.in_conv.0.weight"], state["qenet.in_conv.0.weight"]
    except KeyError as e:
        raise VcarError(f"not an STDF-PyTorch state_dict: no {e.args[0]}") from None
    if first.ndim != 4 or qe_first.ndim != 4:
        raise VcarError(f"not an STDF-PyTorch state_dict: its input convolutions' weights have shapes "
                        f"{first.shape} and {qe_first.shape}, not (out, in, 3, 3)")
    nf, frames = first.shape[:2]
    nf_qe = qe_first.shape[0]
    nb_qe = 2 + len({k for k in state if re.fullmatch(r"qenet\.hid_conv\.\d*[02468]\.weight", k)})
    for name, v in VARIANTS.items():
        if (nf, nf_qe, nb_qe) == (v["nf"], v["nf_qe"], v["nb_qe"]) and frames == 2 * spec(name).radius + 1:
            return name
    raise VcarError(f"this STDF checkpoint (nf {nf}, QE {nf_qe}x{nb_qe}, {frames} frames) is neither "
                    f"{' nor '.join(VARIANTS)}")


def stdf_from_state_dict(state):
    """(registered name, Keras model holding the release's weights); every key is checked: missing,
    unexpected and wrongly shaped tensors are named in one error."""
    name = variant_of(state)
    model = build(name)
    variables = {v.path: v for v in model.weights}
    nb_qe = VARIANTS[name]["nb_qe"]
    unexpected, wrong, assigned = [], [], set()
    for key, value in sorted(state.items()):
        target = keras_layer_of(key, nb_qe)
        path = None if target is None else f"{target[0]}/{target[1]}"
        if path not in variables:
            unexpected.append(key)
            continue
        value = np.asarray(value, np.float32)
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)
        if tuple(value.shape) != tuple(variables[path].shape):
            wrong.append(f"{key} {tuple(state[key].shape)} (expected {_pytorch_shape(variables[path].shape)})")
            assigned.add(path)  # named once, as wrongly shaped
            continue
        variables[path].assign(value)
        assigned.add(path)
    missing = sorted(p for p in variables if p not in assigned)
    problems = [f"{what}: {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}"
                for what, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]
    if problems:
        raise VcarError(f"STDF-PyTorch checkpoint does not fit {name}: {'; '.join(problems)}")
    return name, model


def _pytorch_shape(shape):
    shape = tuple(shape)
    return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape


def load_release(path):
    """(registered name, Keras model) of an STDF-PyTorch release checkpoint (.pt or .safetensors)."""
    return stdf_from_state_dict(read_state_dict(path))
