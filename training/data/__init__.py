"""Every dataset a run can read, turned into tf.data pipelines by one driver.

Built-in datasets (their archive files, TFDS, scikit-learn's bundled digits, synthetic noise)
are decoded once into uint8 NHWC arrays held in memory; an image folder ("folder") is streamed
from its files (parallel decoding, optional cache). Either way the pipelines yield
``(float32 raw 0..255 images, int32 labels)`` with a static image shape. Normalization is not
done here: it is the model's first layer (``build_resnet(..., normalization=(info.mean,
info.std))``), so trained and exported models take raw pixels.

    from training.data import load
    train = load("mnist", "train", batch_size=128)   # augmented, reshuffled every iteration
    test = load("mnist", "test", batch_size=256)

Layout: table (the datasets' facts), sources (one object per dataset: what it holds, its
splits), archives / tfds_source / bundled / folder (the readers), splits (the one split rule),
pipeline (the one driver), augment (batch-wise augmentation).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from training.data.errors import DataError, DataFormatError, DatasetError, FolderError
from training.data.pipeline import batches_per_epoch, pipeline
from training.data.sources import ArrayItems, Source, open_source
from training.data.table import DATASETS, SOURCES, SPLIT_SEED, SPLITS, DatasetInfo

__all__ = ["DATASETS", "SOURCES", "SPLITS", "SPLIT_SEED", "DataError", "DataFormatError",
           "DatasetError", "DatasetInfo", "FolderError", "Pipelines", "Source",
           "batches_per_epoch", "get_info", "load", "load_arrays", "load_pipelines",
           "make_pipeline", "open_source"]


def get_info(name: str, image_shape: Sequence[int] | None = None,
             num_classes: int | None = None, data_dir: str | None = None,
             resize: str = "auto") -> DatasetInfo:
    """The facts of dataset `name`; `image_shape`/`num_classes` only reshape "synthetic";
    "folder" needs `data_dir` and `image_shape` (H, W, C) and is read from the folder."""
    return open_source(name, data_dir, image_shape=image_shape, num_classes=num_classes,
                       resize=resize).info


def load_arrays(name: str, split: str = "train", data_dir: str | None = None,
                source: str = "auto", val_fraction: float = 0.1, subset: int | None = None,
                image_shape: Sequence[int] | None = None, num_classes: int | None = None):
    """Decoded uint8 images (N, H, W, C) and int32 labels of a split, plus the source used.

    "train" and "val" partition the official training split (`val_fraction` of it, drawn with
    a fixed seed, is "val"); "test" is the official test split. `subset` keeps the first
    `subset` images of "train" (a random, fixed sample). Not for "folder" (streamed).
    """
    if name == "folder":
        raise DataError("an image folder is streamed from its files, not loaded into arrays: "
                        "use load() or load_pipelines()")
    data = open_source(name, data_dir, source, image_shape, num_classes)
    images, labels = data.arrays(split, val_fraction, subset if split == "train" else None)
    return images, labels, data.origin_of(split)


def make_pipeline(images, labels, batch_size: int, *, shuffle: bool, augmentation: str,
                  seed: int = 0, epochs: int | None = None, initial_epoch: int = 0,
                  drop_remainder: bool = False, replicas=None):
    """The pipeline over in-memory uint8 arrays (N, H, W, C) and their labels, augmented by
    `augmentation` ("mnist", "cifar" or "none"); the rest as training.data.pipeline.pipeline."""
    return pipeline(ArrayItems(images, labels, augmentation), batch_size, shuffle=shuffle,
                    augment=augmentation != "none", seed=seed, epochs=epochs,
                    initial_epoch=initial_epoch, drop_remainder=drop_remainder,
                    replicas=replicas)


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
            digits, synthetic and folder have a single source.
        epochs / initial_epoch: see training.data.pipeline.pipeline (loops that resume).
        image_shape / num_classes: shape of "synthetic" data; image_shape is (H, W, C) of
            "folder".
        resize / cache: "folder" only (training.preprocessing; None, "memory" or a path).
    """
    data = open_source(name, data_dir, source, image_shape, num_classes, resize, cache)
    training = split == "train"
    items = data.items(split, val_fraction, subset if training else None)
    return pipeline(items, batch_size, shuffle=training if shuffle is None else shuffle,
                    augment=training if augment is None else augment, seed=seed,
                    epochs=epochs, initial_epoch=initial_epoch, drop_remainder=drop_remainder)


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
    source: str  # where the images came from (config.json's data_source)
    # replicas=(R, first, count) or None -> the training pipeline of one input worker (see
    # training.data.pipeline.pipeline); training.distribute calls it once per worker.
    train_shard: object
    dataset: Source
    epochs: int | None = None


EVALUATION_BATCH_FACTOR = 2


def load_pipelines(name: str, batch_size: int = 128, data_dir: str | None = None,
                   augment: bool = True, seed: int = 0, subset: int | None = None,
                   val_fraction: float = 0.1, source: str = "auto", epochs: int | None = None,
                   initial_epoch: int = 0, image_shape=None, num_classes=None,
                   resize: str = "auto", cache: str | None = None,
                   replicas: int = 1, augment_strength: float = 1.0) -> Pipelines:
    """Train, validation (None when there is no validation split) and test pipelines plus
    their sizes. With `replicas` > 1 the training batches are cut into per-replica slices
    (`train_shard`) and the last partial batch of each epoch is dropped, since it cannot be
    split evenly. `epochs` may be a function of the steps per epoch (a recipe's step budget,
    known once the training split's size is): `Pipelines.epochs` holds its value."""
    data = open_source(name, data_dir, source, image_shape, num_classes, resize, cache)
    train = data.items("train", val_fraction, subset)
    steps = batches_per_epoch(train.n, batch_size, replicas > 1)
    if callable(epochs):
        epochs = epochs(steps)
    if epochs is not None:
        initial_epoch = min(initial_epoch, epochs)

    def train_shard(shard):
        return pipeline(train, batch_size, shuffle=True, augment=augment, seed=seed,
                        epochs=epochs, initial_epoch=initial_epoch,
                        drop_remainder=replicas > 1, replicas=shard,
                        augment_strength=augment_strength)

    def evaluation(items):
        # Twice the training batch: inference keeps no activations for a backward pass, so
        # this holds less memory than a training step, and a short validation takes fewer,
        # fuller steps.
        return pipeline(items, EVALUATION_BATCH_FACTOR * batch_size, shuffle=False,
                        augment=False, cache=items.cache_evaluation)

    val = data.items("val", val_fraction) if data.has_val(val_fraction) else None
    test = data.items("test", val_fraction)
    return Pipelines(train_shard(None) if replicas == 1 else None,
                     None if val is None else evaluation(val), evaluation(test), data.info,
                     steps, train.n, 0 if val is None else val.n, test.n, data.origin,
                     train_shard, data, epochs)
