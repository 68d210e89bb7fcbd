"""Reading PyTorch checkpoint files (.pth, .pt, .bin) with numpy alone, PyTorch not needed.

Since PyTorch 1.6 `torch.save` writes a zip archive: `<name>/data.pkl`, a pickle of the saved
object whose tensors refer to storages by key, and `<name>/data/<key>`, each storage's raw bytes.
The pickle is read by an unpickler that knows only the few globals a state dict needs (mapped to
numpy) and refuses every other one before anything runs, so reading a file from anywhere cannot
execute code. The older (pre-1.6, non-zip) format is refused with a clear error.
"""
from __future__ import annotations

import collections
import os
import pickle
import zipfile

import numpy as np

# torch's storage classes and the numpy dtype of their bytes (bfloat16 is read as uint16, then widened)
_STORAGES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16, "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint's pickle names a global that a state dict of tensors does not need."""


class _StorageType:
    def __init__(self, name: str):
        self.name = name


def _bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *unused) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2: a view of `storage` by offset, shape and strides, copied."""
    shape, stride = tuple(size), tuple(stride)
    if not shape:
        return storage[offset].copy()
    if any(d == 0 for d in shape):
        return np.zeros(shape, storage.dtype)
    strides = tuple(s * storage.itemsize for s in stride)
    return np.lib.stride_tricks.as_strided(storage[offset:], shape, strides, writeable=False).copy()


def _rebuild_parameter(data: np.ndarray, *unused) -> np.ndarray:
    return data


_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGES},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str):
        super().__init__(file)
        self.archive, self.prefix, self.byteorder = archive, prefix, byteorder
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"the pickle names the global {module}.{name}, which a state dict of tensors does not need; "
                "it was refused before anything ran"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafeCheckpointError(f"unknown persistent id {pid!r:.80}")
        storage_type, key = pid[1], str(pid[2])
        if key not in self.storages:  # storages shared by several tensors are read once
            dtype = _STORAGES[storage_type.name]
            raw = self.archive.read(f"{self.prefix}data/{key}")
            if dtype == "bfloat16":
                bits = np.frombuffer(raw, np.dtype(np.uint16).newbyteorder(self.byteorder))
                self.storages[key] = _bfloat16_to_float32(bits.astype(np.uint16))
            else:
                self.storages[key] = np.frombuffer(raw, np.dtype(dtype).newbyteorder(self.byteorder))
        return self.storages[key]


def load(path: str | os.PathLike) -> object:
    """The object `torch.save` wrote to `path`, with numpy arrays in place of tensors."""
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80":  # a pickle: the format torch.save wrote before PyTorch 1.6
            raise pickle.UnpicklingError(
                "it is in PyTorch's legacy (pre-1.6, non-zip) format, which is read only with torch installed; "
                "re-save it with a current torch.save"
            )
        raise pickle.UnpicklingError("it is not a zip archive as torch.save writes: truncated or not a PyTorch checkpoint")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise pickle.UnpicklingError("the zip archive has no <name>/data.pkl: not a PyTorch checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "<"
        if f"{prefix}byteorder" in archive.namelist():
            byteorder = "<" if archive.read(f"{prefix}byteorder").strip() == b"little" else ">"
        with archive.open(pickles[0]) as f:
            return _Unpickler(f, archive, prefix, byteorder).load()
