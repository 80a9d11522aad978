"""One functional builder for the ResNet family, over the table in keras_resnet.archs."""

from __future__ import annotations

import math
from typing import Sequence

import keras

from keras_resnet.archs import ARCHS, NUM_STAGES, STEMS
from keras_resnet.blocks import BasicBlock, Bottleneck, make_bn, make_conv

BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
POOLINGS = ("avg", "max", None)


def _check_arch(arch: str) -> tuple[str, tuple[int, ...]]:
    if arch not in ARCHS:
        raise ValueError(f"Unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    return ARCHS[arch]


def _check_stem(stem: str) -> None:
    if stem not in STEMS:
        raise ValueError(f"Unknown stem {stem!r}; expected one of {list(STEMS)}")


def _stride2_inputs(size: int, stem: str) -> list[int]:
    """Spatial sizes entering each stride-2 layer for an input of `size` pixels."""
    sizes = []

    def down(s: int, kernel: int) -> int:
        sizes.append(s)
        return (s + 2 * (kernel // 2) - kernel) // 2 + 1

    s = size
    if stem == "imagenet":
        s = down(s, 7)  # stem conv
        s = down(s, 3)  # stem max-pool
    for _ in range(NUM_STAGES - 1):
        s = down(s, 3)  # first 3x3 conv of stages 2..4
    sizes.append(s)  # stage 4 output
    return sizes


def min_input_size(stem: str = "imagenet") -> int:
    """Smallest height/width for which no stride-2 layer sees a 1-pixel input.

    Below it a downsampling layer would read nothing but padding on one side: 17 for the
    ImageNet stem (28x28 MNIST works: 28 -> 14 -> 7 -> 4 -> 2 -> 1), 5 for the CIFAR stem.
    """
    _check_stem(stem)
    size = 1
    while min(_stride2_inputs(size, stem)[:-1]) < 2:
        size += 1
    return size


def output_stride(stem: str = "imagenet") -> int:
    _check_stem(stem)
    return 2 ** (NUM_STAGES - 1) * (4 if stem == "imagenet" else 1)


def _check_input_shape(input_shape, stem: str) -> tuple:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3:
        raise ValueError(
            f"input_shape must be (height, width, channels), got {input_shape!r}"
        )
    h, w, c = shape
    if not (isinstance(c, int) and c >= 1):
        raise ValueError(f"input_shape channels must be a positive integer, got {c!r}")
    minimum = min_input_size(stem)
    for label, s in (("height", h), ("width", w)):
        if s is None:
            continue
        if not isinstance(s, int) or s < minimum:
            raise ValueError(
                f"input {label} {s!r} is too small for the {stem!r} stem; the minimum is "
                f"{minimum} (use stem='cifar' for small images: its minimum is "
                f"{min_input_size('cifar')})"
            )
    return shape


def _normalization_layer(mean, std, channels: int):
    """Per-channel (x - mean) / std on raw pixel values, as the model's first layer."""
    mean = [float(m) for m in (mean if isinstance(mean, (list, tuple)) else [mean])]
    std = [float(s) for s in (std if isinstance(std, (list, tuple)) else [std])]
    if len(mean) == 1:
        mean = mean * channels
    if len(std) == 1:
        std = std * channels
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"normalization needs 1 or {channels} values for mean and std, got "
            f"mean={mean} std={std}"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"normalization std must be positive, got {std}")
    # float32 so that raw 0..255 pixels are normalised before any float16 cast.
    return keras.layers.Normalization(
        axis=-1, mean=mean, variance=[s * s for s in std], name="normalization",
        dtype="float32",
    )


def build_resnet(
    arch: str,
    input_shape: Sequence[int | None] = (224, 224, 3),
    num_classes: int = 1000,
    include_top: bool = True,
    pooling: str | None = "avg",
    classifier_activation: str | None = None,
    stem: str = "imagenet",
    width: int = 64,
    zero_init_residual: bool = False,
    normalization: tuple | None = None,
    name: str | None = None,
) -> keras.Model:
    """Builds a torchvision-equivalent ResNet (v1.5) as a functional ``keras.Model``.

    Args:
        arch: one of ``ARCHS`` ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152").
        input_shape: (height, width, channels); any channel count (1 for MNIST, 3 for RGB).
            Height/width may be None for a size-agnostic model.
        num_classes: size of the classifier (only with ``include_top``).
        include_top: add global pooling and the ``predictions`` Dense layer.
        pooling: "avg" or "max" global pooling, or None (only used without the top: the
            model then returns the last stage's feature map).
        classifier_activation: None (logits, the default), "softmax", or any Keras activation.
        stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool) or "cifar" (3x3/1 conv, no pool) for
            28x28 and 32x32 inputs.
        width: base channel count (64 in the paper; stage i has ``width * 2**(i-1)`` filters).
        zero_init_residual: start each block's last BN gamma at zero.
        normalization: optional ``(mean, std)`` in raw pixel units (per channel or scalar);
            adds a float32 ``normalization`` layer so the model takes raw 0..255 pixels.
        name: model name; defaults to ``arch``.
    """
    block_type, depths = _check_arch(arch)
    _check_stem(stem)
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}; expected one of {list(POOLINGS)}")
    if include_top and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if include_top and pooling is None:
        raise ValueError("include_top=True needs pooling 'avg' or 'max', got None")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    shape = _check_input_shape(input_shape, stem)
    block_cls = BLOCKS[block_type]

    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    if normalization is not None:
        mean, std = normalization
        x = _normalization_layer(mean, std, shape[-1])(x)

    if stem == "imagenet":
        pad, conv = make_conv(width, 7, 2, "stem_conv")
        x = conv(pad(x))
    else:
        _, conv = make_conv(width, 3, 1, "stem_conv")
        x = conv(x)
    x = make_bn("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    if stem == "imagenet":
        # Zero padding equals torch's -inf padding here: the input is post-ReLU (>= 0).
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="stem_pool")(x)

    for stage, depth in enumerate(depths, start=1):
        filters = width * 2 ** (stage - 1)
        for block in range(1, depth + 1):
            stride = 2 if (stage > 1 and block == 1) else 1
            x = block_cls(
                filters,
                stride=stride,
                zero_init_residual=zero_init_residual,
                name=f"stage{stage}_block{block}",
            )(x)

    if include_top:
        x = _global_pool(pooling)(x)
        fan_in = width * 2 ** (NUM_STAGES - 1) * block_cls.expansion
        # torch.nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
        bound = 1.0 / math.sqrt(fan_in)
        x = keras.layers.Dense(
            num_classes,
            activation=classifier_activation,
            kernel_initializer=keras.initializers.RandomUniform(-bound, bound),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound),
            dtype="float32",  # logits stay float32 under mixed precision
            name="predictions",
        )(x)
    elif pooling is not None:
        x = _global_pool(pooling)(x)
    return keras.Model(inputs, x, name=name or arch)


def _global_pool(pooling: str):
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")
    return keras.layers.GlobalMaxPooling2D(name="max_pool")


def _make_variant(arch: str):
    def variant(**kwargs) -> keras.Model:
        return build_resnet(arch, **kwargs)

    block_type, depths = ARCHS[arch]
    variant.__name__ = variant.__qualname__ = arch
    variant.__doc__ = (
        f"{arch}: {block_type} blocks {list(depths)}. Keyword arguments as build_resnet()."
    )
    return variant


resnet18 = _make_variant("resnet18")
resnet34 = _make_variant("resnet34")
resnet50 = _make_variant("resnet50")
resnet101 = _make_variant("resnet101")
resnet152 = _make_variant("resnet152")
