"""The datasets' own published files: MNIST-style IDX files and CIFAR binary archives, read
with full validation (a truncated or corrupt file is named, never half-read)."""

from __future__ import annotations

import gzip
import io
import math
import os
import tarfile
import zlib

import numpy as np

from training.data.errors import DataFormatError, DatasetError

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_maybe_gzip(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataFormatError(f"{path}: cannot read ({e})") from e
    if raw[:2] == b"\x1f\x8b":
        # The whole stream at once: gzip checks its CRC32 and size only at the end, which a
        # reader that stops at the last byte it needs never reaches.
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataFormatError(f"{path}: corrupt or truncated gzip data ({e}); download it "
                                  "again (`gzip -t` checks a .gz file)") from e
    return raw


def parse_idx(path: str, expected_ndim: int, expected_shape: tuple | None = None) -> np.ndarray:
    """Reads an IDX file (optionally gzipped) of unsigned bytes, validating header and size.

    Format (yann.lecun.com/exdb/mnist): 2 zero bytes, type code 0x08 (ubyte), number of
    dimensions, one big-endian uint32 per dimension, then the data, nothing after it.
    """
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise DataFormatError(f"{path}: {len(data)} bytes, too short for an IDX header")
    zero, dtype_code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype_code != 0x08:
        raise DataFormatError(
            f"{path}: bad IDX magic number 0x{data[:4].hex()} (expected 0x000008{expected_ndim:02x}:"
            " unsigned bytes)"
        )
    if ndim != expected_ndim:
        raise DataFormatError(f"{path}: IDX file has {ndim} dimensions, expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if expected_shape is not None and dims[1:] != tuple(expected_shape):
        raise DataFormatError(f"{path}: items of shape {dims[1:]}, expected {tuple(expected_shape)}")
    if dims[0] == 0:
        raise DataFormatError(f"{path}: the IDX file holds no items")
    size = math.prod(dims)
    body = len(data) - header
    if body < size:
        raise DataFormatError(
            f"{path}: truncated: the header promises {size} bytes of data for shape {dims}, "
            f"found {body}"
        )
    if body > size:
        raise DataFormatError(f"{path}: {body - size} unexpected bytes after the data of shape {dims}")
    return np.frombuffer(data, dtype=np.uint8, count=size, offset=header).reshape(dims)


def read_idx_pair(images_path: str, labels_path: str, image_size: tuple, num_classes: int):
    h, w, c = image_size
    images = parse_idx(images_path, 3, (h, w))
    labels = parse_idx(labels_path, 1)
    if len(images) != len(labels):
        raise DataFormatError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    if labels.max() >= num_classes:
        raise DataFormatError(
            f"{labels_path}: label {int(labels.max())} out of range 0..{num_classes - 1}"
        )
    return images.reshape(-1, h, w, c), labels.astype(np.int32)


CIFAR_PIXELS = 32 * 32 * 3
CIFAR_LAYOUT = {
    # name: (tarball, folder inside it, {split: member files}, label bytes, label index used,
    #        classes of each label byte)
    "cifar10": ("cifar-10-binary.tar.gz", "cifar-10-batches-bin",
                {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
                1, 0, (10,)),
    "cifar100": ("cifar-100-binary.tar.gz", "cifar-100-binary",
                 {"train": ["train.bin"], "test": ["test.bin"]}, 2, 1, (20, 100)),
}


def parse_cifar_records(data: bytes, where: str, label_bytes: int, label_index: int,
                        label_classes: tuple):
    """Parses CIFAR binary records: label byte(s) then 1024 R, 1024 G, 1024 B bytes (row-major).

    The format has no header, so the checks are: a non-zero whole number of records, and every
    label byte within its range (coarse < 20 and fine < 100 for CIFAR-100).
    """
    record = label_bytes + CIFAR_PIXELS
    if len(data) == 0 or len(data) % record:
        raise DataFormatError(
            f"{where}: {len(data)} bytes is not a whole number of {record}-byte CIFAR records "
            "(truncated or not a CIFAR binary batch)"
        )
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    for i, classes in enumerate(label_classes):
        bad = rows[:, i] >= classes
        if bad.any():
            n = int(np.argmax(bad))
            raise DataFormatError(
                f"{where}: record {n} has label byte {i} = {int(rows[n, i])}, out of range "
                f"0..{classes - 1}"
            )
    images = rows[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), rows[:, label_index].astype(np.int32)


def read_cifar(name: str, split: str, location: str):
    """Reads a split from the CIFAR binary tarball or its extracted folder at `location`."""
    tarball, folder, members, label_bytes, label_index, classes = CIFAR_LAYOUT[name]
    chunks = []
    if os.path.isdir(location):
        for member in members[split]:
            path = os.path.join(location, member)
            if not os.path.isfile(path):
                raise DataFormatError(f"{location}: missing {member}")
            with open(path, "rb") as f:
                chunks.append(parse_cifar_records(f.read(), path, label_bytes, label_index, classes))
    else:
        raw = _read_maybe_gzip(location)
        try:
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
                for member in members[split]:
                    inner = f"{folder}/{member}"
                    try:
                        f = tar.extractfile(inner)
                    except KeyError:
                        f = None
                    if f is None:
                        raise DataFormatError(f"{location}: the archive has no member {inner}")
                    chunks.append(parse_cifar_records(
                        f.read(), f"{location}:{inner}", label_bytes, label_index, classes))
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataFormatError(f"{location}: corrupt or truncated tar.gz archive ({e})") from e
    images = np.concatenate([c[0] for c in chunks])
    labels = np.concatenate([c[1] for c in chunks])
    return images, labels


def find_archive(name: str, data_dir: str | None) -> dict | None:
    """Paths of `name`'s archive files under `data_dir` (or ./data), or None if absent.

    MNIST-style IDX files share their names between MNIST and Fashion-MNIST, so they are looked
    for in DATA_DIR/<name>/ only; CIFAR tarballs (or their extracted folders) in DATA_DIR/ and
    DATA_DIR/<name>/.
    """
    root = data_dir or "data"
    if name in ("mnist", "fashion_mnist"):
        folder = os.path.join(root, name)
        found, missing = {}, []
        for split, files in IDX_FILES.items():
            paths = []
            for base in files:
                hit = _idx_file(folder, base)
                if hit is None:
                    missing.append(base)
                paths.append(hit)
            found[split] = tuple(paths)
        if not missing:
            return found
        if len(missing) < 4:
            raise DatasetError(
                f"{name}: {folder}/ holds only some of the four IDX files; missing "
                + ", ".join(f"{m}(.gz)" for m in missing) + f": put them in {folder}/")
        loose = [b for pair in IDX_FILES.values() for b in pair if _idx_file(root, b)]
        if loose:
            # MNIST and Fashion-MNIST share these file names: which one a folder holds cannot
            # be told from it, so only DATA_DIR/<name>/ is read (and TFDS is not silently used).
            raise DatasetError(
                f"{name}: found {', '.join(loose)} directly in {root}/, but IDX files are read "
                f"from {folder}/ only (mnist and fashion_mnist use the same file names): move "
                f"them into {folder}/")
        return None
    if name in CIFAR_LAYOUT:
        tarball, folder, *_ = CIFAR_LAYOUT[name]
        for d in (root, os.path.join(root, name)):
            for candidate in (os.path.join(d, folder), os.path.join(d, tarball)):
                if os.path.exists(candidate):
                    return {"train": candidate, "test": candidate}
    return None


def _idx_file(folder: str, base: str) -> str | None:
    return next((os.path.join(folder, base + ext) for ext in (".gz", "")
                 if os.path.isfile(os.path.join(folder, base + ext))), None)


def archive_help(name: str, data_dir: str | None) -> str:
    root = data_dir or "data"
    if name in ("mnist", "fashion_mnist"):
        files = ", ".join(f + ".gz" for pair in IDX_FILES.values() for f in pair)
        return f"put {files} in {os.path.join(root, name)}/"
    if name in CIFAR_LAYOUT:
        return f"put {CIFAR_LAYOUT[name][0]} in {root}/"
    return ""
