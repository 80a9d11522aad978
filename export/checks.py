"""The checks every part of export shares: option lists, image arrays, the ONNX opset, and what
describes a written file (size, sha256, library versions)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from keras_resnet._provenance import library_versions, sha256_file
from export.model_io import ExportError

__all__ = ["check_opset", "describe_path", "image_array", "library_versions", "parse_list",
           "sha256_file", "DEFAULT_OPSET", "MIN_OPSET", "MAX_OPSET"]

# 13: oldest with the ops a ResNet needs as used here; 18: newest tf2onnx 1.17 knows
# (tf2onnx.constants.OPSET_TO_IR_VERSION). The default is the one the tests exercise.
MIN_OPSET, MAX_OPSET, DEFAULT_OPSET = 13, 18, 17


def parse_list(value, allowed, what) -> list[str]:
    """A comma-separated string or a sequence -> its distinct items in order, all in ``allowed``."""
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    items = [v for v in items if v]
    unknown = [v for v in items if v not in allowed]
    if unknown or not items:
        raise ExportError(
            f"Unknown {what} {unknown or value!r}; expected a comma-separated subset of "
            f"{list(allowed)}"
        )
    return list(dict.fromkeys(items))


def check_opset(opset) -> None:
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"ONNX opset must be an integer in {MIN_OPSET}..{MAX_OPSET}, got {opset!r}"
        )


def image_array(images, shape, what: str) -> np.ndarray:
    """``images`` as float32 (N, H, W, C) raw pixels for a model taking ``shape`` (H, W, C), or
    an ExportError naming ``what``; (N, H, W) is taken for one channel."""
    arr = np.asarray(images)
    h, w, c = shape
    if arr.ndim == 3 and c == 1 and arr.shape[1:] == (h, w):
        arr = arr[..., None]
    expected = f"images of shape (N, {h}, {w}, {c}), raw pixels 0..255"
    if arr.dtype.kind not in "biuf" or arr.ndim != 4 or tuple(arr.shape[1:]) != (h, w, c):
        raise ExportError(f"{what} holds a {arr.dtype} array of shape {arr.shape}; the model "
                          f"takes {expected}")
    if len(arr) == 0:
        raise ExportError(f"{what} holds no images; expected {expected}")
    arr = arr.astype(np.float32, copy=False)  # checked again downstream: no second copy
    if not np.all(np.isfinite(arr)):
        raise ExportError(f"{what} contains NaN or infinite values")
    return arr


def describe_path(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256). For a folder: total size, and the sha256 over its sorted
    ``relative/path\\0<sha256 of file>\\n`` lines."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size, sha256_file(path)
    h, size = hashlib.sha256(), 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        size += f.stat().st_size
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return size, h.hexdigest()
