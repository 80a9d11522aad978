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

import numpy as np

from export import onnx_graph
from export.artifact import Artifact, WriterOptions
from export.checks import DEFAULT_OPSET, check_opset, image_array
from export.model_io import ExportError, release_memory
from export.source import (FOREIGN_RUNTIME_EXCLUDED_KERNELS, INPUT_NAME, OUTPUT_NAMES,
                           ExportSource)

FORMAT = "onnx"
VARIANTS = ("float32", "int8")
LAYOUTS = onnx_graph.LAYOUTS
BATCH_DIM = "batch"
# Where the file says its input layout; export.verification's runner reads it.
LAYOUT_KEY = "keras_resnet.input_layout"


def check(variant: str, options: WriterOptions, shape) -> None:
    check_opset(options.opset)
    if options.onnx_layout not in LAYOUTS:
        raise ExportError(f"Unknown ONNX layout {options.onnx_layout!r}; expected one of "
                          f"{list(LAYOUTS)}")
    if variant not in VARIANTS:
        raise ExportError(f"Unknown ONNX variant {variant!r}; expected one of {list(VARIANTS)}")
    if variant == "int8":
        if options.calibration_images is None:
            raise ExportError(
                "the int8 ONNX variant needs calibration data from the training set and none "
                "was given (CLI: a run whose config.json names its dataset, --dataset NAME, or "
                "--calibration FILE.npy); or leave it out with --onnx-variants float32")
        image_array(options.calibration_images, shape, "calibration images")


def write_artifact(source: ExportSource, folder, variant: str, options: WriterOptions) -> Artifact:
    """``folder/model.onnx`` (see ``onnx``), or ``folder/model_int8.onnx`` quantized from it."""
    folder = Path(folder)
    info = {"opset": options.opset, "layout": options.onnx_layout.upper()}
    if variant == "float32":
        path = onnx(source, folder / "model.onnx", opset=options.opset,
                    layout=options.onnx_layout)
        return Artifact(FORMAT, variant, path, info)
    float32_file = folder / "model.onnx"
    if not float32_file.is_file():  # float32 not asked for: the int8 file's source, then removed
        float32_file = onnx(source, folder / ".model_float32.onnx", opset=options.opset,
                            layout=options.onnx_layout)
    try:
        path = quantize(float32_file, folder / "model_int8.onnx", options.calibration_images)
    finally:
        if float32_file.name.startswith("."):
            float32_file.unlink(missing_ok=True)
    info["calibration"] = {
        "images": int(len(options.calibration_images)),
        "source": options.calibration_description or "given calibration images",
    }
    info["quantization"] = dict(QUANTIZATION)
    return Artifact(FORMAT, variant, path, info)


def onnx(model, path, opset: int = DEFAULT_OPSET, layout: str = "nhwc") -> Path:
    """Writes ``model`` (a Keras model, made float32 first, or an ExportSource) to ``path``
    (a ``.onnx`` file).

    Input ``image`` (``batch`` x H x W x C float32 raw pixels; ``batch`` x C x H x W with
    ``layout="nchw"``), outputs ``logits`` and ``probabilities``; the batch dimension is
    dynamic. tf2onnx's graph is rewritten by ``export.onnx_graph``; ``onnx.checker`` must pass.
    """
    import onnx as onnx_lib

    from keras_resnet._keras_compat import patch_tf2onnx

    check_opset(opset)
    path = Path(path)
    if path.suffix != ".onnx":
        raise ExportError(f"ONNX path must end with '.onnx', got {str(path)!r}")
    if layout not in LAYOUTS:
        raise ExportError(f"Unknown ONNX layout {layout!r}; expected one of {list(LAYOUTS)}")
    graph_def, input_name, outputs = ExportSource.of(model).frozen_graph_def(
        FOREIGN_RUNTIME_EXCLUDED_KERNELS)
    patch_tf2onnx()  # tf2onnx 1.17 uses np.object etc., gone in numpy 2
    proto = _convert(graph_def, input_name, outputs, opset)
    del graph_def
    release_memory()  # tf2onnx's TF graphs and its own graph copies, before the checker runs
    _name_batch_dimension(proto)
    got = [o.name for o in proto.graph.output]
    if sorted(got) != sorted(OUTPUT_NAMES):
        raise ExportError(f"ONNX graph outputs are {got}, expected {list(OUTPUT_NAMES)}")
    onnx_graph.optimize(proto, INPUT_NAME, layout)
    onnx_lib.helper.set_model_props(proto, {LAYOUT_KEY: layout.upper()})
    onnx_lib.checker.check_model(proto, full_check=True)
    _save(proto, path)
    del proto
    release_memory()
    return path


def _save(proto, path: Path) -> None:
    import onnx as onnx_lib

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    onnx_lib.save(proto, str(tmp))
    tmp.replace(path)


# onnxruntime.quantization's static QDQ recipe: int8 weights per output channel, uint8
# activations (see ACTIVATIONS) with MinMax ranges over the calibration images.
QUANTIZATION = {"format": "QDQ", "weights": "int8 per channel, 7-bit range (reduce_range)",
                "activations": "uint8", "calibration_method": "MinMax"}


class _Images:
    """onnxruntime.quantization's CalibrationDataReader over raw-pixel NHWC images."""

    def __init__(self, images, layout: str, batch_size: int = 8):
        self._batches = (
            {INPUT_NAME: np.ascontiguousarray(
                b.transpose(0, 3, 1, 2) if layout == "NCHW" else b, dtype=np.float32)}
            for b in (images[i : i + batch_size] for i in range(0, len(images), batch_size)))

    def get_next(self):
        return next(self._batches, None)


def quantize(source, path, calibration_images) -> Path:
    """Statically quantizes the float32 ONNX file ``source`` into ``path`` (see
    QUANTIZATION), calibrated on ``calibration_images`` (N, H, W, C raw pixels from the
    training set). The file keeps ``source``'s input layout and names."""
    import onnx as onnx_lib
    from onnxruntime import quantization as q

    proto = onnx_lib.load(str(source))
    layout = {p.key: p.value for p in proto.metadata_props}.get(LAYOUT_KEY, "NHWC")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    q.quantize_static(str(source), str(tmp), _Images(calibration_images, layout),
                      quant_format=q.QuantFormat.QDQ, per_channel=True, reduce_range=True,
                      activation_type=getattr(q.QuantType, ACTIVATIONS),
                      weight_type=q.QuantType.QInt8,
                      calibrate_method=q.CalibrationMethod.MinMax,
                      op_types_to_quantize=list(QUANTIZED_OPS))
    tmp.replace(path)
    return path


# uint8 activations with int8 weights (U8S8), ONNX Runtime's x86 recommendation: with int8
# activations (S8S8) its CPU provider left every convolution that reads a block's input (a
# DequantizeLinear shared with the shortcut and the residual Add) unfused, in float32 on
# dequantized weights, and the file ran no faster than float32; with uint8 every Conv, Add,
# the pools and the Gemm became QLinear kernels.
ACTIVATIONS = "QUInt8"
# Weights in 7 bits (reduce_range): without VNNI, ONNX Runtime's uint8 x int8 kernels sum pairs
# of products in int16 (VPMADDUBSW), which saturates with full-range weights: on an AVX2 CPU
# the relative logit error of a trained ResNet-18 tripled (benchmarks/results/deploy.md). A
# file must run correctly wherever it is deployed, VNNI or not.
# The compute ops; Softmax stays float (probabilities from float logits).
QUANTIZED_OPS = ("Conv", "Relu", "Add", "MaxPool", "GlobalAveragePool", "Gemm", "Flatten")


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
