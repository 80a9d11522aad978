"""Sources: one object per dataset a run reads, all answering the same questions.

A source knows what it holds (`info`: image shape, classes, statistics), where the images came
from (`origin`), its splits (`items(split, ...)` -> the pipeline's Items), and what a run keeps
about it beyond that (`record()` for config.json, `split_record()` for split.json). Code
outside this package asks a source, never which kind of dataset it has.

- TableSource: a dataset of the table held in memory as uint8 arrays, read from its archive
  files, TFDS, scikit-learn's digits or generated noise.
- FolderSource: a user's image folder, streamed from its files.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

from training.data import archives, bundled, folder, tfds_source
from training.data.errors import DataError, DatasetError
from training.data.pipeline import Items, Plan
from training.data.splits import check_split, held_out
from training.data.table import DATASETS, SOURCES, DatasetInfo
from training.preprocessing import Preprocessing


class Source:
    info: DatasetInfo

    @property
    def origin(self) -> str:
        """Where the images come from, as config.json's data_source records it."""
        raise NotImplementedError

    def has_val(self, val_fraction: float) -> bool:
        return val_fraction > 0

    def items(self, split: str, val_fraction: float = 0.1, subset: int | None = None) -> Items:
        raise NotImplementedError

    def record(self) -> dict:
        """What a run's config.json keeps about the source beyond its DatasetInfo."""
        return {}

    def split_record(self) -> dict | None:
        """Which item went to which split (RUN/split.json), where items are files."""
        return None


class ArrayItems(Items):
    """Images held in memory as uint8 (N, H, W, C): batches are gathered, then augmented."""

    cache_evaluation = True

    def __init__(self, images: np.ndarray, labels: np.ndarray, augmentation: str):
        self.images, self.labels, self.augmentation = images, labels, augmentation
        self.n = len(labels)
        self.image_shape = tuple(images.shape[1:])

    def batch_augmentation(self, augment: bool) -> str:
        return self.augmentation if augment else "none"

    def prepare(self) -> None:
        import tensorflow as tf

        if not hasattr(self, "tensors"):  # once for every pipeline over these items
            self.tensors = (tf.constant(self.images, dtype=tf.uint8),
                            tf.constant(self.labels, dtype=tf.int32))

    def epoch_batches(self, plan: Plan, epoch_seed, augment: bool, order=None):
        import tensorflow as tf

        images, labels = self.tensors
        return plan.index_batches(epoch_seed).map(
            lambda i, r, idx: (i, r, tf.cast(tf.gather(images, idx), tf.float32),
                               tf.gather(labels, idx)),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


class TableSource(Source):
    """A dataset of the table, decoded once into uint8 arrays held in memory."""

    def __init__(self, info: DatasetInfo, data_dir: str | None, source: str = "auto"):
        if source not in SOURCES:
            raise DataError(f"Unknown source {source!r}; expected one of {list(SOURCES)}")
        self.info, self.data_dir, self.source = info, data_dir, source

    def official(self, split: str):
        """(images, labels, origin) of the official "train" or "test" split."""
        return _official_split(self.info.name, split, self.data_dir, self.source,
                               self.info.image_size, self.info.num_classes)

    @property
    def origin(self) -> str:
        return self.origin_of("train")

    def origin_of(self, split: str) -> str:
        return self.official("test" if split == "test" else "train")[2]

    def arrays(self, split: str, val_fraction: float = 0.1, subset: int | None = None):
        """uint8 images (N, H, W, C) and int32 labels of "train", "val" or "test"."""
        check_split(split, val_fraction)
        if split == "test":
            return self.official("test")[:2]
        images, labels, _ = self.official("train")
        idx = held_out(split, len(labels), val_fraction, subset, f"of {self.info.name}")
        return images[idx], labels[idx]

    def items(self, split: str, val_fraction: float = 0.1, subset: int | None = None) -> Items:
        return ArrayItems(*self.arrays(split, val_fraction, subset), self.info.augmentation)


@functools.lru_cache(maxsize=8)
def _official_split(name: str, split: str, data_dir: str | None, source: str,
                    image_size: tuple, num_classes: int):
    info = DATASETS[name]
    if info.synthetic:
        info = _synthetic_info(info, image_size, num_classes)
        images, labels, used = (*bundled.read_synthetic(info, split), "synthetic")
    elif info.name == "digits":
        images, labels, used = (*bundled.read_digits(split), "sklearn")
    else:
        images, labels, used = _archive_or_tfds(info, split, data_dir, source)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels, used


def _archive_or_tfds(info: DatasetInfo, split: str, data_dir: str | None, source: str):
    name = info.name
    archive = archives.find_archive(name, data_dir) if source in ("auto", "archive") else None
    if source == "archive" and archive is None:
        raise DatasetError(f"No archive files for {name!r}: "
                           f"{archives.archive_help(name, data_dir)}")
    if archive is None:
        return (*tfds_source.read_tfds(info, split, data_dir), "tfds")
    if name in archives.CIFAR_LAYOUT:
        images, labels = archives.read_cifar(name, split, archive[split])
        return images, labels, f"archive:{archive[split]}"
    images, labels = archives.read_idx_pair(*archive[split], info.image_size, info.num_classes)
    return images, labels, f"archive:{os.path.dirname(archive[split][0])}"


class FolderSource(Source):
    """A user's image folder: classes from its folders, images streamed from its files."""

    def __init__(self, data: folder.FolderData, cache: str | None = None):
        self.data, self.cache = data, cache
        prep = data.prep
        self.info = dataclasses.replace(
            DATASETS["folder"],
            source=f"image folder {os.path.abspath(data.scan.root)} ({data.scan.layout})",
            image_size=(prep.height, prep.width, prep.channels),
            num_classes=len(data.scan.class_names), class_names=data.scan.class_names,
            mean=data.mean, std=data.std,
            augmentation="crop" if prep.resize == "crop" else "mnist",
            splits={k: len(v) for k, v in data.files.items()})

    @property
    def origin(self) -> str:
        return f"folder:{os.path.abspath(self.data.scan.root)}"

    @property
    def preprocessing(self) -> Preprocessing:
        return self.data.prep

    def has_val(self, val_fraction: float) -> bool:
        return val_fraction > 0 or "val" in self.data.files

    def items(self, split: str, val_fraction: float = 0.1, subset: int | None = None) -> Items:
        check_split(split, val_fraction)
        files = folder.split_files(self.data, split, val_fraction, subset)
        return folder.FileItems(self.data, files, split, self.cache)

    def record(self) -> dict:
        return {"preprocessing": self.data.prep.to_dict(),
                "skipped_images": self.data.skipped_record()}

    def split_record(self) -> dict:
        return self.data.scan.record()


def _folder_shape(image_shape) -> tuple:
    shape = tuple(int(v) for v in image_shape) if image_shape is not None else ()
    if len(shape) != 3 or min(shape) < 1 or shape[2] not in (1, 3):
        raise folder.FolderError("--dataset folder needs --image-size H,W (every image is "
                                 "resized to it) and --channels 1 or 3")
    return shape


@functools.lru_cache(maxsize=8)
def _checked_folder(root: str, shape: tuple, resize: str) -> folder.FolderData:
    return folder.check(folder.scan(root), Preprocessing.for_shape(shape, resize))


def _synthetic_info(info: DatasetInfo, image_shape, num_classes) -> DatasetInfo:
    changes = {}
    if image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise DataError(f"synthetic image_shape must be (height, width, channels), got "
                            f"{image_shape!r}")
        changes["image_size"] = shape
    if num_classes is not None:
        if num_classes < 2:
            raise DataError(f"synthetic num_classes must be >= 2, got {num_classes}")
        changes["num_classes"] = int(num_classes)
        changes["class_names"] = tuple(f"class_{i}" for i in range(num_classes))
    return dataclasses.replace(info, **changes)


def open_source(name: str, data_dir: str | None = None, source: str = "auto",
                image_shape=None, num_classes: int | None = None, resize: str = "auto",
                cache: str | None = None) -> Source:
    """The source of dataset `name`. `image_shape`/`num_classes` shape "synthetic";
    "folder" needs `data_dir` and `image_shape` (H, W, C), with `resize` (see
    training.preprocessing) and `cache` (None, "memory" or a file path prefix); a folder is
    scanned and every file decode-checked once per process."""
    if name not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    info = DATASETS[name]
    if name == "folder":
        folder.check_cache(cache)
        if not data_dir or not os.path.isdir(data_dir):
            folder.scan(data_dir)  # its one-line error
        try:
            shape = _folder_shape(image_shape)
        except folder.FolderError:
            folder.scan(data_dir)  # a folder's own errors come before the shape's
            raise
        data = _checked_folder(os.path.abspath(data_dir), shape, resize)
        return FolderSource(data, cache)
    if cache is not None:
        raise DataError(f"--cache is for --dataset folder; {name} is held in memory already")
    if info.synthetic:
        info = _synthetic_info(info, image_shape, num_classes)
    elif image_shape is not None and tuple(image_shape) != info.image_size:
        raise DataError(f"image_shape can only be chosen for 'synthetic', not {name!r}")
    return TableSource(info, data_dir, source)
