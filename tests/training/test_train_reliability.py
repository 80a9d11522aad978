"""What a careless or adversarial user can do to training.fit / training.evaluate: each case
ends in one line naming the file or option, a documented exit code, and nothing lost."""

import csv
import errno
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

import keras
import numpy as np
import pytest

from keras_resnet import _keras_compat
from training import callbacks as cb
from training import evaluate, fit
from training.data import DataFormatError, DatasetError, load_arrays

from tests.conftest import REPO
from tests.harness import argv
from tests.training.test_train_parsers import idx_bytes, write_cifar10, write_mnist

TINY = dict(dataset="synthetic", synthetic_shape="8,8,3", stem="cifar", width=4,
            batch_size=64, jit_compile="off", verbose="0", val_fraction=0.25, epochs=1,
            subset=128)
DIGITS = dict(dataset="digits", width=4, batch_size=32, jit_compile="off", verbose="0",
              subset=256, epochs=1)


def exit_code(main, args) -> int:
    try:
        return main(args)
    except SystemExit as e:
        return e.code


def error_line(capsys) -> str:
    """The one error line of a failed CLI call (argparse's usage lines before it are allowed)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One finished run, shared read-only (tests copy it), started in a folder that already
    held a file of the user's whose name looks like one of our temporaries."""
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    run_dir.mkdir()
    (run_dir / "data.tmp-backup").write_text("precious")
    assert fit.main(argv(TINY, run_dir=str(run_dir))) == 0
    return str(run_dir)


def copy_run(tiny_run, tmp_path) -> str:
    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run, run_dir)
    return run_dir


# --------------------------------------------------------------------------------------------
# A lock on the run directory


def _hold_lock(run_dir):
    os.makedirs(run_dir, exist_ok=True)
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); "
            "print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, os.path.join(run_dir, "fit.lock")],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.parametrize("resume", [False, True])
def test_a_second_fit_on_a_locked_run_dir_refuses_at_once(tiny_run, tmp_path, capsys, resume):
    run_dir = copy_run(tiny_run, tmp_path) if resume else str(tmp_path / "fresh")
    holder = _hold_lock(run_dir)
    try:
        start = time.perf_counter()
        code = exit_code(fit.main, argv(TINY, run_dir=run_dir, resume=resume, epochs=2))
        line = error_line(capsys)
        assert code == 2 and time.perf_counter() - start < 20
        assert run_dir in line and str(holder.pid) in line
    finally:
        holder.kill()
        holder.wait()
    if resume:  # the run the holder "owned" was left as it was
        assert cb.read_resume_state(run_dir)["epoch"] == 1


@pytest.mark.slow
def test_a_stale_lock_of_a_dead_process_is_taken_over(tiny_run, tmp_path):
    run_dir = copy_run(tiny_run, tmp_path)
    holder = _hold_lock(run_dir)
    holder.kill()  # kill -9: the lock file stays, with a dead PID in it
    holder.wait()
    assert os.path.exists(os.path.join(run_dir, "fit.lock"))
    assert fit.main(argv(TINY, run_dir=run_dir, resume=True, epochs=2)) == 0
    assert cb.read_resume_state(run_dir)["epoch"] == 2
    assert not os.path.exists(os.path.join(run_dir, "fit.lock"))


@pytest.mark.slow
def test_two_processes_on_one_run_dir_one_refuses(tmp_path):
    run_dir = str(tmp_path / "both")
    cmd = [sys.executable, "-m", "training.fit", *argv(TINY, run_dir=run_dir)]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    # Either the second found the lock, or it started after the first ended and found its run.
    assert codes == [0, 2], outs
    err = next(o[1] for p, o in zip(procs, outs) if p.returncode == 2)
    assert "Traceback" not in err and run_dir in err


# --------------------------------------------------------------------------------------------
# Corrupt gzip data


def _flip(path, offset, mask=0xFF):
    blob = bytearray(open(path, "rb").read())
    blob[offset] ^= mask
    open(path, "wb").write(bytes(blob))


def test_cifar_tarball_with_a_crc_error_is_refused(tmp_path):
    _, path = write_cifar10(str(tmp_path), n=40)
    # Re-compress without compression: a flipped byte then changes pixels, not the deflate
    # stream, and only the CRC can tell (gzip -t: "crc error").
    raw = gzip.decompress(open(path, "rb").read())
    open(path, "wb").write(gzip.compress(raw, compresslevel=0))
    _flip(path, 2000)
    check = subprocess.run(["gzip", "-t", path], capture_output=True, text=True)
    assert check.returncode != 0 and "crc" in check.stderr.lower()
    for split in ("train", "test"):
        with pytest.raises(DataFormatError, match="cifar-10-binary.tar.gz"):
            load_arrays("cifar10", split, data_dir=str(tmp_path), source="archive")


def test_cifar_crc_error_exits_2_through_the_cli(tmp_path, capsys):
    _, path = write_cifar10(str(tmp_path / "data"), n=40)
    raw = gzip.decompress(open(path, "rb").read())
    open(path, "wb").write(gzip.compress(raw, compresslevel=0))
    _flip(path, len(raw) // 2)
    code = exit_code(fit.main, argv(TINY, dataset="cifar10", synthetic_shape="32,32,3",
                                    data_dir=str(tmp_path / "data"), run_dir=str(tmp_path / "r")))
    assert code == 2 and "cifar-10-binary.tar.gz" in error_line(capsys)
    assert not os.path.exists(tmp_path / "r")


@pytest.mark.parametrize("where", ["deflate", "trailer"])
def test_gzip_damage_anywhere_names_the_file(tmp_path, where):
    folder = tmp_path / "mnist"
    write_mnist(folder)
    path = str(folder / "t10k-images-idx3-ubyte.gz")
    # Byte 10 starts the deflate stream: 0xff there is a reserved block type (zlib.error);
    # the trailer holds the CRC32 and size.
    _flip(path, 10 if where == "deflate" else os.path.getsize(path) - 6)
    with pytest.raises(DataFormatError, match="t10k-images-idx3-ubyte.gz"):
        load_arrays("mnist", "test", data_dir=str(tmp_path), source="archive")
    _, tar = write_cifar10(str(tmp_path / "c"), n=4)
    # Without the file name tarfile writes into the gzip header, the deflate stream is at 10.
    open(tar, "wb").write(gzip.compress(gzip.decompress(open(tar, "rb").read())))
    _flip(tar, 10 if where == "deflate" else os.path.getsize(tar) - 6)
    with pytest.raises(DataFormatError, match="cifar-10-binary.tar.gz"):
        load_arrays("cifar10", "test", data_dir=str(tmp_path / "c"), source="archive")


# --------------------------------------------------------------------------------------------
# IDX files in the wrong place or incomplete


def test_idx_files_directly_in_data_dir_are_not_silently_ignored(tmp_path):
    write_mnist(tmp_path)
    with pytest.raises(DatasetError) as err:
        load_arrays("mnist", "test", data_dir=str(tmp_path))
    message = str(err.value)
    assert os.path.join(str(tmp_path), "mnist") in message and "train-images-idx3-ubyte" in message
    assert "TFDS" not in message  # the files were found, just not where they are read from


def test_three_of_four_idx_files_name_the_missing_one(tmp_path):
    write_mnist(tmp_path / "mnist")
    os.remove(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DatasetError) as err:
        load_arrays("mnist", "test", data_dir=str(tmp_path))
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte" in message and os.path.join(str(tmp_path), "mnist") in message
    assert "train-images" not in message.split("missing")[-1]


# --------------------------------------------------------------------------------------------
# Divergence with a finite loss


@pytest.mark.slow
def test_a_finite_but_exploding_loss_stops_with_exit_3(tmp_path, capsys):
    run_dir = str(tmp_path / "lr1e6")
    assert exit_code(fit.main, argv(DIGITS, lr=1e6, run_dir=run_dir, epochs=2)) == 3
    line = error_line(capsys)
    assert "--lr" in line and "no epoch completed" in line
    assert not os.path.exists(os.path.join(run_dir, "metrics.json"))


@pytest.mark.slow
def test_divergence_in_a_later_epoch_names_the_last_good_checkpoint(tmp_path, capsys):
    run_dir = str(tmp_path / "late")
    # A step schedule that multiplies the learning rate by 1e9 after epoch 1.
    code = exit_code(fit.main, argv(DIGITS, run_dir=run_dir, epochs=3, step_epochs=1,
                                    step_gamma=1e9, schedule="step"))
    line = error_line(capsys)
    assert code == 3 and "epoch 2" in line
    assert f"{os.path.join(run_dir, 'last.keras')} (epoch 1)" in line
    assert cb.read_resume_state(run_dir)["epoch"] == 1
    rows = list(csv.DictReader(open(os.path.join(run_dir, "log.csv"))))
    assert [int(r["epoch"]) for r in rows] == [1]


def test_noisy_but_normal_losses_do_not_stop_training():
    guard = cb.NanGuard(num_classes=10)
    guard.set_model(keras.Sequential([keras.Input((1,))]))
    guard.model.stop_training = False
    rng = np.random.default_rng(0)
    # A from-scratch start well above ln(10), single spikes of 100x, a slow decline.
    losses = [30.0, 12.0, 500.0, 6.0] + list(2.3 * np.exp(-np.arange(300) / 100)
                                           * rng.uniform(0.5, 3.0, 300))
    for i, loss in enumerate(losses):
        guard.on_train_batch_end(i, {"loss": loss})
    assert guard.nan_at is None and not guard.model.stop_training
    for i in range(3):
        guard.on_train_batch_end(400 + i, {"loss": 1e6})
    assert guard.nan_at is not None and guard.model.stop_training


@pytest.mark.parametrize("option", ["--lr", "--momentum", "--weight-decay", "--step-gamma",
                                    "--warmup-epochs", "--label-smoothing", "--val-fraction"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_floats_are_refused_when_parsed(option, value, capsys):
    assert exit_code(fit.main, ["--dataset", "digits", f"{option}={value}"]) == 2
    assert option in error_line(capsys)


# --------------------------------------------------------------------------------------------
# Validation errors: one argparse-style line, exit 2


@pytest.mark.parametrize("args, words", [
    (["--epochs", "0"], ["--epochs"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--width", "0"], ["--width"]),
    (["--val-fraction", "1"], ["--val-fraction"]),
    (["--val-fraction", "0.9999"], ["--val-fraction"]),
    (["--resume"], ["--resume", "--run-dir"]),
    (["--subset", "5000"], ["--subset", "1294"]),
    (["--batch-size", "99999999999999999999"], ["--batch-size", "at most"]),
])
def test_fit_usage_errors_are_one_line_with_exit_2(args, words, tmp_path, capsys):
    base = ["--dataset", "digits", "--width", "4", "--epochs", "1", "--jit-compile", "off"]
    if "--resume" not in args:
        base += ["--run-dir", str(tmp_path / "r")]
    assert exit_code(fit.main, base + args) == 2
    line = error_line(capsys)
    for word in words:
        assert word in line
    assert not os.path.exists(tmp_path / "r")


@pytest.mark.parametrize("weights", ["missing.pth", "lambda.keras"])
def test_unusable_starting_weights_leave_no_run_directory(weights, tmp_path, capsys):
    path = tmp_path / weights
    if weights.endswith(".keras"):
        inputs = keras.Input((8, 8, 3))
        keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(path)
    run_dir = tmp_path / "run"
    assert exit_code(fit.main, argv(TINY, run_dir=str(run_dir), weights=str(path))) == 2
    assert str(path) in error_line(capsys)
    assert not run_dir.exists()


def test_a_start_failing_after_the_record_leaves_nothing_of_a_new_run_dir(
        tiny_run, tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise RuntimeError("failed after the record")

    monkeypatch.setattr(fit, "_fit", fail)
    run_dir = tmp_path / "new"
    assert exit_code(fit.main, argv(TINY, run_dir=str(run_dir))) == 1
    assert "failed after the record" in capsys.readouterr().err
    assert not run_dir.exists()
    # A folder this attempt did not create keeps everything in it, a resumed run included.
    resumed = copy_run(tiny_run, tmp_path)
    before = sorted(os.listdir(resumed))
    assert exit_code(fit.main, argv(TINY, run_dir=resumed, resume=True, epochs=2)) == 1
    assert sorted(os.listdir(resumed)) == before


def test_verbose_auto_is_one_line_per_epoch_when_stdout_is_not_a_terminal(tmp_path, capsys):
    assert fit.main(argv(TINY, run_dir=str(tmp_path / "run"), epochs=2, verbose="auto")) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\b" not in out
    epochs = [line for line in out.splitlines() if "val_loss" in line]
    assert len(epochs) == 2, out


def test_a_run_dir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    assert exit_code(fit.main, argv(TINY, run_dir=str(path))) == 2
    line = error_line(capsys)
    assert str(path) in line and "--run-dir" in line
    assert path.read_text() == "mine"


@pytest.mark.parametrize("args, word", [
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-3"], "--batch-size"),
])
def test_evaluate_usage_errors(tiny_run, args, word, capsys):
    model = os.path.join(tiny_run, "best.keras")
    assert exit_code(evaluate.main, ["--model", model] + args) == 2
    assert word in error_line(capsys)


def test_evaluate_refuses_to_overwrite_what_it_did_not_write(tiny_run, tmp_path, capsys):
    run_dir = copy_run(tiny_run, tmp_path)
    model = os.path.join(run_dir, "best.keras")
    before = {name: open(os.path.join(run_dir, name), "rb").read()
              for name in ("metrics.json", "confusion_matrix.png")}
    assert exit_code(evaluate.main, ["--model", model, "--out", run_dir]) == 2
    line = error_line(capsys)
    assert run_dir in line and os.path.join(run_dir, "eval-best-synthetic") in line
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.json").write_text('{"mine": 1}')
    assert exit_code(evaluate.main, ["--model", model, "--out", str(other)]) == 2
    assert str(other) in error_line(capsys)
    assert (other / "metrics.json").read_text() == '{"mine": 1}'
    for name, data in before.items():
        assert open(os.path.join(run_dir, name), "rb").read() == data
    # Its own report may be written again, into the default folder as into another.
    for out in ([], ["--out", str(tmp_path / "eval")]):
        for _ in range(2):
            assert exit_code(evaluate.main, ["--model", model] + out) == 0
    capsys.readouterr()


@pytest.mark.parametrize("parser, table", [
    (fit.build_parser, ["0 trained and reported", "2 bad input or usage",
                        "3 training diverged", "1 another worker of a multi-worker run was lost"]),
    (evaluate.build_parser, ["0 evaluated and reported", "2 bad input or usage",
                             "1 an internal error"]),
])
def test_help_documents_the_exit_codes(parser, table):
    text = " ".join(parser().format_help().split())
    entries = re.split(r"; (?=\d )", text.split("exit status: ", 1)[1])
    assert [e.split(" (")[0] for e in entries] == table


# --------------------------------------------------------------------------------------------
# A damaged run directory


def test_truncated_best_keras_names_the_file_and_the_usable_checkpoint(tiny_run, tmp_path,
                                                                       capsys):
    run_dir = copy_run(tiny_run, tmp_path)
    best = os.path.join(run_dir, "best.keras")
    blob = open(best, "rb").read()
    open(best, "wb").write(blob[: len(blob) // 2])
    assert exit_code(evaluate.main, ["--model", best]) == 2
    line = error_line(capsys)
    assert best in line and "File not found" not in line
    assert "last.keras" in line and "epoch 1" in line


@pytest.mark.parametrize("content, what", [
    ('{"arch": "resnet18", "dataset"', "cannot be read"),
    ("[]", "not a JSON object"),
    ('{"dataset": "digits", "num_classes": "ten"}', "are not integers"),
])
def test_a_damaged_run_record_is_one_line_for_evaluate_predict_and_export(
        tiny_run, tmp_path, capsys, content, what):
    from PIL import Image

    from export.cli import main as export_main
    from training import predict

    run_dir = copy_run(tiny_run, tmp_path)
    config = os.path.join(run_dir, "config.json")
    with open(config, "w") as f:
        f.write(content)
    best = os.path.join(run_dir, "best.keras")
    image = str(tmp_path / "seven.png")
    Image.new("L", (28, 28)).save(image)
    for main, args in ((evaluate.main, ["--model", best]),
                       (predict.main, ["--model", best, image]),
                       (export_main, ["--model", best, "--out", str(tmp_path / "out"),
                                      "--formats", "onnx"])):
        assert exit_code(main, args) == 2
        line = error_line(capsys)
        assert config in line and what in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", ['{"entries": [{"epoch": 1', "{}", "[]", '{"entries": 3}'])
def test_damaged_state_json_names_the_file(tiny_run, tmp_path, capsys, content):
    run_dir = copy_run(tiny_run, tmp_path)
    state = os.path.join(run_dir, "state.json")
    open(state, "w").write(content)
    assert exit_code(fit.main, argv(TINY, run_dir=run_dir, resume=True, epochs=2)) == 2
    line = error_line(capsys)
    assert state in line and "--resume" in line


def test_last_keras_not_matching_state_json_gives_advice(tiny_run, tmp_path, capsys):
    run_dir = copy_run(tiny_run, tmp_path)
    shutil.copy(os.path.join(run_dir, "best.keras"), os.path.join(run_dir, "last.keras"))
    with open(os.path.join(run_dir, "last.keras"), "ab") as f:
        f.write(b"\0")
    assert exit_code(fit.main, argv(TINY, run_dir=run_dir, resume=True, epochs=2)) == 2
    line = error_line(capsys)
    assert os.path.join(run_dir, "last.keras") in line and "state.json" in line
    assert "without --resume" in line or "best.keras" in line


# --------------------------------------------------------------------------------------------
# Disk full, read-only folders, temporaries


def _temporaries(run_dir):
    if not os.path.isdir(run_dir):  # a run that wrote nothing leaves no folder either
        return []
    return [f for f in os.listdir(run_dir) if ".tmp-" in f or f.startswith(".tmp")]


def test_disk_full_while_saving_a_checkpoint(tmp_path, monkeypatch, capsys):
    run_dir = str(tmp_path / "full")

    def save(fileobj, *args, **kwargs):
        fileobj.write(b"\0" * (3 << 20))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_keras_compat, "write_keras_archive", save)
    assert exit_code(fit.main, argv(TINY, run_dir=run_dir)) == 2
    line = error_line(capsys)
    assert run_dir in line and "No space left" in line
    assert not _temporaries(run_dir)


def test_read_only_run_dir(tmp_path, monkeypatch, capsys):
    run_dir = str(tmp_path / "ro")
    real_fsync = os.fsync

    def fsync(fd):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "fsync", fsync)
    assert exit_code(fit.main, argv(TINY, run_dir=run_dir)) == 2
    monkeypatch.setattr(os, "fsync", real_fsync)
    line = error_line(capsys)
    assert os.path.join(run_dir, "config.json") in line and "Read-only" in line
    assert not _temporaries(run_dir)


def test_clean_temporaries_deletes_only_our_own(tmp_path):
    ours = [".tmp-123-last.keras", "config.json.tmp-456"]
    theirs = ["data.tmp-backup", "my.tmp-notes.txt", ".tmp-mine"]
    for name in ours + theirs:
        (tmp_path / name).write_text("x")
    cb.clean_temporaries(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(theirs)


def test_a_run_keeps_a_users_file_in_its_run_dir(tiny_run):
    assert open(os.path.join(tiny_run, "data.tmp-backup")).read() == "precious"


# --------------------------------------------------------------------------------------------
# log.csv keeps every epoch whatever the moment of a kill


class _Crash(Exception):
    pass


@pytest.mark.slow
def test_log_csv_row_is_written_with_the_checkpoint(tmp_path, monkeypatch):
    run_dir = str(tmp_path / "log")
    original = cb.RunCheckpoint.on_epoch_end

    def checkpoint_then_die(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:
            raise _Crash("killed between the checkpoint and the loggers")

    monkeypatch.setattr(cb.RunCheckpoint, "on_epoch_end", checkpoint_then_die)
    with pytest.raises(_Crash):
        fit.run(fit.TrainConfig(run_dir=run_dir, **dict(TINY, epochs=2)))
    monkeypatch.undo()
    assert fit.main(argv(TINY, run_dir=run_dir, epochs=2, resume=True)) == 0
    rows = list(csv.DictReader(open(os.path.join(run_dir, "log.csv"))))
    assert [int(r["epoch"]) for r in rows] == [1, 2]


@pytest.mark.slow
def test_log_csv_has_no_duplicate_row_when_killed_before_the_state(tmp_path, monkeypatch):
    run_dir = str(tmp_path / "log2")
    real = cb.atomic_write_json
    calls = []

    def write(path, obj):
        if path.endswith("state.json"):
            calls.append(path)
            if len(calls) == 2:
                raise _Crash("killed before state.json of epoch 2")
        real(path, obj)

    monkeypatch.setattr(cb, "atomic_write_json", write)
    with pytest.raises(_Crash):
        fit.run(fit.TrainConfig(run_dir=run_dir, **dict(TINY, epochs=2)))
    monkeypatch.undo()
    assert fit.main(argv(TINY, run_dir=run_dir, epochs=2, resume=True)) == 0
    rows = list(csv.DictReader(open(os.path.join(run_dir, "log.csv"))))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
