"""A disk that fills during an export: one line naming the folder and the space needed, exit 2,
and nothing left behind, whichever writer hit it. The full disk is simulated at each writer's
own write, with the error that write raises (TensorFlow's for its C++ file writes)."""

import errno
import pathlib

import numpy as np
import pytest

from export.cli import main
from tests import harness


def _tf_disk_full(*args, **kwargs):
    import tensorflow as tf

    raise tf.errors.ResourceExhaustedError(
        None, None, "model/variables/variables.data-00000-of-00001.tempstate123; "
                    "No space left on device")


def _os_disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "model.onnx")


def _patch_saved_model_save(monkeypatch):
    import tensorflow as tf

    def save(obj, export_dir, *args, **kwargs):
        pathlib.Path(export_dir).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(export_dir) / "saved_model.pb").write_bytes(b"partial")
        _tf_disk_full()

    monkeypatch.setattr(tf.saved_model, "save", save)


def _patch_tflite_write(monkeypatch):
    original = pathlib.Path.write_bytes

    def write_bytes(self, data):
        if self.suffix == ".tflite":
            original(self, data[:10])
            _os_disk_full()
        return original(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)


def _patch_onnx_save(monkeypatch):
    import onnx

    monkeypatch.setattr(onnx, "save", _os_disk_full)


CASES = {
    # case: (--formats, how the disk fills)
    "saved_model, TensorFlow's error": ("saved_model", _patch_saved_model_save),
    "tflite's SavedModel, TensorFlow's error": ("tflite", _patch_saved_model_save),
    "tflite file, OSError": ("tflite", _patch_tflite_write),
    "onnx file, OSError": ("onnx", _patch_onnx_save),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_full_disk_is_one_line_exit_2_and_leaves_nothing(case, basic_model_file, tmp_path,
                                                           monkeypatch, capsys):
    fmt, patch = CASES[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    np.save(inputs / "x.npy", np.load(basic_model_file.with_name("x.npy"))[:4])
    place = tmp_path / "place"
    place.mkdir()
    patch(monkeypatch)
    result = harness.run_cli(main, capsys, "--model", basic_model_file, "--out",
                             place / "artifacts", "--formats", fmt, "--tflite-variants",
                             "float32", "--no-dataset", "--inputs", inputs / "x.npy",
                             "--latency-runs", "1")
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    errors = [line for line in result.err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.err
    line = errors[0]
    assert line.startswith("export: error: no space left on the device holding "), line
    assert repr(str(place)) in line and " MB" in line and "nothing was written" in line, line
    assert list(place.iterdir()) == []
