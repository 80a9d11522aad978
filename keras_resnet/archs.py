"""The architecture table: every ResNet variant in one line, importable without Keras.

The builder, the CLIs' ``choices=sorted(ARCHS)`` and the tests all read this table; it imports
nothing heavy so that ``--help`` and usage errors are answered before TensorFlow loads.
"""

from typing import NamedTuple


class Arch(NamedTuple):
    """One row of the table: torchvision's ``ResNet(block, layers, groups, width_per_group)``."""

    block: str  # "basic" or "bottleneck"
    depths: tuple  # blocks per stage
    groups: int = 1  # groups of each bottleneck's 3x3 convolution (ResNeXt's cardinality)
    width_per_group: int = 64  # torchvision's name; 64 with groups=1 is a plain ResNet


# torchvision/models/resnet.py; He et al. 2015 table 1, Xie et al. 2016 (ResNeXt), Zagoruyko &
# Komodakis 2016 (wide: torchvision's wide_resnet*_2 widens the bottleneck's 3x3 only).
ARCHS = {
    "resnet18": Arch("basic", (2, 2, 2, 2)),
    "resnet34": Arch("basic", (3, 4, 6, 3)),
    "resnet50": Arch("bottleneck", (3, 4, 6, 3)),
    "resnet101": Arch("bottleneck", (3, 4, 23, 3)),
    "resnet152": Arch("bottleneck", (3, 8, 36, 3)),
    "resnext50_32x4d": Arch("bottleneck", (3, 4, 6, 3), 32, 4),
    "resnext101_32x8d": Arch("bottleneck", (3, 4, 23, 3), 32, 8),
    "resnext101_64x4d": Arch("bottleneck", (3, 4, 23, 3), 64, 4),
    "wide_resnet50_2": Arch("bottleneck", (3, 4, 6, 3), 1, 128),
    "wide_resnet101_2": Arch("bottleneck", (3, 4, 23, 3), 1, 128),
}
# "imagenet": 7x7/2 conv + 3x3/2 max-pool (torchvision); "cifar": 3x3/1 conv, no pool.
STEMS = ("imagenet", "cifar")
NUM_STAGES = 4
# Kernel size of the stem convolution -> stem: how a set of weights tells which stem it has.
STEM_BY_KERNEL = {7: "imagenet", 3: "cifar"}


def inner_width(planes: int, groups: int = 1, width_per_group: int = 64) -> int:
    """Channels of a bottleneck's 3x3 convolution for a block of ``planes`` filters:
    torchvision's ``int(planes * width_per_group / 64) * groups``.

    ``planes`` is ``width * 2**(stage-1)`` for the builder's base ``width`` (64 in torchvision),
    so a narrower model keeps the arch's ``groups`` and narrows each group: at ``width=16``,
    resnext50_32x4d has 32 groups of one channel in stage 1. Zero means the width is too small
    for the arch (see ``min_width``).
    """
    return int(planes * (width_per_group / 64.0)) * groups


def min_width(arch: str) -> int:
    """The smallest base ``width`` at which every group of ``arch`` has a channel."""
    spec = ARCHS[arch]
    width = 1
    while inner_width(width, spec.groups, spec.width_per_group) < 1:
        width += 1
    return width


def stem_for_kernel(kernel: int, what: str = "the stem convolution") -> str:
    """The stem whose first convolution has a ``kernel`` x ``kernel`` kernel: 7 -> "imagenet",
    3 -> "cifar". Raises ValueError for any other size; ``what`` names the kernel there."""
    kernel = int(kernel)
    if kernel not in STEM_BY_KERNEL:
        raise ValueError(
            f"{what} is a {kernel}x{kernel} kernel; supported stems: "
            + ", ".join(f"{k}x{k} -> {s!r}" for k, s in STEM_BY_KERNEL.items())
        )
    return STEM_BY_KERNEL[kernel]
