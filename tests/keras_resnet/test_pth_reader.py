"""keras_resnet.convert.pth reads torch.save's files as torch.load(weights_only=True) does,
without torch, and refuses what weights_only refuses."""

import collections
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest

from keras_resnet.convert.formats import read_state_dict
from keras_resnet.convert.pth import read_pth


def _saved(tmp_path, obj, name="w.pth"):
    import torch

    path = tmp_path / name
    torch.save(obj, path)
    return path


def _checkpoint():
    import torch

    torch.manual_seed(0)
    shared = torch.arange(12, dtype=torch.float32)
    state = collections.OrderedDict(
        [
            ("conv.weight", torch.randn(4, 3, 3, 3)),
            ("bn.num_batches_tracked", torch.tensor(7)),  # a 0-d int64 tensor
            ("half", torch.randn(2, 5).half()),
            ("bf16", torch.randn(3, 2).bfloat16()),
            ("transposed", torch.randn(3, 4).t()),  # a strided view of its storage
            ("slice", shared[3:9].view(2, 3)),  # an offset into a storage shared with "whole"
            ("whole", shared),
            ("mask", torch.tensor([True, False, True])),
            ("empty", torch.zeros(0, 3)),
            ("param", torch.nn.Parameter(torch.ones(2))),
        ]
    )
    return {"epoch": 3, "model": state, "note": "text", "sizes": (1, 2.5, None)}


def _as_numpy(value):
    if hasattr(value, "detach"):
        t = value.detach()
        return (t.float() if str(t.dtype) == "torch.bfloat16" else t).numpy()
    if isinstance(value, dict):
        return {k: _as_numpy(v) for k, v in value.items()}
    return value


def test_reads_what_torch_load_reads_without_torch(tmp_path, monkeypatch):
    import torch

    path = _saved(tmp_path, _checkpoint())
    expected = _as_numpy(torch.load(path, weights_only=True))
    monkeypatch.setitem(sys.modules, "torch", None)  # any `import torch` now fails
    got = read_pth(path)
    assert got.keys() == expected.keys()
    assert (got["epoch"], got["note"], got["sizes"]) == (3, "text", (1, 2.5, None))
    assert isinstance(got["model"], collections.OrderedDict)
    assert list(got["model"]) == list(expected["model"])
    for key, want in expected["model"].items():
        have = got["model"][key]
        assert isinstance(have, np.ndarray), key
        assert have.shape == want.shape and have.dtype == want.dtype, key
        np.testing.assert_array_equal(have, want, err_msg=key)
    state, notes = read_state_dict(path)
    assert notes == ["took the state_dict from the checkpoint's 'model' entry"]
    np.testing.assert_array_equal(state["slice"], np.arange(3, 9, dtype=np.float32).reshape(2, 3))


def test_a_torchvision_checkpoint_gives_the_same_arrays(tmp_path):
    import torch
    import torchvision

    model = torchvision.models.resnet18(num_classes=10).eval()
    path = _saved(tmp_path, model.state_dict(), "resnet18-0123abcd.pth")
    got = read_pth(path)
    want = model.state_dict()
    assert list(got) == list(want)
    for key, tensor in want.items():
        np.testing.assert_array_equal(got[key], tensor.numpy(), err_msg=key)


class _RunsCode:
    """Unpickling this would call os.mkdir(path): stands in for arbitrary code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_code_in_a_checkpoint_is_refused_and_never_runs(tmp_path, monkeypatch):
    import torch

    sentinel = tmp_path / "pwned"
    path = _saved(tmp_path, {"w": torch.zeros(1), "x": _RunsCode(str(sentinel))})
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(pickle.UnpicklingError, match="posix.mkdir|os.mkdir"):
        read_pth(path)
    with pytest.raises(ValueError, match="refused to load: it holds something other than "
                                         "tensors"):
        read_state_dict(path)
    assert not sentinel.exists()


def test_damaged_checkpoints_are_one_clear_error(tmp_path, monkeypatch):
    import torch

    good = _saved(tmp_path, {"w": torch.ones(4)})
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    no_pickle = tmp_path / "nopickle.pth"
    with zipfile.ZipFile(no_pickle, "w") as z:
        z.writestr("archive/version", "3")
    lying = tmp_path / "lying.pth"  # the tensor claims more elements than its storage holds
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(lying, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            dst.writestr(item, data[:4] if "/data/" in item else data)
    monkeypatch.setitem(sys.modules, "torch", None)
    for path in (truncated, no_pickle, lying):
        with pytest.raises(ValueError, match="not a readable PyTorch checkpoint|refused to load") \
                as err:
            read_state_dict(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


# Hand-written pickles (protocol 2 opcodes), as a crafted file would hold them.
def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _int(value: int) -> bytes:
    body = pickle.encode_long(value)
    return b"\x8a" + bytes([len(body)]) + body  # LONG1


def _str(text: str) -> bytes:
    return b"X" + len(text.encode()).to_bytes(4, "little") + text.encode()  # BINUNICODE


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor(offset, size, stride, kind="FloatStorage", numel=4) -> bytes:
    storage = _tuple(_str("storage"), _global("torch", kind), _str("0"), _str("cpu"),
                     _int(numel)) + b"Q"  # BINPERSID
    return (_global("torch._utils", "_rebuild_tensor_v2")
            + _tuple(storage, _int(offset), _tuple(*map(_int, size)),
                     _tuple(*map(_int, stride)), b"\x89",  # NEWFALSE: requires_grad
                     _global("collections", "OrderedDict") + b")R")
            + b"R")


def _crafted(path, pkl: bytes, data: bytes = np.arange(4, dtype="<f4").tobytes(),
             compression=zipfile.ZIP_STORED, extra=()):
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", data)
        for name, body in extra:
            with pytest.warns(UserWarning, match="Duplicate name"):
                z.writestr(name, body)
    return path


def _one_refusal(path, *needles):
    with pytest.raises(ValueError) as err:
        read_state_dict(path)
    text = str(err.value)
    assert "\n" not in text and str(path) in text and "refused" in text, text
    for needle in needles:
        assert needle in text, text


def test_a_well_formed_crafted_tensor_reads(tmp_path):
    path = _crafted(tmp_path / "ok.pth", b"\x80\x02}" + _str("w") + _tensor(1, (3,), (1,))
                    + b"s.")
    np.testing.assert_array_equal(read_state_dict(path)[0]["w"], [1, 2, 3])


@pytest.mark.parametrize("offset, size, stride, needle", [
    (-1, (), (), "storage offset is -1"),             # a scalar that picked another element
    (-8, (4,), (1,), "storage offset is -8"),          # reads before the data
    (3, (4,), (-1,), "stride is -1"),                  # walks backwards out of the data
    (0, (2, 2), (2**40, 1), "reaches element"),        # far past the end
    (4, (), (), "reaches element"),                    # a scalar one past the end
])
def test_a_tensor_outside_its_storage_is_refused(tmp_path, offset, size, stride, needle):
    path = _crafted(tmp_path / "oob.pth", b"\x80\x02}" + _str("w")
                    + _tensor(offset, size, stride) + b"s.")
    _one_refusal(path, needle)


def test_a_huge_tensor_over_a_tiny_storage_is_refused_before_allocating(tmp_path):
    import tracemalloc

    # 4000 x 4000 float32 (64 MB) over one storage element with strides (0, 0): a file of a
    # few hundred bytes may not make the reader allocate that much.
    path = _crafted(tmp_path / "bomb.pth", b"\x80\x02}" + _str("w")
                    + _tensor(0, (4000, 4000), (0, 0)) + b"s.")
    tracemalloc.start()
    try:
        _one_refusal(path, "a tensor of shape [4000, 4000] would take 64000000 bytes")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak


def test_an_entry_that_inflates_far_beyond_the_file_is_refused_before_inflating(tmp_path):
    import tracemalloc

    numel = 16 * 2**20  # 64 MiB of zeros deflate to a few dozen KiB
    path = _crafted(tmp_path / "zipbomb.pth", b"\x80\x02}" + _str("w")
                    + _tensor(0, (numel,), (1,), numel=numel) + b"s.",
                    data=bytes(4 * numel), compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        _one_refusal(path, "would inflate the checkpoint to over")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 8 * 2**20, peak


def test_a_storage_size_that_differs_from_its_entry_is_refused(tmp_path):
    path = _crafted(tmp_path / "short.pth", b"\x80\x02}" + _str("w")
                    + _tensor(0, (2,), (1,), numel=9) + b"s.")
    _one_refusal(path, "claims 9 FloatStorage elements, but its entry holds 16 bytes")


def test_two_entries_of_one_name_are_refused(tmp_path):
    path = _crafted(tmp_path / "dup.pth", b"\x80\x02}" + _str("w") + _tensor(0, (4,), (1,))
                    + b"s.", extra=[("archive/data/0", np.ones(4, "<f4").tobytes())])
    _one_refusal(path, "two entries named 'archive/data/0'")


def test_a_refused_file_cannot_change_how_later_files_are_read(tmp_path):
    import torch

    # BUILD onto the storage type's stand-in: {"dtype": "bfloat16"} would make every later
    # float16 storage read as bfloat16 words.
    hostile = _crafted(tmp_path / "build.pth", b"\x80\x02" + _global("torch", "HalfStorage")
                       + b"}" + _str("dtype") + _str("bfloat16") + b"sb.")
    with pytest.raises(ValueError):
        read_state_dict(hostile)
    good = _saved(tmp_path, {"h": torch.linspace(-2, 2, 8).half()})
    np.testing.assert_array_equal(read_state_dict(good)[0]["h"],
                                  torch.linspace(-2, 2, 8).half().numpy())


def test_a_refused_checkpoint_is_one_line_and_exit_2_in_the_converter(tmp_path, capsys):
    from keras_resnet.convert import main
    from tests.harness import one_line, run_cli

    path = _crafted(tmp_path / "oob.pth", b"\x80\x02}" + _str("w") + _tensor(-8, (4,), (1,))
                    + b"s.")
    result = run_cli(main, capsys, "--from-torch", path, "--arch", "resnet18", "--out",
                     tmp_path / "m.keras")
    assert result.code == 2
    assert "storage offset is -8" in one_line(result.err)
    assert not (tmp_path / "m.keras").exists()
