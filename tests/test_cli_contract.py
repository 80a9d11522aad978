"""The contract every CLI keeps (keras_resnet._cli): a UsageError, or a library error that its
table names, is the user's to fix (exit 2,
one line), DivergedError exits 3, FailedError 1 with one line, and anything else is a bug:
exit 1 with its traceback, never a line that reads as the user's mistake.

Each CLI's own function is replaced by one that raises, so these run in milliseconds."""

import argparse
import errno
import importlib
from functools import partial

import pytest

from keras_resnet import _cli
from tests import harness


def _raiser(error):
    def raise_it(*args, **kwargs):
        raise error
    return raise_it


# (module whose main is run, the function of it that is made to raise, argv that reaches it)
CLIS = {
    "training.fit": ("run", ["--dataset", "digits"]),
    "training.evaluate": ("evaluate", ["--model", "m.keras"]),
    "training.predict": ("find_images", ["--model", "m.keras", "a.png"]),
    "export.cli": ("check_out_dir", ["--model", "m.keras", "--out", "artifacts"]),
    "export.predict": ("find_images", ["--artifact", "m.onnx", "a.png"]),
    "keras_resnet.convert.cli": ("_run", ["--from-torch", "r.pth", "--out", "r.keras"]),
    "keras_resnet.summary": ("_summarize", ["--arch", "resnet18"]),
}
PREFIX = {
    "training.fit": "error: ",
    "training.evaluate": "error: ",
    "training.predict": "python -m training.predict: error: ",
    "export.cli": "export: error: ",
    "export.predict": "python -m export.predict: error: ",
    "keras_resnet.convert.cli": "python -m keras_resnet.convert: error: ",
    "keras_resnet.summary": "error: ",
}


def run_with(name, error, monkeypatch, capsys, tmp_path):
    """``name``'s main with its function of CLIS raising ``error``."""
    module = importlib.import_module(name)
    function, argv = CLIS[name]
    monkeypatch.setattr(module, function, _raiser(error))
    monkeypatch.chdir(tmp_path)
    return harness.run_cli(module.main, capsys, *argv)


@pytest.mark.parametrize("name", sorted(CLIS))
def test_a_stray_value_error_is_a_bug_with_its_traceback(name, monkeypatch, capsys, tmp_path):
    result = run_with(name, ValueError("an internal slip"), monkeypatch, capsys, tmp_path)
    assert result.code == 1
    assert "Traceback (most recent call last)" in result.err
    assert result.err.rstrip().endswith("ValueError: an internal slip")
    assert "error: an internal slip" not in result.err


@pytest.mark.parametrize("name", sorted(CLIS))
def test_a_usage_error_is_one_line_with_exit_2(name, monkeypatch, capsys, tmp_path):
    class Mistake(_cli.UsageError):
        pass

    result = run_with(name, Mistake("--model m.keras: no such file"), monkeypatch, capsys,
                      tmp_path)
    assert result.code == 2
    assert harness.one_line(result.err, PREFIX[name]) == (
        f"{PREFIX[name]}--model m.keras: no such file")


def test_library_errors_are_plain_python_errors_and_one_table_gives_their_exit_status():
    from export.model_io import ExportError
    from keras_resnet.convert.cli import CheckFailed, ConvertError
    from keras_resnet.modelfile import ModelFileError
    from keras_resnet.weights import WeightsError
    from training.data.errors import DataFormatError, DatasetError
    from training.distribute import DistributeError
    from training.evaluate import EvaluateError, ModelNotFound
    from training.fit import RunExists, TrainingDiverged, WorkerLost
    from training.predicting import NonFiniteOutputs, PredictError
    from training.recipe import RunError, RunFileMissing
    from training.rundir import RunDirError
    from training.runrecord import RunRecordError

    for cls in (DistributeError, PredictError, RunRecordError, ModelFileError, ConvertError,
                EvaluateError, WeightsError, ExportError, RunError, DataFormatError):
        assert issubclass(cls, ValueError) and _cli.status_of(cls("x")) == 2, cls
    for cls in (RunDirError, DatasetError):
        assert issubclass(cls, RuntimeError) and _cli.status_of(cls("x")) == 2, cls
    assert issubclass(ModelNotFound, FileNotFoundError) and issubclass(RunFileMissing,
                                                                       FileNotFoundError)
    assert issubclass(RunExists, FileExistsError) and _cli.status_of(RunExists("x")) == 2
    assert issubclass(TrainingDiverged, RuntimeError)
    assert _cli.status_of(TrainingDiverged("x")) == 3
    for cls in (WorkerLost, CheckFailed, NonFiniteOutputs):
        assert _cli.status_of(cls("x")) == 1, cls
    # Ours only: a plain ValueError, or any class the table does not name, is a bug.
    assert _cli.status_of(ValueError("x")) is None
    assert _cli.status_of(type("Other", (RuntimeError,), {})("x")) is None
    # The library modules do not import the command-line layer for their errors.
    for cls in (ExportError, RunError, ModelFileError, DataFormatError, TrainingDiverged):
        assert not any(base.__module__.startswith("keras_resnet._") for base in cls.__mro__)


@pytest.mark.parametrize("error, code", [
    ("diverged", 3), ("worker lost", 1),
])
def test_fit_divergence_exits_3_and_a_lost_worker_1_each_in_one_line(
        error, code, monkeypatch, capsys, tmp_path):
    from training.fit import TrainingDiverged, WorkerLost

    cls = TrainingDiverged if error == "diverged" else WorkerLost
    result = run_with("training.fit", cls(f"{error}: resume from last.keras"), monkeypatch,
                      capsys, tmp_path)
    assert result.code == code
    assert harness.one_line(result.err, "error: ") == f"error: {error}: resume from last.keras"


def test_a_failed_check_of_convert_is_one_line_with_exit_1(monkeypatch, capsys, tmp_path):
    from keras_resnet.convert.cli import CheckFailed

    result = run_with("keras_resnet.convert.cli", CheckFailed("r.keras: read back differs"),
                      monkeypatch, capsys, tmp_path)
    assert result.code == 1
    harness.one_line(result.err, "python -m keras_resnet.convert: error: r.keras: read back")


def test_export_joins_a_message_of_several_lines(monkeypatch, capsys, tmp_path):
    from export.model_io import ExportError

    result = run_with("export.cli", ExportError("first\n  second\n"), monkeypatch, capsys,
                      tmp_path)
    assert result.code == 2
    assert harness.one_line(result.err) == "export: error: first; second"


def test_a_storage_error_the_user_can_fix_is_one_line_naming_the_folder(
        monkeypatch, capsys, tmp_path):
    full = OSError(errno.ENOSPC, "No space left on device")
    result = run_with("export.cli", full, monkeypatch, capsys, tmp_path)
    assert result.code == 2
    assert harness.one_line(result.err) == (
        "export: error: No space left on device: 'artifacts'; nothing was published: free "
        "space or choose another --out")


def test_an_os_error_that_is_not_the_users_is_a_bug(monkeypatch, capsys, tmp_path):
    result = run_with("training.evaluate", OSError(errno.EIO, "Input/output error"),
                      monkeypatch, capsys, tmp_path)
    assert result.code == 1
    assert "Traceback (most recent call last)" in result.err


exit_status = partial(_cli.exit_status, prefix="tool: error")


def test_the_runner_returns_the_actions_own_status(capsys):
    assert exit_status(lambda: None) == 0
    assert exit_status(lambda: 1) == 1
    assert capsys.readouterr().err == ""


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    assert exit_status(_raiser(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.parametrize("parse", [_cli.positive_int, _cli.non_negative_int, _cli.bounded_int])
def test_integers_beyond_int32_are_refused_while_parsing(parse):
    assert parse(str(2**31 - 1)) == 2**31 - 1
    with pytest.raises(argparse.ArgumentTypeError, match="at most 2147483647"):
        parse("99999999999999999999")


def test_a_cli_runs_on_tensorflow_whatever_keras_backend_says(tmp_path):
    """A process: the variable is read when Keras loads, which has happened in this one.
    Under JAX, evaluate's tf.data batches reached a JAX predict step and failed."""
    import json
    import os
    import subprocess
    import sys

    import keras_resnet
    from tests.conftest import REPO

    model = tmp_path / "digits.keras"
    keras_resnet.build_resnet("resnet18", (28, 28, 1), 10, width=2, stem="cifar").save(model)
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-m", "training.evaluate", "--model", str(model),
                        "--dataset", "digits", "--out", str(tmp_path / "eval")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["num_examples"] == 359
    notes = [line for line in r.stderr.splitlines() if "KERAS_BACKEND" in line]
    assert len(notes) == 1 and "jax" in notes[0] and "TensorFlow" in notes[0], r.stderr
