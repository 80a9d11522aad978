"""The protocol between ``export_all`` and the format modules.

Each format module (``savedmodel_format``, ``onnx_format``, ``tflite_format``) exposes

* ``FORMAT``: its name in the manifest, and ``VARIANTS``: the variants it can write;
* ``check(variant, options, shape)``: raises ExportError when ``options`` cannot give that
  variant for a model taking ``shape`` (H, W, C), before anything is written;
* ``write_artifact(source, folder, variant, options) -> Artifact``: writes one artifact of
  ``source`` (an ``export.source.ExportSource``: the float32 reference and its serving
  functions) under ``folder``.

Judging an artifact is not the writer's business: ``export.verification`` holds every rule.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from export.checks import DEFAULT_OPSET


@dataclasses.dataclass
class WriterOptions:
    """What the writers may need beyond the model; each reads its own fields."""

    opset: int = DEFAULT_OPSET
    int8_io: str = "float32"
    calibration_images: np.ndarray | None = None
    calibration_description: str | None = None
    onnx_layout: str = "nhwc"
    log: Callable[[str], None] = print  # where a writer's notes go (the export's log)


@dataclasses.dataclass
class Artifact:
    """One written artifact: ``info`` holds the manifest fields only this format has."""

    format: str
    variant: str
    path: Path
    info: dict = dataclasses.field(default_factory=dict)
