"""Loading .keras files written by training.fit, whatever precision they were trained in."""

from __future__ import annotations

import os

from keras_resnet.modelfile import ModelFileError  # noqa: F401  callers catch it from here


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


def load_model(path: str, compile: bool = False):
    """keras_resnet.modelfile.load_model, and for a damaged checkpoint the intact ones beside it."""
    from keras_resnet import modelfile

    try:
        return modelfile.load_model(path, compile=compile)
    except ModelFileError as e:
        if not os.path.isfile(path):
            raise
        raise ModelFileError(f"{e}{_usable_instead(path)}") from None
