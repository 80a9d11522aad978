"""Reading and writing torchvision-style state_dicts: ``.pth``/``.pt`` read without torch
(by torch's ``weights_only`` rule), ``.safetensors`` through numpy alone, and the wrappers training scripts put
around them."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping

import numpy as np

from keras_resnet.convert.pth import CheckpointRefused, is_legacy_torch_file, read_pth


# Where training scripts commonly nest the state_dict, tried in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
# Prefixes that wrappers add to every key: DataParallel/DistributedDataParallel ("module."),
# torch.compile ("_orig_mod.").
KEY_PREFIXES = ("module.", "_orig_mod.")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"


def _to_numpy(value, key: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # a torch.Tensor; torch is imported already if we got one
        t = value.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            t = t.float()
        return t.numpy()
    raise ValueError(
        f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor; pass a plain "
        "state_dict (model.state_dict()) or a checkpoint that contains one"
    )


def _is_tensor_like(value) -> bool:
    return isinstance(value, np.ndarray) or hasattr(value, "detach")


def unwrap_state_dict(obj) -> tuple[dict[str, np.ndarray], list[str]]:
    """Finds the state_dict inside a loaded checkpoint; returns it as numpy and what was done.

    Accepted: a plain ``{name: tensor}`` mapping; one nested under ``"state_dict"``,
    ``"model_state_dict"`` or ``"model"`` (other entries such as ``"epoch"`` or
    ``"optimizer"`` are ignored); keys prefixed with ``"module."`` (DataParallel / DDP) or
    ``"_orig_mod."`` (torch.compile), which are stripped.
    """
    notes = []
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"expected a state_dict (a mapping of names to tensors), got a {type(obj).__name__}; "
            "save model.state_dict(), not the model object"
        )
    for _ in range(3):  # a wrapper inside a wrapper, e.g. {"model": {"state_dict": ...}}
        if obj and all(_is_tensor_like(v) for v in obj.values()):
            break
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                notes.append(f"took the state_dict from the checkpoint's {key!r} entry")
                obj = obj[key]
                break
        else:
            break
    non_tensors = sorted(k for k, v in obj.items() if not _is_tensor_like(v))
    if non_tensors or not obj:
        raise ValueError(
            "could not find a state_dict of tensors in the checkpoint: "
            + (f"entries {non_tensors} are not tensors; " if non_tensors else "it is empty; ")
            + f"looked at the top level and under {list(WRAPPER_KEYS)}"
        )
    keys = list(obj)
    for prefix in KEY_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            notes.append(f"stripped the {prefix!r} prefix from every key")
            obj = {k[len(prefix):]: v for k, v in obj.items()}
            keys = list(obj)
    return {k: _to_numpy(v, k) for k, v in obj.items()}, notes


def read_state_dict(source) -> tuple[dict[str, np.ndarray], list[str]]:
    """Reads a state_dict from a ``.pth``/``.pt``/``.bin``/``.ckpt`` file (safely), a
    ``.safetensors`` file, or an in-memory mapping of numpy arrays / torch tensors.

    Returns ``(state_dict as numpy arrays, notes on how it was unwrapped)``.

    ``.pth`` files are read by ``keras_resnet.convert.pth`` without torch (torch's old non-zip
    format by ``torch.load``), by the ``weights_only`` rule: only tensors and plain containers
    are unpickled, so a malicious file cannot run code; anything else is refused.
    """
    if isinstance(source, Mapping):
        return unwrap_state_dict(source)
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    if path.endswith(SAFETENSORS_SUFFIX):
        from safetensors.numpy import load_file

        try:
            tensors = load_file(path)
        except TypeError:  # a dtype numpy lacks (bfloat16)
            tensors = _read_safetensors_as_float32(path)
        except Exception as err:  # SafetensorError: the header lies about the file
            raise ValueError(
                f"{path}: not a valid .safetensors file ({_first_line(err)}); it is damaged, "
                "truncated or another format"
            ) from err
        if not tensors:
            raise ValueError(f"{path}: the .safetensors file holds no tensors")
        return unwrap_state_dict(tensors)
    if not path.endswith(TORCH_SUFFIXES):
        raise ValueError(
            f"{path}: unknown checkpoint type; expected one of "
            f"{[*TORCH_SUFFIXES, SAFETENSORS_SUFFIX]}"
        )
    if not is_legacy_torch_file(path):
        try:
            obj = read_pth(path)
        except CheckpointRefused as err:
            raise ValueError(f"{path}: refused to load: {_first_line(err)}; the file is damaged "
                             "or crafted") from err
        except pickle.UnpicklingError as err:
            raise ValueError(_refusal(path, err)) from err
        except Exception as err:  # zipfile, pickle and numpy each raise their own on bad bytes
            raise ValueError(_unreadable(path, err)) from err
        return unwrap_state_dict(obj)
    return unwrap_state_dict(_torch_load_legacy(path))


def _torch_load_legacy(path: str):
    """The pre-1.6 (non-zip) format, which only torch itself reads."""
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"reading {path} needs PyTorch (pip install torch): it is in torch's old, non-zip "
            "format; or save the checkpoint as .safetensors, which needs no torch"
        ) from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(_refusal(path, err)) from err
    except Exception as err:  # torch raises KeyError, RuntimeError, EOFError... on bad files
        raise ValueError(_unreadable(path, err)) from err


def _refusal(path: str, err: BaseException) -> str:
    return (
        f"{path}: refused to load: it holds something other than tensors and plain "
        "containers, whose unpickling could run arbitrary code, or is not a checkpoint "
        f"({_first_line(err)}). If you trust the file, load it yourself and pass its "
        "state_dict, or save it as .safetensors."
    )


def _unreadable(path: str, err: BaseException) -> str:
    return (f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: "
            f"{_first_line(err)}); it is damaged, truncated or another format")


def _first_line(err: BaseException) -> str:
    """The first sentence of a library's error, which can run to a paragraph or a traceback."""
    text = str(err).strip().splitlines()
    text = text[0] if text else type(err).__name__
    head = text.split(". ")[0]
    return head if len(head) <= 300 else head[:297] + "..."


def _read_safetensors_as_float32(path) -> dict[str, np.ndarray]:
    """Reads a .safetensors file whose tensors numpy cannot hold (bfloat16) as float32.

    The format is an 8-byte little-endian header length, a JSON header
    ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}`` and the raw data. Every
    length and offset is checked against the file before it is used: a damaged or hostile
    header must not make us allocate its claimed size or read past the end.
    """
    import json

    numpy_types = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8",
                   "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}

    def bad(what):
        return ValueError(f"{path}: not a valid .safetensors file ({what})")

    file_size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad("shorter than its 8-byte header length")
        size = int(np.frombuffer(head, "<u8")[0])
        if size > file_size - 8:
            raise bad(f"header length {size} runs past the end of the {file_size}-byte file")
        try:
            header = json.loads(f.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise bad(f"header is not JSON: {err}") from None
        data = f.read()
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            count = int(np.prod(shape, dtype=np.int64))
        except (TypeError, KeyError, ValueError):
            raise bad(f"tensor {name!r} has no valid dtype, shape and data_offsets") from None
        if dtype not in numpy_types:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        itemsize = np.dtype(numpy_types[dtype]).itemsize
        if not (0 <= begin <= end <= len(data)) or end - begin != count * itemsize:
            raise bad(f"tensor {name!r}: data_offsets {[begin, end]} do not fit its shape "
                      f"{shape} and the {len(data)} bytes of data")
        array = np.frombuffer(data[begin:end], numpy_types[dtype])
        if dtype == "BF16":  # the top half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        out[name] = array.reshape(shape).copy()
    return out


def write_state_dict(sd: dict[str, np.ndarray], path: str, model_name: str) -> None:
    if path.endswith(SAFETENSORS_SUFFIX):
        from safetensors.numpy import save_file

        metadata = {"format": "pt", "source": "keras_resnet", "model": model_name}
        save_file(sd, path, metadata=metadata)
        follow_umask(path)
    elif path.endswith(TORCH_SUFFIXES):
        try:
            import torch
        except ImportError as err:
            raise ImportError(
                f"writing {path} needs PyTorch (pip install torch); .safetensors needs no torch"
            ) from err
        torch.save({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, path)
    else:
        raise ValueError(
            f"{path}: unknown output type; expected {[*TORCH_SUFFIXES, SAFETENSORS_SUFFIX]}"
        )


def follow_umask(path: str) -> None:
    # safetensors writes through a private temporary file and leaves 0600; a converted model
    # is meant to be shared like any file the user creates.
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
