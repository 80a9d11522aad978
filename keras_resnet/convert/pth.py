"""Reads a PyTorch checkpoint saved by ``torch.save`` (the zip format every torch since 1.6
writes) into numpy arrays without PyTorch: a Keras user fetching torchvision's weights should not
need a multi-gigabyte install to read one file.

Safety is torch's ``weights_only`` rule, kept by an unpickler that knows a short list of names
(tensor rebuilders, storage types, ``OrderedDict``) and refuses every other one, so a checkpoint
cannot run code while it is read. The file is also hostile data in every number it holds, so it
is read memory-safely by construction:

- the zip's entry names are unique (zipfile takes the last of two equal names, torch the first:
  the same file would give other weights than torch shows);
- every entry's declared size is checked against a limit derived from the file's own size (and
  the model-file weights limit) before a byte is inflated, and zipfile never inflates more than
  an entry declares;
- every storage's element count is checked against the size of its entry before it is read;
- every tensor's offset, sizes and strides are whole numbers, none negative, and its last element
  lies inside its storage; the elements all tensors materialize are bounded by the same limit;
- what the pickle can touch (storage types, rebuilders, storages) is made afresh for each file
  and cannot be changed by it: BUILD is allowed onto a new ``OrderedDict`` only, item and list
  opcodes onto new dicts and lists only, and object-creating opcodes not at all.

Every refusal is a ``CheckpointRefused`` (a ``pickle.UnpicklingError``) of one line.
"""

from __future__ import annotations

import collections
import io
import math
import os
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
# torch.save stores its entries uncompressed; a checkpoint compressed afterwards inflates by a
# little for float weights. Beyond this ratio of the file's own size an entry, or all the
# tensors read, can only be a memory bomb.
MAX_INFLATION = 4
# Room for the small files (a few tensors and their pickle) that the ratio alone would starve.
SLACK_BYTES = 2**20
# numpy's own limit on dimensions.
MAX_DIMS = 64


class CheckpointRefused(pickle.UnpicklingError):
    """A checkpoint whose structure or numbers cannot be read safely; one line naming why."""


def read_limit(path) -> int:
    """The most bytes reading ``path`` may inflate or materialize: a multiple of its size, never
    above the model-file weights limit (``KERAS_RESNET_MAX_WEIGHTS_BYTES``, default 2 GiB)."""
    from keras_resnet.modelfile import DEFAULT_MAX_WEIGHTS_BYTES, MAX_WEIGHTS_VARIABLE

    cap = DEFAULT_MAX_WEIGHTS_BYTES
    text = os.environ.get(MAX_WEIGHTS_VARIABLE, "").strip().replace("_", "")
    if text.isdigit() and int(text) > 0:
        cap = int(text)
    return min(cap, MAX_INFLATION * os.path.getsize(path) + SLACK_BYTES)


def _whole(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointRefused(f"a tensor's {what} is {value!r:.40}, not a whole number >= 0")
    return value


class _Frozen:
    """A stand-in the pickle can refer to but never change."""

    __slots__ = ()

    def __setattr__(self, name, value):
        raise CheckpointRefused("the checkpoint tries to change one of the reader's objects")

    def __reduce__(self):
        raise TypeError("not picklable")


class _StorageType(_Frozen):
    __slots__ = ("name", "dtype", "itemsize")

    def __init__(self, name: str):
        dtype = STORAGE_DTYPES[name]
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "itemsize", 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize)


class _Storage(_Frozen):
    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        object.__setattr__(self, "array", array)


class _Call(_Frozen):
    """A function the pickle may call (REDUCE), bound to one read."""

    __slots__ = ("function",)

    def __init__(self, function):
        object.__setattr__(self, "function", function)

    def __call__(self, *args):
        return self.function(*args)


class _Budget:
    def __init__(self, limit: int):
        self.left = limit
        self.limit = limit

    def take(self, nbytes: int, what: str) -> None:
        if nbytes > self.left:
            raise CheckpointRefused(
                f"{what} would take {nbytes} bytes, more than the {self.limit} bytes this "
                f"file's size allows ({MAX_INFLATION}x the file, at most the weights limit)")
        self.left -= nbytes


def _rebuild_tensor(budget: _Budget, storage, offset, size, stride, requires_grad,
                    _backward_hooks, *_metadata) -> np.ndarray:
    if not isinstance(storage, _Storage):
        raise CheckpointRefused("a tensor is built over something that is not a storage")
    if not isinstance(requires_grad, bool):  # as torch refuses it
        raise CheckpointRefused(f"a tensor's requires_grad is {requires_grad!r:.40}, not a bool")
    if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)) \
            or len(size) != len(stride) or len(size) > MAX_DIMS:
        raise CheckpointRefused(f"a tensor's size {size!r:.60} and stride {stride!r:.60} are not "
                                f"two sequences of the same length (at most {MAX_DIMS})")
    array = storage.array
    offset = _whole(offset, "storage offset")
    size = tuple(_whole(n, "size") for n in size)
    stride = tuple(_whole(s, "stride") for s in stride)
    count = math.prod(size)
    budget.take(count * array.itemsize, f"a tensor of shape {list(size)}")
    if count == 0:
        return np.empty(size, dtype=array.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= array.size:
        raise CheckpointRefused(
            f"a tensor of shape {list(size)} (offset {offset}, stride {list(stride)}) reaches "
            f"element {last} of a storage of {array.size} elements")
    view = np.lib.stride_tricks.as_strided(
        array[offset:], shape=size, strides=tuple(s * array.itemsize for s in stride),
        writeable=False)
    return np.array(view, order="C", copy=True)


def _rebuild_parameter(data, _requires_grad, _backward_hooks, *_ignored) -> np.ndarray:
    if not isinstance(data, np.ndarray):
        raise CheckpointRefused("a parameter is built over something that is not a tensor")
    return data


def _refused_opcode(name: str):
    def refuse(self):
        raise CheckpointRefused(f"the checkpoint uses pickle opcode {name}, which builds "
                                "objects a weights file has no use for")
    return refuse


class _Unpickler(pickle._Unpickler):  # the Python one: its opcodes can be restricted
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, entries: dict, read_entry, little_endian: bool, budget: _Budget):
        super().__init__(file)
        self._entries = entries
        self._read_entry = read_entry
        self._little = little_endian
        self._budget = budget
        self._storages: dict[str, _Storage] = {}
        self._globals = {
            ("collections", "OrderedDict"): _Call(collections.OrderedDict),
            ("torch._utils", "_rebuild_tensor_v2"): _Call(
                lambda *args: _rebuild_tensor(budget, *args)),
            ("torch._utils", "_rebuild_parameter"): _Call(_rebuild_parameter),
            **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
        }
        self._calls = {id(v) for v in self._globals.values() if isinstance(v, _Call)}

    def find_class(self, module, name):
        key = (module, name)
        if isinstance(module, str) and isinstance(name, str) and key in self._globals:
            return self._globals[key]
        raise pickle.UnpicklingError(
            f"the checkpoint refers to {module!s:.60}.{name!s:.60}, which is not a tensor or a "
            "plain container")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise CheckpointRefused(f"unknown persistent record {pid!r:.80}")
        kind, key, numel = pid[1], pid[2], pid[4]
        if key not in self._storages:
            self._storages[key] = self._read_storage(kind, key, _whole(numel, "storage size"))
        storage = self._storages[key]
        if storage.array.size != numel or storage.array.dtype != _numpy_dtype(kind):
            raise CheckpointRefused(f"storage {key!r:.40} is read as two different types or "
                                    "sizes")
        return storage

    def _read_storage(self, kind: _StorageType, key: str, numel: int) -> _Storage:
        name = f"data/{key}"
        info = self._entries.get(name)
        if info is None:
            raise CheckpointRefused(f"the checkpoint has no entry {name!r:.60} for a storage")
        if info.file_size != numel * kind.itemsize:
            raise CheckpointRefused(
                f"storage {key!r:.40} claims {numel} {kind.name} elements, but its entry holds "
                f"{info.file_size} bytes")
        raw = self._read_entry(info)
        order = "<" if self._little else ">"
        if kind.dtype == "bfloat16":
            words = np.frombuffer(raw, dtype=f"{order}u2").astype(np.uint32) << 16
            return _Storage(words.view(np.float32))
        dtype = np.dtype(kind.dtype)
        wire = dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype
        return _Storage(np.frombuffer(raw, dtype=wire).astype(dtype.newbyteorder("=")))

    # What the pickle may do to objects, each limited to the fresh containers it built.
    def _build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is not collections.OrderedDict or not isinstance(state, dict) \
                or not all(isinstance(k, str) for k in state):
            raise CheckpointRefused("the checkpoint sets the state of something that is not a "
                                    "plain OrderedDict")
        inst.__dict__.update(state)

    def _reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if id(func) not in self._calls or not isinstance(args, tuple):
            raise CheckpointRefused("the checkpoint calls something that is not a tensor "
                                    "rebuilder or a container")
        self.stack[-1] = func(*args)

    def _setitems(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) not in (dict, collections.OrderedDict):
            raise CheckpointRefused("the checkpoint sets items of something that is not a dict")
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def _setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        target = self.stack[-1]
        if type(target) not in (dict, collections.OrderedDict):
            raise CheckpointRefused("the checkpoint sets items of something that is not a dict")
        target[key] = value

    def _appends(self):
        items = self.pop_mark()
        if type(self.stack[-1]) is not list:
            raise CheckpointRefused("the checkpoint appends to something that is not a list")
        self.stack[-1].extend(items)

    def _append(self):
        value = self.stack.pop()
        if type(self.stack[-1]) is not list:
            raise CheckpointRefused("the checkpoint appends to something that is not a list")
        self.stack[-1].append(value)

    def _additems(self):
        items = self.pop_mark()
        if type(self.stack[-1]) is not set:
            raise CheckpointRefused("the checkpoint adds to something that is not a set")
        self.stack[-1].update(items)

    dispatch[pickle.BUILD[0]] = _build
    dispatch[pickle.REDUCE[0]] = _reduce
    dispatch[pickle.SETITEMS[0]] = _setitems
    dispatch[pickle.SETITEM[0]] = _setitem
    dispatch[pickle.APPENDS[0]] = _appends
    dispatch[pickle.APPEND[0]] = _append
    dispatch[pickle.ADDITEMS[0]] = _additems
    for _name in ("INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4"):
        dispatch[getattr(pickle, _name)[0]] = _refused_opcode(_name)
    del _name


def _numpy_dtype(kind: _StorageType) -> np.dtype:
    return np.dtype(np.float32 if kind.dtype == "bfloat16" else kind.dtype)


def is_legacy_torch_file(path) -> bool:
    """torch before 1.6 wrote a bare pickle stream (which begins with its PROTO opcode); every
    later torch.save writes a zip archive. Anything else is read as a zip, and fails as one."""
    with open(path, "rb") as file:
        return file.read(1) == b"\x80"


def _entries(archive: zipfile.ZipFile, limit: int) -> dict[str, zipfile.ZipInfo]:
    """The archive's entries by name, each checked before anything is inflated."""
    entries = {}
    total = 0
    for info in archive.infolist():
        if info.filename in entries:
            raise CheckpointRefused(f"the zip holds two entries named {info.filename!r:.80} "
                                    "(torch and zipfile would read different ones)")
        entries[info.filename] = info
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise CheckpointRefused(f"entry {info.filename!r:.80} is stored but declares "
                                    f"{info.file_size} bytes in {info.compress_size}")
        total += info.file_size
        if info.file_size > limit or total > limit:
            raise CheckpointRefused(
                f"entry {info.filename!r:.80} would inflate the checkpoint to over {limit} "
                f"bytes ({MAX_INFLATION}x the file, at most the weights limit)")
    return entries


def read_pth(path):
    """Returns what ``torch.load(path, weights_only=True)`` would, with numpy arrays in place of
    tensors. Raises ``pickle.UnpicklingError`` (``CheckpointRefused`` for a file that cannot be
    read safely) for anything beyond tensors and containers, and ``ValueError`` for a file
    that is not a torch checkpoint."""
    limit = read_limit(path)
    with zipfile.ZipFile(path) as archive:
        entries = _entries(archive, limit)
        pickles = [n for n in entries if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise ValueError("the zip file holds no torch checkpoint (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        mine = {n[len(prefix):]: info for n, info in entries.items() if n.startswith(prefix)}
        little = True
        if "byteorder" in mine:
            little = archive.read(mine["byteorder"]).strip() != b"big"
        data = archive.read(mine["data.pkl"])
        unpickler = _Unpickler(io.BytesIO(data), mine, archive.read, little, _Budget(limit))
        return unpickler.load()
