"""torchvision's evaluation transform (``weights.transforms()``, ``ImageClassification``) in
TensorFlow, up to the normalization, which the model's first layer does.

torchvision, on a PIL image: resize the shorter side to ``resize_size`` (the longer one to
``int(resize_size * long / short)``) with PIL's bilinear filter, which widens its support by the
scale when shrinking (an antialiased, area-weighted triangle filter); center crop ``crop_size``
(the offset ``int(round((size - crop) / 2))``, Python's round half to even); to 0..1; then
``(x - mean) / std``. Here: the same sizes and offsets, ``tf.image.resize(..., "bilinear",
antialias=True)`` (the same triangle filter, computed in float where PIL keeps 8-bit values),
rounded to whole 0..255 values as PIL's 8-bit result is. The output is the float32 crop in raw
0..255 pixel units: a model built with the set's ``normalization`` (``build_resnet(weights=...)``
does) applies the mean and std. tests/keras_resnet/test_weights_transform.py measures the
difference from torchvision on real photographs.
"""

from __future__ import annotations

from keras_resnet.weights._torchvision import IMAGENET_MEAN, IMAGENET_STD
from keras_resnet.weights.registry import WeightSet, WeightsError, check_transform, get


def transform_config(name, arch: str | None = None) -> dict:
    """The transform's settings (``WeightSet.transform_config()``) for a name, a WeightSet or
    such a dict (a manifest's: every value checked, WeightsError naming the field)."""
    if isinstance(name, dict):
        config = dict(name)
        if config.get("interpolation", "bilinear") != "bilinear" or \
                config.get("antialias", True) is not True:
            raise WeightsError("transform: only torchvision's bilinear antialiased resize is "
                               "supported, got interpolation="
                               f"{config.get('interpolation')!r:.40} "
                               f"antialias={config.get('antialias')!r:.40}")
        try:
            checked = check_transform(
                config.get("resize_size"), config.get("crop_size"),
                config.get("mean", IMAGENET_MEAN), config.get("std", IMAGENET_STD))
        except WeightsError as err:
            raise WeightsError(f"transform {err}") from None
        return {**config, **checked, "mean": list(checked["mean"]),
                "std": list(checked["std"])}
    ws = name if isinstance(name, WeightSet) else get(name, arch)
    return ws.transform_config()


def resized_size(height, width, resize_size: int):
    """torchvision's ``_compute_resized_output_size`` for ``size=[resize_size]`` (ints or
    scalar tensors): the shorter side becomes ``resize_size``, the longer
    ``int(resize_size * long / short)``."""
    import tensorflow as tf

    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    short, long = tf.minimum(h, w), tf.maximum(h, w)
    # Python divides the exact integer product in float64: so does this.
    new_long = tf.cast(tf.floor(resize_size * long / short), tf.int32)
    wide = w >= h  # torchvision: `short, long = (w, h) if w <= h else (h, w)`; equal is alike
    new_h = tf.where(wide, resize_size, new_long)
    new_w = tf.where(wide, new_long, resize_size)
    return new_h, new_w


def as_rgb(image):
    """An image as HxWx3, the way PIL's ``convert("RGB")`` makes it (torchvision's loaders do):
    grayscale (HxW or HxWx1) repeated into three channels, RGBA's alpha dropped."""
    import tensorflow as tf

    image = tf.convert_to_tensor(image)
    if image.shape.rank == 2:
        image = image[..., None]
    if image.shape.rank != 3:
        raise ValueError(f"expected one HxWxC image, got shape {image.shape}")
    channels = image.shape[-1]
    if channels == 1:
        return tf.tile(image, [1, 1, 3])
    if channels == 4:
        return image[..., :3]
    if channels == 3:
        return image
    if channels is None:  # known only when the graph runs
        c = tf.shape(image)[-1]
        image = tf.cond(c == 1, lambda: tf.tile(image, [1, 1, 3]), lambda: image[..., :3])
        return tf.ensure_shape(image, [None, None, 3])
    raise ValueError(f"expected 1 (gray), 3 (RGB) or 4 (RGBA) channels, got {channels}")


def transform(name, arch: str | None = None):
    """A function from one uint8 image (HxWx3; HxW/HxWx1 gray and HxWx4 RGBA are converted as
    PIL's ``convert("RGB")``) of any size to the float32 ``(crop, crop, 3)`` model input in
    0..255 units, as torchvision's ``weights.transforms()`` makes it before normalizing.

    ``name``: a weight set's name (with ``arch`` where the name is not unique), a WeightSet, or
    a ``transform_config()`` dict (what an export's manifest records). Pure TensorFlow ops:
    usable eagerly or inside ``tf.data.Dataset.map``.
    """
    import tensorflow as tf

    config = transform_config(name, arch)
    resize, crop = int(config["resize_size"]), int(config["crop_size"])

    def apply(image):
        image = as_rgb(image)
        shape = tf.shape(image)
        new_h, new_w = resized_size(shape[0], shape[1], resize)
        x = tf.cast(image, tf.float32)
        same = tf.logical_and(tf.equal(new_h, shape[0]), tf.equal(new_w, shape[1]))
        # torchvision returns a PIL image of the requested size unchanged.
        x = tf.cond(same, lambda: x, lambda: tf.image.resize(
            x, tf.stack([new_h, new_w]), method="bilinear", antialias=True))
        # Python's round(), half to even, as tf.round.
        top = tf.cast(tf.round(tf.cast(new_h - crop, tf.float64) / 2), tf.int32)
        left = tf.cast(tf.round(tf.cast(new_w - crop, tf.float64) / 2), tf.int32)
        x = x[top:top + crop, left:left + crop]
        x = tf.clip_by_value(tf.round(x), 0.0, 255.0)  # PIL's 8-bit result
        return tf.ensure_shape(x, [crop, crop, 3])

    apply.config = config
    return apply
