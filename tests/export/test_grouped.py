"""Grouped convolutions (ResNeXt's 3x3) in the artifacts: one ONNX ``Conv`` with ``group`` and
one TFLite ``CONV_2D`` per grouped layer, run in their runtimes and matched with Keras."""

import collections

import numpy as np
import pytest

from tests.conftest import random_images


def _frozen_grouped_layer():
    """(frozen GraphDef of one grouped keras_resnet Conv2D behind a tf.function, input name,
    output name, the layer, an input)."""
    import keras
    import tensorflow as tf

    from export.source import FOREIGN_RUNTIME_EXCLUDED_KERNELS
    from keras_resnet import kernels
    from keras_resnet._keras_compat import variables_to_constants_as_graph
    from keras_resnet.layers import make_conv

    conv = make_conv(16, 3, 2, "grouped", groups=4)
    x = random_images((9, 9, 8))
    conv.build(x.shape)
    conv.kernel.assign(keras.random.normal(conv.kernel.shape, seed=1))

    @tf.function(input_signature=[tf.TensorSpec((None, 9, 9, 8), name="x")])
    def serve(inputs):
        return tf.nn.relu(conv(inputs))

    # Traced as export traces for ONNX and TFLite: Keras's own grouped convolution.
    with kernels.use(kernels.active() - frozenset(FOREIGN_RUNTIME_EXCLUDED_KERNELS)):
        frozen, graph_def = variables_to_constants_as_graph(serve.get_concrete_function())
    return graph_def, frozen.inputs[0].name, frozen.outputs[0].name, conv, x


def test_grouped_convolutions_are_inlined_into_one_conv2d():
    import tensorflow as tf

    from export.graph_inline import inline_compiled_calls

    graph_def, input_name, output_name, conv, x = _frozen_grouped_layer()
    calls = [n for n in graph_def.node if n.op == "StatefulPartitionedCall"]
    assert len(calls) == 1  # Keras's XLA-compiled grouped convolution
    assert inline_compiled_calls(graph_def) == 1
    ops = collections.Counter(n.op for n in graph_def.node)
    assert ops["StatefulPartitionedCall"] == 0 and ops["Conv2D"] == 1
    assert len(graph_def.library.function) == 0
    (filt,) = [n for n in graph_def.node if n.op == "Conv2D"]
    assert filt.attr["strides"].list.i == [1, 2, 2, 1]

    got = tf.compat.v1.wrap_function(
        lambda t: tf.graph_util.import_graph_def(
            graph_def, input_map={input_name: t}, return_elements=[output_name]),
        [tf.TensorSpec((None, 9, 9, 8))])(tf.constant(x))[0]
    np.testing.assert_allclose(got.numpy(), np.maximum(np.asarray(conv(x)), 0), atol=1e-5)
    assert inline_compiled_calls(graph_def) == 0  # nothing left to inline


@pytest.mark.slow  # every format and variant of a narrow ResNeXt-50 (~1.5-3 min)
def test_resnext_exports_grouped_ops_in_every_format(tmp_path):
    import onnx
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    import export
    import keras_resnet
    from keras_resnet._keras_compat import tflite_ops_details

    shape = (32, 32, 3)
    model = keras_resnet.build_resnet("resnext50_32x4d", shape, 4, width=16,
                                      normalization=(100.0, 70.0))
    images = random_images(shape, 32, seed=1, high=255.0)
    labels = np.argmax(np.asarray(model(images, training=False)), -1)
    manifest = export.export_all(
        model, tmp_path / "out", images=images, labels=labels,
        calibration_images=random_images(shape, 32, seed=2, high=255.0),
        onnx_variants=("float32", "int8"), batch_sizes=(1, 5), latency_runs=1,
        log=lambda msg: None)
    assert manifest["passed"], [(a["format"], a["variant"]) for a in manifest["artifacts"]
                                if not a["verification"]["passed"]]
    assert {(a["format"], a["variant"]) for a in manifest["artifacts"]} >= {
        ("saved_model", "float32"), ("onnx", "float32"), ("onnx", "int8"),
        ("tflite", "float32"), ("tflite", "float16"), ("tflite", "int8")}

    # 16 grouped 3x3s (3 + 4 + 6 + 3 blocks), each one Conv with group=32: not a split.
    graph = onnx.load(tmp_path / "out" / "model.onnx").graph
    groups = collections.Counter(
        next((a.i for a in n.attribute if a.name == "group"), 1)
        for n in graph.node if n.op_type == "Conv")
    assert groups[32] == 16 and set(groups) == {1, 32}
    assert not [n.op_type for n in graph.node if n.op_type in ("Split", "Concat")]

    for variant in ("float32", "float16", "int8"):
        path = str(tmp_path / "out" / "tflite" / f"model_{variant}.tflite")
        plain = Interpreter(model_path=path, experimental_op_resolver_type=(
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
        plain.allocate_tensors()
        tensors = {t["index"]: t["shape"] for t in plain.get_tensor_details()}
        grouped = [op for op in tflite_ops_details(plain) if op["op_name"] == "CONV_2D"
                   and tensors[op["inputs"][1]][3] != tensors[op["inputs"][0]][3]]
        assert len(grouped) == 16, variant
