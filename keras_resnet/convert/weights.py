"""Converting weights: a state_dict into a built model (``load_torch_state_dict``) and a model
into a state_dict (``to_torch_state_dict``, ``save_torch_state_dict``), with what a torch user
must know to reproduce its outputs. Models are known by their ``builder_config``: nothing here
imports the builder (``keras_resnet.convert.build`` makes new models)."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping

import numpy as np

from keras_resnet.convert.architecture import infer_config
from keras_resnet.convert.formats import read_state_dict, write_state_dict
from keras_resnet.convert.names import (
    bn_prefixes,
    to_keras_layout,
    to_torch_layout,
    torch_key_map,
    torch_shape,
)


# torchvision.transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]) on
# 0..1 images, expressed in raw 0..255 pixel units for build_resnet(normalization=...).
IMAGENET_NORMALIZATION = (
    (0.485 * 255, 0.456 * 255, 0.406 * 255),
    (0.229 * 255, 0.224 * 255, 0.225 * 255),
)


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
    optional = {f"{p}.num_batches_tracked" for p in bn_prefixes(key_map)}
    missing = [k for k, _, _ in key_map if k not in sd]
    unexpected = [k for k in sd if k not in expected and k not in optional]
    mismatched, loadable = [], []
    for key, var, kind in key_map:
        if key not in sd:
            continue
        want = torch_shape(var, kind)
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
    unusable = unusable_values(sd, [k for k, _, _ in key_map if k in sd])
    if unusable:  # even without strict: such a tensor loads as zeros or poisons every output
        raise ValueError(unusable + "; nothing was loaded")
    problems = _describe_problems(report, sd, model)
    if problems and strict:
        raise ValueError(problems + "\nNothing was loaded.")
    for key, var, kind in loadable:
        var.assign(np.ascontiguousarray(to_keras_layout(sd[key], kind), dtype=var.dtype))
    if problems:
        warnings.warn(
            f"loaded {len(loadable)} of {len(key_map)} tensors (strict=False); the rest keep "
            f"their current values.\n{problems}",
            stacklevel=2,
        )
    return report


def unusable_values(sd: Mapping, keys) -> str:
    """What makes these tensors unusable as weights (non-float, NaN/inf, a negative BatchNorm
    running variance), or ""."""
    floats = [k for k in keys if _is_float(sd[k].dtype)]
    not_float = [f"{k} ({sd[k].dtype})" for k in keys if k not in set(floats)]
    non_finite = [k for k in floats if not np.isfinite(sd[k].astype(np.float32)).all()]
    parts = []
    if not_float:
        parts.append(
            f"{len(not_float)} tensor(s) are not floating point (they would load as truncated "
            f"or zero weights): {some_names(not_float)}"
        )
    if non_finite:
        parts.append(f"{len(non_finite)} tensor(s) hold NaN or inf: {some_names(non_finite)}")
    # A variance below zero makes BatchNorm divide by the square root of a negative number:
    # NaN outputs, which a parity check then reports only as "differs by up to nan".
    negative = [k for k in floats if k.endswith(".running_var") and k not in set(non_finite)
                and (sd[k].astype(np.float32) < 0).any()]
    if negative:
        parts.append(f"{len(negative)} BatchNorm running variance(s) hold negative values "
                     f"(a variance is never below 0: the checkpoint is damaged): "
                     f"{some_names(negative)}")
    return "; ".join(parts)


def _is_float(dtype) -> bool:
    # ml_dtypes' bfloat16 (what safetensors.numpy returns for BF16) is not a numpy float kind.
    return dtype.kind == "f" or "float" in dtype.name


def some_names(names, limit=8) -> str:
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
            head += (f"; its first bottleneck 3x3 has {found['inner_width']} channels in "
                     f"{found['groups']} group(s): another resnet / resnext / wide_resnet")
    return head + ":\n" + "\n".join(parts)


def to_torch_state_dict(model) -> dict[str, np.ndarray]:
    """Our weights as a torchvision state_dict of numpy arrays (OIHW convs, (out, in) fc),
    including ``num_batches_tracked`` (0-d int64, value 0) for every batch norm.

    ``torchvision.models.<arch>(num_classes=N)`` loads it with ``strict=True`` (after
    ``model.conv1 = nn.Conv2d(C, width, 3, 1, 1, bias=False); model.maxpool = nn.Identity()``
    for the CIFAR stem or C != 3 input channels). torchvision only builds width 64.
    """
    key_map = torch_key_map(model)
    bn_ends = {f"{p}.running_var" for p in bn_prefixes(key_map)}
    out = {}
    for key, var, kind in key_map:
        out[key] = np.ascontiguousarray(to_torch_layout(np.asarray(var.numpy()), kind))
        if key in bn_ends:
            out[key[: -len("running_var")] + "num_batches_tracked"] = np.array(0, dtype=np.int64)
    return out


def torch_compat_notes(model) -> list[str]:
    """What a torch user must do or know to reproduce this model's outputs from its state_dict."""
    config = model.builder_config
    in_ch, width, stem = config["input_shape"][-1], config["width"], config["stem"]
    notes = []
    if stem == "cifar" or in_ch != 3:
        stem_fix = (f"model.conv1 = nn.Conv2d({in_ch}, {width}, 3, 1, 1, bias=False); "
                    "model.maxpool = nn.Identity()" if stem == "cifar"
                    else f"model.conv1 = nn.Conv2d({in_ch}, {width}, 7, 2, 3, bias=False)")
        notes.append(f"torchvision model needs: {stem_fix}")
    if width != 64:
        notes.append(f"width {width}: torchvision's {config['arch']} builds width 64 only")
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
    write_state_dict(sd, path, model.name)
    return sd
