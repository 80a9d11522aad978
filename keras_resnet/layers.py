"""Drop-in Conv2D and BatchNorm layers with faster CPU formulations, and the factories that
give them torchvision's settings.

``Conv2D`` and ``BatchNorm`` subclass Keras's layers with the same arguments, variables and
results; they only choose faster TensorFlow kernels where those exist (other backends use
Keras's own computation). The architecture (blocks, stages) lives in ``blocks`` and
``builder``; this module knows nothing of ResNets beyond torch's initialisation and batch-norm
constants.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import ops

# torch.nn.BatchNorm2d defaults; needed for weight parity with torchvision.
BN_EPSILON = 1e-5
# torch momentum 0.1 weights the *new* batch statistic; Keras momentum weights the old one.
BN_MOMENTUM = 0.9


def conv_initializer():
    # torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), untruncated.
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


# Largest input map (pixels) computed as one matrix product when the output is not 1x1.
_MATMUL_MAX_PIXELS = 9


def conv_geometry(size, kernel_size, strides, padding, pad=None):
    """(out height, out width, top, left) of a 2D convolution, or None if it has no output.

    ``pad`` ((top, bottom), (left, right)) is zero padding added first; ``top``/``left`` count
    all padding before the first input row/column (Keras/TF "same" puts its odd pixel last)."""
    (h, w), (kh, kw), (sh, sw) = size, kernel_size, strides
    (pt, pb), (pl, pr) = pad if pad is not None else ((0, 0), (0, 0))
    hp, wp = h + pt + pb, w + pl + pr
    if padding == "valid":
        if hp < kh or wp < kw:
            return None
        return (hp - kh) // sh + 1, (wp - kw) // sw + 1, pt, pl
    if padding == "same":
        ho, wo = -(-hp // sh), -(-wp // sw)
        return (ho, wo, pt + max((ho - 1) * sh + kh - hp, 0) // 2,
                pl + max((wo - 1) * sw + kw - wp, 0) // 2)
    return None


@keras.saving.register_keras_serializable(package="keras_resnet")
class Conv2D(keras.layers.Conv2D):
    """keras.layers.Conv2D with faster formulations of the convolutions a ResNet has on CPU.

    Same arguments, variables and results: the products are the same and only the order of the
    sums may differ (float32 round-off). The class keeps Keras's name so that .keras weight keys
    stay those of a plain Conv2D.

    On maps of at most 3x3 pixels (and wherever the output is a single pixel) most of a padded
    3x3 convolution multiplies zeros: on a 1x1 map only the centre tap meets a pixel, on a 2x2
    map each output sees 4 of 9 taps. There the convolution is a matrix product
    ``x (N, P*Cin) @ W[q] (P*Cin, Cout)`` per output pixel q, over the P input pixels that some
    tap reaches, with ``W`` gathered from the kernel's taps (a zero block where no tap links a
    pair), several times faster forward and backward than TensorFlow's CPU convolution
    (``python -m benchmarks.conv_paths``).

    ``explicit_padding=p`` (an int, or ((top, bottom), (left, right))) with ``padding="valid"``
    zero-pads the input first, as torch's ``Conv2d(padding=p)`` does: Keras "same" pads a
    strided convolution asymmetrically. The matrix-product path then skips the padded pixels.
    """

    def __init__(self, *args, explicit_padding=None, **kwargs):
        super().__init__(*args, **kwargs)
        if explicit_padding is not None:
            given = explicit_padding
            if isinstance(explicit_padding, int):
                explicit_padding = ((explicit_padding,) * 2,) * 2
            try:
                explicit_padding = tuple(tuple(int(v) for v in side) for side in explicit_padding)
            except (TypeError, ValueError):
                explicit_padding = None
            if (explicit_padding is None or len(explicit_padding) != 2
                    or any(len(side) != 2 for side in explicit_padding)
                    or min(min(side) for side in explicit_padding) < 0):
                raise ValueError("explicit_padding must be an int or ((top, bottom), "
                                 f"(left, right)) of non-negative ints, got {given!r}")
            if self.padding != "valid" or self.data_format != "channels_last":
                raise ValueError("explicit_padding needs padding='valid' and channels_last, got "
                                 f"{self.padding!r} and {self.data_format!r}")
        self.explicit_padding = explicit_padding

    def call(self, inputs, training=None):
        outputs = self._convolve(inputs, self.kernel, self.explicit_padding, training)
        if self.use_bias:
            outputs = ops.add(outputs, ops.reshape(self.bias, (1, 1, 1, self.filters)))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs

    def convolution_op(self, inputs, kernel):
        return self._convolve(inputs, kernel, self.explicit_padding)

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

    def _convolve(self, inputs, kernel, pad, training=None):
        h, w = inputs.shape[1], inputs.shape[2]
        plain = (
            self.data_format != "channels_last"
            or h is None
            or w is None
            or tuple(self.dilation_rate) != (1, 1)
            or self.groups != 1
        )
        plan = None if plain else self._tap_plan(h, w, pad, tuple(self.strides))
        if plan is not None:
            return self._matmul_conv(inputs, kernel, *plan)
        if pad is not None:
            inputs = ops.pad(inputs, [[0, 0], list(pad[0]), list(pad[1]), [0, 0]])
        if training and not plain and self._flipped_input_gradient_applies():
            return _conv_same_flipped_input_gradient(inputs, ops.cast(kernel, inputs.dtype))
        return super().convolution_op(inputs, kernel)

    def _flipped_input_gradient_applies(self) -> bool:
        kh, kw = self.kernel_size
        return (
            FLIPPED_INPUT_GRADIENT
            and self.padding == "same"
            and tuple(self.strides) == (1, 1)
            and kh == kw and kh % 2 == 1 and kh > 1
            and keras.backend.backend() == "tensorflow"
            and not _gpus_visible()
        )

    def _tap_plan(self, h, w, pad, strides):
        """(tap index T[output pixel, active input pixel], active pixels, ho, wo) or None.

        T holds kh*kw where no tap links the pair; active pixels are those of the unpadded
        input that some tap reaches."""
        (kh, kw), (sh, sw) = self.kernel_size, strides
        geometry = conv_geometry((h, w), self.kernel_size, strides, self.padding, pad)
        if geometry is None:
            return None
        ho, wo, top, left = geometry
        if h * w > _MATMUL_MAX_PIXELS and ho * wo != 1:
            return None
        taps = kh * kw
        table = np.full((ho * wo, h * w), taps, dtype="int32")
        for i in range(ho):
            for j in range(wo):
                for a in range(kh):
                    for b in range(kw):
                        r, c = i * sh + a - top, j * sw + b - left
                        if 0 <= r < h and 0 <= c < w:
                            table[i * wo + j, r * w + c] = a * kw + b
        active = np.flatnonzero((table < taps).any(axis=0))
        if active.size == 0:
            return None
        return table[:, active], active, ho, wo

    def _matmul_conv(self, inputs, kernel, table, active, ho, wo):
        h, w, cin = inputs.shape[1], inputs.shape[2], inputs.shape[3]
        (kh, kw), cout = self.kernel_size, self.filters
        outs, pixels = table.shape
        taps = ops.reshape(kernel, (kh * kw, cin, cout))
        if (table == kh * kw).any():  # one extra all-zero tap for unlinked pairs
            taps = ops.concatenate([taps, ops.zeros((1, cin, cout), dtype=taps.dtype)], axis=0)
        x = ops.reshape(inputs, (-1, h * w, cin))
        if pixels != h * w:
            x = ops.take(x, active, axis=1)
        x = ops.reshape(x, (-1, pixels * cin))
        if outs == 1:
            out = ops.matmul(x, ops.reshape(ops.take(taps, table[0], axis=0), (pixels * cin, cout)))
            return ops.reshape(out, (-1, ho, wo, cout))
        # One product per output pixel, sharing x: (1, N, P*Cin) @ (Q, P*Cin, Cout).
        weights = ops.reshape(ops.take(taps, table, axis=0), (outs, pixels * cin, cout))
        out = ops.matmul(ops.expand_dims(x, 0), weights)
        return ops.reshape(ops.transpose(out, (1, 0, 2)), (-1, ho, wo, cout))


# Training computes the input gradient of stride-1 "same" convolutions as a forward convolution
# (see _conv_same_flipped_input_gradient). A module switch so that benchmarks can compare both.
FLIPPED_INPUT_GRADIENT = True


@functools.lru_cache(maxsize=1)
def _gpus_visible() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _conv_same_flipped_input_gradient(x, kernel):
    """A stride-1 "same" convolution whose input gradient is itself a forward convolution.

    For odd square kernels at stride 1 with symmetric padding, the gradient with respect to the
    input is the convolution of the output gradient with the kernel rotated by 180 degrees and
    its in/out channels swapped: the same multiply-adds as TensorFlow's Conv2DBackpropInput, in
    the shape of a forward convolution. oneDNN's forward kernels are its most tuned ones; on an
    AVX2-only EPYC, Conv2DBackpropInput of 3x3 convolutions on 4x4 maps ran at a fifth of the
    forward rate (README, "Speed on CPU"). The weight gradient stays TensorFlow's.
    """
    import tensorflow as tf

    @tf.custom_gradient
    def conv(x, k):
        def grad(dy):
            flipped = tf.transpose(tf.reverse(k, [0, 1]), [0, 1, 3, 2])
            dx = tf.nn.conv2d(dy, flipped, 1, "SAME")
            dk = tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=tf.shape(k), out_backprop=dy, strides=[1, 1, 1, 1],
                padding="SAME")
            return dx, dk

        return tf.nn.conv2d(x, k, 1, "SAME"), grad

    return conv(x, kernel)


def make_conv(filters: int, kernel: int, stride: int, name: str, dtype=None):
    """A Conv2D computing torch's Conv2d(padding=kernel//2).

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
        use_bias=False,
        kernel_initializer=conv_initializer(),
        data_format="channels_last",
        name=name,
        dtype=dtype,
    )


@keras.saving.register_keras_serializable(package="keras_resnet")
class BatchNorm(keras.layers.BatchNormalization):
    """BatchNormalization on TensorFlow's fused kernel (FusedBatchNormV3), torch semantics.

    Same variables, arguments and outputs as ``keras.layers.BatchNormalization`` (a drop-in
    subclass), with two differences that both come from the fused kernel:

    - Speed: Keras 3 normalises with separate moments / normalize ops; the fused kernel does
      the forward and backward pass in one op each (a faster CPU training step, which
      ``python -m benchmarks.bench`` measures), and in inference TensorFlow's
      optimizer folds Conv2D + FusedBatchNorm + ReLU into one oneDNN convolution.
    - The moving variance is updated with the unbiased batch variance, as torch.nn.BatchNorm2d
      does (Keras's own layer uses the biased one); normalisation uses the biased one in both.

    Other backends, masks and non-4D inputs fall back to the Keras implementation.
    """

    def _fusable(self, inputs, mask) -> bool:
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and self.center
            and self.scale
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        gamma = ops.cast(self.gamma, "float32")
        beta = ops.cast(self.beta, "float32")
        if training and self.trainable and self.synchronized and _replicas_in_sync() > 1:
            return self._synchronized_call(inputs, gamma, beta)
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=self.epsilon, is_training=True
            )
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                gamma,
                beta,
                mean=ops.cast(self.moving_mean, "float32"),
                variance=ops.cast(self.moving_variance, "float32"),
                epsilon=self.epsilon,
                is_training=False,
            )
        return ops.cast(y, self.compute_dtype)


    def _synchronized_call(self, inputs, gamma, beta):
        """Training-mode normalisation with the statistics of the global batch.

        Two all-reduces per layer through the strategy's own collective: (sum, count) for the
        mean, then the sum of squared deviations from it. The one-pass E[x^2] - mean^2 would
        save one, but it cancels catastrophically where a channel's mean dwarfs its spread (a
        flat image background), and the replicas would then no longer match one device.
        """
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        x = tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        local = tf.concat([
            tf.reduce_sum(x, axis=[0, 1, 2]),
            tf.cast(tf.reshape(tf.reduce_prod(tf.shape(x)[:3]), [1]), tf.float32),
        ], axis=0)
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
        count = total[channels]
        mean = total[:channels] / count
        centred = x - mean
        variance = context.all_reduce(
            tf.distribute.ReduceOp.SUM, tf.reduce_sum(tf.square(centred), axis=[0, 1, 2])) / count
        y = centred * (gamma * tf.math.rsqrt(variance + self.epsilon)) + beta
        m = self.momentum
        unbiased = variance * (count / tf.maximum(count - 1.0, 1.0))
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + unbiased * (1.0 - m))
        return ops.cast(y, self.compute_dtype)


def _replicas_in_sync() -> int:
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1


def make_bn(name: str, zero_gamma: bool = False, dtype=None):
    return BatchNorm(
        dtype=dtype,
        axis=-1,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=name,
    )
