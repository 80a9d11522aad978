"""Opening a .keras file with our layers registered, and naming a bad file in one line.

``keras.models.load_model`` in a process that has not imported keras_resnet fails with a
Functional deserialization error, and Keras calls a truncated archive "not found"; every CLI
and library entry point loads models through here instead.
"""

from __future__ import annotations

import os
import zipfile

from keras_resnet._cli import UsageError

# What Keras 3 writes into every .keras archive.
KERAS_MEMBERS = ("config.json", "model.weights.h5")


class ModelFileError(UsageError, ValueError):
    """A model file that is missing or cannot be loaded; the message names it and the fault."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def check_keras_file(path) -> None:
    """Raises ModelFileError unless ``path`` is a whole .keras archive (every member's CRC is
    read, so a damaged file is told before Keras half-loads it)."""
    shown = repr(os.fspath(path))
    if not os.path.exists(path):
        raise ModelFileError(f"model file {shown} does not exist")
    if os.path.isdir(path):
        raise ModelFileError(f"model file {shown} is a folder; expected a .keras file")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            damaged = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise ModelFileError(f"could not load model file {shown}: not a readable .keras archive "
                             f"(truncated, corrupt or another format: {_first_line(err)})"
                             ) from None
    if damaged is not None:
        raise ModelFileError(f"could not load model file {shown}: it is corrupt ({damaged} fails "
                             "its CRC check)")
    missing = [m for m in KERAS_MEMBERS if m not in names]
    if missing:
        raise ModelFileError(f"could not load model file {shown}: it holds no "
                             f"{' or '.join(missing)} (not a Keras 3 .keras model)")


def _unknown_class_hint(err: BaseException) -> str:
    # keras_resnet is imported by now, so Keras met a class that it does not register.
    if "Could not locate class" not in str(err):
        return ""
    return ("; keras_resnet's models load after `import keras_resnet`, which registers ResNet and "
            "its layers: this file names a class it does not have (saved by another library "
            "or a newer keras_resnet?)")


def load_model(path, compile: bool = False):
    """The keras.Model in the .keras file ``path``, or a one-line ModelFileError.

    A mixed-precision file loads back as mixed precision under any global dtype policy: a
    ResNet records the policy it was built under.
    """
    check_keras_file(path)
    import keras

    import keras_resnet  # noqa: F401  registers our layers for deserialization

    try:
        model = keras.models.load_model(path, compile=compile)
    except Exception as err:  # Keras raises ValueError, TypeError, KeyError, OSError...
        raise ModelFileError(f"could not load model file {os.fspath(path)!r}: "
                             f"{type(err).__name__}: {_first_line(err)}"
                             f"{_unknown_class_hint(err)}") from err
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"model file {os.fspath(path)!r} holds a {type(model).__name__}, "
                             "not a model")
    return model
