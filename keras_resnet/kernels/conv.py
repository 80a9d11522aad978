"""Faster formulations of the convolutions a ResNet has, on CPU.

Both give the products of the convolution they replace; only the order of the sums may differ
(float32 round-off).

Matrix products (``"matmul_conv"``): on maps of at most 3x3 pixels (and wherever the output is
a single pixel) most of a padded 3x3 convolution multiplies zeros: on a 1x1 map only the centre
tap meets a pixel, on a 2x2 map each output sees 4 of 9 taps. There the convolution is a matrix
product ``x (N, P*Cin) @ W[q] (P*Cin, Cout)`` per output pixel q, over the P input pixels that
some tap reaches, with ``W`` gathered from the kernel's taps (a zero block where no tap links a
pair), several times faster forward and backward than TensorFlow's CPU convolution
(``python -m benchmarks.model.conv_paths``). Padding given as ``explicit_padding`` is skipped, not
multiplied.

Flipped input gradient (``"flipped_input_gradient"``): see ``conv_same_flipped_input_gradient``.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import ops

from keras_resnet import kernels
from keras_resnet.kernels import grouped
from keras_resnet.geometry import conv_geometry

# Largest input map (pixels) computed as one matrix product when the output is not 1x1.
MATMUL_MAX_PIXELS = 9


def convolve(layer, inputs, kernel, training=None):
    """``layer``'s convolution of ``inputs`` (its ``explicit_padding`` included) by the first
    kernel in use that applies, or None where none does (the layer then computes it itself).

    ``layer``: a keras_resnet.layers.Conv2D (its kernel size, strides, padding and so on)."""
    h, w = inputs.shape[1], inputs.shape[2]
    plain = (
        layer.data_format != "channels_last"
        or h is None
        or w is None
        or tuple(layer.dilation_rate) != (1, 1)
    )
    if plain:
        return None
    pad = layer.explicit_padding
    if layer.groups != 1:
        if not _grouped_conv_applies(layer):
            return None
        return grouped.grouped_conv(inputs, kernel, layer.groups, tuple(layer.strides),
                                    layer.padding, pad)
    if kernels.enabled("matmul_conv"):
        plan = tap_plan(layer, h, w, pad, tuple(layer.strides))
        if plan is not None:
            return matmul_conv(layer, inputs, kernel, *plan)
    if training and pad is None and _flipped_input_gradient_applies(layer):
        return conv_same_flipped_input_gradient(inputs, ops.cast(kernel, inputs.dtype))
    return None


def _grouped_conv_applies(layer) -> bool:
    # TensorFlow's CPU grouped convolution is the slow one; XLA and GPUs have their own.
    return (
        kernels.enabled("grouped_conv")
        and keras.backend.backend() == "tensorflow"
        and not _gpus_visible()
    )


def _flipped_input_gradient_applies(layer) -> bool:
    kh, kw = layer.kernel_size
    return (
        kernels.enabled("flipped_input_gradient")
        and layer.padding == "same"
        and tuple(layer.strides) == (1, 1)
        and kh == kw and kh % 2 == 1 and kh > 1
        and keras.backend.backend() == "tensorflow"
        and not _gpus_visible()
    )


def tap_plan(layer, h, w, pad, strides):
    """(tap index T[output pixel, active input pixel], active pixels, ho, wo) or None.

    T holds kh*kw where no tap links the pair; active pixels are those of the unpadded
    input that some tap reaches."""
    (kh, kw), (sh, sw) = layer.kernel_size, strides
    geometry = conv_geometry((h, w), layer.kernel_size, strides, layer.padding, pad)
    if geometry is None:
        return None
    ho, wo, top, left = geometry
    if h * w > MATMUL_MAX_PIXELS and ho * wo != 1:
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


def matmul_conv(layer, inputs, kernel, table, active, ho, wo):
    h, w, cin = inputs.shape[1], inputs.shape[2], inputs.shape[3]
    (kh, kw), cout = layer.kernel_size, layer.filters
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


@functools.lru_cache(maxsize=1)
def _gpus_visible() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def conv_same_flipped_input_gradient(x, kernel):
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
