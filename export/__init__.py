"""export: SavedModel, TFLite/LiteRT and ONNX artifacts of a keras_resnet model, each verified.

Python API::

    import export
    model = export.load_model("runs/x/best.keras")      # clear errors for bad files
    export.saved_model(model, "out/saved_model")         # -> out/saved_model/1 (TF Serving)
    export.onnx(model, "out/model.onnx", opset=17)
    export.tflite(model, "out/model_int8.tflite", "int8", representative_images=train_x)
    report = export.verify("out/model.onnx", model, images)  # report["passed"], figures
    manifest = export.export_all(model, "out", images=x, labels=y, calibration_images=train_x)

Every writer rebuilds a mixed-precision model in float32 (weights copied) first. Modules are
named ``*_format`` so that ``export.onnx`` etc. stay functions, not submodules.
"""

from export.model_io import ExportError, float32_model, load_model
from export.onnx_format import DEFAULT_OPSET, onnx
from export.pipeline import FORMATS, export_all, format_table
from export.savedmodel_format import INPUT_NAME, OUTPUT_NAMES, saved_model
from export.tflite_format import VARIANTS as TFLITE_VARIANTS
from export.tflite_format import op_report, tflite
from export.verification import load_runner, verify

__all__ = [
    "DEFAULT_OPSET", "ExportError", "FORMATS", "INPUT_NAME", "OUTPUT_NAMES", "TFLITE_VARIANTS",
    "export_all", "float32_model", "format_table", "load_model", "load_runner", "onnx",
    "op_report", "saved_model", "tflite", "verify",
]
