"""Putting a weight set (or a checkpoint file) into a built keras_resnet model."""

from __future__ import annotations

import os

from keras_resnet.weights.registry import WeightSet, WeightsError, get, looks_like_name


def _source(weights, arch: str):
    """(WeightSet or None, what to call it) for a name, a WeightSet or a file path."""
    if isinstance(weights, WeightSet) or (isinstance(weights, str) and looks_like_name(weights)):
        ws = get(weights, arch)
        return ws, ws.qualified_name
    try:
        path = os.fspath(weights)
    except TypeError:
        raise WeightsError(f"weights must be a weight set's name (e.g. 'IMAGENET1K_V1', "
                           f"'DEFAULT') or a checkpoint file, got {weights!r}") from None
    return None, str(path)


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

    ``weights``: a weight set's name (``get`` resolves it for the model's arch: ``IMAGENET1K_V2``,
    ``DEFAULT``, a registered name), a ``WeightSet``, or a torchvision-style checkpoint file
    (.pth/.pt/.bin/.ckpt, .safetensors). A named set is downloaded and cached on first use
    (``fetch``, ``state_dict``).

    The model's arch, stem, width and input channels must be the checkpoint's. Its classifier
    takes the checkpoint's when both have the same class count; a model with another class
    count keeps its new classifier (fine-tuning), and one without a top takes the backbone
    only; ``include_top=False`` leaves the model's classifier as it is in every case. Every
    other tensor must fit (strict): on any mismatch nothing is loaded.

    Returns ``{"weights": name or path, "loaded": number of tensors, "head": "loaded", "new"
    (the model's classifier kept) or "none" (the model has none)}``. Raises WeightsError (one
    line) for a set that cannot be had or does not fit.
    """
    from keras_resnet.builder import model_config
    from keras_resnet.convert.architecture import infer_config
    from keras_resnet.convert.formats import read_state_dict
    from keras_resnet.convert.weights import load_torch_state_dict
    from keras_resnet.weights.download import state_dict

    config = model_config(model)
    ws, label = _source(weights, config["arch"])
    if ws is not None:
        check_buildable(ws, config)
    if ws is not None:
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
