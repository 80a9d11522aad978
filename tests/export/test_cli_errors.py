"""A user's mistake in an option or a file gets one line naming it and exit status 2, with no
traceback and nothing written."""

from functools import partial

import numpy as np
import pytest

from export.cli import build_parser, main
from tests import harness


run_cli = partial(harness.run_cli, main)


one_line = harness.one_line


@pytest.mark.parametrize("flag,value", [
    ("--latency-runs", "0"), ("--latency-runs", "-3"), ("--latency-runs", "many"),
    ("--batch-size", "0"), ("--num-verify", "-1"), ("--num-calibration", "0"),
])
def test_numbers_out_of_range_are_usage_errors(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as info:
        main(["--model", str(tmp_path / "m.keras"), "--out", str(tmp_path / "a"), flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    error, see = err.strip().splitlines()
    assert error.startswith(f"python -m export: error: argument {flag}")
    assert see == "see python -m export --help"
    assert list(tmp_path.iterdir()) == []


def test_help_documents_the_exit_statuses(capsys):
    text = build_parser().format_help()
    assert "exit status:" in text
    for code in ("0 ", "1 ", "2 "):
        assert f"\n  {code}" in text


def _write(path, kind):
    if kind == "text":
        path.write_text("pixel values, one per line\n")
    elif kind == "truncated":
        np.save(path, np.zeros((16, 28, 28, 1), np.float32))
        path.write_bytes(path.read_bytes()[: 2000])
    elif kind == "strings":
        np.save(path, np.array([["a", "b"]] * 16))
    elif kind == "wrong shape":
        np.save(path, np.zeros((16, 32, 32, 3), np.float32))
    elif kind == "nan":
        x = np.zeros((16, 28, 28, 1), np.float32)
        x[3, 4, 5, 0] = np.nan
        np.save(path, x)
    elif kind == "pickled":
        np.save(path, np.array([{"a": 1}] * 16, dtype=object), allow_pickle=True)
    elif kind == "few labels":
        np.save(path, np.zeros(5, np.int64))
    elif kind == "label 7":
        np.save(path, np.full(16, 7, np.int64))
    elif kind == "fractional labels":
        np.save(path, np.full(16, 0.5, np.float32))
    return path


@pytest.mark.parametrize("flag,kind,expected", [
    ("--inputs", "missing", "does not exist"),
    ("--inputs", "text", "as .npy"),
    ("--inputs", "truncated", "as .npy"),
    ("--inputs", "pickled", "as .npy"),
    ("--inputs", "strings", "the model takes images of shape (N, 28, 28, 1)"),
    ("--inputs", "wrong shape", "the model takes images of shape (N, 28, 28, 1)"),
    ("--inputs", "nan", "NaN"),
    ("--labels", "few labels", "holds 5 labels in 0..0; expected 16 integer labels in 0..3"),
    ("--labels", "label 7", "holds 16 labels in 7..7; expected 16 integer labels in 0..3"),
    ("--labels", "fractional labels", "expected 16 integer labels in 0..3"),
    ("--labels", "strings", "expected 16 integer labels in 0..3"),
    ("--calibration", "wrong shape", "the model takes images of shape (N, 28, 28, 1)"),
    ("--calibration", "truncated", "as .npy"),
])
def test_bad_data_files_are_named(basic_model_file, tmp_path, capsys, flag, kind, expected):
    bad = tmp_path / "data" / f"{kind.replace(' ', '_')}.npy"
    bad.parent.mkdir()
    if kind != "missing":
        _write(bad, kind)
    good_x = basic_model_file.with_name("x.npy")
    files = {"--inputs": good_x, "--labels": basic_model_file.with_name("y.npy"),
             "--calibration": good_x, flag: bad}
    out = tmp_path / "a"
    code, _, err = run_cli(capsys, "--model", basic_model_file, "--out", out,
                           "--formats", "onnx,tflite", "--tflite-variants", "float32,int8",
                           *[a for item in files.items() for a in item])
    assert code == 2
    line = one_line(err)
    assert f"{flag} file {str(bad)!r}" in line and expected in line, line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_model_file_is_named(basic_model_file, tmp_path, capsys, cut):
    model = tmp_path / "run" / "best.keras"
    model.parent.mkdir()
    data = basic_model_file.read_bytes()
    model.write_bytes(data[: int(len(data) * cut)])
    code, _, err = run_cli(capsys, "--model", model, "--out", tmp_path / "a", "--formats",
                           "onnx")
    assert code == 2
    line = one_line(err)
    assert f"model file {str(model)!r}" in line or f"model {str(model)!r}" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(formats="onnx", int8_io="int4"), "Unknown int8 I/O type 'int4'"),
    (dict(formats="onnx", calibration_images=np.zeros((2, 5, 5, 1))), "calibration images"),
    (dict(formats="tflite", tflite_variants="int8"), "needs calibration data"),
    (dict(formats="onnx", onnx_variants="int8"), "int8 ONNX variant needs calibration data"),
    (dict(formats="onnx", onnx_variants="float32,int4"), "Unknown ONNX variant"),
    (dict(formats="onnx", onnx_layout="nwhc"), "Unknown ONNX layout 'nwhc'"),
    (dict(formats="onnx", opset=12), "opset must be an integer in 13..18"),
    (dict(formats="saved_model", labels=[0, 1]), "labels were given without images"),
])
def test_export_all_refuses_bad_arguments_before_writing(basic_model_file, tmp_path, kwargs,
                                                         message):
    import export

    model = export.load_model(basic_model_file)
    with pytest.raises(export.ExportError, match=message):
        export.export_all(model, tmp_path / "out", log=lambda msg: None, **kwargs)
    assert not (tmp_path / "out").exists()


def test_unknown_onnx_variant_is_one_line_before_loading(basic_model_file, tmp_path, capsys):
    code, _, err = run_cli(capsys, "--model", basic_model_file, "--out", tmp_path / "a",
                           "--formats", "onnx", "--onnx-variants", "float32,int4")
    assert code == 2
    line = one_line(err)
    assert "Unknown ONNX variant ['int4']" in line and "'float32', 'int8'" in line, line
    assert not (tmp_path / "a").exists()
