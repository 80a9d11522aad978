"""Loading .keras files written by training.fit, whatever precision they were trained in."""

from __future__ import annotations

import zipfile

POLICIES = ("mixed_bfloat16", "mixed_float16")


def saved_precision(path: str) -> str:
    """The mixed-precision policy recorded in a .keras file's layer configs, else "float32"."""
    with zipfile.ZipFile(path) as z:
        text = z.read("config.json").decode()
    found = [p for p in POLICIES if f'"{p}"' in text]
    return found[0] if found else "float32"


def load_model(path: str, compile: bool = False):
    """keras.models.load_model under the global dtype policy the model was saved with.

    keras_resnet's blocks create their conv/BN sublayers without passing their own dtype
    policy, so a mixed-precision file loaded under the default float32 global policy gets
    float32 convs inside bfloat16/float16 blocks and fails with an AddV2 dtype mismatch.
    """
    import keras

    import keras_resnet  # noqa: F401 - registers the custom layers

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(saved_precision(path))
    try:
        return keras.models.load_model(path, compile=compile)
    finally:
        keras.config.set_dtype_policy(previous)
