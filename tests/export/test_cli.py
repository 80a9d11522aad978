"""``python -m export``: bad input gives a clear error and writes nothing; exit statuses."""

import json
import os
import re
import subprocess
import sys
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from export.cli import main
from tests import harness
from tests.conftest import REPO



run_cli = partial(harness.run_cli, main)


def leftovers(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))


def test_missing_model_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--model", tmp_path / "nope.keras", "--out", tmp_path / "a",
                           "--formats", "onnx")
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", "zip"])
def test_corrupt_model_file(tmp_path, capsys, content):
    path = tmp_path / "best.keras"
    if content == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("config.json", "{broken")
    else:
        path.write_bytes(content)
    code, _, err = run_cli(capsys, "--model", path, "--out", tmp_path / "a", "--formats", "onnx")
    assert code == 2
    assert "corrupt" in err or "could not load" in err
    assert not (tmp_path / "a").exists() and leftovers(tmp_path) == []


def test_unknown_format_and_variant(basic_model_file, tmp_path, capsys):
    code, _, err = run_cli(capsys, "--model", basic_model_file, "--out", tmp_path / "a",
                           "--formats", "onnx,coreml")
    assert code == 2 and "Unknown format ['coreml']" in err
    code, _, err = run_cli(capsys, "--model", basic_model_file, "--out", tmp_path / "a",
                           "--tflite-variants", "int4")
    assert code == 2 and "Unknown TFLite variant" in err
    code, _, err = run_cli(capsys, "--model", basic_model_file, "--out", tmp_path / "a",
                           "--formats", "onnx", "--opset", "99")
    assert code == 2 and "opset must be an integer in 13..18" in err
    assert not (tmp_path / "a").exists() and leftovers(tmp_path) == []


def test_refuses_non_empty_out_without_overwrite(basic_model_file, tmp_path, capsys):
    out = tmp_path / "artifacts"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, _, err = run_cli(capsys, "--model", basic_model_file, "--out", out, "--formats", "onnx",
                           "--inputs", basic_model_file.with_name("x.npy"))
    assert code == 2 and "not empty" in err and "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_int8_without_calibration_data(basic_model_file, tmp_path, capsys):
    out = tmp_path / "artifacts"
    code, _, err = run_cli(capsys, "--model", basic_model_file, "--out", out, "--no-dataset",
                           "--formats", "tflite", "--inputs", basic_model_file.with_name("x.npy"))
    assert code == 2 and "calibration" in err
    code, _, err = run_cli(capsys, "--model", basic_model_file, "--out", out, "--no-dataset",
                           "--formats", "tflite", "--tflite-variants", "int8")
    assert code == 2 and "calibration" in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_bad_inputs_file(basic_model_file, tmp_path, capsys):
    bad = tmp_path / "x.npy"
    np.save(bad, np.zeros((3, 5, 5, 1), np.float32))
    code, _, err = run_cli(capsys, "--model", basic_model_file, "--out", tmp_path / "a",
                           "--formats", "onnx", "--inputs", bad)
    assert code == 2 and "(N, 28, 28, 1)" in err
    assert not (tmp_path / "a").exists() and leftovers(tmp_path) == []


@pytest.mark.slow
def test_export_overwrite_and_manifest(basic_model_file, tmp_path, capsys):
    out = tmp_path / "artifacts"
    out.mkdir()
    (out / "saved_model" / "1").mkdir(parents=True)
    (out / "saved_model" / "1" / "saved_model.pb").write_bytes(b"previous export")
    (out / "manifest.json").write_text(json.dumps(
        {"manifest_version": 1, "artifacts": [{"path": "saved_model/1"}]}))
    x, y = basic_model_file.with_name("x.npy"), basic_model_file.with_name("y.npy")
    code, stdout, err = run_cli(capsys, "--model", basic_model_file, "--out", out, "--formats",
                                "onnx,tflite", "--tflite-variants", "float32,int8",
                                "--inputs", x, "--labels", y, "--calibration", x,
                                "--overwrite", "--batch-size", "7", "--latency-runs", "2")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "tflite"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["passed"] and manifest["verification"]["batch_sizes"] == [1, 7]
    assert [a["variant"] for a in manifest["artifacts"]] == ["float32", "float32", "int8"]
    assert "model.onnx" in stdout and "tflite/model_int8.tflite" in stdout
    assert leftovers(tmp_path) == []


def test_failed_verification_exits_non_zero(basic_model_file, tmp_path, capsys, monkeypatch):
    import export.verification as verification

    monkeypatch.setattr(verification, "FLOAT_ATOL", -1.0)  # nothing can pass
    out = tmp_path / "artifacts"
    code, stdout, err = run_cli(capsys, "--model", basic_model_file, "--out", out, "--formats",
                                "onnx", "--inputs", basic_model_file.with_name("x.npy"),
                                "--latency-runs", "1")
    assert code == 1
    assert "FAILED" in stdout and "verification FAILED for onnx float32" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["passed"] is False
    assert "max|Δlogit|" in manifest["artifacts"][0]["verification"]["failures"][0]


def test_python_dash_m_entry_point(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "export", "--model", str(tmp_path / "missing.keras"), "--out",
         str(tmp_path / "a")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert "export: error: model file" in proc.stderr and "does not exist" in proc.stderr


@pytest.mark.slow
def test_cli_reads_calibration_and_verification_data_from_the_run_dataset(tmp_path, capsys):
    """config.json beside the model names the data set: the CLI verifies on its test split
    (with accuracy) and calibrates int8 on its train split, with the run's class names."""
    import keras_resnet
    from training import data as datasets

    info = datasets.DATASETS["digits"]
    model = keras_resnet.build_resnet("resnet18", tuple(info.image_size), info.num_classes,
                                      width=8, normalization=(info.mean, info.std))
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "best.keras")
    names = [f"digit {c}" for c in info.class_names]
    (run / "config.json").write_text(json.dumps(
        {"dataset": "digits", "class_names": names, "arch": "resnet18",
         "input_shape": list(info.image_size), "precision": "float32"}))
    out = tmp_path / "artifacts"
    code, stdout, err = run_cli(capsys, "--model", run / "best.keras", "--out", out,
                                "--formats", "onnx,tflite", "--tflite-variants", "float32,int8",
                                "--num-verify", "24", "--num-calibration", "24",
                                "--latency-runs", "1")
    manifest = json.loads((out / "manifest.json").read_text())
    assert code == (0 if manifest["passed"] else 1), err
    # An untrained model: float formats must pass; int8 agreement on near-tied logits may not.
    float_artifacts = [a for a in manifest["artifacts"] if a["variant"] != "int8"]
    assert len(float_artifacts) == 2 and all(a["passed"] for a in float_artifacts), err
    int8 = next(a for a in manifest["artifacts"] if a["variant"] == "int8")
    assert int8["calibration"] == {"images": 24, "source": int8["calibration"]["source"]}
    assert "train" in int8["calibration"]["source"], int8["calibration"]
    assert manifest["class_names"] == names
    assert manifest["verification"]["data"] == "24 images of 'digits' split 'test'"
    assert manifest["verification"]["labels"] is True
    assert manifest["source"]["run_config"]["dataset"] == "digits"
    by_variant = {a["variant"]: a for a in manifest["artifacts"] if a["format"] == "tflite"}
    assert by_variant["int8"]["calibration"] == {"images": 24, "source": "'digits' split 'train'"}
    assert "accuracy" in by_variant["int8"]["verification"]
    assert all(a["passed"] for a in manifest["artifacts"] if a["variant"] == "float32")
    assert "accuracy" in stdout


SYNTHETIC_RUN = {"arch": "resnet18", "dataset": "synthetic", "input_shape": [28, 28, 1],
                 "num_classes": 4, "options": {
                     "data_dir": "/data/here", "source": "archive", "val_fraction": 0.2,
                     "synthetic_shape": "28,28,1", "synthetic_classes": 4, "epochs": 3}}


def test_the_run_record_finds_the_runs_own_data():
    from training.runrecord import RunRecord, RunRecordError

    record = RunRecord.from_dict(SYNTHETIC_RUN)
    assert record.data_options() == {
        "data_dir": "/data/here", "source": "archive", "val_fraction": 0.2,
        "image_shape": (28, 28, 1), "num_classes": 4}
    assert record.data_options(data_dir="/elsewhere")["data_dir"] == "/elsewhere"
    folder = RunRecord.from_dict({**SYNTHETIC_RUN, "dataset": "folder", "input_shape": [32, 32, 3],
                                  "preprocessing": {"resize": "stretch"}})
    assert folder.data_options()["image_shape"] == (32, 32, 3)
    assert folder.data_options()["resize"] == "stretch"
    for damaged, what in (([], "not a JSON object"), ({"num_classes": "ten"}, "not integers"),
                          ({**SYNTHETIC_RUN, "class_names": ["a"]}, "list of 4 names")):
        with pytest.raises(RunRecordError, match=re.escape(what)):
            RunRecord.from_dict(damaged, "RUN/config.json")
    with pytest.raises(RunRecordError, match=re.escape("no ['arch'")):
        RunRecord.from_dict({"dataset": "mnist"}, "RUN/config.json", complete=True)
    # A hand-written record with only class names is read for what it has.
    assert RunRecord.from_dict({"class_names": ["a", "b"]}).class_names == ("a", "b")


def test_synthetic_run_exports_with_its_own_shape():
    """A run on 28x28x1 synthetic data reads 28x28x1 verification images, not the table's."""
    from export.cli import dataset_arrays
    from training.runrecord import RunRecord

    kwargs = RunRecord.from_dict(SYNTHETIC_RUN).data_options()
    kwargs.pop("data_dir"), kwargs.pop("source")
    x, y = dataset_arrays("synthetic", "test", 8, load_kwargs=kwargs)
    assert x.shape == (8, 28, 28, 1) and y.max() < 4
