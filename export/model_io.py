"""Loading a trained model and making the float32 reference that every artifact is built from."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc

import numpy as np

from keras_resnet._keras_compat import flatten_layers

FLOAT32 = "float32"


class ExportError(ValueError):
    """A user-facing problem (bad model file, bad options, missing data): printed, exit 2."""


def release_memory() -> None:
    """Frees what the last conversion or runtime left behind, before the next one starts.

    Collects Python's reference cycles (TensorFlow functions, converter and graph objects are
    full of them, and the generational collector reaches large ones late), then asks glibc to
    return its free heap pages to the system (``malloc_trim``): TensorFlow's and the
    converters' C++ allocations are freed into per-thread malloc arenas, which otherwise keep
    them resident, so each artifact's peak stacked on the last one's. No-op where the C
    library has no ``malloc_trim`` (musl, macOS).
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@contextlib.contextmanager
def collecting_new_objects_only():
    """Inside the block, ``release_memory``'s collections look only at objects made inside it.

    A full collection walks every tracked object of the process: in a program that has already
    built and trained models (a notebook, a training script that exports at its end) that is
    most of the collection's time, though the cycles to free are the converters' new ones.
    ``gc.freeze`` sets the existing objects aside until the block ends; garbage among them
    waits until then. A process that has frozen objects itself keeps them frozen: the block
    then changes nothing (``gc.unfreeze`` would release the caller's too)."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# glibc <malloc.h>: mallopt parameter number of the mmap threshold.
_M_MMAP_THRESHOLD = -3
# Heap blocks this large or larger get a mapping of their own, returned to the system on free.
MMAP_THRESHOLD_BYTES = 1 << 20


def return_large_blocks_on_free(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Makes glibc serve allocations of ``threshold`` bytes or more with their own mapping,
    which goes back to the system when freed (``mallopt(M_MMAP_THRESHOLD)``).

    glibc's default threshold starts at 128 KiB and rises (up to 32 MiB) each time a mapped
    block is freed, after which weight-sized buffers (a 3x3x512x512 kernel is 9 MiB) come from
    the heap, where the converters' interleaved allocations fragment it and freed memory stays
    resident. For a process-wide setting like this, the CLI calls it (``python -m export``;
    ``python -m benchmarks.deploy.memory`` measures the peak). Returns whether it was applied (False
    where the C library has no ``mallopt``).
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(threshold)))


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def load_model(path):
    """keras_resnet.modelfile.load_model, its one-line errors as ExportError."""
    from keras_resnet.modelfile import ModelFileError, load_model

    try:
        return load_model(path)
    except ModelFileError as err:
        raise ExportError(str(err)) from None


def _policy_name(layer) -> str:
    policy = getattr(layer, "dtype_policy", None)
    return getattr(policy, "name", FLOAT32) if policy is not None else FLOAT32


def is_float32(model) -> bool:
    return all(_policy_name(layer) == FLOAT32 for layer in flatten_layers(model))


def _force_float32(config):
    """Returns a copy of a (nested) Keras config with every layer dtype policy set to float32."""
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            if key == "dtype" and _is_policy(value):
                out[key] = FLOAT32
            else:
                out[key] = _force_float32(value)
        return out
    if isinstance(config, list):
        return [_force_float32(v) for v in config]
    return config


def _is_policy(value) -> bool:
    if isinstance(value, str):
        return value.startswith("mixed_") or value in ("float16", "bfloat16")
    return isinstance(value, dict) and "Policy" in str(value.get("class_name", ""))


def float32_model(model):
    """The model itself if it is all float32, else a float32 rebuild carrying its weights.

    A model trained under ``mixed_float16`` / ``mixed_bfloat16`` computes in half precision;
    ONNX export needs a float32 policy, and a float32 graph is the better reference for every
    format. Variables of a mixed-precision model are already float32, so the weights copy
    over exactly.
    """
    if is_float32(model):
        return model
    rebuilt = _float32_rebuild(model)
    if not is_float32(rebuilt):
        bad = sorted({_policy_name(l) for l in flatten_layers(rebuilt)} - {FLOAT32})
        raise ExportError(f"float32 rebuild still has dtype policies {bad}")
    return rebuilt


def _float32_rebuild(model):
    from keras_resnet.builder import ResNet
    from keras_resnet.transfer import with_dtype

    if isinstance(model, ResNet):
        return with_dtype(model, FLOAT32)
    # Another Keras model: every layer's policy is in its config; the model object and its
    # input layers take no dtype argument, so they are given float32 after the rebuild.
    rebuilt = model.__class__.from_config(_force_float32(model.get_config()))
    for layer in flatten_layers(rebuilt):
        if _policy_name(layer) != FLOAT32 and (layer is rebuilt or not layer.weights):
            layer.dtype_policy = FLOAT32
    weights = model.get_weights()
    if len(weights) != len(rebuilt.weights):
        raise ExportError(
            f"float32 rebuild of {model.name!r} has {len(rebuilt.weights)} weights, the "
            f"original {len(weights)}; cannot copy the trained weights"
        )
    rebuilt.set_weights([np.asarray(w, dtype=np.float32) if w.dtype.kind == "f" else w
                         for w in weights])
    return rebuilt


def input_spec(model) -> tuple[int, int, int]:
    """(height, width, channels) of a single-image-input model."""
    if len(model.inputs) != 1:
        raise ExportError(f"expected a model with one image input, got {len(model.inputs)}")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ExportError(
            f"expected an NHWC image input with known height/width/channels, got {shape}; "
            "export needs a fixed input size"
        )
    return tuple(int(d) for d in shape[1:])


def num_classes(model) -> int:
    shape = tuple(model.outputs[0].shape)
    if len(model.outputs) != 1 or len(shape) != 2:
        raise ExportError(
            f"expected a classifier returning (batch, classes) logits, got outputs "
            f"{[tuple(o.shape) for o in model.outputs]}"
        )
    return int(shape[1])


def normalization(model) -> dict | None:
    """The (mean, std) in raw pixel units that the model's ``normalization`` layer applies."""
    import keras

    for layer in flatten_layers(model):
        if isinstance(layer, keras.layers.Normalization):
            mean = np.ravel(np.asarray(layer.mean, dtype=np.float64))
            var = np.ravel(np.asarray(layer.variance, dtype=np.float64))
            return {
                "layer": layer.name,
                "mean": [round(float(m), 6) for m in mean],
                "std": [round(float(s), 6) for s in np.sqrt(var)],
                "input_range": "raw pixels 0..255",
            }
    return None

