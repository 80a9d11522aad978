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
