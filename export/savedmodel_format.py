"""SavedModel writer: a TF Serving layout (``<dir>/<version>/saved_model.pb``)."""

from __future__ import annotations

from pathlib import Path

from export.model_io import ExportError, float32_model, input_spec

INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "probabilities")
SIGNATURE = "serving_default"


def serving_function(model):
    """A tf.function ``image (N,H,W,C) float32 raw pixels -> {logits, probabilities}``.

    The batch dimension is dynamic. Shared by the SavedModel, TFLite and ONNX writers so that
    every artifact has the same input and output names.
    """
    import tensorflow as tf

    h, w, c = input_spec(model)

    @tf.function(input_signature=[tf.TensorSpec((None, h, w, c), tf.float32, name=INPUT_NAME)])
    def serve(image):
        logits = tf.cast(model(image, training=False), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    return serve


def saved_model(model, path, version: int = 1) -> Path:
    """Writes ``model`` (made float32 first) as ``path/<version>/`` and returns that folder.

    The ``serving_default`` signature takes ``image`` (float32 NHWC raw pixels 0..255, any
    batch size) and returns ``logits`` and ``probabilities``. ``path`` is what TF Serving's
    ``--model_base_path`` points at.
    """
    import tensorflow as tf

    if int(version) != version or version < 1:
        raise ExportError(f"SavedModel version must be a positive integer, got {version!r}")
    model = float32_model(model)
    target = Path(path) / str(int(version))
    if target.exists():
        raise ExportError(f"{str(target)!r} already exists")
    serve = serving_function(model)
    module = tf.Module()
    module.model = model  # tracks the variables
    module.serve = serve
    tf.saved_model.save(module, str(target), signatures={SIGNATURE: serve.get_concrete_function()})
    return target


def frozen_serving_function(model):
    """``serving_function`` with every variable and captured tensor folded into constants.

    Returns a tf.function with the same signature (``image`` -> {logits, probabilities}).
    Both converters need it frozen: the TFLite converter left Keras 3 variables as
    READ_VARIABLE/VAR_HANDLE ops whose values were never initialised (NaN logits) when
    converting the SavedModel, and tf2onnx turns captured constant tensors (the Normalization
    layer's mean/variance) into extra graph inputs.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    serve = serving_function(model)
    concrete = serve.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    names = sorted(concrete.structured_outputs)  # flattened in sorted key order
    if len(frozen.inputs) != 1:
        raise ExportError(
            f"frozen graph has inputs {[t.name for t in frozen.inputs]}, expected the image only"
        )

    @tf.function(input_signature=serve.input_signature)
    def serve_frozen(image):
        outputs = frozen(image)
        return {name: outputs[i] for i, name in enumerate(names)}

    return serve_frozen
