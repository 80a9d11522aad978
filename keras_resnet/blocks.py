"""Residual blocks of torchvision's ResNet v1.5 as serializable Keras layers.

Each block owns its convolutions and batch norms as sublayers named after the block
(``stage3_block2_conv1``, ``stage3_block2_bn1``, ``stage3_block1_shortcut``,
``stage3_block1_shortcut_bn``), so weights map one to one onto torchvision's
``layer3.1.conv1`` / ``layer3.1.bn1`` / ``layer3.0.downsample.{0,1}``.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_resnet.archs import inner_width
from keras_resnet.layers import make_bn, make_conv


class _ResidualBlock(keras.layers.Layer):
    """Shared machinery: a main path of (conv, bn) units and an optional projection."""

    expansion = 1
    # (kernel size, stride applies here?, "inner" or "out" channels, grouped?) per conv of the
    # main path; "out" is filters * expansion, "inner" the grouped width (archs.inner_width).
    _units: tuple = ()

    def __init__(self, filters: int, stride: int = 1, zero_init_residual: bool = False,
                 groups: int = 1, width_per_group: int = 64, **kwargs):
        super().__init__(**kwargs)
        if int(filters) != filters or filters < 1:
            raise ValueError(f"filters must be a positive integer, got {filters!r}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        self.filters = int(filters)
        self.stride = int(stride)
        self.zero_init_residual = bool(zero_init_residual)
        self.groups, self.width_per_group = self._check_groups(groups, width_per_group)
        self.out_channels = self.filters * self.expansion
        self.inner_channels = inner_width(self.filters, self.groups, self.width_per_group)

        # Sublayers take the block's dtype policy, so that a mixed-precision .keras file loads
        # back as mixed precision whatever the global policy is at load time.
        self.convs, self.bns = [], []
        last = len(self._units) - 1
        for i, (kernel, strided, channels, grouped) in enumerate(self._units, start=1):
            self.convs.append(make_conv(
                self.out_channels if channels == "out" else self.inner_channels, kernel,
                self.stride if strided else 1, f"{self.name}_conv{i}", dtype=self.dtype_policy,
                groups=self.groups if grouped else 1,
            ))
            self.bns.append(
                make_bn(f"{self.name}_bn{i}", dtype=self.dtype_policy,
                        zero_gamma=self.zero_init_residual and i - 1 == last)
            )
        # The projection shortcut is decided in build(), once the input channels are known.
        self.shortcut_conv = None
        self.shortcut_bn = None

    def _check_groups(self, groups, width_per_group) -> tuple[int, int]:
        for label, value in (("groups", groups), ("width_per_group", width_per_group)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if inner_width(self.filters, int(groups), int(width_per_group)) < 1:
            raise ValueError(
                f"{self.filters} filters with width_per_group={width_per_group} leave each of "
                f"the {groups} groups no channel (int(filters * width_per_group / 64) must be "
                "at least 1): use more filters")
        return int(groups), int(width_per_group)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(f"{self.name}: the channel dimension of the input must be known")
        if self.stride != 1 or in_channels != self.out_channels:
            self.shortcut_conv = make_conv(
                self.out_channels, 1, self.stride, f"{self.name}_shortcut", dtype=self.dtype_policy
            )
            self.shortcut_bn = make_bn(f"{self.name}_shortcut_bn", dtype=self.dtype_policy)
        shape = tuple(input_shape)
        for layer in self.main_path:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        if self.shortcut_conv is not None:
            self.shortcut_conv.build(tuple(input_shape))
            self.shortcut_bn.build(self.shortcut_conv.compute_output_shape(tuple(input_shape)))

    @property
    def main_path(self):
        """The sublayers of the residual branch in call order (ReLUs between units omitted)."""
        return [layer for unit in zip(self.convs, self.bns) for layer in unit]

    @property
    def shortcut_path(self):
        return [] if self.shortcut_conv is None else [self.shortcut_conv, self.shortcut_bn]

    def call(self, inputs, training=None):
        x = inputs
        last = len(self.convs) - 1
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            x = bn(conv(x), training=training)
            if i != last:
                x = ops.relu(x)
        if self.shortcut_conv is None:
            shortcut = inputs
        else:
            shortcut = self.shortcut_bn(self.shortcut_conv(inputs), training=training)
        return ops.relu(x + shortcut)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.main_path:
            shape = layer.compute_output_shape(shape)
        return shape

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, stride=self.stride, zero_init_residual=self.zero_init_residual,
            groups=self.groups, width_per_group=self.width_per_group,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_resnet")
class BasicBlock(_ResidualBlock):
    """Two 3x3 conv + BN units (ResNet-18/34); ReLU after the residual addition.

    Args:
        filters: output channels of both convolutions (expansion 1).
        stride: 1, or 2 to halve the spatial size (on the first 3x3 conv).
        zero_init_residual: start the last BN's gamma at zero so the block begins as identity.
    """

    expansion = 1
    _units = ((3, True, "out", False), (3, False, "out", False))

    def _check_groups(self, groups, width_per_group) -> tuple[int, int]:
        if (groups, width_per_group) != (1, 64):
            raise ValueError("BasicBlock supports only groups=1 and width_per_group=64 (as "
                             f"torchvision's), got {groups!r} and {width_per_group!r}")
        return 1, 64


@keras.saving.register_keras_serializable(package="keras_resnet")
class Bottleneck(_ResidualBlock):
    """1x1 -> 3x3 -> 1x1 conv + BN units, expansion 4 (ResNet-50/101/152, ResNeXt, Wide ResNet).

    ResNet v1.5: the stride sits on the 3x3 convolution, as in torchvision. The 1x1 and 3x3
    convolutions have ``int(filters * width_per_group / 64) * groups`` channels and the 3x3 is
    split into ``groups`` groups (a Keras grouped Conv2D: kernel (3, 3, channels/groups, out)).
    """

    expansion = 4
    _units = ((1, False, "inner", False), (3, True, "inner", True), (1, False, "out", False))
