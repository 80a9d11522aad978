"""A bare model with no data: python -m export gives every artifact that needs none, into a
folder it creates, and says what it left out."""

import json

from export.cli import main
from tests.harness import run_cli


def run(capsys, *argv):
    code, out, err = run_cli(main, capsys, *argv)
    return code, out + err


def test_no_dataset_leaves_int8_out_with_a_note_and_creates_parents(basic_model_file, tmp_path,
                                                                    capsys):
    out = tmp_path / "artifacts" / "resnet18"  # neither folder exists yet
    code, text = run(capsys, "--model", basic_model_file, "--out", out, "--formats", "tflite",
                     "--no-dataset", "--latency-runs", "1")
    assert code == 0, text
    assert "int8 skipped" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(a["variant"] for a in manifest["artifacts"]) == [
        "dynamic_int8", "float16", "float32"]


def test_int8_asked_for_without_calibration_is_refused(basic_model_file, tmp_path, capsys):
    code, text = run(capsys, "--model", basic_model_file, "--out", tmp_path / "a", "--formats",
                     "tflite", "--tflite-variants", "int8", "--no-dataset")
    assert code == 2 and "calibration" in text.strip().splitlines()[-1]
    assert not (tmp_path / "a").exists()
