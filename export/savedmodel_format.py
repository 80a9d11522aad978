"""SavedModel writer: a TF Serving layout (``<dir>/<version>/saved_model.pb``)."""

from __future__ import annotations

from pathlib import Path

from export.artifact import Artifact, WriterOptions
from export.model_io import ExportError, float32_model, input_spec, release_memory

FORMAT = "saved_model"
VARIANTS = ("float32",)
INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "probabilities")
SIGNATURE = "serving_default"
# The folder TF Serving's --model_base_path points at, relative to the export.
BASE_PATH = "saved_model"


def check(variant: str, options: WriterOptions, shape) -> None:
    """A SavedModel needs nothing beyond the model."""


def write_artifact(model, folder, variant: str, options: WriterOptions) -> Artifact:
    """``folder/saved_model/1`` (see ``saved_model``)."""
    path = saved_model(model, Path(folder) / BASE_PATH, version=1)
    return Artifact(FORMAT, variant, path,
                    {"signature": SIGNATURE, "tf_serving_base_path": BASE_PATH})


def serving_function(model):
    """A tf.function ``image (N,H,W,C) float32 raw pixels -> {logits, probabilities}``.

    The batch dimension is dynamic; height, width and channels must be the model's. Shared by
    the SavedModel, TFLite and ONNX writers so that every artifact has the same input and
    output names.
    """
    import tensorflow as tf

    h, w, c = input_spec(model)

    @tf.function(input_signature=serving_function_signature(model))
    def serve(image):
        # A loaded signature (and TF Serving) runs a graph fed any shape: convolutions and the
        # global pooling accept other image sizes and would answer with meaningless logits.
        image = tf.ensure_shape(image, (None, h, w, c))
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
    del module, serve
    release_memory()
    return target


def frozen_graph_def(model):
    """The serving function as a frozen GraphDef: every variable folded into a constant.

    Returns ``(graph_def, input tensor name, {output tensor name: output name})``, e.g.
    ``(gd, "image:0", {"Identity:0": "logits", "Identity_1:0": "probabilities"})``.
    Nothing else keeps the weights: the traced and frozen functions are dropped (and
    collected) before it returns, so the caller holds the only copy.
    """
    from keras_resnet._keras_compat import variables_to_constants_as_graph

    serve = serving_function(model)
    concrete = serve.get_concrete_function()
    names = sorted(concrete.structured_outputs)  # flattened in sorted key order
    frozen, graph_def = variables_to_constants_as_graph(concrete)
    inputs = [t.name for t in frozen.inputs]
    outputs = {t.name: name for t, name in zip(frozen.outputs, names)}
    if len(inputs) != 1:
        raise ExportError(f"frozen graph has inputs {inputs}, expected the image only")
    del frozen, concrete, serve
    release_memory()  # the frozen ConcreteFunction held two more copies of the weights
    return graph_def, inputs[0], outputs


def frozen_serving_function(model):
    """``serving_function`` with every variable and captured tensor folded into constants.

    Returns its ConcreteFunction (``image`` -> {logits, probabilities}, batch dynamic).
    The converters need it frozen: the TFLite converter left Keras 3 variables as
    READ_VARIABLE/VAR_HANDLE ops whose values were never initialised (NaN logits) when
    converting the SavedModel, and tf2onnx turns captured constant tensors (the Normalization
    layer's mean/variance) into extra graph inputs.

    Memory: the frozen GraphDef is imported straight into the function's graph, so the weights
    exist there and where TensorFlow registers the function. Wrapping
    ``convert_variables_to_constants_v2``'s ConcreteFunction in a tf.function instead held
    about seven copies (that function's graph and registration, and both again in the
    wrapper's function library); ``python -m benchmarks.memory`` measures the result.
    """
    import tensorflow as tf

    graph_def, input_name, outputs = frozen_graph_def(model)
    pending = [graph_def]  # dropped after the one trace, so that only the graph keeps it
    del graph_def

    h, w, c = input_spec(model)

    @tf.function(input_signature=serving_function_signature(model))
    def serve_frozen(image):
        values = tf.graph_util.import_graph_def(
            pending[0], input_map={input_name: _reject_other_shapes(image, (h, w, c))},
            return_elements=list(outputs),
            name="frozen",
        )
        return dict(zip(outputs.values(), values))

    concrete = serve_frozen.get_concrete_function()
    pending.clear()
    return concrete


def _reject_other_shapes(image, shape):
    """``image`` itself, through an op that fails on any height, width or channels but
    ``shape``'s: a concatenation with one constant image along the batch axis, sliced off again.

    For TFLite, whose converter drops EnsureShape and whose signature runner resizes the input
    to whatever it is given: CONCATENATION checks every non-batch dimension exactly when the
    interpreter prepares (no broadcasting of size-1 dimensions, as an ADD would allow) and
    keeps the tensors' shapes static, so XNNPACK still takes the whole graph.
    """
    import tensorflow as tf

    probe = tf.zeros((1, *shape), image.dtype)
    return tf.concat([probe, image], axis=0)[1:]


def serving_function_signature(model):
    """The serving functions' input signature: ``image`` (None, H, W, C) float32."""
    import tensorflow as tf

    h, w, c = input_spec(model)
    return [tf.TensorSpec((None, h, w, c), tf.float32, name=INPUT_NAME)]
