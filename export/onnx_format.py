"""ONNX writer: the model's float32 tf.function through ``tf2onnx.convert.from_function``.

This is the route Keras's own ``model.export(format="onnx")`` takes; it is used directly so
that the graph gets our input/output names and the shared serving function.
``tf2onnx.convert.from_keras`` is not used: it is broken on Keras 3 (onnx/tensorflow-onnx#2329,
#2348).
"""

from __future__ import annotations

from pathlib import Path

from export.model_io import ExportError, float32_model
from export.savedmodel_format import INPUT_NAME, OUTPUT_NAMES, frozen_serving_function

DEFAULT_OPSET = 17
# 13: oldest with the ops a ResNet needs as used here; 18: newest tf2onnx 1.17 knows
# (tf2onnx.constants.OPSET_TO_IR_VERSION). Opset 17 is exercised by the tests.
MIN_OPSET, MAX_OPSET = 13, 18
BATCH_DIM = "batch"


def onnx(model, path, opset: int = DEFAULT_OPSET) -> Path:
    """Writes ``model`` (made float32 first) to ``path`` (a ``.onnx`` file).

    Input ``image`` (``batch`` x H x W x C float32 raw pixels), outputs ``logits`` and
    ``probabilities``; the batch dimension is dynamic. ``onnx.checker`` must pass.
    """
    import onnx as onnx_lib
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(
            f"ONNX opset must be an integer in {MIN_OPSET}..{MAX_OPSET}, got {opset!r}"
        )
    path = Path(path)
    if path.suffix != ".onnx":
        raise ExportError(f"ONNX path must end with '.onnx', got {str(path)!r}")
    model = float32_model(model)
    serve = frozen_serving_function(model)
    patch_tf2onnx()  # tf2onnx 1.17 uses np.object etc., gone in numpy 2 (Keras ships the patch)
    proto = _convert(serve, opset)
    _name_batch_dimension(proto)
    got = [o.name for o in proto.graph.output]
    if sorted(got) != sorted(OUTPUT_NAMES):
        raise ExportError(f"ONNX graph outputs are {got}, expected {list(OUTPUT_NAMES)}")
    onnx_lib.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_lib.save(proto, str(path))
    return path


def _convert(serve, opset):
    """Frozen tf.function -> ONNX ModelProto.

    The function must be frozen (``frozen_serving_function``): ``tf2onnx.convert.from_function``
    (and so Keras's ``model.export(format="onnx")``) turns every non-variable tensor the
    function captures into an extra graph *input*: a model with a
    ``keras.layers.Normalization(mean=..., variance=...)`` layer came out with inputs ``image``,
    ``.../normalization/Sub/y:0`` and ``.../Sqrt/x:0``.
    """
    import tf2onnx

    proto, _ = tf2onnx.convert.from_function(
        serve, input_signature=serve.input_signature, opset=opset
    )
    inputs = [i.name for i in proto.graph.input]
    if inputs != [INPUT_NAME]:
        raise ExportError(f"ONNX graph inputs are {inputs}, expected [{INPUT_NAME!r}]")
    return proto


def _name_batch_dimension(proto) -> None:
    """tf2onnx names unknown dims ``unk__N``; call the leading one ``batch`` everywhere."""
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM
