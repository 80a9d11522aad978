"""Every format for a basic-block and a bottleneck model: written, verified, described."""

import hashlib
import json

import numpy as np
import pytest

import export
from export.checks import describe_path
from tests.conftest import logit_tolerance

FLOAT_FORMATS = [("saved_model", "float32"), ("onnx", "float32"), ("tflite", "float32")]
ALL = FLOAT_FORMATS + [("tflite", "float16"), ("tflite", "dynamic_int8"), ("tflite", "int8"),
                       ("onnx", "int8")]


def test_every_artifact_written_and_passed(exported):
    got = [(a["format"], a["variant"]) for a in exported.manifest["artifacts"]]
    assert sorted(got) == sorted(ALL)
    for a in exported.manifest["artifacts"]:
        assert (exported.out / a["path"]).exists(), a["path"]
        assert a["passed"], a["verification"]["failures"]
    assert exported.manifest["passed"]
    # Nothing but the published folder: no temporary folders left beside it.
    assert sorted(p.name for p in exported.out.parent.iterdir()) == ["artifacts"]


@pytest.mark.parametrize("fmt,variant", FLOAT_FORMATS)
def test_float32_formats_match_keras_at_batch_1_and_7(exported, fmt, variant):
    r = exported.artifact(fmt, variant)["verification"]
    assert r["batch_sizes"] == [1, 7]
    tol = logit_tolerance(r["max_abs_logit"])
    assert r["tolerance"] == pytest.approx(tol)
    for b in ("1", "7"):
        assert r["max_abs_diff_by_batch"][b] <= tol
    assert r["top1_agreement"] == 1.0
    assert r["batch1_vs_batched_max_diff"] <= tol


@pytest.mark.parametrize("variant,agreement", [("float16", 0.99), ("dynamic_int8", 0.95),
                                               ("int8", 0.95)])
def test_quantized_variants_agree_on_top1(exported, variant, agreement):
    r = exported.artifact("tflite", variant)["verification"]
    assert r["top1_agreement"] >= agreement
    assert r["accuracy_drop"] <= 0.02
    assert r["accuracy"] >= 0.8  # the model learned the task; quantization kept it


def test_artifacts_run_fresh_at_any_batch_size(exported):
    """Load each artifact again, run batch 1 / 3 / 7, compare with Keras."""
    ref = np.asarray(exported.model(exported.images[:7], training=False))
    for a in exported.manifest["artifacts"]:
        runner = export.load_runner(exported.out / a["path"], a["format"])
        for n in (1, 3, 7):
            out = runner(exported.images[:n])
            assert out.shape == (n, 4)
            if a["variant"] == "float32":
                np.testing.assert_allclose(out, ref[:n], atol=logit_tolerance(ref))
            else:
                assert np.mean(out.argmax(1) == ref[:n].argmax(1)) >= 0.85


def test_onnx_has_dynamic_batch_named_io_and_passes_checker(exported):
    import onnx
    import onnxruntime as ort

    path = exported.out / "model.onnx"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["image"]
    assert sorted(o.name for o in proto.graph.output) == ["logits", "probabilities"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, probs = session.run(["logits", "probabilities"], {"image": exported.images[:5]})
    assert logits.shape == probs.shape == (5, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert exported.artifact("onnx")["input"]["dynamic_dims"] == ["batch"]


def test_saved_model_serving_signature_and_tf_serving_layout(exported):
    import tensorflow as tf

    base = exported.out / "saved_model"
    assert [p.name for p in base.iterdir()] == ["1"]
    assert (base / "1" / "saved_model.pb").is_file()
    loaded = tf.saved_model.load(str(base / "1"))
    fn = loaded.signatures["serving_default"]
    spec = fn.structured_input_signature[1]["image"]
    assert spec.shape.as_list()[0] is None and spec.dtype == tf.float32
    out = fn(image=tf.constant(exported.images[:3]))
    assert sorted(out) == ["logits", "probabilities"]
    np.testing.assert_allclose(out["probabilities"].numpy().sum(1), 1.0, atol=1e-5)


def test_float_tflite_files_hold_each_weight_once(exported):
    # The CPU kernels that compute a convolution on a small map as one matrix product per
    # output pixel gather a copy of its weights per pixel: frozen into a file, each copy
    # would be a constant of its own.
    weight_bytes = sum(int(np.prod(v.shape)) * 4 for v in exported.model.weights)
    for variant, bytes_per_weight in (("float32", 4), ("float16", 2)):
        size = (exported.out / exported.artifact("tflite", variant)["path"]).stat().st_size
        assert size < weight_bytes * bytes_per_weight / 4 * 1.05 + 60_000, (variant, size)


def test_full_integer_tflite_is_builtin_int8_only(exported):
    path = exported.out / exported.artifact("tflite", "int8")["path"]
    report = export.op_report(path)
    assert report["non_builtin"] == []
    assert report["float_compute_ops"] == []  # only QUANTIZE/DEQUANTIZE touch float tensors
    assert "CONV_2D" in report["ops"] and "QUANTIZE" in report["ops"]
    assert not any(op.startswith("Flex") for op in report["ops"])
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    conv_weights = [
        t for t in interp.get_tensor_details()
        if len(t["shape"]) == 4 and t["quantization_parameters"]["scales"].size > 1
    ]
    assert conv_weights and all(np.dtype(t["dtype"]) == np.int8 for t in conv_weights)
    for variant in ("float32", "float16", "dynamic_int8"):
        rep = export.op_report(exported.out / exported.artifact("tflite", variant)["path"])
        assert rep["non_builtin"] == [], (variant, rep)
    # What verify infers when no variant is named: the file's own reading of itself.
    for variant in ("float32", "float16", "dynamic_int8", "int8"):
        runner = export.load_runner(exported.out / exported.artifact("tflite", variant)["path"])
        assert runner.precision == variant


def test_int8_with_integer_io(exported, tmp_path):
    path = export.tflite(exported.model, tmp_path / "m.tflite", "int8",
                         representative_images=exported.calibration, io_dtype="int8")
    runner = export.load_runner(path)
    assert runner.input["dtype"] == "int8" and "quantization" in runner.input
    r = export.verify(path, exported.model, exported.images, exported.labels, variant="int8",
                      batch_sizes=(1, 7), latency_runs=0)
    assert r["passed"], r["failures"]
    assert export.op_report(path)["float_compute_ops"] == []


def test_manifest_contents(exported):
    on_disk = json.loads((exported.out / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(exported.manifest))
    m = on_disk
    shape = list(exported.model.inputs[0].shape[1:])
    assert m["input"]["name"] == "image" and m["input"]["shape"] == [None, *shape]
    assert m["input"]["dtype"] == "float32"
    assert m["outputs"] == ["logits", "probabilities"]
    assert m["class_names"] == ["top-left", "top-right", "bottom-left", "bottom-right"]
    assert m["normalization"]["mean"] == [100.0] * shape[-1]
    assert m["normalization"]["std"] == [70.0] * shape[-1]
    assert m["source"]["rebuilt_in_float32"] is False
    for lib in ("tensorflow", "keras", "onnx", "tf2onnx", "onnxruntime", "ai-edge-litert",
                "numpy", "python"):
        assert m["versions"][lib], lib
    assert m["verification"]["n"] == 64 and m["verification"]["labels"] is True
    for a in m["artifacts"]:
        path = exported.out / a["path"]
        size, sha = describe_path(path)
        assert (a["size_bytes"], a["sha256"]) == (size, sha)
        if path.is_file():
            assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
        assert a["input"]["name"] == "image" and a["input"]["shape"][0] is None
        assert sorted(a["outputs"]) == ["logits", "probabilities"]
        v = a["verification"]
        for key in ("max_abs_diff", "top1_agreement", "accuracy", "latency_ms_batch1_median"):
            assert isinstance(v[key], float), key
    assert exported.artifact("tflite", "int8")["calibration"]["images"] == 64
    assert exported.artifact("onnx")["opset"] == 17


def test_table_lists_every_artifact(exported):
    table = export.format_table(exported.manifest)
    for a in exported.manifest["artifacts"]:
        assert a["path"] in table
    assert "max|Δlogit|" in table and "batch-1 ms" in table and "FAILED" not in table


def test_verify_reports_a_wrong_artifact_with_figures(exported):
    ref = np.asarray(exported.model(exported.images, training=False)) + 0.5
    r = export.verify(exported.out / "model.onnx", ref, exported.images, latency_runs=0)
    assert not r["passed"]
    assert r["max_abs_diff"] == pytest.approx(0.5, abs=1e-3)
    assert "max|Δlogit| 0.5" in r["failures"][0]
    shuffled = np.roll(np.asarray(exported.model(exported.images, training=False)), 1, axis=1)
    r = export.verify(exported.out / exported.artifact("tflite", "int8")["path"], shuffled,
                      exported.images, exported.labels, latency_runs=0)
    assert not r["passed"] and "relative logit error" in r["failures"][0], r["failures"]


def test_verify_at_batch_1_alone_judges_every_image(exported):
    ref = np.asarray(exported.model(exported.images, training=False))
    r = export.verify(exported.out / "model.onnx", ref, exported.images, exported.labels,
                      batch_sizes=(1,), latency_runs=0)
    assert r["passed"], r["failures"]
    assert r["batch_sizes"] == [1] and r["n"] == len(exported.images)
