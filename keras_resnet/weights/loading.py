"""Putting a weight set (or a checkpoint file) into a built keras_resnet model.

The model is known by its ``builder_config`` (the ``build_resnet`` arguments every keras_resnet
model carries): nothing here imports the builder, which imports this package.
"""

from __future__ import annotations

import os

from keras_resnet.weights.download import converted_path, fetch, state_dict
from keras_resnet.weights.registry import WeightSet, WeightsError, get, looks_like_name


def resolve(weights, arch: str) -> WeightSet | str:
    """What ``weights`` stands for, once: a WeightSet for a name (or a WeightSet, checked for
    ``arch``), else the path of a checkpoint file."""
    if isinstance(weights, WeightSet) or (isinstance(weights, str) and looks_like_name(weights)):
        return get(weights, arch)
    try:
        return os.fspath(weights)
    except TypeError:
        raise WeightsError(f"weights must be a weight set's name (e.g. 'IMAGENET1K_V1', "
                           f"'DEFAULT') or a checkpoint file, got {weights!r}") from None


def prepare(ws: WeightSet, config: dict, *, progress: bool = True) -> None:
    """Before a model is built for ``ws``: refuses a model (``config``: its ``arch``, ``stem``,
    ``width``, ``input_shape``) that the set cannot fill, then downloads the checkpoint unless
    its converted copy is cached, so that a failure comes before the model is built."""
    check_buildable(ws, config)
    if not converted_path(ws).is_file():
        fetch(ws, progress=progress)


def _config_of(model) -> dict:
    config = getattr(model, "builder_config", None)
    if not isinstance(config, dict):
        raise WeightsError(f"{getattr(model, 'name', model)!r} is not a keras_resnet model (it "
                           "has no builder_config); build it with keras_resnet.build_resnet")
    return config


def _check_model(config: dict, found: dict, label: str, fix: str) -> None:
    """The model's arch, stem, width and input channels must be the checkpoint's."""
    have = (config["arch"], config["stem"], config["width"], config["input_shape"][-1])
    want = (found["arch"], found["stem"], found["width"], found["in_channels"])
    if have != want:
        raise WeightsError(
            f"{label} holds a {want[0] or found['block'] + ' ' + str(list(found['depths']))} "
            f"with stem {want[1]!r}, width {want[2]} and {want[3]} input channel(s); the model is "
            f"a {have[0]} with stem {have[1]!r}, width {have[2]} and {have[3]} input "
            f"channel(s){fix}")


def check_buildable(ws: WeightSet, config: dict) -> None:
    """Refuses, before any download, a model (``build_resnet``'s arguments: ``arch``, ``stem``,
    ``width``, ``input_shape``) that torchvision's set ``ws`` cannot fill. The user's own sets
    are checked once their checkpoint is read."""
    if ws.builtin:
        _check_model(config, {"arch": ws.arch, "stem": "imagenet", "width": 64,
                              "in_channels": 3}, ws.qualified_name,
                     "; build it with stem='imagenet', width=64 and 3 input channels")


def _with_head(model, sd, take_theirs: bool):
    """("loaded", "new" or "none", the state_dict to load): with the checkpoint's classifier,
    with the model's own (its fresh values go in with the rest), or without one."""
    from keras_resnet.convert.names import to_torch_layout, torch_key_map

    key_map = {key: (var, kind) for key, var, kind in torch_key_map(model)}
    if "fc.weight" not in key_map:
        return "none", {k: v for k, v in sd.items() if not k.startswith("fc.")}
    if take_theirs:
        return "loaded", sd
    sd = dict(sd)
    for key in ("fc.weight", "fc.bias"):
        var, kind = key_map[key]
        sd[key] = to_torch_layout(var.numpy(), kind)
    return "new", sd


def load_into(model, weights, *, include_top: bool = True, progress: bool = True) -> dict:
    """Loads ``weights`` into a keras_resnet model built for them; returns what was loaded.

    ``weights``: a ``WeightSet`` (``resolve``), a torchvision-style checkpoint file
    (.pth/.pt/.bin/.ckpt, .safetensors), or a weight set's name, resolved here once for the
    model's arch (``IMAGENET1K_V2``, ``DEFAULT``, a registered name). A named set is
    downloaded and cached on first use (``fetch``, ``state_dict``).

    The model's arch, stem, width and input channels must be the checkpoint's. Its classifier
    takes the checkpoint's when both have the same class count; a model with another class
    count keeps its new classifier (fine-tuning), and one without a top takes the backbone
    only; ``include_top=False`` leaves the model's classifier as it is in every case. Every
    other tensor must fit (strict): on any mismatch nothing is loaded.

    Returns ``{"weights": name or path, "loaded": number of tensors, "head": "loaded", "new"
    (the model's classifier kept) or "none" (the model has none)}``. Raises WeightsError (one
    line) for a set that cannot be had or does not fit.
    """
    from keras_resnet.convert.architecture import infer_config
    from keras_resnet.convert.formats import read_state_dict
    from keras_resnet.convert.weights import load_torch_state_dict

    config = _config_of(model)
    source = weights if isinstance(weights, WeightSet) else resolve(weights, config["arch"])
    ws = source if isinstance(source, WeightSet) else None
    label = ws.qualified_name if ws is not None else source
    if ws is not None:
        if ws.arch != config["arch"]:
            raise WeightsError(f"weight set {ws.qualified_name} is for {ws.arch}, not "
                               f"{config['arch']}")
        check_buildable(ws, config)
        sd = state_dict(ws, progress=progress)
    else:
        try:
            sd, _ = read_state_dict(label)
        except (ValueError, ImportError) as err:
            raise WeightsError(" ".join(str(err).split())) from None
        except FileNotFoundError:
            raise WeightsError(f"no such weights file: {label}") from None
    try:
        found = infer_config(sd)
    except ValueError as err:
        raise WeightsError(f"{label}: {' '.join(str(err).split())}") from None
    _check_model(config, found, label, "")
    if ws is not None and found["num_classes"] not in (None, ws.num_classes):
        raise WeightsError(f"{label}: the checkpoint's classifier has {found['num_classes']} "
                           f"classes but the weight set names {ws.num_classes} categories")
    head, sd = _with_head(model, sd, include_top and found["num_classes"] == config[
        "num_classes"])
    try:
        report = load_torch_state_dict(model, sd, strict=True)
    except ValueError as err:
        raise WeightsError(f"{label}: " + "; ".join(
            line.strip() for line in str(err).splitlines() if line.strip())) from None
    loaded = len(report["loaded"]) - (2 if head == "new" else 0)
    return {"weights": label, "loaded": loaded, "head": head}
