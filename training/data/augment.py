"""Batch-wise random affine augmentation, a pure function of its seed."""

from __future__ import annotations

import math


def augment_batch(images, seed, kind: str, rows=None, strength: float = 1.0):
    """Random affine augmentation of a float32 NHWC batch, a pure function of `seed` (shape [2]).

    `rows=(total, offset)` augments rows offset.. of a batch of `total` images: a replica
    holding a slice of the global batch draws the same transforms for its images as one device
    holding all of them, so distributed and single-device runs see the same pixels.

    "mnist": rotation in +-10 degrees and shift in +-10% of the size, bilinear (the seed code's
    RandomRotation(10) + RandomAffine(translate=(0.1, 0.1))). "cifar": integer shift in +-4 px
    with zero fill (identical to 4-pixel zero padding + random 32x32 crop) and horizontal flip,
    nearest neighbour so pixels are copied exactly. `strength` scales every range (the
    CIFAR shift rounded to whole pixels).
    """
    import tensorflow as tf

    if kind == "none":
        return images
    shape = tf.shape(images)
    b = shape[0] if rows is None else rows[0]
    h = tf.cast(shape[1], tf.float32)
    w = tf.cast(shape[2], tf.float32)
    angle, tx, ty, flip, interpolation = _draw(kind, seed, b, h, w, strength)
    zeros = tf.zeros([b], tf.float32)
    # The transform maps output pixel p to input pixel A p + t:
    # p -> (optional flip) -> minus shift, rotated about the centre c.
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    sx = 1.0 - 2.0 * flip  # -1 flips x
    fx = flip * (w - 1.0)
    qx, qy = fx - cx - tx, -cy - ty  # (F p + f0 - c - shift) without the F p part
    a0, a1 = cos * sx, sin
    b0, b1 = -sin * sx, cos
    a2 = cos * qx + sin * qy + cx
    b2 = -sin * qx + cos * qy + cy
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    if rows is not None:
        transforms = transforms[rows[1]:rows[1] + shape[0]]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3],
        fill_value=tf.constant(0.0, tf.float32), interpolation=interpolation,
        fill_mode="CONSTANT",
    )
    # The op's shape function drops H and W (output_shape is a tensor). The models branch on a
    # known spatial size (keras_resnet.layers.Conv2D's matrix-product path), so losing it here
    # would put training on the slow generic path.
    out.set_shape(images.shape)
    return out


def _draw(kind: str, seed, b, h, w, strength: float):
    """Each image's rotation (radians), x/y shift (pixels), flip (0/1) and the interpolation."""
    import tensorflow as tf

    s_angle, s_tx, s_ty, s_flip = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    zeros = tf.zeros([b], tf.float32)
    if kind == "mnist":
        degrees, shift = 10.0 * strength, 0.1 * strength
        angle = tf.random.stateless_uniform([b], s_angle, -degrees, degrees) * (math.pi / 180.0)
        tx = tf.random.stateless_uniform([b], s_tx, -shift, shift) * w
        ty = tf.random.stateless_uniform([b], s_ty, -shift, shift) * h
        flip = zeros
        interpolation = "BILINEAR"
    elif kind == "cifar":
        angle = zeros
        pad = int(round(4 * strength))
        tx = tf.cast(tf.random.stateless_uniform([b], s_tx, -pad, pad + 1, dtype=tf.int32),
                     tf.float32)
        ty = tf.cast(tf.random.stateless_uniform([b], s_ty, -pad, pad + 1, dtype=tf.int32),
                     tf.float32)
        flip = tf.cast(tf.random.stateless_uniform([b], s_flip, 0, 2, dtype=tf.int32), tf.float32)
        interpolation = "NEAREST"
    else:
        raise ValueError(f"Unknown augmentation {kind!r}")
    return angle, tx, ty, flip, interpolation
