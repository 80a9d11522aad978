"""Loading .keras files written by training.fit, whatever precision they were trained in."""

from __future__ import annotations

import os
import zipfile


class ModelFileError(ValueError):
    """A model file that exists but cannot be loaded; the message names it and what to use."""


def _usable_instead(path: str) -> str:
    from training.callbacks import intact_checkpoints

    run_dir = os.path.dirname(os.path.abspath(path))
    others = {name: epoch for name, epoch in intact_checkpoints(run_dir).items()
              if os.path.join(run_dir, name) != os.path.abspath(path)}
    if others:
        return "; intact beside it: " + ", ".join(
            f"{os.path.join(os.path.dirname(path), name)} (epoch {epoch})"
            for name, epoch in others.items())
    return "; no intact checkpoint of training.fit is beside it (retrain, or restore the file)"


def check_model_file(path: str) -> None:
    """Raises ModelFileError unless `path` is a whole zip archive (a .keras file's container)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file {path}")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()  # reads every member: a damaged one fails its CRC
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ModelFileError(f"{path} is not a readable .keras file (truncated or damaged: "
                             f"{e}){_usable_instead(path)}") from None
    if bad is not None:
        raise ModelFileError(f"{path} is damaged (member {bad} fails its CRC check)"
                             f"{_usable_instead(path)}")


def load_model(path: str, compile: bool = False):
    """keras.models.load_model with keras_resnet's layers registered, after checking the file.

    A mixed-precision file loads back as mixed precision under any global dtype policy: every
    layer, block sublayers included, records its own policy.
    """
    check_model_file(path)
    import keras

    import keras_resnet  # noqa: F401 - registers the custom layers

    return keras.models.load_model(path, compile=compile)
