"""The end-to-end benchmark runs training.fit as users do and reports it beside its model and
torchvision (figures only: nothing asserts a speed)."""

import importlib.util
import json

import numpy as np
import pytest

from benchmarks import e2e
from training.datasets import load_arrays


@pytest.mark.parametrize("name", e2e.WRITABLE)
def test_written_archives_read_back_through_the_real_loader(tmp_path, name):
    e2e.write_archive(name, str(tmp_path), n_train=30, n_test=12)
    x, y, source = load_arrays(name, "train", str(tmp_path), "archive", val_fraction=0.0)
    x_te, _, _ = load_arrays(name, "test", str(tmp_path), "archive")
    assert source.startswith("archive:")
    assert len(x) >= 30 and len(x_te) >= 12 and x.dtype == np.uint8
    assert x.std() > 50  # random pixels, not zeros


def test_options_the_benchmark_owns_are_refused(capsys):
    with pytest.raises(SystemExit) as e:
        e2e.main(["--dataset", "mnist", "--", "--epochs", "3"])
    assert e.value.code == 2 and "--epochs is set by the benchmark" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        e2e.main(["--dataset", "imagenet"])
    with pytest.raises(SystemExit):
        e2e.main(["--epochs", "1"])


@pytest.mark.slow
def test_reports_fit_beside_train_on_batch_and_torch(tmp_path, capsys):
    has_torch = bool(importlib.util.find_spec("torch") and importlib.util.find_spec("torchvision"))
    out = tmp_path / "e2e.json"
    argv = ["--dataset", "mnist", "--steps", "2", "--repeats", "1", "--json", str(out),
            *([] if has_torch else ["--no-torch"]), "--", "--batch-size", "8"]
    assert e2e.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["batch_size"] == 8 and res["steps_per_epoch"] == 2
    assert all(v > 0 for v in res["median_img_s"].values())
    assert set(res["runs"]) == ({"fit", "train_on_batch", "torch"} if has_torch
                                else {"fit", "train_on_batch"})
    assert res["fit_over_train_on_batch"] > 0
    text = capsys.readouterr().out
    assert "python -m training.fit --dataset mnist --subset 16 --epochs 2" in text
    assert "fit / train_on_batch" in text and "AVX" in res["machine"]
