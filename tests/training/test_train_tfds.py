"""The TFDS source through tfds.testing.mock_data, and the fast offline failure."""

import time

import numpy as np
import pytest

from training.data import tfds_source
from training.data import DatasetError, load, load_arrays



def test_tfds_path_with_mock_data(tmp_path):
    # A dependency: a broken install (importlib_resources missing, STACK_NOTES) must fail here.
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        x, y, source = load_arrays("mnist", "test", data_dir=str(tmp_path), source="tfds")
        assert source == "tfds"
        assert x.shape == (40, 28, 28, 1) and x.dtype == np.uint8 and y.dtype == np.int32
        assert y.min() >= 0 and y.max() < 10
        ds = load("mnist", "train", batch_size=16, data_dir=str(tmp_path), source="tfds",
                  val_fraction=0.25, seed=0)
        batches = list(ds)
        assert len(batches) == 2  # 40 - 10 held out = 30 -> 16 + 14
        assert batches[0][0].shape == (16, 28, 28, 1) and batches[0][0].dtype.name == "float32"


def test_offline_tfds_fails_fast_with_advice(tmp_path, monkeypatch):
    probed = []
    monkeypatch.setattr(tfds_source, "network_available", lambda host, *a, **k: probed.append(host) or False)
    start = time.perf_counter()
    with pytest.raises(DatasetError) as err:
        load_arrays("cifar10", "test", data_dir=str(tmp_path / "empty"), source="auto")
    assert time.perf_counter() - start < 10
    assert probed == ["www.cs.toronto.edu"]
    message = str(err.value)
    for advice in ("cifar-10-binary.tar.gz", "--dataset digits", "--data-dir", "offline"):
        assert advice in message


def test_network_probe_gives_up_quickly():
    start = time.perf_counter()
    assert tfds_source.network_available("host.invalid", timeout=1.0) is False
    assert time.perf_counter() - start < 5


def test_fit_cli_offline_mnist_explains_how_to_train_offline(tmp_path, monkeypatch, capsys):
    """The machine's own network does not matter: the probe is made to find no network."""
    from training import fit

    probed = []
    monkeypatch.setattr(tfds_source, "network_available",
                        lambda host, *a, **k: probed.append(host) or False)
    code = fit.main(["--dataset", "mnist", "--epochs", "1", "--data-dir", str(tmp_path / "data"),
                     "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert probed == ["storage.googleapis.com"]
    assert "train-images-idx3-ubyte.gz" in err and "--dataset digits" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # a failed start leaves no empty run directory
