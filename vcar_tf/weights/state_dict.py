"""Read a PyTorch state_dict as NumPy arrays, without PyTorch and without running code from the file.

Two forms are read:
- `.safetensors` (through the safetensors package);
- PyTorch's `.pt`/`.pth` zip checkpoint (`torch.save`'s format since 1.6): `ARCHIVE/data.pkl`, a
  pickle whose tensors point at raw storages `ARCHIVE/data/KEY`. The pickle is read by an
  unpickler that knows only the few names a state_dict needs (the tensor-rebuild functions, the
  storage types, OrderedDict) and maps them onto NumPy; any other name is refused before
  anything is called.

A checkpoint that wraps the weights (`{"state_dict": ...}`, as training scripts save them) is
unwrapped, and DataParallel's `module.` prefix is dropped.
"""

import collections
import os
import pickle
import zipfile

import numpy as np

from vcar_tf.errors import VcarError, first_line

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
STATE_DICT_KEYS = ("state_dict", "model", "params", "net")


class _StorageType:
    """Stands for torch.<X>Storage in the pickle: only its dtype is used."""

    def __init__(self, name):
        self.name, self.dtype = name, _STORAGE_DTYPES[name]


def _rebuild_tensor(storage, offset, size, stride, *_):
    """torch._utils._rebuild_tensor(_v2): a strided view of a storage, copied to a NumPy array."""
    size, stride = tuple(size), tuple(stride)
    if not size:
        return np.array(storage[offset])
    if any(s < 0 for s in stride) or offset + sum((n - 1) * s for n, s in zip(size, stride)) >= len(storage):
        raise VcarError("a tensor of the checkpoint lies outside its storage")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], size, tuple(s * item for s in stride), writeable=False)
    return np.array(view)


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix, path):
        super().__init__(file)
        self._archive, self._prefix, self._path = archive, prefix, path

    def find_class(self, module, name):
        found = _ALLOWED.get((module, name))
        if found is None:
            raise VcarError(f"{self._path}: refusing {module}.{name}: a state_dict needs only tensors "
                            "(the file may try to run code)")
        return found

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise VcarError(f"{self._path}: unknown persistent reference {str(pid)[:60]}")
        storage_type, key = pid[1], str(pid[2])
        try:
            raw = self._archive.read(f"{self._prefix}data/{key}")
        except KeyError:
            raise VcarError(f"{self._path}: storage {key} is missing from the archive") from None
        return np.frombuffer(raw, dtype=np.dtype(storage_type.dtype).newbyteorder("<"))


def _read_pt(path):
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise VcarError(f"{path}: not a PyTorch zip checkpoint (legacy non-zip .pt files are not read; "
                        "re-save it with torch.save or convert it to .safetensors)") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise VcarError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        if archive.namelist() and f"{prefix}byteorder" in archive.namelist() and \
                archive.read(f"{prefix}byteorder").strip() != b"little":
            raise VcarError(f"{path}: big-endian checkpoints are not supported")
        with archive.open(pickles[0]) as f:
            try:
                return _StateDictUnpickler(f, archive, prefix, path).load()
            except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError) as e:
                raise VcarError(f"{path}: corrupt checkpoint ({e})") from None


def _read_safetensors(path):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, ValueError, OSError) as e:
        raise VcarError(f"{path}: not a readable safetensors file ({first_line(e)})") from None


def _unwrap(obj, path):
    for key in STATE_DICT_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise VcarError(f"{path}: no state_dict of tensors found")
    return obj


def read_state_dict(path):
    """{key: np.ndarray} of a .pt/.pth or .safetensors checkpoint, `module.` prefixes removed."""
    if not os.path.isfile(path):
        raise VcarError(f"checkpoint not found: {path}")
    state = _read_safetensors(path) if path.endswith(".safetensors") else _read_pt(path)
    state = _unwrap(state, path)
    return {(k[len("module."):] if k.startswith("module.") else k): np.asarray(v) for k, v in state.items()}
