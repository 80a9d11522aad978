"""TFLite files that MediaPipe's ImageClassifier loads unchanged: their metadata, and MediaPipe
itself classifying the session export's files (a model of grey images; the bottleneck model of
RGB images with the slow tests) like Keras."""

import io
import zipfile

import numpy as np
import pytest

import keras_resnet
from export import mediapipe_check, tflite_metadata
from export.model_io import ExportError

VARIANTS = ("float32", "float16", "dynamic_int8", "int8")


def _metadata(path):
    """(ModelMetadataT, {packed file name: bytes}) of a .tflite file, read with the schemas."""
    from ai_edge_litert import schema_py_generated as tfl
    from mediapipe.tasks.metadata import metadata_schema_py_generated as md

    data = path.read_bytes()
    model = tfl.Model.GetRootAs(data, 0)
    entries = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer()
               for i in range(model.MetadataLength())}
    buffer = model.Buffers(entries[tflite_metadata.METADATA_NAME]).DataAsNumpy().tobytes()
    assert md.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
    meta = md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAs(buffer, 0))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        packed = {name: zf.read(name) for name in zf.namelist()}
    return meta, packed


def test_every_tflite_file_carries_classification_metadata(exported):
    from mediapipe.tasks.metadata import metadata_schema_py_generated as md

    names = exported.manifest["class_names"]
    for variant in VARIANTS:
        entry = exported.artifact("tflite", variant)
        record = entry["metadata"]
        assert record["written"] and record["score_output"] == "probabilities"
        meta, packed = _metadata(exported.out / entry["path"])
        arch = exported.model.get_config()["arch"]
        assert meta.name.decode() == record["name"] == f"keras_resnet {arch} imagenet stem width 8"
        assert meta.version.decode() == keras_resnet.__version__
        assert meta.minParserVersion.decode() == "1.0.0"
        assert packed == {"labels.txt": "".join(f"{n}\n" for n in names).encode()}
        (graph,) = meta.subgraphMetadata
        (image,) = graph.inputTensorMetadata
        assert image.content.contentProperties.colorSpace == md.ColorSpaceType.RGB
        (unit,) = image.processUnits
        assert (unit.options.mean, unit.options.std) == ([0.0], [1.0])  # raw pixels
        assert [t.name.decode() for t in graph.outputTensorMetadata] == ["logits",
                                                                         "probabilities"]
        for tensor in graph.outputTensorMetadata:
            (labels,) = tensor.associatedFiles
            assert labels.type == md.AssociatedFileType.TENSOR_AXIS_LABELS
        # A model of grey images takes RGB in its TFLite files, as MediaPipe feeds it.
        shape = [None, *exported.model.inputs[0].shape[1:3], 3]
        assert entry["input"]["shape"] == shape
        want = "uint8" if variant == "int8" else "float32"
        assert entry["input"]["dtype"] == record["input"]["dtype"] == want
    quant = exported.artifact("tflite", "int8")["input"]["quantization"]
    assert quant == {"scale": 1.0, "zero_point": 0}  # a pixel's byte is its quantized value


def test_mediapipe_classifies_the_files_like_keras(exported):
    """MediaPipe's ImageClassifier, from each file alone, against Keras's top-1: what the
    export recorded, and again here."""
    ref = np.asarray(exported.model(exported.images, training=False)).argmax(1)
    for variant in VARIANTS:
        entry = exported.artifact("tflite", variant)
        check = entry["verification"]["mediapipe"]
        assert check["passed"] and check["n"] == len(exported.images), check
        scores = mediapipe_check.classify(exported.out / entry["path"], exported.images, 4)
        np.testing.assert_allclose(scores.sum(1), 1.0, atol=0.02)
        agreement = np.mean(scores.argmax(1) == ref)
        assert agreement >= (1.0 if variant == "float32" else 0.95), variant


def test_mediapipe_rule_fails_a_float_file_that_flips_one_image():
    from export.verification import mediapipe_rule

    ref = np.array([[3.0, 0.0], [0.0, 3.0], [1.0, 0.9]])
    near_tie_flipped = np.array([[0.9, 0.1], [0.1, 0.9], [0.4, 0.6]])
    flipped = mediapipe_rule(near_tie_flipped, ref, "float32")
    assert flipped["failures"] == ["MediaPipe: top-1 differs from Keras on 1 of 3 images"]
    # float16: every image whose margin exceeds the file's measured error must agree.
    assert mediapipe_rule(near_tie_flipped, ref, "float16", decisive_margin=0.2)["passed"]
    assert not mediapipe_rule(near_tie_flipped, ref, "float16", decisive_margin=0.05)["passed"]
    # int8: the near tie (margin 0.1) is not decisive at a measured error of 0.2.
    assert mediapipe_rule(np.array([[0.9, 0.1], [0.1, 0.9], [0.4, 0.6]]), ref, "int8",
                          decisive_margin=0.2)["passed"]
    wrong = mediapipe_rule(np.array([[0.1, 0.9], [0.9, 0.1], [0.6, 0.4]]), ref, "int8", 0.2)
    assert not wrong["passed"] and wrong["top1_agreement_decisive"] == 0.0
    # One class: nothing to rank, no image is decisive.
    one = mediapipe_rule(np.ones((3, 1)), np.array([[2.0], [-1.0], [0.5]]), "float16", 0.1)
    assert one["passed"] and one["decisive_images"] == 0


def test_metadata_problems_are_one_line(tmp_path, monkeypatch):
    from export import tflite_format

    bad = tmp_path / "m.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ExportError, match="^not a TFLite flatbuffer: cannot add metadata"):
        tflite_metadata.write(bad, {}, ["a"])

    class Source:  # what describe and the writer read of an ExportSource
        shape, num_classes, class_names = (8, 8, 1), 2, None
        model = reference = type("Model", (), {"name": "tiny"})()

    lines = []
    monkeypatch.setattr(tflite_metadata, "unavailable", lambda: "no schema here")
    tflite_format._add_metadata(Source(), bad, "float32", "float32", lines.append)
    assert lines == ["note: m.tflite written without metadata: no schema here"]
    record = tflite_format._metadata_record(Source(), "float32", "float32")
    assert record["written"] is False and record["reason"] == "no schema here"
    assert bad.read_bytes() == b"not a flatbuffer at all"


def test_without_mediapipe_the_check_is_skipped_and_says_why(monkeypatch):
    from export import pipeline
    from export.artifact import Artifact

    monkeypatch.setattr(mediapipe_check, "unavailable", lambda: "mediapipe is not installed")
    result = {"passed": True, "failures": []}
    artifact = Artifact("tflite", "float32", "m.tflite", {"metadata": {"written": True}})
    pipeline._run_in_mediapipe(None, artifact, None, None, result, print)
    assert result == {"passed": True, "failures": [],
                      "mediapipe": {"skipped": "mediapipe is not installed"}}
    monkeypatch.setattr(mediapipe_check, "unavailable", lambda: None)
    artifact.info["metadata"]["written"] = False
    pipeline._run_in_mediapipe(None, artifact, None, None, result, print)
    assert result["mediapipe"] == {"skipped": "the file has no metadata"}
