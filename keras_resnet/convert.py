"""PyTorch interop: torchvision-style ResNet state_dicts <-> keras_resnet models.

Import (PyTorch -> Keras)::

    model = from_torch("resnet50.pth")                 # arch, stem, classes... inferred
    model = from_torch("resnet50.safetensors", arch="resnet50", input_shape=(224, 224, 3),
                       normalization=IMAGENET_NORMALIZATION)   # takes raw 0..255 pixels

Export (Keras -> PyTorch)::

    save_torch_state_dict(model, "resnet50.pth")       # or .safetensors
    torchvision.models.resnet50().load_state_dict(torch.load("resnet50.pth"), strict=True)

CLI::

    python -m keras_resnet.convert --from-torch resnet50.pth --arch resnet50 --out resnet50.keras
    python -m keras_resnet.convert --to-torch resnet50.keras --out resnet50.pth resnet50.safetensors

Name mapping (torch -> Keras): ``conv1`` -> ``stem_conv``, ``bn1`` -> ``stem_bn``,
``layer{s}.{i}.conv{j}`` / ``.bn{j}`` -> ``stage{s}_block{i+1}_conv{j}`` / ``_bn{j}``,
``layer{s}.{i}.downsample.0`` / ``.1`` -> ``stage{s}_block{i+1}_shortcut`` / ``_shortcut_bn``,
``fc`` -> ``predictions``. Convolutions are OIHW in torch and HWIO in Keras; the classifier is
(out, in) in torch and (in, out) in Keras; batch norm weight, bias, running_mean, running_var are
gamma, beta, moving_mean, moving_variance (``num_batches_tracked`` is ignored on import and
written as 0 on export).

torch is optional: it is imported only to read or write ``.pth``/``.pt`` files. ``.safetensors``
files are read and written with ``safetensors.numpy``.

A torchvision model has no input normalization: a converted model expects the input that the torch
model expected (for torchvision's ImageNet weights: RGB in 0..1, normalized with the ImageNet mean
and std) unless ``normalization`` is given, which puts a ``normalization`` layer in front so the
Keras model takes raw 0..255 pixels. That layer is never exported to torch.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import sys
import warnings
from collections.abc import Mapping

import numpy as np

from keras_resnet.modelfile import load_model

# torchvision.transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]) on
# 0..1 images, expressed in raw 0..255 pixel units for build_resnet(normalization=...).
IMAGENET_NORMALIZATION = (
    (0.485 * 255, 0.456 * 255, 0.406 * 255),
    (0.229 * 255, 0.224 * 255, 0.225 * 255),
)

# Where training scripts commonly nest the state_dict, tried in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
# Prefixes that wrappers add to every key: DataParallel/DistributedDataParallel ("module."),
# torch.compile ("_orig_mod.").
KEY_PREFIXES = ("module.", "_orig_mod.")
# conv1 kernel size -> our stem (torchvision: 7x7/2 + max-pool; CIFAR variant: 3x3/1, no pool).
STEM_BY_KERNEL = {7: "imagenet", 3: "cifar"}
BN_PARAMS = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SAFETENSORS_SUFFIX = ".safetensors"

_BLOCK_NAME = re.compile(r"^stage(\d+)_block(\d+)$")
_TORCH_BLOCK_KEY = re.compile(r"^layer(\d+)\.(\d+)\.")


# --------------------------------------------------------------------------------------------
# Reading state_dicts


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

    ``.pth`` files are read with ``torch.load(weights_only=True)``: only tensors and plain
    containers are unpickled, so a malicious file cannot run code; anything else is refused.
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
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"reading {path} needs PyTorch (pip install torch); or save the checkpoint as "
            ".safetensors, which needs no torch"
        ) from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()
        raise ValueError(
            f"{path}: refused to load: torch.load(weights_only=True) found something other "
            "than tensors and plain containers, whose unpickling could run arbitrary code, or "
            f"a file that is not a checkpoint ({first[0] if first else err!r}). If you trust "
            "the file, load it yourself and pass its state_dict, or save it as .safetensors."
        ) from err
    except Exception as err:  # torch raises KeyError, RuntimeError, EOFError... on bad files
        raise ValueError(
            f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: "
            f"{_first_line(err)}); it is damaged, truncated or another format"
        ) from err
    return unwrap_state_dict(obj)


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


# --------------------------------------------------------------------------------------------
# What the weights say about the architecture


def infer_config(state_dict: Mapping) -> dict:
    """Architecture facts readable from a torchvision-style state_dict.

    Returns ``{"arch", "block", "depths", "stem", "width", "in_channels", "num_classes",
    "include_top"}``; ``arch`` is None when the block counts match no entry of ``ARCHS``.
    Raises ValueError if ``conv1.weight`` is missing or is not a 7x7 or 3x3 kernel.
    """
    from keras_resnet.builder import ARCHS

    w = state_dict.get("conv1.weight")
    if w is None:
        stems = [k for k in state_dict if k.endswith(".conv1.weight")
                 and not re.search(r"layer\d+\.\d+\.conv1", k)]
        prefixes = sorted({k[: -len("conv1.weight")] for k in stems})
        hint = (
            f"; its keys seem to start with {prefixes[0]!r}: pass "
            f"{{k.removeprefix({prefixes[0]!r}): v for k, v in state_dict.items()}}"
            if len(prefixes) == 1 else ""
        )
        raise ValueError(
            "state_dict has no 'conv1.weight'; this does not look like a torchvision ResNet "
            f"(first keys: {list(state_dict)[:5]}){hint}"
        )
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise ValueError(f"'conv1.weight' must be (out, in, k, k), got shape {tuple(w.shape)}")
    kernel = int(w.shape[2])
    if kernel not in STEM_BY_KERNEL:
        raise ValueError(
            f"'conv1.weight' is a {kernel}x{kernel} kernel; supported stems: "
            + ", ".join(f"{k}x{k} -> {s!r}" for k, s in STEM_BY_KERNEL.items())
        )
    blocks: dict[int, set[int]] = {}
    for key in state_dict:
        m = _TORCH_BLOCK_KEY.match(key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    depths = tuple(len(blocks.get(s, ())) for s in range(1, 5))
    block = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    arch = next((a for a, spec in ARCHS.items() if spec == (block, depths)), None)
    fc = state_dict.get("fc.weight")
    return {
        "arch": arch,
        "block": block,
        "depths": depths,
        "stem": STEM_BY_KERNEL[kernel],
        "width": int(w.shape[0]),
        "in_channels": int(w.shape[1]),
        "num_classes": int(fc.shape[0]) if fc is not None and fc.ndim == 2 else None,
        "include_top": "fc.weight" in state_dict or "fc.bias" in state_dict,
    }


# --------------------------------------------------------------------------------------------
# The name/layout map between a built model and torch keys


def _conv(layer):
    return [(layer.kernel, "conv", "weight")]


def _bn(layer):
    return [(getattr(layer, attr), "vector", torch_name) for torch_name, attr in BN_PARAMS]


def torch_key_map(model) -> list[tuple[str, object, str]]:
    """``[(torch key, keras variable, kind)]`` in torchvision's state_dict order.

    kind is "conv" (OIHW <-> HWIO), "dense" (transposed) or "vector". BN
    ``num_batches_tracked`` buffers are not listed (see ``bn_prefixes``).
    """
    names = {layer.name: layer for layer in model.layers}
    if "stem_conv" not in names or "stem_bn" not in names:
        raise ValueError(
            f"{model.name!r} is not a keras_resnet model (no 'stem_conv'/'stem_bn' layers); "
            "build it with keras_resnet.build_resnet"
        )
    out = []

    def add(prefix, entries):
        out.extend((f"{prefix}.{suffix}", var, kind) for var, kind, suffix in entries)

    add("conv1", _conv(names["stem_conv"]))
    add("bn1", _bn(names["stem_bn"]))
    blocks = []
    for layer in model.layers:
        m = _BLOCK_NAME.match(layer.name)
        if m:
            blocks.append((int(m.group(1)), int(m.group(2)), layer))
    for stage, index, block in sorted(blocks, key=lambda t: t[:2]):
        prefix = f"layer{stage}.{index - 1}"
        for j, (conv, bn) in enumerate(zip(block.convs, block.bns), start=1):
            add(f"{prefix}.conv{j}", _conv(conv))
            add(f"{prefix}.bn{j}", _bn(bn))
        if block.shortcut_conv is not None:
            add(f"{prefix}.downsample.0", _conv(block.shortcut_conv))
            add(f"{prefix}.downsample.1", _bn(block.shortcut_bn))
    if "predictions" in names:
        dense = names["predictions"]
        out.append(("fc.weight", dense.kernel, "dense"))
        out.append(("fc.bias", dense.bias, "vector"))
    return out


def _bn_prefixes(key_map) -> list[str]:
    return [k[: -len(".running_var")] for k, _, _ in key_map if k.endswith(".running_var")]


def _to_keras_layout(array: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv" and array.ndim == 4:
        return array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if kind == "dense" and array.ndim == 2:
        return array.T  # (out, in) -> (in, out)
    return array


def _to_torch_layout(array: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv":
        return array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    if kind == "dense":
        return array.T
    return array


def _torch_shape(var, kind) -> tuple:
    return tuple(_to_torch_layout(np.empty(tuple(var.shape), dtype=np.uint8), kind).shape)


# --------------------------------------------------------------------------------------------
# Import


def load_torch_state_dict(model, state_dict, strict: bool = True) -> dict:
    """Copies a torchvision-style state_dict into a built keras_resnet model.

    Every tensor is checked first; with ``strict`` (the default) any missing, unexpected or
    mis-shaped tensor raises one ValueError naming all of them and nothing is assigned.
    With ``strict=False`` the matching tensors are loaded and a warning names everything that
    was not (missing, mis-shaped, unexpected).

    Returns ``{"loaded": [...], "missing": [...], "unexpected": [...], "mismatched": [...]}``
    (torch key names; mismatched entries are ``"key: torch shape X, model needs Y"``).
    """
    sd, _ = read_state_dict(state_dict)
    key_map = torch_key_map(model)
    expected = {k for k, _, _ in key_map}
    optional = {f"{p}.num_batches_tracked" for p in _bn_prefixes(key_map)}
    missing = [k for k, _, _ in key_map if k not in sd]
    unexpected = [k for k in sd if k not in expected and k not in optional]
    mismatched, loadable = [], []
    for key, var, kind in key_map:
        if key not in sd:
            continue
        want = _torch_shape(var, kind)
        got = tuple(sd[key].shape)
        if got != want:
            mismatched.append(f"{key}: torch shape {got}, model needs {want}")
        else:
            loadable.append((key, var, kind))
    report = {
        "loaded": [k for k, _, _ in loadable],
        "missing": missing,
        "unexpected": unexpected,
        "mismatched": mismatched,
    }
    unusable = _unusable_values(sd, [k for k, _, _ in key_map if k in sd])
    if unusable:  # even without strict: such a tensor loads as zeros or poisons every output
        raise ValueError(unusable + "; nothing was loaded")
    problems = _describe_problems(report, sd, model)
    if problems and strict:
        raise ValueError(problems + "\nNothing was loaded.")
    for key, var, kind in loadable:
        var.assign(np.ascontiguousarray(_to_keras_layout(sd[key], kind), dtype=var.dtype))
    if problems:
        warnings.warn(
            f"loaded {len(loadable)} of {len(key_map)} tensors (strict=False); the rest keep "
            f"their current values.\n{problems}",
            stacklevel=2,
        )
    return report


def _unusable_values(sd: Mapping, keys) -> str:
    """What makes these tensors unusable as weights (non-float, NaN/inf), or ""."""
    floats = [k for k in keys if _is_float(sd[k].dtype)]
    not_float = [f"{k} ({sd[k].dtype})" for k in keys if k not in set(floats)]
    non_finite = [k for k in floats if not np.isfinite(sd[k].astype(np.float32)).all()]
    parts = []
    if not_float:
        parts.append(
            f"{len(not_float)} tensor(s) are not floating point (they would load as truncated "
            f"or zero weights): {_some(not_float)}"
        )
    if non_finite:
        parts.append(f"{len(non_finite)} tensor(s) hold NaN or inf: {_some(non_finite)}")
    return "; ".join(parts)


def _is_float(dtype) -> bool:
    # ml_dtypes' bfloat16 (what safetensors.numpy returns for BF16) is not a numpy float kind.
    return dtype.kind == "f" or "float" in dtype.name


def _some(names, limit=8) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _describe_problems(report, sd, model) -> str:
    parts = []
    for label in ("missing", "unexpected", "mismatched"):
        items = report[label]
        if items:
            parts.append(f"{len(items)} {label}:\n  " + "\n  ".join(items))
    if not parts:
        return ""
    head = f"state_dict does not match {model.name!r}"
    try:
        found = infer_config(sd)
    except ValueError:
        found = None
    if found is not None:
        head += (
            f" (the state_dict has {found['block']} blocks {list(found['depths'])}"
            f"{' = ' + found['arch'] if found['arch'] else ''}, stem {found['stem']!r}, "
            f"width {found['width']}, {found['in_channels']} input channel(s), "
            f"{found['num_classes']} classes)"
        )
        wide = [m for m in report["mismatched"] if re.match(r"layer\d+\.\d+\.(conv[12]|bn[12])", m)]
        if found["block"] == "bottleneck" and wide and not any(
            m.startswith(("conv1", "bn1")) for m in report["mismatched"]
        ):
            head += "; wide_resnet / resnext (width_per_group, groups) are not supported"
    return head + ":\n" + "\n".join(parts)


def from_torch(
    source,
    arch: str | None = None,
    *,
    input_shape=None,
    num_classes: int | None = None,
    include_top: bool | None = None,
    normalization=None,
    strict: bool = True,
    class_names=None,
    name: str | None = None,
    verbose: bool = False,
):
    """Builds a keras_resnet model holding the weights of a torchvision-style ResNet.

    Args:
        source: path to a ``.pth``/``.pt``/``.bin``/``.ckpt`` (read with
            ``torch.load(weights_only=True)``) or ``.safetensors`` file, or a state_dict
            (mapping of names to numpy arrays or torch tensors). Wrappers
            (``{"state_dict": ...}``, ``{"model": ...}``, ``"module."`` prefixes) are unwrapped.
        arch: one of ``ARCHS``; inferred from the block counts when None. When given, the
            state_dict is checked against it.
        input_shape: (height, width) or (height, width, channels); channels come from
            ``conv1``. Default ``(None, None, C)``: any image size. Fix the size to export
            (TFLite/ONNX through ``export``).
        num_classes: default: rows of ``fc.weight``. A different value fails in strict mode
            (use ``strict=False`` to keep a fresh classifier for fine-tuning).
        include_top: default: whether the state_dict has ``fc.*``. ``False`` drops ``fc.*``
            (with a warning if they were present).
        normalization: ``(mean, std)`` in raw pixel units, or None. The torch model has no such
            layer: without it the Keras model expects torch-preprocessed input. For torchvision's
            ImageNet weights pass ``IMAGENET_NORMALIZATION`` to feed raw 0..255 RGB pixels.
        strict: see ``load_torch_state_dict``.
        class_names: optional names of the classes, kept in the model (see ``build_resnet``).
        verbose: print what was inferred and unwrapped.

    The stem is read from ``conv1``: 7x7 -> ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool),
    3x3 -> ``"cifar"`` (assumed stride 1, padding 1 and no max-pool, the usual CIFAR variant).
    """
    from keras_resnet.builder import ARCHS, build_resnet

    sd, notes = read_state_dict(source)
    found = infer_config(sd)
    if arch is None:
        if found["arch"] is None:
            raise ValueError(
                f"the state_dict's {found['block']} blocks per stage {list(found['depths'])} "
                f"match no known arch ({ {a: list(d) for a, (_, d) in ARCHS.items()} }); "
                "pass arch= to see which tensors differ"
            )
        arch = found["arch"]
        notes.append(f"inferred arch {arch!r} from the block counts {list(found['depths'])}")
    if include_top is None:
        include_top = found["include_top"]
    elif not include_top:
        dropped = [k for k in sd if k.startswith("fc.")]
        if dropped:
            warnings.warn(f"include_top=False: not loading {dropped}", stacklevel=2)
            sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    if num_classes is None:
        num_classes = found["num_classes"] or 1000
    channels = found["in_channels"]
    if input_shape is None:
        input_shape = (None, None, channels)
    elif len(input_shape) == 2:
        input_shape = (*input_shape, channels)
    elif len(input_shape) != 3 or input_shape[-1] != channels:
        raise ValueError(
            f"input_shape {tuple(input_shape)} must be (height, width) or (height, width, "
            f"{channels}): conv1 takes {channels} channel(s)"
        )
    model = build_resnet(
        arch,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        include_top=include_top,
        stem=found["stem"],
        width=found["width"],
        normalization=normalization,
        class_names=class_names,
        name=name,
    )
    report = load_torch_state_dict(model, sd, strict=strict)
    if verbose:
        for note in notes:
            print(f"  {note}")
        print(
            f"  {arch}, stem {found['stem']!r}, width {found['width']}, input "
            f"{model.input_shape[1:]}, "
            + (f"{num_classes} classes" if include_top else "no classifier")
            + f"; loaded {len(report['loaded'])} tensors"
            + ("" if normalization else "; expects torch-normalized input (no normalization layer)")
        )
    return model


# --------------------------------------------------------------------------------------------
# Export


def to_torch_state_dict(model) -> dict[str, np.ndarray]:
    """Our weights as a torchvision state_dict of numpy arrays (OIHW convs, (out, in) fc),
    including ``num_batches_tracked`` (0-d int64, value 0) for every batch norm.

    ``torchvision.models.<arch>(num_classes=N)`` loads it with ``strict=True`` (after
    ``model.conv1 = nn.Conv2d(C, width, 3, 1, 1, bias=False); model.maxpool = nn.Identity()``
    for the CIFAR stem or C != 3 input channels). torchvision only builds width 64.
    """
    key_map = torch_key_map(model)
    bn_ends = {f"{p}.running_var" for p in _bn_prefixes(key_map)}
    out = {}
    for key, var, kind in key_map:
        out[key] = np.ascontiguousarray(_to_torch_layout(np.asarray(var.numpy()), kind))
        if key in bn_ends:
            out[key[: -len("running_var")] + "num_batches_tracked"] = np.array(0, dtype=np.int64)
    return out


def torch_compat_notes(model) -> list[str]:
    """What a torch user must do or know to reproduce this model's outputs from its state_dict."""
    from keras_resnet.builder import model_config

    # A ResNet says what it is; older plain functional files are read off their layers.
    config = model_config(model)
    in_ch, width, stem = config["input_shape"][-1], config["width"], config["stem"]
    notes = []
    if stem == "cifar" or in_ch != 3:
        stem_fix = (f"model.conv1 = nn.Conv2d({in_ch}, {width}, 3, 1, 1, bias=False); "
                    "model.maxpool = nn.Identity()" if stem == "cifar"
                    else f"model.conv1 = nn.Conv2d({in_ch}, {width}, 7, 2, 3, bias=False)")
        notes.append(f"torchvision model needs: {stem_fix}")
    if width != 64:
        notes.append(f"width {width}: torchvision's resnetXX builds width 64 only")
    if config["normalization"] is not None:
        mean, std = config["normalization"]
        notes.append(
            f"the Keras model normalizes its input ((x - {[round(m, 4) for m in mean]}) / "
            f"{[round(s, 4) for s in std]}); torch has no such layer: apply it before the model"
        )
    if config["pooling"] == "max":
        notes.append("the Keras model uses global max pooling; torchvision uses average pooling")
    activation = config["classifier_activation"]
    if config["include_top"] and activation not in (None, "linear"):
        notes.append(f"the Keras classifier applies {activation}; torch's fc does not")
    return notes


def save_torch_state_dict(model, path) -> dict[str, np.ndarray]:
    """Writes ``to_torch_state_dict(model)`` to ``.pth``/``.pt`` (needs torch) or
    ``.safetensors`` (numpy only). Warns about anything torch must replicate (see
    ``torch_compat_notes``). Returns the state_dict written."""
    path = os.fspath(path)
    sd = to_torch_state_dict(model)
    for note in torch_compat_notes(model):
        warnings.warn(note, stacklevel=2)
    _write_state_dict(sd, path, model.name)
    return sd


def _write_state_dict(sd: dict[str, np.ndarray], path: str, model_name: str) -> None:
    if path.endswith(SAFETENSORS_SUFFIX):
        from safetensors.numpy import save_file

        metadata = {"format": "pt", "source": "keras_resnet", "model": model_name}
        save_file(sd, path, metadata=metadata)
        _follow_umask(path)
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


# --------------------------------------------------------------------------------------------
# CLI


def _parse_normalization(text: str | None):
    if text is None or text == "none":
        return None
    if text == "imagenet":
        return IMAGENET_NORMALIZATION
    try:
        mean, std = text.split(":")
        return tuple(float(v) for v in mean.split(",")), tuple(float(v) for v in std.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--normalization must be 'imagenet', 'none' or 'M1,M2,M3:S1,S2,S3', got {text!r}"
        ) from err


EXIT_CODES = """exit status:
  0  converted; every file written was read back and compared
  2  bad input or usage: an option; a checkpoint or model that is missing, damaged, not a
     ResNet or does not match --arch; non-float or NaN/inf weights; an --out folder that is
     missing or not writable. Nothing is written.
  1  a written file did not read back the same, or an internal error. Nothing is left at
     --out: files are written under a temporary name beside it and renamed once checked, so
     a file that was at --out before is only ever replaced by a checked one."""


class CheckFailed(Exception):
    """A file was written, but reading it back did not give what was written."""


def main(argv=None) -> int:
    from keras_resnet import _cli
    from keras_resnet.archs import ARCHS

    parser = argparse.ArgumentParser(
        prog="python -m keras_resnet.convert",
        description="Convert torchvision-style ResNet weights to a Keras model and back.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-torch", metavar="CKPT", help=".pth/.pt/.bin/.ckpt or .safetensors")
    src.add_argument("--to-torch", metavar="MODEL", help="a .keras model saved by keras_resnet")
    parser.add_argument(
        "--out", nargs="+", required=True,
        help="--from-torch: one .keras path; --to-torch: one or more .pth/.safetensors paths",
    )
    parser.add_argument("--arch", choices=sorted(ARCHS), help="default: inferred (--from-torch)")
    parser.add_argument(
        "--input-size", type=_cli.positive_int, nargs="+", metavar="N",
        help="H [W] of the Keras input (default: any size). Fix it to export to TFLite.",
    )
    parser.add_argument(
        "--normalization", type=_parse_normalization, default=None,
        help="'imagenet' (torchvision's mean/std, model then takes raw 0..255 pixels), 'none' "
        "(default: the model expects torch-preprocessed input) or 'M1,M2,M3:S1,S2,S3' in "
        "pixel units",
    )
    parser.add_argument(
        "--no-strict", action="store_true",
        help="load what matches and warn about the rest (default: refuse any mismatch)",
    )
    _cli.add_log_level_argument(parser)
    args = parser.parse_args(argv)
    _check_usage(parser, args)
    _cli.configure(args)
    try:
        return _run(args)
    except CheckFailed as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # disk full, read-only folder, permissions: name the path
        where = err.filename or ""
        print(f"{parser.prog}: error: {where}{': ' if where else ''}{err.strerror or err}",
              file=sys.stderr)
        return 2
    except (ValueError, ImportError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2


def _check_usage(parser, args) -> None:
    """Everything decidable from the command line, before TensorFlow loads."""
    if args.from_torch:
        if len(args.out) != 1 or not args.out[0].endswith(".keras"):
            parser.error("--from-torch needs exactly one --out path ending in .keras")
        if not args.from_torch.endswith((*TORCH_SUFFIXES, SAFETENSORS_SUFFIX)):
            parser.error(f"--from-torch {args.from_torch}: expected a file ending in "
                         f"{', '.join([*TORCH_SUFFIXES, SAFETENSORS_SUFFIX])}")
        if args.input_size and len(args.input_size) > 2:
            parser.error("--input-size takes H or H W")
        return
    bad = [p for p in args.out if not p.endswith((*TORCH_SUFFIXES, SAFETENSORS_SUFFIX))]
    if bad:
        parser.error(f"--to-torch outputs must end in .pth/.pt or .safetensors: {bad}")
    same = {os.path.abspath(p) for p in args.out}
    if len(same) != len(args.out):
        parser.error("--out names the same file twice")


def _check_paths(source: str, outs) -> None:
    """The input exists and every --out can be created, before anything is converted."""
    if not os.path.isfile(source):
        what = "is a folder, not a file" if os.path.isdir(source) else "does not exist"
        raise ValueError(f"{source}: {what}")
    for out in outs:
        folder = os.path.dirname(os.path.abspath(out))
        if os.path.isdir(out):
            raise ValueError(f"--out {out} is a folder; give a file name")
        if not os.path.isdir(folder):
            raise ValueError(f"--out {out}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"--out {out}: the folder {folder} is not writable")
        if os.path.abspath(out) == os.path.abspath(source):
            raise ValueError(f"--out {out} is the input file")


def _temp_path(path: str) -> str:
    """A hidden name beside ``path`` with the same suffix (Keras and our writers pick the
    format by it); a rename within one folder then replaces ``path`` in one step."""
    import secrets

    folder, name = os.path.split(os.path.abspath(path))
    suffix = os.path.splitext(name)[1]
    return os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.partial{suffix}")


def _follow_umask(path: str) -> None:
    # safetensors writes through a private temporary file and leaves 0600; a converted model
    # is meant to be shared like any file the user creates.
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _named(path: str, err: Exception) -> ValueError:
    """``err`` as a ValueError that names ``path`` (library errors often do not)."""
    text = str(err)
    return ValueError(text if path in text else f"{path}: {text}")


def _run(args) -> int:
    if args.from_torch:
        return _run_from_torch(args)
    return _run_to_torch(args)


def _run_from_torch(args) -> int:
    src, out = args.from_torch, args.out[0]
    _check_paths(src, [out])
    if src.endswith(TORCH_SUFFIXES):
        _import_torch_first(src)
    input_shape = tuple((args.input_size * 2)[:2]) if args.input_size else None
    print(f"reading {src}")
    try:
        model = from_torch(
            src, args.arch, input_shape=input_shape,
            normalization=args.normalization, strict=not args.no_strict, verbose=True,
        )
    except ValueError as err:
        raise _named(src, err) from err
    tmp = _temp_path(out)
    try:
        model.save(tmp)
        _follow_umask(tmp)
        _verify_keras_file(model, tmp, shown_as=out)
        os.replace(tmp, out)
    finally:
        _remove(tmp)
    print(f"wrote {out} (reloaded and compared)")
    return 0


def _run_to_torch(args) -> int:
    _check_paths(args.to_torch, args.out)
    if any(p.endswith(TORCH_SUFFIXES) for p in args.out):
        _import_torch_first(args.out[0])
    model = load_model(args.to_torch)
    try:
        sd = to_torch_state_dict(model)
    except ValueError as err:
        raise _named(args.to_torch, err) from err
    unusable = _unusable_values(sd, [k for k in sd if not k.endswith(".num_batches_tracked")])
    if unusable:
        raise ValueError(f"{args.to_torch}: {unusable}; nothing was written")
    for note in torch_compat_notes(model):
        print(f"  note: {note}")
    temps = {path: _temp_path(path) for path in args.out}
    try:
        for path, tmp in temps.items():
            _write_state_dict(sd, tmp, model.name)
            back, _ = read_state_dict(tmp)
            diff = [k for k in sd if not np.array_equal(sd[k], back.get(k))]
            diff += sorted(set(back) - set(sd))
            if diff:
                raise CheckFailed(f"{path}: read back differs from what was written in "
                                  f"{_some(diff, 5)}; nothing was written")
        # All or none: the outputs are renamed into place only once every one is checked.
        for path, tmp in temps.items():
            os.replace(tmp, path)
    finally:
        for tmp in temps.values():
            _remove(tmp)
    for path in args.out:
        print(f"wrote {path} ({len(sd)} tensors; read back and compared)")
    return 0


def _import_torch_first(path: str) -> None:
    # torch's native libraries must load before TensorFlow's (STACK_NOTES: the other order can
    # crash without a message); and a missing torch must be said before anything is written.
    try:
        import torch  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"{path}: .pth/.pt files need PyTorch (pip install torch); .safetensors needs none"
        ) from err


def _verify_keras_file(model, path, shown_as=None) -> None:
    """Loads the saved .keras file and checks it gives the same outputs."""
    # Any size works for a size-agnostic model; 64 keeps the check quick.
    shape = [1] + [64 if d is None else d for d in model.input_shape[1:]]
    x = np.random.default_rng(0).uniform(0, 1, shape).astype("float32")
    loaded = load_model(path)
    a = np.asarray(model(x, training=False))
    b = np.asarray(loaded(x, training=False))
    if not np.array_equal(a, b):
        raise CheckFailed(
            f"{shown_as or path}: the reloaded model differs from the converted one (outputs "
            f"by up to {np.max(np.abs(a - b)):.3g}); nothing was written"
        )


if __name__ == "__main__":
    sys.exit(main())
