"""The architecture table: every ResNet variant in one line, importable without Keras.

The builder, the CLIs' ``choices=sorted(ARCHS)`` and the tests all read this table; it imports
nothing heavy so that ``--help`` and usage errors are answered before TensorFlow loads.
"""

# name -> (block type, blocks per stage); torchvision/resnet.py, He et al. 2015, table 1.
ARCHS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
# "imagenet": 7x7/2 conv + 3x3/2 max-pool (torchvision); "cifar": 3x3/1 conv, no pool.
STEMS = ("imagenet", "cifar")
NUM_STAGES = 4
# Kernel size of the stem convolution -> stem: how a set of weights tells which stem it has.
STEM_BY_KERNEL = {7: "imagenet", 3: "cifar"}


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
