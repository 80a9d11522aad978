"""One functional builder for the ResNet family, over the table in keras_resnet.archs."""

from __future__ import annotations

import json
import math
from typing import Sequence

import keras

from keras_resnet import _keras_compat
from keras_resnet import weights as named_weights
from keras_resnet.archs import ARCHS, NUM_STAGES, STEMS, min_width
from keras_resnet.blocks import BasicBlock, Bottleneck, make_bn, make_conv

BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
# What a ResNet's config (the model part of its .keras file) holds; a change to its keys or
# their meaning is a new version.
FORMAT_VERSION = 1
POOLINGS = ("avg", "max", None)


def _check_arch(arch: str):
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


def _normalization_values(mean, std, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std lists from scalars or per-channel values, checked."""
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
    return mean, std


def _normalization_layer(mean, std, channels: int):
    """Per-channel (x - mean) / std on raw pixel values, as the model's first layer."""
    mean, std = _normalization_values(mean, std, channels)
    # float32 so that raw 0..255 pixels are normalised before any float16 cast.
    return keras.layers.Normalization(
        axis=-1, mean=mean, variance=[s * s for s in std], name="normalization",
        dtype="float32",
    )


def build_resnet(
    arch: str,
    input_shape: Sequence[int | None] = (224, 224, 3),
    num_classes: int | None = None,
    include_top: bool = True,
    pooling: str | None = "avg",
    classifier_activation: str | None = None,
    stem: str = "imagenet",
    width: int = 64,
    zero_init_residual: bool = False,
    normalization: tuple | None = None,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
    weights=None,
    dtype=None,
) -> "ResNet":
    """Builds a torchvision ResNet (v1.5), ResNeXt or Wide ResNet: a functional ``ResNet``.

    Args:
        arch: one of ``ARCHS`` ("resnet18" ... "resnet152", "resnext*", "wide_resnet*").
        input_shape: (height, width, channels), any channel count; height/width may be None.
        num_classes: size of the classifier (only with ``include_top``); default 1000, or the
            class count of the named ``weights``.
        include_top: add global pooling and the ``predictions`` Dense layer.
        pooling: "avg" or "max" global pooling, or None (without the top only: the model then
            returns the last stage's feature map).
        classifier_activation: None (logits, the default), "softmax", or any Keras activation.
        stem: "imagenet" (7x7/2 conv, 3x3/2 max-pool) or "cifar" (3x3/1 conv; 28x28, 32x32).
        width: base channel count (64 in the paper; stage i has ``width * 2**(i-1)`` filters;
            grouped archs keep their groups: ``archs.inner_width``, ``archs.min_width``).
        zero_init_residual: start each block's last BN gamma at zero.
        normalization: optional ``(mean, std)`` in raw pixel units (per channel or scalar);
            adds a float32 ``normalization`` layer so the model takes raw 0..255 pixels.
        class_names: optional names of the ``num_classes`` classes (distinct strings), kept in
            the config: a saved .keras file names its predictions.
        name: model name (default ``arch``).
        weights: None (random), a weight set's name (``"IMAGENET1K_V2"``, ``"DEFAULT"``: see
            ``keras_resnet.weights``) or a torchvision-style checkpoint file. A name also sets
            the defaults of ``normalization``, ``num_classes`` and ``class_names``;
            ``include_top=False`` or another ``num_classes`` load the backbone only
            (fine-tuning). Raises ``keras_resnet.weights.WeightsError`` (a ValueError).
        dtype: the dtype policy of every layer but the float32 normalization and classifier
            (``"mixed_bfloat16"``, a ``keras.DTypePolicy``; default: Keras's global one).

    The model keeps these arguments (``model.builder_config``), in its saved files too.
    """
    weight_set = None
    if weights is not None:  # a named set's defaults, and the checks before any download
        weight_set, num_classes, normalization, class_names = _named_weights_defaults(
            weights, arch, input_shape, num_classes, include_top, stem, width, normalization,
            class_names)
    model = ResNet(
        arch, input_shape=input_shape, num_classes=1000 if num_classes is None else num_classes,
        include_top=include_top, pooling=pooling, classifier_activation=classifier_activation,
        stem=stem, width=width, zero_init_residual=zero_init_residual,
        normalization=normalization, class_names=class_names, name=name, dtype=dtype,
    )
    if weights is not None:
        named_weights.load_into(model, weight_set)
    return model


def _named_weights_defaults(weights, arch, input_shape, num_classes, include_top, stem, width,
                            normalization, class_names):
    """(the WeightSet, or the path of a file: ``weights`` resolved once; num_classes,
    normalization, class_names): a named set's defaults for what the caller left out, after
    checking, before any download, that the model can hold it."""
    _check_arch(arch)
    weight_set = named_weights.loading.resolve(weights, arch)
    if not isinstance(weight_set, named_weights.WeightSet):
        return weight_set, num_classes, normalization, class_names
    # A malformed input_shape is left to the model's own check.
    channels = input_shape[-1] if isinstance(input_shape, (list, tuple)) and len(
        input_shape) == 3 else 3
    named_weights.loading.prepare(weight_set, {
        "arch": arch, "stem": stem, "width": width, "input_shape": [channels]})
    if normalization is None:
        normalization = weight_set.normalization
    if num_classes is None:
        num_classes = weight_set.num_classes
    if class_names is None and include_top and num_classes == weight_set.num_classes:
        class_names = list(weight_set.categories)
    return weight_set, num_classes, normalization, class_names


def _check_class_names(class_names, num_classes: int, include_top: bool):
    if class_names is None:
        return None
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise ValueError(
            f"class_names must be a list of {num_classes} strings, got {class_names!r}")
    names = list(class_names)
    if not include_top:
        raise ValueError("class_names needs include_top=True: a model without its classifier "
                         "has no classes")
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise ValueError(f"class_names must be non-empty strings, got {bad[:5]!r}")
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class_names for num_classes={num_classes}; give one "
                         "name per class")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"class_names must be distinct; repeated: {repeated}")
    return names


def _activation_name(activation):
    """The name under which the config keeps ``activation`` (a name, or a Keras function)."""
    if activation is None or isinstance(activation, str):
        return activation
    try:
        name = keras.activations.serialize(activation)
    except Exception:  # lambdas and unregistered functions: Keras raises several types
        name = None
    if not isinstance(name, str):
        raise ValueError(f"classifier_activation must be None or a Keras activation or its name "
                         f"(e.g. 'softmax'), got {activation!r}, which a saved model could not "
                         "name")
    return name


def _resnet_graph(arch, shape, num_classes, include_top, pooling, classifier_activation, stem,
                  width, zero_init_residual, normalization, dtype):
    """(inputs, outputs) of the functional graph, from checked arguments; every layer but the
    normalization and the classifier (float32 both) computes under the policy ``dtype``."""
    spec = ARCHS[arch]
    block_cls = BLOCKS[spec.block]
    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    if normalization is not None:
        mean, std = normalization
        x = _normalization_layer(mean, std, shape[-1])(x)

    if stem == "imagenet":
        x = make_conv(width, 7, 2, "stem_conv", dtype=dtype)(x)
    else:
        x = make_conv(width, 3, 1, "stem_conv", dtype=dtype)(x)
    x = make_bn("stem_bn", dtype=dtype)(x)
    x = keras.layers.ReLU(name="stem_relu", dtype=dtype)(x)
    if stem == "imagenet":
        # Zero padding equals torch's -inf padding here: the input is post-ReLU (>= 0).
        x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad", dtype=dtype)(x)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="stem_pool",
                                      dtype=dtype)(x)

    for stage, depth in enumerate(spec.depths, start=1):
        filters = width * 2 ** (stage - 1)
        for block in range(1, depth + 1):
            stride = 2 if (stage > 1 and block == 1) else 1
            x = block_cls(
                filters,
                stride=stride,
                zero_init_residual=zero_init_residual,
                groups=spec.groups,
                width_per_group=spec.width_per_group,
                name=f"stage{stage}_block{block}",
                dtype=dtype,
            )(x)

    if include_top:
        x = _global_pool(pooling, dtype)(x)
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
        x = _global_pool(pooling, dtype)(x)
    return inputs, x


def _checked_builder_config(arch, input_shape, num_classes, include_top, pooling,
                            classifier_activation, stem, width, zero_init_residual,
                            normalization, class_names) -> dict:
    """The ``build_resnet`` arguments, checked and in the form the model's config keeps."""
    _check_arch(arch)
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
    if width < min_width(arch):
        raise ValueError(f"width {width} is too small for {arch}: its {ARCHS[arch].groups} "
                         f"groups need a width of at least {min_width(arch)}")
    shape = _check_input_shape(input_shape, stem)
    names = _check_class_names(class_names, num_classes, include_top)
    classifier_activation = _activation_name(classifier_activation)
    if normalization is not None:
        normalization = _normalization_values(*normalization, channels=shape[-1])
    return {
        "arch": arch,
        "input_shape": list(shape),
        "num_classes": num_classes,
        "include_top": bool(include_top),
        "pooling": pooling,
        "classifier_activation": classifier_activation,
        "stem": stem,
        "width": width,
        "zero_init_residual": bool(zero_init_residual),
        "normalization": None if normalization is None else [list(v) for v in normalization],
        "class_names": names,
    }


@keras.saving.register_keras_serializable(package="keras_resnet")
class ResNet(keras.Model):
    """A functional ResNet that knows its builder arguments (keras-hub's Backbone pattern).

    ``get_config()`` returns the arguments of ``build_resnet`` (plus ``name``, ``trainable``,
    the dtype policy it was built under, the layers frozen since and ``format_version``,
    ``FORMAT_VERSION``) instead of the layer graph, and ``from_config`` rebuilds the graph from
    them (refusing a format version it does not know): a saved .keras file says what it is,
    and a file loads back as the same class with ``model.arch``, ``model.class_names`` and
    ``model.builder_config``. Arguments as ``build_resnet``; ``dtype``: the dtype policy to
    build under (default: the global policy), so that a mixed-precision file loads back as
    mixed precision; ``frozen_layers``: names of layers to make non-trainable (what
    ``freeze`` did before the model was saved, so that a loaded model trains, and takes back
    its optimizer state, as it did).
    """

    def __init__(
        self,
        arch: str,
        input_shape: Sequence[int | None] = (224, 224, 3),
        num_classes: int = 1000,
        include_top: bool = True,
        pooling: str | None = "avg",
        classifier_activation: str | None = None,
        stem: str = "imagenet",
        width: int = 64,
        zero_init_residual: bool = False,
        normalization=None,
        class_names: Sequence[str] | None = None,
        name: str | None = None,
        trainable: bool = True,
        dtype=None,
        frozen_layers: Sequence[str] = (),
    ):
        config = _checked_builder_config(
            arch, input_shape, num_classes, include_top, pooling, classifier_activation, stem,
            width, zero_init_residual, normalization, class_names)
        policy = keras.config.dtype_policy() if dtype is None else keras.dtype_policies.get(dtype)
        inputs, outputs = _resnet_graph(
            arch, tuple(config["input_shape"]), num_classes, include_top, pooling,
            config["classifier_activation"], stem, width, zero_init_residual,
            config["normalization"], policy)
        super().__init__(inputs, outputs, name=name or arch, trainable=trainable)
        # A functional model takes no dtype argument; its own policy is what compile reads
        # (mixed_float16 wraps the optimizer in a LossScaleOptimizer).
        self.dtype_policy = policy
        # Kept as JSON text: Keras would track a dict (and deep copies of it would copy the
        # model), and the config must stay what a .keras file can hold.
        self._resnet_config = json.dumps(config)
        self._resnet_dtype = policy.name
        self._freeze_layers(frozen_layers)

    def _freeze_layers(self, frozen_layers: Sequence[str]) -> None:
        """Makes exactly the layers named in ``frozen_layers`` non-trainable."""
        frozen = set(frozen_layers)
        layers = _keras_compat.flatten_layers(self, include_self=False)
        unknown = sorted(frozen - {self.name} - {layer.name for layer in layers})
        if unknown:
            raise ValueError(f"frozen_layers {unknown} are not layers of this {self.arch}")
        # Parents come before their sublayers, so a sublayer's own flag wins.
        for layer in layers:
            if layer.name in frozen:
                layer.trainable = False
            elif not layer.trainable:
                layer.trainable = True

    @property
    def builder_config(self) -> dict:
        """The ``build_resnet`` arguments this model was built with (a copy):
        ``build_resnet(**model.builder_config)`` builds the same architecture."""
        return json.loads(self._resnet_config)

    @property
    def arch(self) -> str:
        return self.builder_config["arch"]

    @property
    def class_names(self) -> tuple[str, ...] | None:
        names = self.builder_config["class_names"]
        return None if names is None else tuple(names)

    def get_config(self) -> dict:
        # Not chained to the functional config: a layer graph cannot be passed to __init__.
        frozen = [layer.name for layer in _keras_compat.flatten_layers(self, include_self=False)
                  if not layer.trainable]
        return {**self.builder_config, "name": self.name, "trainable": self.trainable,
                "dtype": self._resnet_dtype, "frozen_layers": frozen,
                "format_version": FORMAT_VERSION}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # The default for a functional model would return a plain Functional.
        config = dict(config)
        # Files saved before the format had a number are version 1.
        version = config.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"this model was saved in keras_resnet format version {version!r}; "
                             f"this keras_resnet reads version {FORMAT_VERSION} (a newer "
                             "keras_resnet wrote it?)")
        return cls(**config)


def model_config(model: keras.Model) -> dict:
    """The ``build_resnet`` arguments of a keras_resnet model (its ``builder_config``).

    Raises ValueError for a model that keras_resnet did not build.
    """
    if not isinstance(model, ResNet):
        raise ValueError(f"{model.name!r} is not a keras_resnet model (not a ResNet); "
                         "build it with keras_resnet.build_resnet")
    return model.builder_config


def _global_pool(pooling: str, dtype=None):
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool", dtype=dtype)
    return keras.layers.GlobalMaxPooling2D(name="max_pool", dtype=dtype)


def _make_variant(arch: str):
    def variant(**kwargs) -> ResNet:
        return build_resnet(arch, **kwargs)

    spec = ARCHS[arch]
    variant.__name__ = variant.__qualname__ = arch
    grouping = ("" if (spec.groups, spec.width_per_group) == (1, 64) else
                f", groups {spec.groups}, width_per_group {spec.width_per_group}")
    variant.__doc__ = (f"{arch}: {spec.block} blocks {list(spec.depths)}{grouping}. Keyword "
                       "arguments as build_resnet().")
    return variant


resnet18 = _make_variant("resnet18")
resnet34 = _make_variant("resnet34")
resnet50 = _make_variant("resnet50")
resnet101 = _make_variant("resnet101")
resnet152 = _make_variant("resnet152")
resnext50_32x4d = _make_variant("resnext50_32x4d")
resnext101_32x8d = _make_variant("resnext101_32x8d")
resnext101_64x4d = _make_variant("resnext101_64x4d")
wide_resnet50_2 = _make_variant("wide_resnet50_2")
wide_resnet101_2 = _make_variant("wide_resnet101_2")
