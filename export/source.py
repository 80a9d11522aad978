"""The model an export works from, made once: every writer and the verification take it.

``ExportSource(model, class_names, provenance)`` checks what every artifact needs (one NHWC
image input of known size, one ``(batch, classes)`` output), makes the float32 reference on
first use (a mixed-precision model is rebuilt in float32, weights copied) and holds what the
manifest says of the model: its class names, normalization and where it came from (a weight
set's evaluation transform among it).

Its serving functions (``image (N,H,W,C) float32 raw pixels -> {logits, probabilities}``) are
traced when a writer asks: each holds the weights once more, so a writer drops its function
before the next writer starts rather than the source keeping every one alive.
"""

from __future__ import annotations

import functools

from keras_resnet import kernels
from training.preprocessing import LUMA

from export.graph_inline import inline_compiled_calls
from export.model_io import (
    ExportError,
    float32_model,
    input_spec,
    normalization,
    num_classes,
    release_memory,
)

INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "probabilities")
SIGNATURE = "serving_default"
# The TensorFlow CPU kernels that the ONNX and TFLite files are traced without, so that each
# convolution reaches them as the one Conv / CONV_2D their runtimes have fast kernels for:
# matmul_conv computes a convolution on a small map as a matrix product per output pixel,
# which a frozen graph holds as a copy of the weights per pixel (a ResNet-50 at 32x32 wrote a
# TFLite file three times its weights) inside Reshape/MatMul chains; grouped_conv computes a
# grouped convolution as several dense ones (Keras's own grouped convolution is inlined
# instead: export.graph_inline). The SavedModel runs on TensorFlow and keeps them.
FOREIGN_RUNTIME_EXCLUDED_KERNELS = ("matmul_conv", "grouped_conv")


class ExportSource:
    """One model on its way through an export (see the module)."""

    def __init__(self, model, class_names=None, provenance: dict | None = None):
        self.model = model
        self.shape = input_spec(model)
        self.num_classes = num_classes(model)
        if class_names is not None and len(class_names) != self.num_classes:
            raise ExportError(f"{len(class_names)} class names for a {self.num_classes}-class "
                              "model")
        self.class_names = None if class_names is None else tuple(class_names)
        self.provenance = dict(provenance or {})

    @classmethod
    def of(cls, model_or_source) -> "ExportSource":
        """``model_or_source`` itself if it is an ExportSource, else the source of a model."""
        if isinstance(model_or_source, cls):
            return model_or_source
        return cls(model_or_source)

    @functools.cached_property
    def reference(self):
        """The float32 model every artifact is made from and compared with."""
        return float32_model(self.model)

    @property
    def rebuilt(self) -> bool:
        """Whether the reference is a float32 rebuild of a mixed-precision model."""
        return self.reference is not self.model

    @functools.cached_property
    def normalization(self) -> dict | None:
        return normalization(self.reference)

    @property
    def transform(self) -> dict | None:
        """The evaluation transform of the weight set the model came from, if any."""
        return self.provenance.get("transform")

    def input_shape(self, rgb: bool = False) -> tuple[int, int, int]:
        """(H, W, C) of the serving functions' input: the model's, or with ``rgb`` three
        channels whatever the model takes (see ``frozen_serving_function``)."""
        return (*self.shape[:2], 3) if rgb else self.shape

    def signature(self, rgb: bool = False) -> list:
        """The serving functions' input signature: ``image`` (None, H, W, C) float32."""
        import tensorflow as tf

        return [tf.TensorSpec((None, *self.input_shape(rgb)), tf.float32, name=INPUT_NAME)]

    def serving_function(self, exclude_kernels=()):
        """A tf.function ``image -> {logits, probabilities}`` of the reference, traced (with
        the kernels in use on this thread but ``exclude_kernels``) before it is returned.

        The batch dimension is dynamic; height, width and channels must be the model's. The
        SavedModel, TFLite and ONNX files all come from it, so every artifact has the same
        input and output names.
        """
        import tensorflow as tf

        model, shape = self.reference, self.shape

        @tf.function(input_signature=self.signature())
        def serve(image):
            # A loaded signature (and TF Serving) runs a graph fed any shape: convolutions and
            # the global pooling accept other image sizes and would answer with meaningless
            # logits.
            image = tf.ensure_shape(image, (None, *shape))
            logits = tf.cast(model(image, training=False), tf.float32)
            return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

        with kernels.use(kernels.active() - frozenset(exclude_kernels)):
            serve.get_concrete_function()  # layers choose their kernels while traced
        return serve

    def frozen_graph_def(self, exclude_kernels=()):
        """The serving function as a frozen GraphDef: every variable folded into a constant.

        Returns ``(graph_def, input tensor name, {output tensor name: output name})``, e.g.
        ``(gd, "image:0", {"Identity:0": "logits", "Identity_1:0": "probabilities"})``.
        Nothing else keeps the weights: the traced and frozen functions are dropped (and
        collected) before it returns, so the caller holds the only copy.
        """
        from keras_resnet._keras_compat import variables_to_constants_as_graph

        serve = self.serving_function(exclude_kernels)
        concrete = serve.get_concrete_function()
        names = sorted(concrete.structured_outputs)  # flattened in sorted key order
        frozen, graph_def = variables_to_constants_as_graph(concrete)
        inline_compiled_calls(graph_def)  # grouped convolutions: see export.graph_inline
        inputs = [t.name for t in frozen.inputs]
        outputs = {t.name: name for t, name in zip(frozen.outputs, names)}
        if len(inputs) != 1:
            raise ExportError(f"frozen graph has inputs {inputs}, expected the image only")
        del frozen, concrete, serve
        release_memory()  # the frozen ConcreteFunction held two more copies of the weights
        return graph_def, inputs[0], outputs

    def frozen_serving_function(self, exclude_kernels=(), rgb: bool = False):
        """``serving_function`` with every variable and captured tensor folded into constants.

        Returns its ConcreteFunction (``image`` -> {logits, probabilities}, batch dynamic).
        The converters need it frozen: the TFLite converter left Keras 3 variables as
        READ_VARIABLE/VAR_HANDLE ops whose values were never initialised (NaN logits) when
        converting the SavedModel, and tf2onnx turns captured constant tensors (the
        Normalization layer's mean/variance) into extra graph inputs.

        Memory: the frozen GraphDef is imported straight into the function's graph, so the
        weights exist there and where TensorFlow registers the function. Wrapping
        ``convert_variables_to_constants_v2``'s ConcreteFunction in a tf.function instead held
        about seven copies (that function's graph and registration, and both again in the
        wrapper's function library); ``python -m benchmarks.deploy.memory`` measures the result.

        With ``rgb`` it takes three channels even for a model of grey images, which it
        converts as training.preprocessing reads a colour file (ITU-R 601-2 luma, unrounded):
        MediaPipe feeds RGB images only.
        """
        import tensorflow as tf

        graph_def, input_name, outputs = self.frozen_graph_def(exclude_kernels)
        pending = [graph_def]  # dropped after the one trace, so that only the graph keeps it
        del graph_def
        shape, grey = self.shape, rgb and self.shape[2] == 1

        @tf.function(input_signature=self.signature(rgb))
        def serve_frozen(image):
            if grey:
                image = _luma(image)
            values = tf.graph_util.import_graph_def(
                pending[0], input_map={input_name: _reject_other_shapes(image, shape)},
                return_elements=list(outputs),
                name="frozen",
            )
            return dict(zip(outputs.values(), values))

        concrete = serve_frozen.get_concrete_function()
        pending.clear()
        return concrete


def _luma(image):
    """(N, H, W, 1) grey of (N, H, W, 3) RGB: a weighted sum over the channels (a grey image
    of one channel is broadcast and comes back unchanged, the weights summing to 1). The shape
    check follows it on the grey image: XNNPACK could not prepare a full-integer file whose
    shape check came first, on the RGB input, nor one converting with a 1x1 convolution."""
    import tensorflow as tf

    return tf.reduce_sum(image * tf.constant(LUMA, tf.float32), axis=-1, keepdims=True)


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
