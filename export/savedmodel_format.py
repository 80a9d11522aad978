"""SavedModel writer: a TF Serving layout (``<dir>/<version>/saved_model.pb``)."""

from __future__ import annotations

from pathlib import Path

from export.artifact import Artifact, WriterOptions
from export.model_io import ExportError, release_memory
from export.source import SIGNATURE, ExportSource

FORMAT = "saved_model"
VARIANTS = ("float32",)
# The folder TF Serving's --model_base_path points at, relative to the export.
BASE_PATH = "saved_model"


def check(variant: str, options: WriterOptions, shape) -> None:
    """A SavedModel needs nothing beyond the model."""


def write_artifact(source: ExportSource, folder, variant: str, options: WriterOptions) -> Artifact:
    """``folder/saved_model/1`` (see ``saved_model``)."""
    path = saved_model(source, Path(folder) / BASE_PATH, version=1)
    return Artifact(FORMAT, variant, path,
                    {"signature": SIGNATURE, "tf_serving_base_path": BASE_PATH})


def saved_model(model, path, version: int = 1) -> Path:
    """Writes ``model`` (a Keras model, made float32 first, or an ExportSource) as
    ``path/<version>/`` and returns that folder.

    The ``serving_default`` signature takes ``image`` (float32 NHWC raw pixels 0..255, any
    batch size) and returns ``logits`` and ``probabilities``. ``path`` is what TF Serving's
    ``--model_base_path`` points at.
    """
    import tensorflow as tf

    if int(version) != version or version < 1:
        raise ExportError(f"SavedModel version must be a positive integer, got {version!r}")
    source = ExportSource.of(model)
    target = Path(path) / str(int(version))
    if target.exists():
        raise ExportError(f"{str(target)!r} already exists")
    serve = source.serving_function()
    module = tf.Module()
    module.model = source.reference  # tracks the variables
    module.serve = serve
    tf.saved_model.save(module, str(target), signatures={SIGNATURE: serve.get_concrete_function()})
    del module, serve
    release_memory()
    return target
