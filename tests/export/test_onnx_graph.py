"""The ONNX files' graphs (export.onnx_graph's passes) and the int8 ONNX variant."""

import collections

import numpy as np
import pytest

from export import onnx_graph


def _tf2onnx_like_resnet(pool_source="Relu", pad_value=0.0):
    """A tiny graph with the shape of tf2onnx's ResNet: NHWC input, per-channel Sub and Mul,
    the layout Transpose, conv, Relu, zero Pad, MaxPool, GlobalAveragePool, Squeeze, MatMul,
    Add, Softmax."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    consts = {
        "mean": np.array([[[[120.0, 110.0, 100.0]]]], np.float32),
        "scale": np.array([[[[1 / 60, 1 / 50, 1 / 40]]]], np.float32),
        "w": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32),
        "b": rng.normal(0, 0.1, (8,)).astype(np.float32),
        "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
        "pad_value": np.array(pad_value, np.float32),
        "axes": np.array([2, 3], np.int64),
        "fc": rng.normal(0, 0.3, (8, 5)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, (5,)).astype(np.float32),
    }
    node = helper.make_node
    nodes = [
        node("Sub", ["image", "mean"], ["sub"], name="sub"),
        node("Mul", ["sub", "scale"], ["mul"], name="mul"),
        node("Transpose", ["mul"], ["nchw"], name="transpose", perm=[0, 3, 1, 2]),
        node("Conv", ["nchw", "w", "b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        node(pool_source, ["conv"], ["act"], name="act"),
        node("Pad", ["act", "pads", "pad_value"], ["padded"], name="pad"),
        node("MaxPool", ["padded"], ["pool"], name="pool", kernel_shape=[3, 3], strides=[2, 2]),
        node("GlobalAveragePool", ["pool"], ["gap"], name="gap"),
        node("Squeeze", ["gap", "axes"], ["squeezed"], name="squeeze"),
        node("MatMul", ["squeezed", "fc"], ["mm"], name="matmul"),
        node("Add", ["mm", "fc_b"], ["logits"], name="bias"),
        node("Softmax", ["logits"], ["probabilities"], name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 9, 9, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 5])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(proto, x):
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["logits", "probabilities"], {"image": x})


def _ops(proto):
    return collections.Counter(n.op_type for n in proto.graph.node)


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_passes_keep_the_function_and_leave_torchs_op_set(layout):
    import onnx

    original = _tf2onnx_like_resnet()
    proto = _tf2onnx_like_resnet()
    applied = onnx_graph.optimize(proto, "image", layout)
    onnx.checker.check_model(proto, full_check=True)
    assert applied == {"pad_into_max_pool": 1, "input_scale_into_conv": 1, "head_as_gemm": 1,
                       "input_ops_after_transpose": 1}
    ops = _ops(proto)
    assert not {"Pad", "Mul", "Squeeze", "MatMul"} & set(ops)
    assert ops["Gemm"] == ops["Flatten"] == ops["Sub"] == 1
    assert ops["Transpose"] == (1 if layout == "nhwc" else 0)
    pool = next(n for n in proto.graph.node if n.op_type == "MaxPool")
    assert onnx_graph.attribute(pool, "pads") == [1, 1, 1, 1]
    x = np.random.default_rng(1).uniform(0, 255, (2, 9, 9, 3)).astype(np.float32)
    want = _run(original, x)
    dims = [d.dim_value or d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    if layout == "nchw":
        assert dims == ["batch", 3, 9, 9]
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    else:
        assert dims == ["batch", 9, 9, 3]
        first = proto.graph.node[0]  # the one Transpose reads the input, before any arithmetic
        assert (first.op_type, list(first.input)) == ("Transpose", ["image"])
    for got, ref in zip(_run(proto, x), want):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("source,value", [("Sigmoid", 0.0), ("Relu", 1.0)])
def test_a_pad_that_is_not_max_pools_padding_stays(source, value):
    """Zero padding equals MaxPool's only on values >= 0, and only zero padding does."""
    proto = _tf2onnx_like_resnet(pool_source=source, pad_value=value)
    assert onnx_graph.optimize(proto, "image")["pad_into_max_pool"] == 0
    assert _ops(proto)["Pad"] == 1


def _onnx_files(exported):
    return [a for a in exported.manifest["artifacts"] if a["format"] == "onnx"]


def test_exported_graph_has_no_pad_before_max_pool_and_one_input_transpose(exported):
    """(A one-channel input's layout change is a Reshape in tf2onnx's graph: no Transpose.)"""
    import onnx

    for entry in _onnx_files(exported):
        proto = onnx.load(str(exported.out / entry["path"]))
        nodes = list(proto.graph.node)
        made = {out: n for n in nodes for out in n.output}
        ops = _ops(proto)
        pools = [n for n in nodes if n.op_type == "MaxPool"]
        assert len(pools) == 1 and onnx_graph.attribute(pools[0], "pads") == [1, 1, 1, 1]
        assert made[pools[0].input[0]].op_type in ("Relu", "DequantizeLinear"), entry["path"]
        assert ops["Pad"] == 0, ops
        transposes = [n for n in nodes if n.op_type == "Transpose"]
        assert len(transposes) == (1 if exported.images.shape[-1] == 3 else 0), ops
        assert all(list(t.input) == ["image"] for t in transposes)
        assert ops["Gemm"] == 1 and not {"MatMul", "Squeeze"} & set(ops)


def test_every_onnx_variant_loads_and_runs_in_onnx_runtime(exported):
    import onnxruntime as ort

    assert sorted(a["variant"] for a in _onnx_files(exported)) == ["float32", "int8"]
    for entry in _onnx_files(exported):
        session = ort.InferenceSession(str(exported.out / entry["path"]),
                                       providers=["CPUExecutionProvider"])
        logits, probs = session.run(["logits", "probabilities"], {"image": exported.images[:3]})
        assert logits.shape == probs.shape == (3, 4)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_int8_onnx_is_quantized_calibrated_and_verified(exported):
    import onnx

    entry = exported.artifact("onnx", "int8")
    assert entry["path"] == "model_int8.onnx" and entry["passed"]
    assert entry["calibration"]["images"] == 64
    assert entry["quantization"]["format"] == "QDQ"
    ops = _ops(onnx.load(str(exported.out / entry["path"])))
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["Conv"]
    r = entry["verification"]
    assert r["variant"] == "int8" and not r["failures"]
    assert r["relative_logit_error"] <= r["max_relative_logit_error"] == 0.25
    assert r["accuracy_drop"] <= r["max_accuracy_drop"] == 0.02
    assert r["accuracy"] >= 0.8
    float_size = exported.artifact("onnx")["size_bytes"]
    assert entry["size_bytes"] < float_size / 2  # int8 weights: about a quarter


@pytest.mark.parametrize("exported", ["basic"], indirect=True)
def test_export_predict_runs_the_int8_onnx_file(exported, tmp_path, capsys):
    import json

    from PIL import Image

    from export.predict import main

    pixels = np.round(exported.images[:6]).astype(np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image[..., 0]).save(tmp_path / f"{i}.png")
    artifact = exported.out / exported.artifact("onnx", "int8")["path"]
    assert main(["--artifact", str(artifact), str(tmp_path), "--json"]) == 0
    rows = sorted(json.loads(capsys.readouterr().out), key=lambda r: r["path"])
    names = exported.manifest["class_names"]
    keras_top = np.argmax(np.asarray(exported.model(pixels.astype(np.float32))), 1)
    got = [r["top"][0]["class"] for r in rows]
    assert np.mean([g == names[k] for g, k in zip(got, keras_top)]) >= 5 / 6, got


@pytest.mark.slow
@pytest.mark.parametrize("exported", ["basic"], indirect=True)
def test_nchw_layout_export_is_verified_in_both_variants(exported, tmp_path):
    import onnx

    import export

    manifest = export.export_all(
        exported.model, tmp_path / "out", formats="onnx", onnx_variants=("float32", "int8"),
        onnx_layout="nchw", images=exported.images, labels=exported.labels,
        calibration_images=exported.calibration, latency_runs=1, log=lambda msg: None)
    assert manifest["passed"], [a["verification"]["failures"] for a in manifest["artifacts"]]
    for entry in manifest["artifacts"]:
        assert entry["layout"] == "NCHW" and entry["input"]["layout"] == "NCHW"
        assert entry["input"]["shape"] == [None, 1, 28, 28]
        proto = onnx.load(str(tmp_path / "out" / entry["path"]))
        assert _ops(proto)["Transpose"] == 0
