"""Write checkpoints in torch.save's zip format without PyTorch, for the .pt reader's tests: a
protocol-2 pickle whose tensors are torch._utils._rebuild_tensor_v2 calls on torch.FloatStorage
persistent references, and the raw little-endian storages beside it."""

import collections
import io
import pickle
import zipfile

import numpy as np


def _rebuild_tensor_v2(*args):  # written as torch._utils._rebuild_tensor_v2
    raise AssertionError("never called")


class FloatStorage:  # written as torch.FloatStorage
    pass


class _Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, storage, shape, offset=0, stride=None):
        self.storage, self.shape, self.offset = storage, tuple(shape), offset
        self.stride = stride if stride is not None else tuple(int(np.prod(self.shape[i + 1:]))
                                                               for i in range(len(self.shape)))

    def __reduce__(self):
        return _rebuild_tensor_v2, (self.storage, self.offset, self.shape, self.stride, False,
                                    collections.OrderedDict())


def strided_payload(numel, shape, offset, stride):
    """The pickle of {"w": a tensor of the given view on storage "0" of `numel` floats}, however
    hostile the view (write_pt(..., payload=...) puts the storage beside it)."""
    return pickle_bytes({"w": _Tensor(_Storage("0", numel), shape, offset, stride)})


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
        return None


def pickle_bytes(obj):
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    here = __name__.encode()
    return (buf.getvalue().replace(b"c" + here + b"\n_rebuild_tensor_v2\n", b"ctorch._utils\n_rebuild_tensor_v2\n")
            .replace(b"c" + here + b"\nFloatStorage\n", b"ctorch\nFloatStorage\n"))


def write_pt(path, state, wrap=True, prefix="module.", payload=None):
    """A torch.save-style checkpoint of {key: float32 array}; `payload` replaces the pickle."""
    storages, tensors = {}, collections.OrderedDict()
    for i, (key, value) in enumerate(state.items()):
        data = np.ascontiguousarray(value, dtype="<f4")
        storages[str(i)] = data.tobytes()
        tensors[prefix + key] = _Tensor(_Storage(str(i), data.size), data.shape)
    obj = {"num_iter_accum": 290000, "state_dict": tensors} if wrap else tensors
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ckp/data.pkl", payload if payload is not None else pickle_bytes(obj))
        z.writestr("ckp/byteorder", "little")
        for key, raw in storages.items():
            z.writestr(f"ckp/data/{key}", raw)
        z.writestr("ckp/version", "3\n")
