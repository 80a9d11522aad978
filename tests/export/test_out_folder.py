"""Where ``python -m export`` may write, and that it never loses a file it did not write: the
folders it refuses, what --overwrite may replace, mount points, interrupted exports, modes."""

import errno
import json
import os
import shutil
import stat
from functools import partial
from pathlib import Path

import pytest

from export.cli import main
from tests import harness

DEAD_PID = 99999999  # above any pid_max: no such process


run_cli = partial(harness.run_cli, main)


def snapshot(folder):
    """{relative path: bytes or None for a folder} of everything under ``folder``."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): (None if p.is_dir() else p.read_bytes())
            for p in sorted(folder.rglob("*"))}


def fake_export(folder, onnx_bytes=b"previous onnx"):
    """A folder as a previous ``python -m export --formats onnx`` left it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(onnx_bytes)
    manifest = {"manifest_version": 1, "artifacts": [{"format": "onnx", "path": "model.onnx"}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def export_args(model, out, *extra):
    return ["--model", model, "--out", out, "--formats", "onnx", "--inputs",
            model.with_name("x.npy"), "--latency-runs", "1", "--batch-size", "2", *extra]


@pytest.fixture
def training_run(basic_model_file, tmp_path):
    """A training run's folder: the model beside checkpoints, state and logs."""
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    shutil.copy(basic_model_file, run / "best.keras")
    shutil.copy(basic_model_file, run / "last.keras")
    shutil.copy(basic_model_file.with_name("x.npy"), run / "x.npy")
    (run / "state.json").write_text('{"epoch": 3}')
    (run / "log.csv").write_text("epoch,loss\n0,1.0\n")
    return run


@pytest.fixture
def corrupt_model(tmp_path):
    """A model file that fails to load: a refusal about --out must come before it is read."""
    path = tmp_path / "models" / "best.keras"
    path.parent.mkdir()
    path.write_bytes(b"not a zip file")
    return path


@pytest.mark.parametrize("where", ["run", "runs", "run/.."])
def test_out_holding_the_model_is_refused_and_nothing_is_touched(training_run, capsys, where):
    out = {"run": training_run, "runs": training_run.parent,
           "run/..": training_run / ".."}[where]
    before = snapshot(training_run.parent.parent)
    code, _, err = run_cli(capsys, *export_args(training_run / "best.keras", out, "--overwrite"))
    assert code == 2, err
    line = err.strip()
    assert "\n" not in line and f"--out {str(out)!r}" in line
    assert "holds the model file" in line and "choose" in line
    assert snapshot(training_run.parent.parent) == before


@pytest.mark.parametrize("where", ["root", "home", "above home", "cwd", "above cwd"])
def test_root_home_and_current_directory_are_refused(tmp_path, corrupt_model, capsys,
                                                     monkeypatch, where):
    home = tmp_path / "users" / "me"
    work = tmp_path / "work" / "here"
    for folder in (home, work):
        folder.mkdir(parents=True)
        (folder / "precious.txt").write_text("keep")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    out, reason = {
        "root": ("/", "is the filesystem root"),
        "home": (home, "is your home folder"),
        "above home": (home.parent, "holds your home folder"),
        "cwd": (".", "is the current directory"),
        "above cwd": ("..", "holds the current directory"),
    }[where]
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "--model", corrupt_model, "--out", out, "--overwrite",
                           "--formats", "onnx")
    assert code == 2 and reason in err and f"--out {str(out)!r}" in err, err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("content", ["user files", "foreign manifest", "export and more"])
def test_overwrite_replaces_only_a_previous_export(basic_model_file, tmp_path, capsys, content):
    out = tmp_path / "artifacts"
    out.mkdir()
    if content == "user files":
        (out / "thesis.tex").write_text("two years of work")
        expected = "holds no manifest.json of a previous export"
    elif content == "foreign manifest":
        (out / "manifest.json").write_text('{"name": "my web app"}')
        expected = "holds no manifest.json of a previous export"
    else:
        fake_export(out)
        (out / "notes.txt").write_text("mine")
        (out / "tflite").mkdir()
        (out / "tflite" / "model_custom.tflite").write_bytes(b"mine too")
        expected = "2 entries it did not write (notes.txt, tflite)"
    before = snapshot(out)
    code, _, err = run_cli(capsys, *export_args(basic_model_file, out, "--overwrite"))
    assert code == 2 and expected in err and "--overwrite" in err, err
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts"]


def test_a_folder_holding_a_mount_point_is_refused(corrupt_model, tmp_path, capsys,
                                                   monkeypatch):
    out = fake_export(tmp_path / "artifacts")
    (out / "volume").mkdir()
    (out / "volume" / "data.bin").write_bytes(b"on another file system")
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount",
                        lambda p: Path(p) == out / "volume" or real_ismount(p))
    before = snapshot(out)
    code, _, err = run_cli(capsys, "--model", corrupt_model, "--out", out, "--overwrite",
                           "--formats", "onnx")
    assert code == 2 and f"holds the mount point {str(out / 'volume')!r}" in err, err
    assert snapshot(out) == before


@pytest.fixture
def mount_point(tmp_path, monkeypatch):
    """An empty folder that behaves as a mount point: os.path.ismount says so, and renaming
    it fails with EBUSY as the kernel's rename does."""
    out = tmp_path / "volume"
    out.mkdir()
    real_ismount, real_rename = os.path.ismount, os.rename

    def ismount(path):
        return Path(path) == out or real_ismount(path)

    def rename(src, dst, **kwargs):
        if out in (Path(src), Path(dst)):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(src))
        return real_rename(src, dst, **kwargs)

    monkeypatch.setattr(os.path, "ismount", ismount)
    monkeypatch.setattr(os, "rename", rename)
    return out


def test_export_into_an_empty_mount_point_writes_in_place(basic_model_file, mount_point,
                                                          capsys):
    inode = mount_point.stat().st_ino
    code, _, err = run_cli(capsys, *export_args(basic_model_file, mount_point))
    assert code == 0, err
    assert mount_point.stat().st_ino == inode
    assert sorted(p.name for p in mount_point.iterdir()) == ["manifest.json", "model.onnx"]
    assert sorted(p.name for p in mount_point.parent.iterdir()) == ["volume"]
    assert json.loads((mount_point / "manifest.json").read_text())["passed"]


def test_leftovers_in_a_mount_point_are_finished_or_removed(mount_point, corrupt_model,
                                                            capsys):
    # Killed while writing: no manifest yet, nothing was moved in.
    writing = mount_point / f".volume.partial-{DEAD_PID}-0123abcd"
    (writing / "tflite").mkdir(parents=True)
    (writing / "tflite" / "model_float32.tflite").write_bytes(b"half")
    # Killed while moving a finished export in: model.onnx is in place, manifest.json is not.
    moving = fake_export(mount_point / f".volume.partial-{DEAD_PID}-89abcdef")
    os.replace(moving / "model.onnx", mount_point / "model.onnx")
    code, _, err = run_cli(capsys, "--model", corrupt_model, "--out", mount_point, "--formats",
                           "onnx")
    assert code == 2 and "not empty" in err, err
    assert "finished moving the export staged in" in err and "removed" in err
    assert sorted(p.name for p in mount_point.iterdir()) == ["manifest.json", "model.onnx"]


def test_an_export_killed_between_its_renames_is_restored(basic_model_file, tmp_path,
                                                          capsys):
    out = tmp_path / "artifacts"
    fake_export(tmp_path / f".artifacts.old-{DEAD_PID}-0123abcd")
    (tmp_path / f".artifacts.partial-{DEAD_PID}-89abcdef" / "tflite").mkdir(parents=True)
    # Not ours to remove: another name, another pattern, a process still running.
    keep = [f".other.partial-{DEAD_PID}-00000000", ".artifacts.partial-mine",
            f".artifacts.partial-{os.getppid()}-aaaaaaaa"]
    for name in keep:
        (tmp_path / name).mkdir()
        (tmp_path / name / "file").write_text("x")

    code, _, err = run_cli(capsys, *export_args(basic_model_file, out))
    assert code == 2 and "not empty" in err, err
    assert "restored" in err and f".artifacts.old-{DEAD_PID}-0123abcd" in err
    assert snapshot(out) == snapshot(fake_export(tmp_path / "expected"))
    shutil.rmtree(tmp_path / "expected")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["artifacts", *keep])

    code, _, err = run_cli(capsys, *export_args(basic_model_file, out, "--overwrite"))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    assert (out / "model.onnx").read_bytes() != b"previous onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["artifacts", *keep])


def test_a_replaced_export_left_beside_out_is_removed(basic_model_file, tmp_path, capsys):
    """Killed after the new export was renamed into place, before the old one was deleted."""
    out = fake_export(tmp_path / "artifacts", b"new")
    fake_export(tmp_path / f".artifacts.old-{DEAD_PID}-0123abcd", b"replaced")
    code, _, err = run_cli(capsys, "--model", tmp_path / "missing.keras", "--out", out,
                           "--formats", "onnx")
    assert code == 2 and "removed" in err and "not empty" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts"]
    assert (out / "model.onnx").read_bytes() == b"new"


def test_published_folders_and_files_follow_the_umask(basic_model_file, tmp_path, capsys):
    out = tmp_path / "artifacts"
    previous = os.umask(0o022)
    try:
        code, _, err = run_cli(capsys, "--model", basic_model_file, "--out", out, "--formats",
                               "saved_model", "--inputs", basic_model_file.with_name("x.npy"),
                               "--latency-runs", "1", "--batch-size", "2")
    finally:
        os.umask(previous)
    assert code == 0, err
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [out, *out.rglob("*")]}
    assert modes == {name: (0o755 if (tmp_path / name).is_dir() else 0o644)
                     for name in modes}
