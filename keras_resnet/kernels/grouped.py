"""Grouped convolutions (``groups > 1``) as a few dense convolutions (``"grouped_conv"``).

TensorFlow's CPU Conv2D runs a grouped convolution on a slow generic path, above all its
gradients, while oneDNN runs dense convolutions and their gradients fast. So the channels are
cut into chunks of a few whole groups; each chunk is one dense convolution whose kernel is
block-diagonal: the layer's own grouped kernel (kh, kw, in/groups, out) tiled over the chunk's
groups and masked to zero between groups. A chunk of g groups multiplies g times the products
of the grouped convolution (the zeros), but one dense convolution per group is slower still:
oneDNN needs a dozen channels or so to fill its vector registers and each convolution costs a
fixed overhead (``python -m benchmarks.grouped_conv`` measures both ends). The variable keeps
Keras's grouped shape, so saved files do not depend on which path ran.
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
    in/groups, out), zero-padded by ``pad`` ((top, bottom), (left, right)) first if given,
    computed as dense convolutions of ``per`` groups each (default: ``groups_per_chunk``)."""
    kernel = ops.cast(kernel, inputs.dtype)
    in_per_group = kernel.shape[2]
    per = per or groups_per_chunk(groups, in_per_group)
    if pad is not None:
        inputs = ops.pad(inputs, [[0, 0], list(pad[0]), list(pad[1]), [0, 0]])
    chunks = groups // per
    xs = ops.split(inputs, chunks, axis=-1) if chunks > 1 else [inputs]
    ks = block_diagonal_kernels(kernel, groups, per)
    outs = [ops.conv(x, k, strides=strides, padding=padding) for x, k in zip(xs, ks)]
    return ops.concatenate(outs, axis=-1) if chunks > 1 else outs[0]


def grouped_conv_native_forward(inputs, kernel, groups: int, strides, padding: str, pad=None,
                                per=None):
    """The same convolution as ``grouped_conv``; forward by TensorFlow's own grouped Conv2D
    (oneDNN runs it on CPU, but TensorFlow has no CPU gradient for it, hence Keras's XLA), the
    input gradient of a stride-1 convolution as a grouped forward convolution of the output
    gradient, the rest as ``grouped_conv``'s dense convolutions."""
    import tensorflow as tf

    kernel = ops.cast(kernel, inputs.dtype)
    per = per or groups_per_chunk(groups, kernel.shape[2])
    if pad is not None:
        inputs = ops.pad(inputs, [[0, 0], list(pad[0]), list(pad[1]), [0, 0]])
    strides, padding = tuple(strides), padding.upper()

    @tf.custom_gradient
    def conv(x, k):
        def grad(dy):
            if strides == (1, 1):
                dx = _stride1_input_gradient(dy, k, groups, padding)
            else:
                dx = _chunked_input_gradient(x, k, dy, groups, per, strides, padding)
            return dx, _chunked_kernel_gradient(x, k, dy, groups, per, strides, padding)

        return tf.nn.conv2d(x, k, strides, padding), grad

    return conv(inputs, kernel)


def _stride1_input_gradient(dy, k, groups, padding):
    """A stride-1 convolution's input gradient: the output gradient convolved ("full") with
    the kernel rotated 180 degrees, each group's in and out channels swapped."""
    import tensorflow as tf

    kh, kw, cin_g, cout = k.shape
    cout_g = cout // groups
    flipped = tf.reshape(tf.reverse(k, [0, 1]), (kh, kw, cin_g, groups, cout_g))
    flipped = tf.reshape(tf.transpose(flipped, (0, 1, 4, 3, 2)), (kh, kw, cout_g, groups * cin_g))
    # "full" padding minus the forward's own: (k - 1 - top, k - 1 - bottom) per side
    top, left = ((kh - 1) // 2, (kw - 1) // 2) if padding == "SAME" else (0, 0)
    bottom, right = ((kh - 1 - top), (kw - 1 - left)) if padding == "SAME" else (0, 0)
    dy = tf.pad(dy, [[0, 0], [kh - 1 - top, kh - 1 - bottom], [kw - 1 - left, kw - 1 - right],
                     [0, 0]])
    return tf.nn.conv2d(dy, flipped, 1, "VALID")


def _chunked_input_gradient(x, k, dy, groups, per, strides, padding):
    import tensorflow as tf

    chunks = groups // per
    dys = tf.split(dy, chunks, axis=-1)
    sizes = [*x.shape[:3], x.shape[3] // chunks]
    sizes = [tf.shape(x)[0], *sizes[1:]] if sizes[0] is None else sizes
    dxs = [tf.raw_ops.Conv2DBackpropInput(input_sizes=sizes, filter=kc, out_backprop=dyc,
                                          strides=[1, *strides, 1], padding=padding)
           for kc, dyc in zip(block_diagonal_kernels(k, groups, per), dys)]
    return tf.concat(dxs, axis=-1) if chunks > 1 else dxs[0]


def _chunked_kernel_gradient(x, k, dy, groups, per, strides, padding):
    """Each chunk's dense kernel gradient, of which the grouped kernel gets the diagonal
    blocks (the others belong to the zeros)."""
    import tensorflow as tf

    kh, kw, cin_g, cout = k.shape
    chunks = groups // per
    xs = tf.split(x, chunks, axis=-1) if chunks > 1 else [x]
    dys = tf.split(dy, chunks, axis=-1) if chunks > 1 else [dy]
    same_group = tf.constant(
        (np.arange(per)[:, None] == (np.arange(cout // chunks) // (cout // groups)) % per)
        [None, None, :, None, :], k.dtype)
    dks = []
    for xc, dyc in zip(xs, dys):
        dense = tf.raw_ops.Conv2DBackpropFilter(
            input=xc, filter_sizes=[kh, kw, per * cin_g, cout // chunks], out_backprop=dyc,
            strides=[1, *strides, 1], padding=padding)
        dense = tf.reshape(dense, (kh, kw, per, cin_g, cout // chunks))
        dks.append(tf.reduce_sum(dense * same_group, axis=2))
    return tf.concat(dks, axis=-1) if chunks > 1 else dks[0]
