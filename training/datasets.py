"""One table of datasets and one function that turns any of them into tf.data pipelines.

Every built-in source (TFDS, the datasets' own archive files, scikit-learn's bundled digits,
synthetic noise) is decoded once into uint8 NHWC numpy arrays held in memory; the pipelines
gather batches from them, augment in tf.data and yield ``(float32 raw 0..255 images, int32
labels)``. An image folder ("folder") is streamed from its files instead (training.folders:
parallel decoding, optional cache), with the same element type and static shape.
Normalization is *not* done here: it is the model's first layer (``build_resnet(...,
normalization=(info.mean, info.std))``), so trained and exported models take raw pixels.

Shuffling and augmentation are stateless functions of ``(seed, epoch, batch index)``, so a
run resumed at epoch k sees exactly the batches an uninterrupted run would have seen.

    from training.datasets import load
    train = load("mnist", "train", batch_size=128)   # augmented, reshuffled every iteration
    test = load("mnist", "test", batch_size=256)
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import io
import math
import os
import socket
import tarfile
import threading
import zlib
from typing import Sequence

import numpy as np

SPLITS = ("train", "val", "test")
SOURCES = ("auto", "archive", "tfds")
# Held-out validation images are drawn from the official training split with this fixed seed,
# independent of the training seed, so every run of a dataset validates on the same images.
VAL_SPLIT_SEED = 20261124
# Seconds to wait for a TCP connection before declaring the machine offline. TFDS on its own
# retries each download for minutes.
NETWORK_TIMEOUT_S = 3.0

# https://www.tensorflow.org/datasets/catalog/fashion_mnist
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
# Fine labels in index order, as in the archive's fine_label_names.txt (TFDS only ships indices
# offline).
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)
DIGIT_CLASSES = tuple(str(i) for i in range(10))

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    source: str  # where the images come from, in words
    image_size: tuple  # (height, width, channels) of the arrays the pipelines yield
    num_classes: int
    class_names: tuple
    mean: tuple  # per channel, raw 0..255 pixel units (the model's normalization layer)
    std: tuple
    augmentation: str  # "mnist" (rotation + shift), "cifar" (pad-4 crop + flip) or "none"
    splits: dict  # official split sizes
    tfds_name: str | None = None
    download_host: str | None = None  # probed before a TFDS download
    synthetic: bool = False  # noise: accuracy on it means nothing and is never reported
    folder: bool = False  # a user's image folder: classes, sizes and statistics come from it
    # "folder" only: training.preprocessing.Preprocessing of the images, and the
    # (path, reason) of files skipped as undecodable.
    preprocessing: object | None = None
    skipped: tuple = ()


DATASETS = {
    # Placeholders: get_info("folder", (H, W, C), data_dir=DIR) reads the real values from DIR.
    "folder": DatasetInfo(
        "folder", "an image folder (--data-dir DIR: DIR/<class>/* or DIR/train|val|test/<class>/*)",
        (32, 32, 3), 2, ("class_0", "class_1"), (127.5,), (64.0,), "mnist", {}, folder=True),
    "mnist": DatasetInfo(
        "mnist", "TFDS 'mnist' or the IDX .gz files (yann.lecun.com layout)", (28, 28, 1), 10,
        DIGIT_CLASSES,
        # torchvision's MNIST constants (0.1307,), (0.3081,) times 255; seed code.
        (0.1307 * 255,), (0.3081 * 255,), "mnist", {"train": 60000, "test": 10000},
        tfds_name="mnist", download_host="storage.googleapis.com",
    ),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", "TFDS 'fashion_mnist' or the IDX .gz files (zalandoresearch layout)",
        (28, 28, 1), 10, FASHION_MNIST_CLASSES,
        (0.2860 * 255,), (0.3530 * 255,), "mnist", {"train": 60000, "test": 10000},
        tfds_name="fashion_mnist", download_host="fashion-mnist.s3-website.eu-central-1.amazonaws.com",
    ),
    "cifar10": DatasetInfo(
        "cifar10", "TFDS 'cifar10' or cifar-10-binary.tar.gz", (32, 32, 3), 10, CIFAR10_CLASSES,
        # Per-pixel statistics of the training set. The seed code's (0.2023, 0.1994, 0.2010)
        # is a widely copied std of per-image means, not of pixels.
        (0.4914 * 255, 0.4822 * 255, 0.4465 * 255), (0.2470 * 255, 0.2435 * 255, 0.2616 * 255),
        "cifar", {"train": 50000, "test": 10000},
        tfds_name="cifar10", download_host="www.cs.toronto.edu",
    ),
    "cifar100": DatasetInfo(
        "cifar100", "TFDS 'cifar100' or cifar-100-binary.tar.gz (fine labels)", (32, 32, 3), 100,
        CIFAR100_CLASSES,
        (0.5071 * 255, 0.4865 * 255, 0.4409 * 255), (0.2673 * 255, 0.2564 * 255, 0.2762 * 255),
        "cifar", {"train": 50000, "test": 10000},
        tfds_name="cifar100", download_host="www.cs.toronto.edu",
    ),
    # scikit-learn ships these 1797 real 8x8 scans (UCI optdigits test set), so they work on a
    # machine without network. They are upscaled to 20x20 and padded to 28x28, the layout of
    # MNIST (digits size-normalised into a 20x20 box centred in 28x28): a digits model has
    # MNIST's input shape and the ImageNet stem (minimum 17 px) applies, and the MNIST
    # rotation/shift augmentation does not push strokes out of the frame. Values 0..16 are
    # scaled to 0..255. Mean/std measured on all 1797 images after that transform.
    "digits": DatasetInfo(
        "digits", "scikit-learn load_digits (bundled, offline), 8x8 -> 28x28", (28, 28, 1), 10,
        DIGIT_CLASSES, (39.7134,), (70.7168,), "mnist", {"train": 1438, "test": 359},
    ),
    "synthetic": DatasetInfo(
        "synthetic", "uniform noise with random labels (benchmarks and smoke tests only)",
        (32, 32, 3), 10, tuple(f"class_{i}" for i in range(10)), (127.5,), (73.9,), "none",
        {"train": 1024, "test": 256}, synthetic=True,
    ),
}


class DatasetError(RuntimeError):
    """A dataset cannot be loaded; the message says why and what to do."""


class DataFormatError(ValueError):
    """An archive file is truncated, corrupt or not what its name says; the message names it."""


def get_info(name: str, image_shape: Sequence[int] | None = None,
             num_classes: int | None = None, data_dir: str | None = None,
             resize: str = "auto") -> DatasetInfo:
    """The table entry for `name`; `image_shape`/`num_classes` only reshape "synthetic";
    "folder" needs `data_dir` and `image_shape` (H, W, C) and is read from the folder
    (`resize`: see training.preprocessing)."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    info = DATASETS[name]
    if info.folder:
        return folder_info(data_dir, image_shape, resize)
    if not info.synthetic:
        if image_shape is not None and tuple(image_shape) != info.image_size:
            raise ValueError(f"image_shape can only be chosen for 'synthetic', not {name!r}")
        return info
    changes = {}
    if image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"synthetic image_shape must be (height, width, channels), got {image_shape!r}")
        changes["image_size"] = shape
    if num_classes is not None:
        if num_classes < 2:
            raise ValueError(f"synthetic num_classes must be >= 2, got {num_classes}")
        changes["num_classes"] = int(num_classes)
        changes["class_names"] = tuple(f"class_{i}" for i in range(num_classes))
    return dataclasses.replace(info, **changes)


def _folder_shape(image_shape) -> tuple:
    from training.folders import FolderError

    shape = tuple(int(v) for v in image_shape) if image_shape is not None else ()
    if len(shape) != 3 or min(shape) < 1 or shape[2] not in (1, 3):
        raise FolderError("--dataset folder needs --image-size H,W (every image is resized to "
                          "it) and --channels 1 or 3")
    return shape


@functools.lru_cache(maxsize=8)
def _folder_data(root: str, shape: tuple, resize: str):
    from training import folders
    from training.preprocessing import Preprocessing

    return folders.check(folders.scan(root), Preprocessing.for_shape(shape, resize))


def folder_data(data_dir: str | None, image_shape, resize: str = "auto"):
    """training.folders.FolderData of an image folder: scanned and every file decode-checked
    once per process (the check names and skips undecodable files)."""
    from training import folders

    folders.scan(data_dir)  # its one-line errors before the shape's
    return _folder_data(os.path.abspath(data_dir), _folder_shape(image_shape), resize)


def folder_scan(data_dir: str | None):
    from training import folders

    return folders.scan(data_dir)


def folder_info(data_dir: str | None, image_shape, resize: str = "auto") -> DatasetInfo:
    """The DatasetInfo of an image folder at `image_shape`: class names from its folders,
    per-channel mean/std of its training images (the model's normalization)."""
    data = folder_data(data_dir, image_shape, resize)
    return dataclasses.replace(
        DATASETS["folder"],
        source=f"image folder {os.path.abspath(data_dir)} ({data.scan.layout})",
        image_size=(data.prep.height, data.prep.width, data.prep.channels),
        num_classes=len(data.scan.class_names), class_names=data.scan.class_names,
        mean=data.mean, std=data.std,
        augmentation="crop" if data.prep.resize == "crop" else "mnist",
        splits={k: len(v) for k, v in data.files.items()},
        preprocessing=data.prep, skipped=data.skipped)


def folder_run_record(info: DatasetInfo) -> dict:
    """What a run's config.json keeps of a folder's preprocessing (read back by
    training.predict, export.predict and evaluate) and of the files it skipped."""
    return {"preprocessing": info.preprocessing.to_dict(),
            "skipped_images": {"count": len(info.skipped),
                               "files": [{"path": p, "reason": r} for p, r in info.skipped]}}


def check_cache(cache: str | None) -> None:
    if cache is None or cache == "memory":
        return
    parent = os.path.dirname(os.path.abspath(cache))
    if not os.path.isdir(parent):
        raise ValueError(f"--cache {cache}: the folder {parent} does not exist (give 'memory' "
                         "or a file path prefix in an existing folder)")


# --------------------------------------------------------------------------------------------
# Archive parsers (the datasets' own published formats), with full validation.


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


def _archive_help(name: str, data_dir: str | None) -> str:
    root = data_dir or "data"
    if name in ("mnist", "fashion_mnist"):
        files = ", ".join(f + ".gz" for pair in IDX_FILES.values() for f in pair)
        return f"put {files} in {os.path.join(root, name)}/"
    if name in CIFAR_LAYOUT:
        return f"put {CIFAR_LAYOUT[name][0]} in {root}/"
    return ""


# --------------------------------------------------------------------------------------------
# TFDS


def network_available(host: str, port: int = 443, timeout: float = NETWORK_TIMEOUT_S) -> bool:
    """True if a TCP connection to host:port opens within `timeout` seconds (DNS included)."""
    result = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def _offline_message(info: DatasetInfo, data_dir: str | None, why: str) -> str:
    return (
        f"Cannot get dataset {info.name!r} from TFDS: {why}.\n"
        "To train offline, either:\n"
        f"  - {_archive_help(info.name, data_dir)} (pass --data-dir to use another folder), or\n"
        f"  - copy a TFDS-prepared '{info.tfds_name}' directory (from `tfds build "
        f"{info.tfds_name}` on a connected machine) into --data-dir, or\n"
        "  - use the bundled real data set: --dataset digits (scikit-learn's handwritten digits),"
        " or --dataset synthetic for smoke tests."
    )


def read_tfds(info: DatasetInfo, split: str, data_dir: str | None):
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # importlib_resources missing is the usual cause on 4.9.10
        raise DatasetError(
            f"tensorflow_datasets cannot be imported ({e}); pip install -r requirements.txt"
        ) from e
    try:
        ds = tfds.load(info.tfds_name, split=split, data_dir=data_dir, as_supervised=True,
                       download=False)
    except AssertionError:  # tfds: "could not find data in ..." (not prepared yet)
        if not network_available(info.download_host):
            raise DatasetError(_offline_message(
                info, data_dir, f"it is not prepared in {data_dir or '~/tensorflow_datasets'} "
                f"and {info.download_host} cannot be reached (no network?)")) from None
        ds = tfds.load(info.tfds_name, split=split, data_dir=data_dir, as_supervised=True,
                       download=True)
    images, labels = [], []
    for x, y in tfds.as_numpy(ds.batch(10000)):
        images.append(np.asarray(x, dtype=np.uint8))
        labels.append(np.asarray(y))
    images = np.concatenate(images)
    labels = np.concatenate(labels).astype(np.int32)
    if images.shape[1:] != info.image_size:
        raise DatasetError(f"TFDS {info.tfds_name!r} gave images of shape {images.shape[1:]}, "
                           f"expected {info.image_size}")
    return images, labels


# --------------------------------------------------------------------------------------------
# Offline sets


def read_digits(split: str):
    import tensorflow as tf
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32) * (255.0 / 16.0)
    x = tf.image.resize(x[..., None], (20, 20), method="bilinear").numpy()
    x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    x = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    y = digits.target.astype(np.int32)
    # sklearn has no official split: a fixed stratified 80/20 split (1438 / 359).
    rng = np.random.default_rng(0)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        test_idx.extend(rng.choice(idx, size=round(len(idx) * 0.2), replace=False))
    test_mask = np.zeros(len(y), bool)
    test_mask[np.array(test_idx)] = True
    mask = test_mask if split == "test" else ~test_mask
    return x[mask], y[mask]


def read_synthetic(info: DatasetInfo, split: str):
    n = info.splits[split]
    rng = np.random.default_rng(1 if split == "train" else 2)
    images = rng.integers(0, 256, size=(n, *info.image_size), dtype=np.uint8)
    labels = rng.integers(0, info.num_classes, size=n).astype(np.int32)
    return images, labels


# --------------------------------------------------------------------------------------------
# Arrays


@functools.lru_cache(maxsize=8)
def _official_split(name: str, split: str, data_dir: str | None, source: str,
                    image_shape: tuple | None, num_classes: int | None):
    info = get_info(name, image_shape, num_classes, data_dir)
    if info.folder:
        raise ValueError("an image folder is streamed from its files, not loaded into arrays: "
                         "use load() or load_pipelines()")
    if info.synthetic:
        images, labels, used = (*read_synthetic(info, split), "synthetic")
    elif name == "digits":
        images, labels, used = (*read_digits(split), "sklearn")
    else:
        archive = find_archive(name, data_dir) if source in ("auto", "archive") else None
        if source == "archive" and archive is None:
            raise DatasetError(
                f"No archive files for {name!r}: {_archive_help(name, data_dir)}"
            )
        if archive is not None:
            if name in CIFAR_LAYOUT:
                images, labels = read_cifar(name, split, archive[split])
            else:
                images, labels = read_idx_pair(*archive[split], info.image_size, info.num_classes)
            used = f"archive:{archive[split] if name in CIFAR_LAYOUT else os.path.dirname(archive[split][0])}"
        else:
            images, labels = read_tfds(info, split, data_dir)
            used = "tfds"
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels, used


def load_arrays(name: str, split: str = "train", data_dir: str | None = None,
                source: str = "auto", val_fraction: float = 0.1, subset: int | None = None,
                image_shape: Sequence[int] | None = None, num_classes: int | None = None):
    """Decoded uint8 images (N, H, W, C) and int32 labels of a split, plus the source used.

    "train" and "val" partition the official training split (`val_fraction` of it, drawn with
    a fixed seed, is "val"); "test" is the official test split. `subset` keeps the first
    `subset` images of "train" (a random, fixed sample).
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {list(SPLITS)}")
    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}; expected one of {list(SOURCES)}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    shape = tuple(image_shape) if image_shape is not None else None
    if split == "test":
        return _official_split(name, "test", data_dir, source, shape, num_classes)
    images, labels, used = _official_split(name, "train", data_dir, source, shape, num_classes)
    order = np.random.default_rng(VAL_SPLIT_SEED).permutation(len(labels))
    n_val = int(round(len(labels) * val_fraction))
    if split == "val":
        if n_val == 0:
            raise ValueError("split='val' needs val_fraction > 0")
        idx = np.sort(order[:n_val])
    else:
        idx = order[n_val:]
        held = (f" ({len(labels)} in its training split, {n_val} of them held out by "
                f"--val-fraction {val_fraction})" if n_val else "")
        if len(idx) == 0:
            raise ValueError(f"--val-fraction {val_fraction} leaves no training images of "
                             f"{name}{held}: choose a smaller --val-fraction")
        if subset is not None:
            if subset < 1:
                raise ValueError(f"--subset must be positive, got {subset}")
            if subset > len(idx):
                raise ValueError(f"--subset {subset} is more than the {len(idx)} training "
                                 f"images of {name}{held}: choose --subset {len(idx)} or less")
            idx = idx[:subset]
        idx = np.sort(idx)
    return images[idx], labels[idx], used


# --------------------------------------------------------------------------------------------
# tf.data pipelines


def augment_batch(images, seed, kind: str, rows=None):
    """Random affine augmentation of a float32 NHWC batch, a pure function of `seed` (shape [2]).

    `rows=(total, offset)` augments rows offset.. of a batch of `total` images: a replica
    holding a slice of the global batch draws the same transforms for its images as one device
    holding all of them, so distributed and single-device runs see the same pixels.

    "mnist": rotation in +-10 degrees and shift in +-10% of the size, bilinear (the seed code's
    RandomRotation(10) + RandomAffine(translate=(0.1, 0.1))). "cifar": integer shift in +-4 px
    with zero fill (identical to 4-pixel zero padding + random 32x32 crop) and horizontal flip,
    nearest neighbour so pixels are copied exactly.
    """
    import tensorflow as tf

    if kind == "none":
        return images
    shape = tf.shape(images)
    b = shape[0] if rows is None else rows[0]
    h = tf.cast(shape[1], tf.float32)
    w = tf.cast(shape[2], tf.float32)
    s_angle, s_tx, s_ty, s_flip = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    zeros = tf.zeros([b], tf.float32)
    if kind == "mnist":
        angle = tf.random.stateless_uniform([b], s_angle, -10.0, 10.0) * (math.pi / 180.0)
        tx = tf.random.stateless_uniform([b], s_tx, -0.1, 0.1) * w
        ty = tf.random.stateless_uniform([b], s_ty, -0.1, 0.1) * h
        flip = zeros
        interpolation = "BILINEAR"
    elif kind == "cifar":
        angle = zeros
        tx = tf.cast(tf.random.stateless_uniform([b], s_tx, -4, 5, dtype=tf.int32), tf.float32)
        ty = tf.cast(tf.random.stateless_uniform([b], s_ty, -4, 5, dtype=tf.int32), tf.float32)
        flip = tf.cast(tf.random.stateless_uniform([b], s_flip, 0, 2, dtype=tf.int32), tf.float32)
        interpolation = "NEAREST"
    else:
        raise ValueError(f"Unknown augmentation {kind!r}")
    # The transform maps output pixel p to input pixel A p + t:
    # p -> (optional flip) -> minus shift, rotated about the centre c.
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    sx = 1.0 - 2.0 * flip  # -1 flips x
    fx = flip * (w - 1.0)
    qx, qy = fx - cx - tx, -cy - ty  # (F p + f0 - c - shift) without the F p part
    a0, a1 = cos * sx, sin
    b0, b1 = -sin * sx, cos
    a2 = cos * qx + sin * qy + cx
    b2 = -sin * qx + cos * qy + cy
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    if rows is not None:
        transforms = transforms[rows[1]:rows[1] + shape[0]]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3],
        fill_value=tf.constant(0.0, tf.float32), interpolation=interpolation,
        fill_mode="CONSTANT",
    )
    # The op's shape function drops H and W (output_shape is a tensor). The models branch on a
    # known spatial size (keras_resnet.layers.Conv2D's matrix-product path), so losing it here
    # would put training on the slow generic path.
    out.set_shape(images.shape)
    return out


def make_pipeline(images: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle: bool,
                  augmentation: str, seed: int = 0, epochs: int | None = None,
                  initial_epoch: int = 0, drop_remainder: bool = False, replicas=None):
    """tf.data pipeline over in-memory uint8 arrays -> (float32 raw pixels, int32 labels).

    `replicas=(R, first, count)`: the pipeline of an input worker that feeds replicas
    first..first+count-1 of R. Each global batch of `batch_size` is cut into R equal slices in
    order and this pipeline yields its `count` slices one after another (what
    ``strategy.distribute_datasets_from_function`` hands to its local replicas in turn), so the
    replicas of one step hold exactly the global batch a single device would, and the workers
    of an epoch hold disjoint shares of it. Needs drop_remainder (equal slices).

    With `epochs`, the dataset holds epochs initial_epoch..epochs-1 back to back, each shuffled
    and augmented as a function of (seed, epoch index): give it to ``model.fit`` with
    ``steps_per_epoch=batches_per_epoch(...)``. Without, each iteration of the dataset is one
    epoch with a fresh (seeded) shuffle, for ``model.fit(ds, epochs=...)`` in user code.
    """
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(labels)
    if n == 0:
        raise ValueError("no images to build a pipeline from")
    num_replicas, first, local, per_replica = replica_layout(replicas, batch_size,
                                                             drop_remainder)
    images_t = tf.constant(images, dtype=tf.uint8)
    labels_t = tf.constant(labels, dtype=tf.int32)
    base_seed = tf.constant(seed, tf.int64)

    def one_epoch(key):
        key = tf.cast(key, tf.int64)
        index = tf.range(n, dtype=tf.int64)
        if shuffle:
            index = tf.random.experimental.stateless_shuffle(index, seed=tf.stack([base_seed, key]))
        batches = tf.data.Dataset.from_tensor_slices(index).batch(batch_size, drop_remainder)
        batches = batches.enumerate()
        if replicas is None:
            return batches.map(lambda i, idx: (key, i, idx, tf.constant(0, tf.int64)))
        return batches.flat_map(lambda i, idx: tf.data.Dataset.range(first, first + local).map(
            lambda r: (key, i, idx[r * per_replica:(r + 1) * per_replica], r)))

    def gather(key, i, idx, replica):
        x = tf.cast(tf.gather(images_t, idx), tf.float32)
        if augmentation != "none":
            x = augment_batch(x, tf.random.experimental.stateless_fold_in(
                tf.stack([base_seed, key]), i), augmentation,
                rows=None if replicas is None else (
                    batch_size, tf.cast(replica, tf.int32) * per_replica))
        if replicas is not None:
            x.set_shape([per_replica, *images.shape[1:]])
        return x, tf.gather(labels_t, idx)

    if epochs is not None:
        if not 0 <= initial_epoch <= epochs:
            raise ValueError(f"initial_epoch {initial_epoch} outside 0..{epochs}")
        keys = tf.data.Dataset.range(initial_epoch, epochs)
    else:
        # A new seeded key each time the dataset is iterated (so each Keras epoch differs).
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    ds = keys.flat_map(one_epoch)
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    image_spec = ds.element_spec[0]
    if not image_spec.shape[1:].is_fully_defined():
        raise AssertionError(f"pipeline lost the static image shape: {image_spec}")
    # flat_map hides the length; Keras needs it to end evaluation without a warning.
    per_epoch = batches_per_epoch(n, batch_size, drop_remainder) * local
    total = per_epoch * ((epochs - initial_epoch) if epochs is not None else 1)
    ds = ds.apply(tf.data.experimental.assert_cardinality(total))
    return ds.prefetch(tf.data.AUTOTUNE)


def replica_layout(replicas, batch_size: int, drop_remainder: bool) -> tuple:
    """(R, first, count, per-replica batch) of a pipeline's `replicas=(R, first, count)`
    (None: one replica holding whole batches); checked once for every pipeline kind."""
    num_replicas, first, local = replicas or (1, 0, 1)
    if replicas is not None:
        if not (0 <= first and 1 <= local and first + local <= num_replicas):
            raise ValueError(f"replicas {replicas} is not (R, first, count) within R")
        if batch_size % num_replicas or not drop_remainder:
            raise ValueError(f"a batch of {batch_size} split over {num_replicas} replicas needs "
                             "a batch size divisible by the replica count and drop_remainder")
    return num_replicas, first, local, batch_size // num_replicas


def batches_per_epoch(n: int, batch_size: int, drop_remainder: bool = False) -> int:
    return n // batch_size if drop_remainder else -(-n // batch_size)


def load(name: str, split: str = "train", batch_size: int = 128, data_dir: str | None = None,
         augment: bool | None = None, shuffle: bool | None = None, seed: int = 0,
         subset: int | None = None, val_fraction: float = 0.1, source: str = "auto",
         epochs: int | None = None, initial_epoch: int = 0, drop_remainder: bool = False,
         image_shape: Sequence[int] | None = None, num_classes: int | None = None,
         resize: str = "auto", cache: str | None = None):
    """A ready tf.data pipeline of (float32 raw 0..255 NHWC images, int32 labels).

    Args:
        name: a key of DATASETS.
        split: "train", "val" (held out from the official train split) or "test".
        augment / shuffle: default True for "train", False otherwise.
        source: "auto" (archive files in data_dir if present, else TFDS), "archive" or "tfds";
            digits and synthetic have a single source.
        epochs / initial_epoch: see make_pipeline (training loops that resume).
        image_shape / num_classes: shape of "synthetic" data; image_shape is (H, W, C) of
            "folder".
        resize / cache: "folder" only (training.preprocessing; None, "memory" or a path).
    """
    info = get_info(name, image_shape, num_classes, data_dir, resize)
    training = split == "train"
    if info.folder:
        from training import folders

        check_cache(cache)
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; expected one of {list(SPLITS)}")
        data = folder_data(data_dir, image_shape, resize)
        items = folders.split_files(data, split, val_fraction, subset if training else None,
                                    VAL_SPLIT_SEED)
        return folders.pipeline(
            data, items, batch_size, shuffle=training if shuffle is None else shuffle,
            augment=training if augment is None else augment, seed=seed, epochs=epochs,
            initial_epoch=initial_epoch, drop_remainder=drop_remainder, cache=cache,
            split=split)
    if cache is not None:
        raise ValueError(f"--cache is for --dataset folder; {name} is held in memory already")
    images, labels, _ = load_arrays(name, split, data_dir, source, val_fraction,
                                    subset if split == "train" else None, image_shape, num_classes)
    return make_pipeline(
        images, labels, batch_size,
        shuffle=training if shuffle is None else shuffle,
        augmentation=info.augmentation if (training if augment is None else augment) else "none",
        seed=seed, epochs=epochs, initial_epoch=initial_epoch, drop_remainder=drop_remainder,
    )


@dataclasses.dataclass
class Pipelines:
    train: object  # None with several replicas: see train_shard
    val: object | None
    test: object
    info: DatasetInfo
    steps_per_epoch: int
    num_train: int
    num_val: int
    num_test: int
    source: str
    # replicas=(R, first, count) or None -> the training pipeline of one input worker (see
    # make_pipeline); training.distribute calls it once per worker.
    train_shard: object = None


def load_pipelines(name: str, batch_size: int = 128, data_dir: str | None = None,
                   augment: bool = True, seed: int = 0, subset: int | None = None,
                   val_fraction: float = 0.1, source: str = "auto", epochs: int | None = None,
                   initial_epoch: int = 0, image_shape=None, num_classes=None,
                   resize: str = "auto", cache: str | None = None,
                   replicas: int = 1) -> Pipelines:
    """Train, validation (None when val_fraction is 0) and test pipelines plus their sizes;
    `resize` and `cache` are for "folder" (see load). With `replicas` > 1 the training
    batches are cut into per-replica slices (`train_shard`) and the last partial batch of
    each epoch is dropped, since it cannot be split evenly."""
    info = get_info(name, image_shape, num_classes, data_dir, resize)
    if info.folder:
        return _folder_pipelines(info, batch_size, data_dir, augment, seed, subset,
                                 val_fraction, epochs, initial_epoch, image_shape, resize, cache,
                                 replicas)
    if cache is not None:
        raise ValueError(f"--cache is for --dataset folder; {name} is held in memory already")
    x_tr, y_tr, used = load_arrays(name, "train", data_dir, source, val_fraction, subset,
                                   image_shape, num_classes)
    x_te, y_te, _ = load_arrays(name, "test", data_dir, source, val_fraction, None, image_shape,
                                num_classes)
    def train_shard(shard):
        return make_pipeline(x_tr, y_tr, batch_size, shuffle=True,
                             augmentation=info.augmentation if augment else "none", seed=seed,
                             epochs=epochs, initial_epoch=initial_epoch,
                             drop_remainder=replicas > 1, replicas=shard)

    val, n_val = None, 0
    if val_fraction > 0:
        x_va, y_va, _ = load_arrays(name, "val", data_dir, source, val_fraction, None,
                                    image_shape, num_classes)
        val = make_pipeline(x_va, y_va, batch_size, shuffle=False, augmentation="none")
        n_val = len(y_va)
    test = make_pipeline(x_te, y_te, batch_size, shuffle=False, augmentation="none")
    return Pipelines(train_shard(None) if replicas == 1 else None, val, test, info,
                     batches_per_epoch(len(y_tr), batch_size, replicas > 1),
                     len(y_tr), n_val, len(y_te), used, train_shard)


def _folder_pipelines(info, batch_size, data_dir, augment, seed, subset, val_fraction, epochs,
                      initial_epoch, image_shape, resize, cache, replicas=1) -> Pipelines:
    from training import folders

    check_cache(cache)
    data = folder_data(data_dir, image_shape, resize)
    has_val = val_fraction > 0 or "val" in data.files
    items = {split: folders.split_files(data, split, val_fraction,
                                        subset if split == "train" else None, VAL_SPLIT_SEED)
             for split in ("train", "val", "test") if split != "val" or has_val}

    def make(split, training, **kwargs):
        return folders.pipeline(data, items[split], batch_size, shuffle=training,
                                augment=training and augment, cache=cache, split=split,
                                seed=seed, **kwargs)

    def train_shard(shard):
        return make("train", True, epochs=epochs, initial_epoch=initial_epoch,
                    drop_remainder=replicas > 1, replicas=shard)

    val = make("val", False) if has_val else None
    return Pipelines(train_shard(None) if replicas == 1 else None, val, make("test", False),
                     info, batches_per_epoch(len(items["train"]), batch_size, replicas > 1),
                     len(items["train"]), len(items.get("val", ())), len(items["test"]),
                     f"folder:{os.path.abspath(data_dir)}", train_shard)

