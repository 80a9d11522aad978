"""Reads a PyTorch checkpoint saved by ``torch.save`` (the zip format every torch since 1.6
writes) into numpy arrays without PyTorch: a Keras user fetching torchvision's weights should not
need a multi-gigabyte install to read one file.

Safety is torch's ``weights_only`` rule, kept by an unpickler that knows a short list of names
(tensor rebuilders, storage types, ``OrderedDict``) and refuses every other one, so a checkpoint
cannot run code while it is read.
"""

from __future__ import annotations

import collections
import pickle
import zipfile

import numpy as np


# torch's pickled storage class names, by the element type they hold. bfloat16 has no numpy
# type: its 16-bit words are widened to float32 below.
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> np.ndarray:
    array = storage
    if not size:
        return np.array(array[offset])
    if 0 in size:
        return np.empty(tuple(size), dtype=array.dtype)
    itemsize = array.itemsize
    if array.size < offset + 1 + sum((n - 1) * s for n, s in zip(size, stride)):
        raise pickle.UnpicklingError("a tensor reaches past the end of its storage")
    view = np.lib.stride_tricks.as_strided(
        array[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride),
        writeable=False)
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, _requires_grad, _backward_hooks, *_ignored) -> np.ndarray:
    return data


_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, little_endian: bool):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._little = little_endian
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module, name):
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"the checkpoint refers to {module}.{name}, which is not a tensor or a plain "
                "container") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent record {pid!r:.80}")
        kind, key = pid[1], str(pid[2])
        if key not in self._storages:
            self._storages[key] = self._read_storage(kind, key)
        return self._storages[key]

    def _read_storage(self, kind: _StorageType, key: str) -> np.ndarray:
        raw = self._archive.read(f"{self._prefix}data/{key}")
        order = "<" if self._little else ">"
        if kind.dtype == "bfloat16":
            words = np.frombuffer(raw, dtype=f"{order}u2").astype(np.uint32) << 16
            return words.view(np.float32)
        dtype = np.dtype(kind.dtype).newbyteorder(order) if np.dtype(kind.dtype).itemsize > 1 \
            else np.dtype(kind.dtype)
        return np.frombuffer(raw, dtype=dtype).astype(np.dtype(kind.dtype).newbyteorder("="),
                                                      copy=False)


def is_legacy_torch_file(path) -> bool:
    """torch before 1.6 wrote a bare pickle stream (which begins with its PROTO opcode); every
    later torch.save writes a zip archive. Anything else is read as a zip, and fails as one."""
    with open(path, "rb") as file:
        return file.read(1) == b"\x80"


def read_pth(path):
    """Returns what ``torch.load(path, weights_only=True)`` would, with numpy arrays in place of
    tensors. Raises ``pickle.UnpicklingError`` for anything beyond tensors and containers, and
    ``ValueError`` for a file that is not a torch checkpoint."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise ValueError("the zip file holds no torch checkpoint (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        names = set(archive.namelist())
        little = True
        if f"{prefix}byteorder" in names:
            little = archive.read(f"{prefix}byteorder").strip() != b"big"
        with archive.open(pickles[0]) as file:
            return _Unpickler(file, archive, prefix, little).load()
