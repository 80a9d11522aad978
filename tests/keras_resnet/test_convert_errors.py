"""keras_resnet.convert on bad inputs: one line naming the file and what is wrong, exit 2 for a
user's mistake, exit 1 for a failed check, and never a file left at --out that should not be
there (a user's own file at --out is only ever replaced by a checked result)."""

import json
import os
import struct
import sys
import zipfile
from functools import partial

import numpy as np
import pytest

from keras_resnet import build_resnet
from keras_resnet import convert
from keras_resnet.convert import main, to_torch_state_dict
from tests import harness

PROG = "python -m keras_resnet.convert"
SHAPE = (28, 28, 1)


def _torch():
    import torch
    sys.modules.setdefault("triton", None)  # see test_convert._torch
    return torch


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A tiny model as .keras and its weights as a torch state_dict of numpy arrays."""
    rng = np.random.default_rng(0)
    model = build_resnet("resnet18", input_shape=SHAPE, num_classes=7, stem="cifar", width=8)
    for v in model.weights:
        if "moving_variance" in v.path:
            v.assign(rng.uniform(0.5, 2.0, tuple(v.shape)).astype("float32"))
        else:
            v.assign(rng.normal(0, 0.1, tuple(v.shape)).astype("float32"))
    folder = tmp_path_factory.mktemp("good")
    model.save(folder / "m.keras")
    return {"keras": folder / "m.keras", "sd": to_torch_state_dict(model)}


def save_safetensors(sd, path):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(path))
    return path


run_cli = partial(harness.run_cli, main)


def assert_one_line_error(err, *needles):
    line = harness.one_line(err, f"{PROG}: error: ")
    for needle in needles:
        assert str(needle) in line, err


def from_torch_args(src, out):
    return ("--from-torch", src, "--arch", "resnet18", "--input-size", "28", "--out", out)


# ------------------------------------------------------------------------------------------
# Weights that would make a useless model


@pytest.mark.parametrize("dtype", ["int64", "uint8"])
def test_integer_tensors_are_refused_and_named(good, dtype, tmp_path, capsys):
    sd = dict(good["sd"])
    for key in ("conv1.weight", "fc.weight"):
        sd[key] = np.clip(np.round(sd[key] * 10), 0, 3).astype(dtype)
    src = save_safetensors(sd, tmp_path / "w.safetensors")
    out = tmp_path / "m.keras"
    code, _, err = run_cli(capsys, *from_torch_args(src, out))
    assert code == 2
    assert_one_line_error(err, src, "conv1.weight", "fc.weight", dtype)
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]


def test_non_finite_weights_are_refused_and_named_before_writing(good, tmp_path, capsys):
    sd = {k: v.copy() for k, v in good["sd"].items()}
    sd["layer1.0.conv1.weight"][0, 0, 0, 0] = np.nan
    sd["bn1.running_var"][1] = np.inf
    src = save_safetensors(sd, tmp_path / "w.safetensors")
    code, _, err = run_cli(capsys, *from_torch_args(src, tmp_path / "m.keras"))
    assert code == 2
    assert_one_line_error(err, src, "layer1.0.conv1.weight", "bn1.running_var", "NaN")
    assert "fc.weight" not in err
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]


def test_a_negative_batchnorm_running_variance_is_refused_by_name(good, tmp_path, capsys):
    sd = {k: v.copy() for k, v in good["sd"].items()}
    sd["layer2.0.bn1.running_var"][3] = -0.5
    src = save_safetensors(sd, tmp_path / "w.safetensors")
    code, _, err = run_cli(capsys, *from_torch_args(src, tmp_path / "m.keras"))
    assert code == 2
    assert_one_line_error(err, src, "layer2.0.bn1.running_var", "negative")
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]
    # The library refuses it too, so training.fit --weights and every other caller do.
    with pytest.raises(ValueError, match=r"negative values .*layer2\.0\.bn1\.running_var"):
        convert.from_torch(sd, "resnet18", input_shape=SHAPE)


def test_non_finite_weights_in_a_keras_model_are_refused_before_writing(tmp_path, capsys):
    model = build_resnet("resnet18", input_shape=SHAPE, num_classes=3, stem="cifar", width=8)
    kernel = model.get_layer("predictions").kernel
    kernel.assign(np.full(tuple(kernel.shape), np.nan, "float32"))
    model.save(tmp_path / "m.keras")
    code, _, err = run_cli(capsys, "--to-torch", tmp_path / "m.keras", "--out",
                        tmp_path / "w.safetensors")
    assert code == 2
    assert_one_line_error(err, tmp_path / "m.keras", "fc.weight")
    assert sorted(os.listdir(tmp_path)) == ["m.keras"]


# ------------------------------------------------------------------------------------------
# Files that are not what they claim to be


def _lying(header_len: int, header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", header_len) + header + data


F32_2x2 = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
LIES = {
    "huge header length": _lying(2**62, b"{}"),
    "header length past the end": _lying(1000, b"{}"),
    "offsets past the end": _lying(
        len(json.dumps({"conv1.weight": F32_2x2})), json.dumps({"conv1.weight": F32_2x2}).encode(),
        b"\0" * 4),
    "bf16 offsets past the end": _lying(
        len(json.dumps({"conv1.weight": {**F32_2x2, "dtype": "BF16"}})),
        json.dumps({"conv1.weight": {**F32_2x2, "dtype": "BF16"}}).encode(), b"\0" * 4),
    "bad json": _lying(10, b"{not json}"),
    "json that is a list": _lying(2, b"[]"),
    "shorter than its length field": b"\x08\0\0",
    "empty": b"",
}


@pytest.mark.parametrize("lie", list(LIES))
def test_a_lying_safetensors_file_is_one_line(lie, tmp_path, capsys):
    src = tmp_path / "w.safetensors"
    src.write_bytes(LIES[lie])
    code, _, err = run_cli(capsys, *from_torch_args(src, tmp_path / "m.keras"))
    assert code == 2
    assert_one_line_error(err, src, "safetensors")
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]


def test_a_truncated_pth_is_one_line(good, tmp_path, capsys):
    torch = _torch()
    src = tmp_path / "w.pth"
    torch.save({k: torch.from_numpy(v.copy()) for k, v in good["sd"].items()}, src)
    src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    code, _, err = run_cli(capsys, *from_torch_args(src, tmp_path / "m.keras"))
    assert code == 2
    assert_one_line_error(err, src, "not a readable PyTorch checkpoint")
    assert sorted(os.listdir(tmp_path)) == ["w.pth"]


def _zip_without_a_model(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "hello")


KERAS_BREAKS = {
    "truncated": lambda p, good: p.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
    "text": lambda p, good: p.write_text("not a model"),
    "zip without a model": lambda p, good: _zip_without_a_model(p),
    "missing": lambda p, good: None,
}


@pytest.mark.parametrize("kind", list(KERAS_BREAKS))
def test_to_torch_from_a_broken_keras_file_is_one_line(good, kind, tmp_path, capsys):
    src = tmp_path / "m.keras"
    KERAS_BREAKS[kind](src, good["keras"])
    code, _, err = run_cli(capsys, "--to-torch", src, "--out", tmp_path / "w.safetensors")
    assert code == 2
    assert_one_line_error(err, src)
    assert "File not found" not in err or kind == "missing"
    assert not (tmp_path / "w.safetensors").exists()


def test_a_missing_output_folder_is_one_line(good, tmp_path, capsys):
    out = tmp_path / "no" / "such" / "m.safetensors"
    code, _, err = run_cli(capsys, "--to-torch", good["keras"], "--out", out)
    assert code == 2
    assert_one_line_error(err, tmp_path / "no" / "such")


# ------------------------------------------------------------------------------------------
# What is left at --out


def _fail_the_check(monkeypatch):
    """The file written no longer matches the model: the reload check must fail."""
    real = convert.cli.load_model

    def perturbed(path):
        model = real(path)
        kernel = model.get_layer("predictions").kernel
        kernel.assign(kernel.numpy() + 1.0)
        return model

    monkeypatch.setattr(convert.cli, "load_model", perturbed)


def test_a_failed_check_is_exit_1_and_leaves_no_file(good, tmp_path, capsys, monkeypatch):
    src = save_safetensors(good["sd"], tmp_path / "w.safetensors")
    _fail_the_check(monkeypatch)
    code, _, err = run_cli(capsys, *from_torch_args(src, tmp_path / "m.keras"))
    assert code == 1
    assert_one_line_error(err, tmp_path / "m.keras", "differs")
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]


def test_a_failed_to_torch_check_is_exit_1(good, tmp_path, capsys, monkeypatch):
    real = convert.cli.read_state_dict

    def altered(path):
        sd, notes = real(path)
        sd["fc.bias"] = sd["fc.bias"] + 1
        return sd, notes

    monkeypatch.setattr(convert.cli, "read_state_dict", altered)
    out = tmp_path / "w.safetensors"
    code, _, err = run_cli(capsys, "--to-torch", good["keras"], "--out", out)
    assert code == 1
    assert_one_line_error(err, out, "fc.bias")
    assert os.listdir(tmp_path) == []


def test_a_users_file_at_out_survives_every_failure(good, tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.keras"
    out.write_bytes(b"the user's own file")
    sd = {k: v.copy() for k, v in good["sd"].items()}
    sd["fc.bias"][0] = np.nan
    bad = save_safetensors(sd, tmp_path / "bad.safetensors")
    assert run_cli(capsys, *from_torch_args(bad, out))[0] == 2
    assert out.read_bytes() == b"the user's own file"
    src = save_safetensors(good["sd"], tmp_path / "w.safetensors")
    with monkeypatch.context() as m:
        _fail_the_check(m)
        assert run_cli(capsys, *from_torch_args(src, out))[0] == 1
    assert out.read_bytes() == b"the user's own file"
    assert sorted(os.listdir(tmp_path)) == ["bad.safetensors", "m.keras", "w.safetensors"]
    # A checked result does replace it.
    assert run_cli(capsys, *from_torch_args(src, out))[0] == 0
    assert zipfile.is_zipfile(out)
    assert sorted(os.listdir(tmp_path)) == ["bad.safetensors", "m.keras", "w.safetensors"]


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def test_written_files_follow_the_umask(good, tmp_path, capsys, umask_027):
    outs = [tmp_path / "w.safetensors"]
    try:
        _torch()
        outs.append(tmp_path / "w.pth")
    except pytest.skip.Exception:
        pass
    assert run_cli(capsys, "--to-torch", good["keras"], "--out", *outs)[0] == 0
    keras_out = tmp_path / "back.keras"
    assert run_cli(capsys, *from_torch_args(outs[0], keras_out))[0] == 0
    for path in [*outs, keras_out]:
        assert oct(path.stat().st_mode & 0o777) == oct(umask_027), path
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in [*outs, keras_out])
