"""The name and layout map between a built keras_resnet model and torchvision's state_dict
keys (OIHW <-> HWIO convolutions, transposed classifier, batch norm parameter names)."""

from __future__ import annotations

import re

import numpy as np


BN_PARAMS = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)
_BLOCK_NAME = re.compile(r"^stage(\d+)_block(\d+)$")


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


def bn_prefixes(key_map) -> list[str]:
    return [k[: -len(".running_var")] for k, _, _ in key_map if k.endswith(".running_var")]


def to_keras_layout(array: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv" and array.ndim == 4:
        return array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if kind == "dense" and array.ndim == 2:
        return array.T  # (out, in) -> (in, out)
    return array


def to_torch_layout(array: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv":
        return array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    if kind == "dense":
        return array.T
    return array


def torch_shape(var, kind) -> tuple:
    return tuple(to_torch_layout(np.empty(tuple(var.shape), dtype=np.uint8), kind).shape)
