"""TFLite / LiteRT writer: float32, float16 weights, dynamic-range int8, full-integer int8.

Conversion: the model's serving function, frozen (variables folded into constants), written
as a SavedModel into a temporary folder beside the output -> ``TFLiteConverter.from_saved_model``.
``TFLiteConverter.from_keras_model`` does not work on Keras 3 (keras-team/keras#18430), and
``from_saved_model`` on our (unfrozen) SavedModel kept the variables as READ_VARIABLE ops that
returned NaN in the interpreter. ``from_concrete_functions`` with the frozen function takes the
same route (it saves the function as a SavedModel and converts that) but keeps the function,
the loaded SavedModel and its GraphDef alive during the conversion, about twice the peak
memory of this way. Every variant is restricted to TFLite builtin ops
(no Flex / select-TF ops), which is all ``ai_edge_litert`` can run.

Full-integer int8 (``variant="int8"``): every compute op is int8 with int32 biases. With
``io_dtype="float32"`` (``tflite()``'s default) the file takes raw float pixels and returns
float logits like every other artifact, with a builtin QUANTIZE op at the input and DEQUANTIZE
ops at the outputs. ``io_dtype="uint8"`` (the export's default) / ``"int8"`` gives integer I/O,
for MediaPipe's quantized path and integer-only accelerators (Edge TPU, microcontrollers): the
input's quantization is made raw pixels (scale 1; see ``_calibration``), the outputs are
dequantized with their (scale, zero_point).

Every file takes RGB, a model of grey images converting inside (MediaPipe feeds RGB only), and
carries MediaPipe's classification metadata (``export.tflite_metadata``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from export.artifact import Artifact, WriterOptions
from export import tflite_metadata
from export.checks import image_array
from export.model_io import ExportError, release_memory
from export.source import FOREIGN_RUNTIME_EXCLUDED_KERNELS, SIGNATURE, ExportSource

FORMAT = "tflite"
VARIANTS = ("float32", "float16", "dynamic_int8", "int8")
IO_DTYPES = ("float32", "int8", "uint8")
# Calibration examples fed to the converter for full-integer int8; the TFLite guide suggests
# ~100-500 representative samples.
DEFAULT_CALIBRATION_SIZE = 200


def check(variant: str, options: WriterOptions, shape) -> None:
    _check_variant(variant, options.int8_io)
    if variant == "int8":
        if options.calibration_images is None:
            raise ExportError(
                "the full-integer 'int8' TFLite variant needs calibration data from the "
                "training set and none was given (CLI: a run whose config.json names its "
                "dataset, --dataset NAME, or --calibration FILE.npy); or drop it with "
                "--tflite-variants float32,float16,dynamic_int8"
            )
        image_array(options.calibration_images, shape, "calibration images")


def write_artifact(source: ExportSource, folder, variant: str, options: WriterOptions) -> Artifact:
    """``folder/tflite/model_<variant>.tflite`` (see ``tflite``); the int8 variant takes the
    calibration images and I/O type of ``options``."""
    int8 = variant == "int8"
    io_dtype = options.int8_io if int8 else "float32"
    path = tflite(source, Path(folder) / "tflite" / f"model_{variant}.tflite", variant,
                  options.calibration_images if int8 else None, io_dtype=io_dtype,
                  log=options.log)
    info = {"metadata": _metadata_record(source, variant, io_dtype)}
    if int8:
        info["calibration"] = {
            "images": int(len(options.calibration_images)),
            "source": options.calibration_description or "given calibration images",
        }
    return Artifact(FORMAT, variant, path, info)


def _metadata_record(source: ExportSource, variant: str, io_dtype: str) -> dict:
    """The manifest's record of a file's metadata, or of why it was not written."""
    record = tflite_metadata.describe(source, variant, io_dtype)
    reason = tflite_metadata.unavailable()
    return {"written": False, "reason": reason, **record} if reason else {"written": True,
                                                                            **record}


def _add_metadata(source: ExportSource, path: Path, variant: str, io_dtype: str, log) -> None:
    """Packs MediaPipe's classification metadata into ``path``, or tells ``log`` in one line
    why it cannot (mediapipe missing)."""
    record = _metadata_record(source, variant, io_dtype)
    if not record["written"]:
        log(f"note: {path.name} written without metadata: {record['reason']}")
        return
    names = source.class_names or [str(i) for i in range(source.num_classes)]
    tflite_metadata.write(path, {k: v for k, v in record.items() if k != "written"}, names)


def _check_variant(variant: str, io_dtype: str) -> None:
    if variant not in VARIANTS:
        raise ExportError(f"Unknown TFLite variant {variant!r}; expected one of {list(VARIANTS)}")
    check_io_dtype(io_dtype)


def check_io_dtype(io_dtype: str) -> None:
    if io_dtype not in IO_DTYPES:
        raise ExportError(f"Unknown int8 I/O type {io_dtype!r}; expected one of {list(IO_DTYPES)}")


def tflite(
    model,
    path,
    variant: str = "float32",
    representative_images=None,
    io_dtype: str = "float32",
    log=print,
) -> Path:
    """Writes one TFLite variant of ``model`` (a Keras model, made float32 first, or an
    ExportSource) to ``path`` (a ``.tflite`` file).

    Args:
        variant: "float32"; "float16" (float16 weights, float compute); "dynamic_int8" (int8
            weights, activations quantized on the fly); "int8" (full integer, calibrated).
        representative_images: (N, H, W, C) raw-pixel images from the training data; required
            for "int8"; all are used (the CLI takes ``DEFAULT_CALIBRATION_SIZE`` by default).
        io_dtype: I/O type of the "int8" variant: "float32" (default), "int8" or "uint8"
            (raw pixels, what MediaPipe feeds a quantized model; the export's default).
        log: told in one line when the file gets no metadata (``export.tflite_metadata``).
    """
    import tensorflow as tf

    source = ExportSource.of(model)
    check(variant, WriterOptions(int8_io=io_dtype, calibration_images=representative_images),
          source.shape)
    if io_dtype != "float32" and variant != "int8":
        raise ExportError(f"io_dtype={io_dtype!r} needs variant 'int8', got {variant!r}")
    calibration = None
    if variant == "int8":
        calibration = _calibration(
            image_array(representative_images, source.shape, "calibration images"), io_dtype)
    path = Path(path)
    if path.suffix != ".tflite":
        raise ExportError(f"TFLite path must end with '.tflite', got {str(path)!r}")

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.stem}.frozen-", dir=path.parent) as tmp:
        _save_frozen(source, tmp)  # RGB input, whatever the model takes: MediaPipe feeds RGB
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        release_memory()  # from_saved_model loaded the whole SavedModel to read its signatures
        _configure(converter, variant, calibration, io_dtype)
        flatbuffer = converter.convert()
    del converter
    path.write_bytes(flatbuffer)
    del flatbuffer
    release_memory()  # the converter's graphs, so that the next conversion starts lean
    if variant == "int8" and io_dtype != "float32":
        _check_pixel_quantization(path, io_dtype)
    _add_metadata(source, path, variant, io_dtype, log)
    return path


def _configure(converter, variant: str, calibration, io_dtype: str) -> None:
    """Sets ``converter`` up for ``variant``: builtin ops only, the variant's quantization."""
    import tensorflow as tf

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":

        def representative_dataset():
            for i in range(len(calibration)):
                yield [calibration[i : i + 1]]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_dtype != "float32":
            converter.inference_input_type = getattr(tf, io_dtype)
            converter.inference_output_type = getattr(tf, io_dtype)


def _calibration(images: np.ndarray, io_dtype: str) -> np.ndarray:
    """The converter's representative images: RGB (a grey image repeated, which the model's
    luma conversion maps back to itself); for integer I/O led by a black and a white image, so
    that the input's calibrated range is exactly 0..255 and an integer pixel is its own
    quantized value (scale 1), which is what MediaPipe feeds a uint8 input."""
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if io_dtype != "float32":
        anchors = np.stack([np.zeros_like(images[0]), np.full_like(images[0], 255.0)])
        images = np.concatenate([anchors, images])
    return images


def _check_pixel_quantization(path, io_dtype: str) -> None:
    """Refuses a file whose integer input is not raw pixels (scale 1; zero point 0 for uint8,
    -128 for int8)."""
    details = interpreter(path).get_input_details()[0]
    scale, zero = details["quantization"]
    want = 0 if io_dtype == "uint8" else -128
    if not (abs(scale - 1.0) < 1e-6 and zero == want):
        raise ExportError(f"{path.name}: its {io_dtype} input has quantization scale {scale} "
                          f"and zero point {zero}, expected 1 and {want} (raw pixels)")


def _save_frozen(source: ExportSource, directory) -> None:
    """Writes the frozen serving function as a SavedModel (signature ``serving_default``, the
    converter names the outputs from it) and drops the function before the converter runs."""
    import tensorflow as tf

    serve = source.frozen_serving_function(FOREIGN_RUNTIME_EXCLUDED_KERNELS, rgb=True)
    tf.saved_model.save(
        tf.Module(),
        str(directory),
        signatures={SIGNATURE: serve},
        options=tf.saved_model.SaveOptions(save_debug_info=True),
    )
    del serve
    release_memory()


def interpreter(path, num_threads: int | None = None):
    """An ``ai_edge_litert`` interpreter for ``path`` (tf.lite.Interpreter is deprecated)."""
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path), num_threads=num_threads)


def op_report(path) -> dict:
    """What a .tflite file computes with: op names and the dtypes at each op's tensors.

    Returns {"ops": sorted op names, "non_builtin": ops that are Flex/custom,
    "float_compute_ops": ops other than QUANTIZE/DEQUANTIZE that read or write float tensors}.
    """
    from keras_resnet._keras_compat import tflite_ops_details

    interp = interpreter(path)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops, non_builtin, float_ops = set(), set(), set()
    for op in tflite_ops_details(interp):
        name = op["op_name"]
        ops.add(name)
        if name.startswith("Flex") or name.upper() in ("CUSTOM", "DELEGATE"):
            non_builtin.add(name)
        if name in ("QUANTIZE", "DEQUANTIZE"):
            continue
        for index in list(op["inputs"]) + list(op["outputs"]):
            if index < 0 or index not in tensors:
                continue
            if np.dtype(tensors[index]["dtype"]).kind == "f":
                float_ops.add(name)
    return {
        "ops": sorted(ops),
        "non_builtin": sorted(non_builtin),
        "float_compute_ops": sorted(float_ops),
    }
