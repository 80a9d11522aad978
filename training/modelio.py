"""Loading .keras files written by training.fit, whatever precision they were trained in."""

from __future__ import annotations


def load_model(path: str, compile: bool = False):
    """keras.models.load_model with keras_resnet's layers registered.

    A mixed-precision file loads back as mixed precision under any global dtype policy: every
    layer, block sublayers included, records its own policy.
    """
    import keras

    import keras_resnet  # noqa: F401 - registers the custom layers

    return keras.models.load_model(path, compile=compile)
