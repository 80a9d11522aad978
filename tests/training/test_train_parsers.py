"""The IDX and CIFAR binary parsers on small files written here, and on broken ones."""

import gzip
import io
import os
import tarfile

import numpy as np
import pytest

from training.data.archives import IDX_FILES
from training.data import DataFormatError, DatasetError, load, load_arrays


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=20, n_test=10, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        arrays[split] = (x, y)
        for base, arr in zip(IDX_FILES[split], (x, y)):
            data = idx_bytes(arr)
            path = os.path.join(folder, base + (".gz" if compress else ""))
            with open(path, "wb") as f:
                f.write(gzip.compress(data) if compress else data)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_idx_roundtrip_through_load(tmp_path, compress):
    arrays = write_mnist(tmp_path / "mnist", compress=compress)
    x, y, source = load_arrays("mnist", "test", data_dir=str(tmp_path), source="archive")
    assert source.startswith("archive:")
    assert np.array_equal(x[..., 0], arrays["test"][0]) and np.array_equal(y, arrays["test"][1])
    x_tr, y_tr, _ = load_arrays("mnist", "train", data_dir=str(tmp_path), val_fraction=0.0)
    assert x_tr.shape == (20, 28, 28, 1) and sorted(y_tr) == sorted(arrays["train"][1])
    batch = next(iter(load("mnist", "test", batch_size=4, data_dir=str(tmp_path))))
    assert batch[0].shape == (4, 28, 28, 1) and batch[0].dtype.name == "float32"


def _corrupt(tmp_path, name, mutate):
    folder = tmp_path / "fashion_mnist"
    write_mnist(folder)
    path = folder / name
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(mutate(data))
    return str(path)


@pytest.mark.parametrize("name, mutate, message", [
    ("t10k-images-idx3-ubyte.gz", lambda d: gzip.compress(d[:-100]), "truncated"),
    ("t10k-images-idx3-ubyte.gz", lambda d: gzip.compress(d + b"xx"), "unexpected bytes"),
    ("t10k-images-idx3-ubyte.gz", lambda d: gzip.compress(b"\x00\x00\x09\x03" + d[4:]), "magic"),
    ("t10k-images-idx3-ubyte.gz", lambda d: gzip.compress(d)[:-30], "gzip"),
    ("t10k-labels-idx1-ubyte.gz", lambda d: gzip.compress(d[:8] + bytes([12]) + d[9:]), "out of range"),
    ("t10k-labels-idx1-ubyte.gz", lambda d: gzip.compress(idx_bytes(np.zeros(9, np.uint8))), "10 images but"),
    ("t10k-labels-idx1-ubyte.gz", lambda d: gzip.compress(idx_bytes(np.zeros((10, 2), np.uint8))), "dimensions"),
    ("t10k-images-idx3-ubyte.gz", lambda d: gzip.compress(idx_bytes(np.zeros((10, 27, 28), np.uint8))), "shape"),
    ("t10k-images-idx3-ubyte.gz", lambda d: b"", "too short"),
])
def test_idx_corruption_is_reported_with_the_file_name(tmp_path, name, mutate, message):
    _corrupt(tmp_path, name, mutate)
    with pytest.raises(DataFormatError, match=message) as err:
        load_arrays("fashion_mnist", "test", data_dir=str(tmp_path), source="archive")
    assert "t10k-" in str(err.value)


def cifar_records(n, label_bytes, rng, classes=(10,)):
    rows = []
    for _ in range(n):
        labels = bytes(int(rng.integers(0, c)) for c in classes)
        rows.append(labels + rng.integers(0, 256, 3072, dtype=np.uint8).tobytes())
    return b"".join(rows)


def write_cifar10(root, n=3, extracted=False, override=None):
    rng = np.random.default_rng(1)
    members = {f"data_batch_{i}.bin": cifar_records(n, 1, rng) for i in range(1, 6)}
    members["test_batch.bin"] = cifar_records(n, 1, rng)
    members.update(override or {})
    os.makedirs(root, exist_ok=True)
    if extracted:
        folder = os.path.join(root, "cifar-10-batches-bin")
        os.makedirs(folder)
        for k, v in members.items():
            with open(os.path.join(folder, k), "wb") as f:
                f.write(v)
        return members, folder
    path = os.path.join(root, "cifar-10-binary.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        for k, v in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{k}")
            info.size = len(v)
            tar.addfile(info, io.BytesIO(v))
    return members, path


@pytest.mark.parametrize("extracted", [False, True])
def test_cifar10_binary_layout(tmp_path, extracted):
    members, _ = write_cifar10(str(tmp_path), extracted=extracted)
    x, y, _ = load_arrays("cifar10", "train", data_dir=str(tmp_path), source="archive",
                          val_fraction=0.0)
    assert x.shape == (15, 32, 32, 3) and x.dtype == np.uint8
    raw = np.frombuffer(members["test_batch.bin"], np.uint8).reshape(3, 3073)
    xt, yt, _ = load_arrays("cifar10", "test", data_dir=str(tmp_path), source="archive")
    assert np.array_equal(yt, raw[:, 0])
    # channel-planar R, G, B rows of 32 pixels -> NHWC
    assert xt[1, 0, 5, 0] == raw[1, 1 + 5] and xt[1, 2, 3, 1] == raw[1, 1 + 1024 + 2 * 32 + 3]
    assert xt[2, 31, 31, 2] == raw[2, 3072]


def test_cifar100_uses_fine_labels(tmp_path):
    rng = np.random.default_rng(2)
    data = {"train.bin": cifar_records(4, 2, rng, (20, 100)),
            "test.bin": cifar_records(2, 2, rng, (20, 100))}
    folder = tmp_path / "cifar100" / "cifar-100-binary"
    folder.mkdir(parents=True)
    for k, v in data.items():
        (folder / k).write_bytes(v)
    x, y, _ = load_arrays("cifar100", "test", data_dir=str(tmp_path))
    raw = np.frombuffer(data["test.bin"], np.uint8).reshape(2, 3074)
    assert np.array_equal(y, raw[:, 1]) and x.shape == (2, 32, 32, 3)


@pytest.mark.parametrize("override, message", [
    ({"test_batch.bin": b"\x01" * 3000}, "not a whole number"),
    ({"test_batch.bin": bytes([10]) + bytes(3072)}, "out of range"),
])
def test_cifar_corrupt_records(tmp_path, override, message):
    write_cifar10(str(tmp_path), override=override)
    with pytest.raises(DataFormatError, match=message) as err:
        load_arrays("cifar10", "test", data_dir=str(tmp_path), source="archive")
    assert "test_batch.bin" in str(err.value) and "cifar-10-binary.tar.gz" in str(err.value)


def test_cifar_truncated_tarball_and_missing_member(tmp_path):
    _, path = write_cifar10(str(tmp_path / "a"))
    blob = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(blob[: len(blob) // 2])
    with pytest.raises(DataFormatError, match="cifar-10-binary.tar.gz") as err:
        load_arrays("cifar10", "train", data_dir=str(tmp_path / "a"), source="archive")
    assert "truncated" in str(err.value) or "corrupt" in str(err.value)
    folder = tmp_path / "b" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    (folder / "test_batch.bin").write_bytes(bytes(3073))
    with pytest.raises(DataFormatError, match="missing data_batch_1.bin"):
        load_arrays("cifar10", "train", data_dir=str(tmp_path / "b"), source="archive")


def test_missing_archive_names_the_files_to_place(tmp_path):
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz"):
        load_arrays("mnist", "test", data_dir=str(tmp_path), source="archive")
