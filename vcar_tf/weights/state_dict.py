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
    """Stands for torch.<X>Storage in the pickle: only its dtype is used. Immutable, so that a
    file's BUILD opcode cannot change the type every later load shares."""

    __slots__ = ("name", "dtype")

    def __init__(self, name):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", _STORAGE_DTYPES[name])

    def __setattr__(self, key, value):
        raise pickle.UnpicklingError("a storage type cannot be changed")


def _count(value):
    """A size, stride or offset of the file: a plain int >= 0, or the file is refused."""
    if type(value) is not int or value < 0:
        raise VcarError(f"a tensor of the checkpoint has a bad size, stride or offset ({str(value)[:40]})")
    return value


def _rebuild_tensor(storage, offset, size, stride, *_):
    """torch._utils._rebuild_tensor(_v2): a strided view of a storage, copied to a NumPy array.
    Every number comes from the file, so the view is checked to lie inside its storage and to hold
    no more elements than it (a stride of 0 would repeat one value into any size)."""
    if not isinstance(storage, np.ndarray) or not isinstance(size, (tuple, list)) or \
            not isinstance(stride, (tuple, list)) or len(size) != len(stride):
        raise VcarError("a tensor of the checkpoint is malformed")
    offset, size, stride = _count(offset), tuple(map(_count, size)), tuple(map(_count, stride))
    if 0 in size:
        return np.zeros(size, storage.dtype)
    elements = int(np.prod(size, dtype=object))
    if elements > len(storage) or offset + sum((n - 1) * s for n, s in zip(size, stride)) >= len(storage):
        raise VcarError("a tensor of the checkpoint lies outside its storage")
    if not size:
        return np.array(storage[offset])
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
        self._storages = {}  # each storage read once, however often the pickle names it

    def find_class(self, module, name):
        found = _ALLOWED.get((module, name))
        if found is None and module == "torch" and name.endswith("Storage"):
            raise VcarError(f"{self._path}: {name} tensors are not read (only "
                            f"{', '.join(s[:-len('Storage')] for s in _STORAGE_DTYPES)}): save the state_dict "
                            "in float32")
        if found is None:
            raise VcarError(f"{self._path}: refusing {module}.{name}: a state_dict needs only tensors "
                            "(the file may try to run code)")
        return found

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise VcarError(f"{self._path}: unknown persistent reference {str(pid)[:60]}")
        storage_type, key = pid[1], str(pid[2])
        if (key, storage_type.name) in self._storages:
            return self._storages[key, storage_type.name]
        name = f"{self._prefix}data/{key}"
        try:
            info = self._archive.getinfo(name)
        except KeyError:
            raise VcarError(f"{self._path}: storage {key} is missing from the archive") from None
        if info.compress_type != zipfile.ZIP_STORED:  # torch.save stores them; a deflated one may be a bomb
            raise VcarError(f"{self._path}: storage {key} is compressed, which torch.save never writes")
        storage = np.frombuffer(self._archive.read(name), dtype=np.dtype(storage_type.dtype).newbyteorder("<"))
        self._storages[key, storage_type.name] = storage
        return storage


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
        try:
            if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder").strip() != b"little":
                raise VcarError(f"{path}: big-endian checkpoints are not supported")
            with archive.open(pickles[0]) as f:
                return _StateDictUnpickler(f, archive, prefix, path).load()
        except VcarError:
            raise
        except Exception as e:  # noqa: BLE001  (whatever a damaged or hostile file raises: one line)
            raise VcarError(f"{path}: corrupt checkpoint ({type(e).__name__}: {first_line(e)})") from None


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
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, np.ndarray)
                                                       and v.dtype.kind in "biuf" for k, v in obj.items()):
        raise VcarError(f"{path}: no state_dict of tensors found")
    return obj


def read_state_dict(path):
    """{key: np.ndarray} of a .pt/.pth or .safetensors checkpoint, `module.` prefixes removed."""
    if not os.path.isfile(path):
        raise VcarError(f"checkpoint not found: {path}")
    state = _read_safetensors(path) if path.endswith(".safetensors") else _read_pt(path)
    state = _unwrap(state, path)
    return {(k[len("module."):] if k.startswith("module.") else k): np.asarray(v) for k, v in state.items()}
