"""Grouped convolutions (``groups > 1``) at oneDNN's speed on CPU (``"grouped_conv"``).

Keras computes a grouped convolution on TensorFlow as an XLA function, since TensorFlow has no
CPU gradient for it; XLA bypasses oneDNN and is slow there, above all the gradients. Here:

- Dense chunks: the channels are cut into chunks of a few whole groups; each chunk is one
  dense convolution whose kernel is block-diagonal: the layer's own grouped kernel (kh, kw,
  in/groups, out) tiled over the chunk's groups and masked to zero between groups. A chunk of
  g groups multiplies g times the products of the grouped convolution (the zeros), but one
  dense convolution per group is slower still: oneDNN needs a dozen channels or so to fill
  its vector registers, and each convolution costs a fixed overhead.
- Gradients of our own: the input gradient of a stride-1 convolution is itself a forward
  convolution (of the output gradient, by each chunk's kernel rotated 180 degrees with its in
  and out channels swapped), as oneDNN's input-gradient kernels ran slower than its forward
  ones on AVX2; the strided input gradient and the kernel gradient are each chunk's dense
  ones (the kernel gradient keeps their diagonal blocks).

TensorFlow's own grouped Conv2D is not used even forward: its CPU kernel was the slower one at
few channels per group, and in inference graphs TensorFlow's optimizer fuses it with a
following batch norm and ReLU into a fused convolution that rejects groups at run time.

``python -m benchmarks.model.grouped_conv`` measures the kernel against torch. The variable
keeps Keras's grouped shape, so saved files do not depend on which path ran.
"""

from __future__ import annotations

import numpy as np
from keras import ops

# Input channels a chunk's dense convolution is given at least, and groups per chunk at least:
# fewer leave oneDNN's vector registers part empty; more multiply zeros for nothing.
CHUNK_MIN_CHANNELS = 16
CHUNK_MIN_GROUPS = 2


def groups_per_chunk(groups: int, in_per_group: int) -> int:
    """Groups computed together by one dense convolution: a divisor of ``groups``."""
    want = max(CHUNK_MIN_GROUPS, -(-CHUNK_MIN_CHANNELS // in_per_group))
    per = min(groups, want)
    while groups % per:
        per -= 1
    return per


def block_diagonal_kernels(kernel, groups: int, per: int):
    """The dense kernels (kh, kw, per * in/groups, per * out/groups) of the groups // per
    chunks, taken from a grouped kernel (kh, kw, in/groups, out)."""
    kh, kw, cin_g, cout = kernel.shape
    cout_g = cout // groups
    # mask[i, o]: input channel i of a chunk and output channel o (of any chunk) share a group
    same_group = (np.arange(per * cin_g)[:, None] // cin_g
                  == (np.arange(cout)[None, :] // cout_g) % per)
    tiled = ops.tile(kernel, (1, 1, per, 1)) * ops.cast(same_group, kernel.dtype)
    return ops.split(tiled, groups // per, axis=-1)


def grouped_conv(inputs, kernel, groups: int, strides, padding: str, pad=None, per=None):
    """The grouped convolution of ``inputs`` (channels last) by ``kernel`` (kh, kw,
    in/groups, out), zero-padded by ``pad`` ((top, bottom), (left, right)) if given, on
    TensorFlow: dense convolutions of ``per`` groups each (default: ``groups_per_chunk``),
    with the gradients the module's docstring describes."""
    import tensorflow as tf

    kernel = tf.cast(kernel, inputs.dtype)
    per = per or groups_per_chunk(groups, kernel.shape[2])
    strides, chunks = tuple(strides), groups // per
    # Padding given to the convolutions themselves: a padded copy of the input (and the slice
    # of its gradient) cost more than the strided convolution did.
    tf_padding = (padding.upper() if pad is None
                  else [[0, 0], list(pad[0]), list(pad[1]), [0, 0]])

    def split(t):
        return tf.split(t, chunks, axis=-1) if chunks > 1 else [t]

    @tf.custom_gradient
    def conv(x, k):
        xs, ks = split(x), block_diagonal_kernels(k, groups, per)
        ys = [tf.nn.conv2d(xc, kc, strides, tf_padding) for xc, kc in zip(xs, ks)]

        def grad(dy):
            dys = split(dy)
            pads = _forward_pads(k.shape, strides, padding, pad)
            if pads is None:
                dx = _chunked_input_gradient(xs, ks, dys, strides, tf_padding)
            else:
                dxs = [_stride1_input_gradient(dyc, kc, pads) for dyc, kc in zip(dys, ks)]
                dx = tf.concat(dxs, axis=-1) if chunks > 1 else dxs[0]
            return dx, _chunked_kernel_gradient(xs, k, dys, groups, per, strides, tf_padding)

        return (tf.concat(ys, axis=-1) if chunks > 1 else ys[0]), grad

    return conv(inputs, kernel)


def _conv_padding(tf_padding):
    """(padding, explicit_paddings) arguments of TensorFlow's raw convolution ops."""
    if isinstance(tf_padding, str):
        return tf_padding, []
    return "EXPLICIT", [v for side in tf_padding for v in side]


def _forward_pads(kernel_shape, strides, padding, pad):
    """((top, bottom), (left, right)) a stride-1 convolution pads its input by, or None
    (strided, or more padding than a "full" convolution of the output gradient can undo)."""
    if strides != (1, 1):
        return None
    kh, kw = kernel_shape[:2]
    if pad is not None:
        pads = pad
    elif padding == "same":
        pads = (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2))
    else:
        pads = ((0, 0), (0, 0))
    return pads if max(*pads[0]) < kh and max(*pads[1]) < kw else None


def _stride1_input_gradient(dy, k, pads):
    """A stride-1 dense convolution's input gradient: the output gradient convolved ("full",
    less the forward's own padding) with the kernel rotated 180 degrees, in and out channels
    swapped."""
    import tensorflow as tf

    kh, kw = k.shape[:2]
    flipped = tf.transpose(tf.reverse(k, [0, 1]), (0, 1, 3, 2))
    (top, bottom), (left, right) = pads
    full = [[0, 0], [kh - 1 - top, kh - 1 - bottom], [kw - 1 - left, kw - 1 - right], [0, 0]]
    return tf.nn.conv2d(dy, flipped, 1, full)


def _chunked_input_gradient(xs, ks, dys, strides, tf_padding):
    import tensorflow as tf

    padding, explicit = _conv_padding(tf_padding)
    dxs = [tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(xc), filter=kc, out_backprop=dyc, strides=[1, *strides, 1],
        padding=padding, explicit_paddings=explicit) for xc, kc, dyc in zip(xs, ks, dys)]
    return tf.concat(dxs, axis=-1) if len(dxs) > 1 else dxs[0]


def _chunked_kernel_gradient(xs, k, dys, groups, per, strides, tf_padding):
    """Each chunk's dense kernel gradient, of which the grouped kernel gets the diagonal
    blocks (the others belong to the zeros)."""
    import tensorflow as tf

    kh, kw, cin_g, cout = k.shape
    chunks = groups // per
    padding, explicit = _conv_padding(tf_padding)
    same_group = tf.constant(
        (np.arange(per)[:, None] == (np.arange(cout // chunks) // (cout // groups)) % per)
        [None, None, :, None, :], k.dtype)
    dks = []
    for xc, dyc in zip(xs, dys):
        dense = tf.raw_ops.Conv2DBackpropFilter(
            input=xc, filter_sizes=[kh, kw, per * cin_g, cout // chunks], out_backprop=dyc,
            strides=[1, *strides, 1], padding=padding, explicit_paddings=explicit)
        dense = tf.reshape(dense, (kh, kw, per, cin_g, cout // chunks))
        dks.append(tf.reduce_sum(dense * same_group, axis=2))
    return tf.concat(dks, axis=-1) if chunks > 1 else dks[0]
