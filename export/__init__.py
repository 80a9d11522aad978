"""export: SavedModel, TFLite/LiteRT and ONNX artifacts of a keras_resnet model, each verified.

Python API::

    import export
    model = export.load_model("runs/x/best.keras")      # clear errors for bad files
    export.saved_model(model, "out/saved_model")         # -> out/saved_model/1 (TF Serving)
    export.onnx(model, "out/model.onnx", opset=17)
    export.tflite(model, "out/model_int8.tflite", "int8", representative_images=train_x)
    report = export.verify("out/model.onnx", model, images)  # report["passed"], figures
    manifest = export.export_all(model, "out", images=x, labels=y, calibration_images=train_x)

Every writer takes a Keras model or an ``export.ExportSource`` (the model made once for an
export: its float32 reference, input, classes, serving functions); a mixed-precision model is
rebuilt in float32 (weights copied) first. Modules are
named ``*_format`` so that ``export.onnx`` etc. stay functions, not submodules.
"""

import importlib

# public name -> (module, attribute); resolved on first use (PEP 562), so that `import export`
# and `python -m export --help` load no TensorFlow/ONNX/LiteRT.
_EXPORTS = {
    "DEFAULT_OPSET": ("export.checks", "DEFAULT_OPSET"),
    "ExportError": ("export.model_io", "ExportError"),
    "FORMATS": ("export.pipeline", "FORMATS"),
    "ExportSource": ("export.source", "ExportSource"),
    "INPUT_NAME": ("export.source", "INPUT_NAME"),
    "OUTPUT_NAMES": ("export.source", "OUTPUT_NAMES"),
    "TFLITE_VARIANTS": ("export.tflite_format", "VARIANTS"),
    "export_all": ("export.pipeline", "export_all"),
    "float32_model": ("export.model_io", "float32_model"),
    "format_table": ("export.pipeline", "format_table"),
    "load_model": ("export.model_io", "load_model"),
    "load_runner": ("export.verification", "load_runner"),
    "onnx": ("export.onnx_format", "onnx"),
    "op_report": ("export.tflite_format", "op_report"),
    "saved_model": ("export.savedmodel_format", "saved_model"),
    "tflite": ("export.tflite_format", "tflite"),
    "verify": ("export.verification", "verify"),
}

__all__ = [
    "DEFAULT_OPSET", "ExportError", "ExportSource", "FORMATS", "INPUT_NAME", "OUTPUT_NAMES", "TFLITE_VARIANTS",
    "export_all", "float32_model", "format_table", "load_model", "load_runner", "onnx",
    "op_report", "saved_model", "tflite", "verify",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
