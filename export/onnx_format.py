"""ONNX writer: the model's frozen float32 serving graph through ``tf2onnx.convert.from_graph_def``.

Keras's own ``model.export(format="onnx")`` hands tf2onnx the tf.function
(``from_function``), which freezes it again and keeps the function, its frozen copy and their
registrations alive through the conversion; here the serving function is frozen once into a
GraphDef (``frozen_graph_def``), the functions are dropped, and tf2onnx gets the GraphDef with
our input/output names. ``tf2onnx.convert.from_keras`` is not used: it is broken on Keras 3
(onnx/tensorflow-onnx#2329, #2348).
"""

from __future__ import annotations

import contextlib
import gc
from pathlib import Path

from export.artifact import Artifact, WriterOptions
from export.checks import DEFAULT_OPSET, check_opset
from export.model_io import ExportError, float32_model, release_memory
from export.savedmodel_format import INPUT_NAME, OUTPUT_NAMES, frozen_graph_def

FORMAT = "onnx"
VARIANTS = ("float32",)
BATCH_DIM = "batch"


def check(variant: str, options: WriterOptions, shape) -> None:
    check_opset(options.opset)


def write_artifact(model, folder, variant: str, options: WriterOptions) -> Artifact:
    """``folder/model.onnx`` (see ``onnx``)."""
    path = onnx(model, Path(folder) / "model.onnx", opset=options.opset)
    return Artifact(FORMAT, variant, path, {"opset": options.opset})


def onnx(model, path, opset: int = DEFAULT_OPSET) -> Path:
    """Writes ``model`` (made float32 first) to ``path`` (a ``.onnx`` file).

    Input ``image`` (``batch`` x H x W x C float32 raw pixels), outputs ``logits`` and
    ``probabilities``; the batch dimension is dynamic. ``onnx.checker`` must pass.
    """
    import onnx as onnx_lib

    from keras_resnet._keras_compat import patch_tf2onnx

    check_opset(opset)
    path = Path(path)
    if path.suffix != ".onnx":
        raise ExportError(f"ONNX path must end with '.onnx', got {str(path)!r}")
    model = float32_model(model)
    graph_def, input_name, outputs = frozen_graph_def(model)
    patch_tf2onnx()  # tf2onnx 1.17 uses np.object etc., gone in numpy 2
    proto = _convert(graph_def, input_name, outputs, opset)
    del graph_def
    release_memory()  # tf2onnx's TF graphs and its own graph copies, before the checker runs
    _name_batch_dimension(proto)
    got = [o.name for o in proto.graph.output]
    if sorted(got) != sorted(OUTPUT_NAMES):
        raise ExportError(f"ONNX graph outputs are {got}, expected {list(OUTPUT_NAMES)}")
    onnx_lib.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_lib.save(proto, str(path))
    del proto
    release_memory()
    return path


def _convert(graph_def, input_name, outputs, opset):
    """Frozen GraphDef -> ONNX ModelProto with inputs [image] and outputs logits, probabilities.

    The graph must be frozen (``frozen_graph_def``): given a tf.function,
    ``tf2onnx.convert.from_function`` (and so Keras's ``model.export(format="onnx")``) turns
    every non-variable tensor the function captures into an extra graph *input*: a model with a
    ``keras.layers.Normalization(mean=..., variance=...)`` layer came out with inputs ``image``,
    ``.../normalization/Sub/y:0`` and ``.../Sqrt/x:0``.
    """
    import tf2onnx

    from keras_resnet._keras_compat import quiet_tf_deprecations

    # from_graph_def calls TF1 graph utilities (convert_variables_to_constants,
    # extract_sub_graph) whose deprecation warnings say nothing to our users.
    with _collect_between_optimizers(), quiet_tf_deprecations():
        proto, _ = tf2onnx.convert.from_graph_def(
            graph_def,
            name="serve",
            input_names=[input_name],
            output_names=list(outputs),
            opset=opset,
            tensors_to_rename={input_name: INPUT_NAME, **outputs},
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


@contextlib.contextmanager
def _collect_between_optimizers():
    """Runs Python's garbage collector before each of tf2onnx's graph optimizers.

    ``tf2onnx.optimizer.optimize_graph`` deep-copies the whole graph, weights included, before
    each of its 12 optimizers and drops the previous copy, for as many rounds as any optimizer
    changes something. The dropped copies are reference cycles (graph <-> nodes) that the
    generational collector reaches late, so dozens of copies were alive at once. Collected
    before each optimizer, two are. The optimizers and their order are
    tf2onnx's own; only the factories are wrapped.

    Everything alive before the conversion (TensorFlow, the model, the caller's objects) is
    frozen meanwhile (``gc.freeze``): each collection then walks only what tf2onnx made instead
    of every object of a process that has TensorFlow loaded, which made the collections most
    of an ONNX export's time. ``gc.unfreeze`` afterwards returns them to the collector. A caller
    that froze objects itself keeps its freeze: then nothing is frozen or unfrozen here.
    """
    from tf2onnx import optimizer

    original = optimizer._optimizers
    ours = not gc.get_freeze_count()
    if ours:
        gc.collect()
        gc.freeze()

    def collecting(factory):
        def make():
            gc.collect()
            return factory()

        return make

    optimizer._optimizers = type(original)(
        (name, collecting(factory)) for name, factory in original.items()
    )
    try:
        yield
    finally:
        optimizer._optimizers = original
        if ours:
            gc.unfreeze()
