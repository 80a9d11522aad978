"""The end-to-end benchmark runs training.fit as users do and reports it beside its model and
torchvision (figures only: nothing asserts a speed). A whole run of it is README's block
(tests/test_readme.py::test_e2e_benchmark_block)."""

import numpy as np
import pytest

from benchmarks.train import e2e
from training.data import load_arrays


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
