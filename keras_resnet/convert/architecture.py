"""What a torchvision-style state_dict says about its architecture: blocks, depths, stem,
width, channels and classes."""

from __future__ import annotations

import re
from collections.abc import Mapping

from keras_resnet.archs import ARCHS, STEM_BY_KERNEL, inner_width, stem_for_kernel  # noqa: F401

_TORCH_BLOCK_KEY = re.compile(r"^layer(\d+)\.(\d+)\.")


def infer_config(state_dict: Mapping) -> dict:
    """Architecture facts readable from a torchvision-style state_dict.

    Returns ``{"arch", "block", "depths", "groups", "inner_width", "stem", "width",
    "in_channels", "num_classes", "include_top"}``; ``arch`` is None when the block counts,
    groups and bottleneck width match no entry of ``ARCHS``.
    Raises ValueError if ``conv1.weight`` is missing or is not a 7x7 or 3x3 kernel.
    """
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
    stem = stem_for_kernel(w.shape[2], what="'conv1.weight'")
    blocks: dict[int, set[int]] = {}
    for key in state_dict:
        m = _TORCH_BLOCK_KEY.match(key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    depths = tuple(len(blocks.get(s, ())) for s in range(1, 5))
    block = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    width = int(w.shape[0])
    groups, inner = _grouping(state_dict, block)
    arch = next((a for a, spec in ARCHS.items() if (spec.block, spec.depths, spec.groups) == (
        block, depths, groups) and inner in (None, inner_width(width, *spec[2:]))), None)
    fc = state_dict.get("fc.weight")
    return {
        "arch": arch,
        "block": block,
        "depths": depths,
        "groups": groups,
        "inner_width": inner,
        "stem": stem,
        "width": width,
        "in_channels": int(w.shape[1]),
        "num_classes": int(fc.shape[0]) if fc is not None and fc.ndim == 2 else None,
        "include_top": "fc.weight" in state_dict or "fc.bias" in state_dict,
    }


def _grouping(state_dict: Mapping, block: str) -> tuple[int, int | None]:
    """(groups, channels of the first bottleneck's 3x3) from ``layer1.0.conv2.weight``: torch
    keeps a grouped kernel as (out, in / groups, k, k). (1, None) when there is no bottleneck
    3x3 to read."""
    w = state_dict.get("layer1.0.conv2.weight")
    if block != "bottleneck" or w is None or w.ndim != 4 or w.shape[1] < 1:
        return 1, None
    inner, per_group = int(w.shape[0]), int(w.shape[1])
    return (inner // per_group if inner % per_group == 0 else 1), inner
