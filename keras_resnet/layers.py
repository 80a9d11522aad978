"""The Conv2D and BatchNorm layers of the architecture, and the factories that give them
torchvision's settings.

``Conv2D`` and ``BatchNorm`` subclass Keras's layers with the same arguments, variables and
results (``Conv2D`` adds torch's symmetric padding). Faster formulations of their computation
live in ``keras_resnet.kernels``, which has the switch between them and Keras's own. The
architecture (blocks, stages) lives in ``blocks`` and ``builder``; this module knows nothing of
ResNets beyond torch's initialisation and batch-norm constants.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_resnet.kernels import batch_norm as batch_norm_kernels
from keras_resnet.kernels import conv as conv_kernels

# torch.nn.BatchNorm2d defaults; needed for weight parity with torchvision.
BN_EPSILON = 1e-5
# torch momentum 0.1 weights the *new* batch statistic; Keras momentum weights the old one.
BN_MOMENTUM = 0.9


def conv_initializer():
    # torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), untruncated.
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


@keras.saving.register_keras_serializable(package="keras_resnet")
class Conv2D(keras.layers.Conv2D):
    """keras.layers.Conv2D that can pad its input first, as torch's ``Conv2d(padding=p)`` does.

    ``explicit_padding=p`` (an int, or ((top, bottom), (left, right))) with ``padding="valid"``
    zero-pads the input before the convolution: Keras "same" pads a strided convolution
    asymmetrically. Otherwise the same arguments, variables and results as Keras's layer; the
    class keeps Keras's name so that .keras weight keys stay those of a plain Conv2D.

    Where a kernel of ``keras_resnet.kernels`` applies (small maps, stride-1 input gradients),
    it computes the convolution; elsewhere, and with ``kernels.use("stock")``, Keras does.
    """

    def __init__(self, *args, explicit_padding=None, **kwargs):
        super().__init__(*args, **kwargs)
        if explicit_padding is not None:
            explicit_padding = _check_explicit_padding(explicit_padding)
            if self.padding != "valid" or self.data_format != "channels_last":
                raise ValueError("explicit_padding needs padding='valid' and channels_last, got "
                                 f"{self.padding!r} and {self.data_format!r}")
        self.explicit_padding = explicit_padding

    def call(self, inputs, training=None):
        outputs = self._convolve(inputs, self.kernel, training)
        if self.use_bias:
            outputs = ops.add(outputs, ops.reshape(self.bias, (1, 1, 1, self.filters)))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs

    def convolution_op(self, inputs, kernel):
        return self._convolve(inputs, kernel)

    def compute_output_shape(self, input_shape):
        pad = self.explicit_padding
        if pad is not None:
            n, h, w, c = input_shape
            input_shape = (n, None if h is None else h + sum(pad[0]),
                           None if w is None else w + sum(pad[1]), c)
        return super().compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        if self.explicit_padding is not None:  # else the config is a plain Conv2D's
            config["explicit_padding"] = [list(side) for side in self.explicit_padding]
        return config

    def _convolve(self, inputs, kernel, training=None):
        outputs = conv_kernels.convolve(self, inputs, kernel, training)
        if outputs is not None:
            return outputs
        pad = self.explicit_padding
        if pad is not None:
            inputs = ops.pad(inputs, [[0, 0], list(pad[0]), list(pad[1]), [0, 0]])
        return super().convolution_op(inputs, kernel)


def _check_explicit_padding(given):
    """((top, bottom), (left, right)) of non-negative ints from an int or that nesting."""
    pad = ((given,) * 2,) * 2 if isinstance(given, int) else given
    try:
        pad = tuple(tuple(int(v) for v in side) for side in pad)
    except (TypeError, ValueError):
        pad = None
    if (pad is None or len(pad) != 2 or any(len(side) != 2 for side in pad)
            or min(min(side) for side in pad) < 0):
        raise ValueError("explicit_padding must be an int or ((top, bottom), "
                         f"(left, right)) of non-negative ints, got {given!r}")
    return pad


def make_conv(filters: int, kernel: int, stride: int, name: str, dtype=None, groups: int = 1):
    """A Conv2D computing torch's Conv2d(padding=kernel//2, groups=groups).

    Keras "same" padding pads (0, 1) at stride 2 on even inputs where torch pads (1, 1), which
    shifts every output pixel. For stride 1 and odd kernels "same" *is* symmetric, so only
    strided convolutions pad explicitly (``explicit_padding``, inside the conv).
    """
    explicit = kernel // 2 if stride > 1 and kernel > 1 else None
    return Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same" if explicit is None else "valid",
        explicit_padding=explicit,
        groups=groups,
        use_bias=False,
        kernel_initializer=conv_initializer(),
        data_format="channels_last",
        name=name,
        dtype=dtype,
    )


@keras.saving.register_keras_serializable(package="keras_resnet")
class BatchNorm(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization, computed by ``keras_resnet.kernels``' fused batch norm
    where it applies (TensorFlow, 4D inputs, no mask).

    Same variables, arguments and outputs as Keras's layer (a drop-in subclass); on the fused
    kernel the moving variance follows the unbiased batch variance, as torch.nn.BatchNorm2d's
    does. With ``kernels.use("stock")``, and on other backends, Keras computes it.
    """

    def call(self, inputs, training=None, mask=None):
        outputs = batch_norm_kernels.batch_norm(self, inputs, training=training, mask=mask)
        if outputs is not None:
            return outputs
        return super().call(inputs, training=training, mask=mask)


def make_bn(name: str, zero_gamma: bool = False, dtype=None):
    return BatchNorm(
        dtype=dtype,
        axis=-1,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=name,
    )
