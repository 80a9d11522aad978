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
