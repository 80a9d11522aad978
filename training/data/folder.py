"""Image folders as a dataset: class names from folder names, images streamed from disk.

Two layouts of DIR are read:
- DIR/train/<class>/*, DIR/test/<class>/* and optionally DIR/val/<class>/*;
- DIR/<class>/* alone: a fixed share of each class (`TEST_FRACTION`, at least one image of a
  class with two or more; drawn with `SPLIT_SEED`)
  becomes the test split, so the same folder always gives the same split.
Class names are the folder names, sorted. Images are decoded by tf.data in parallel, one batch
at a time (memory does not grow with the number of files), with training.preprocessing: the
functions training.predict, export.predict and user code use, so a model sees the same pixels
in evaluation and in prediction.

Before training, `check` reads every file's header (only regular files are opened: a FIFO
or a device is never read; an image declaring more than the pixel limit of
training.preprocessing.max_image_pixels() is never decoded), then decodes every file once (in
parallel, in TensorFlow, with the pipeline's own functions): files that fail are named in the
log and in the run's config.json and left out, and more than MAX_BAD_FRACTION of them stops the
run. Class names are the class folders' names and must be UTF-8; the files below them may have
any name. The same pass measures the per-channel mean/std of the training images (the model's
normalization).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np

from training import preprocessing
from training.console import log as _log
from training.data.errors import FolderError
from training.data.pipeline import Items, Plan, fold_in, fresh_key
from training.data.splits import held_out
from training.data.table import SPLIT_SEED
from training.preprocessing import IMAGE_SUFFIXES, ImageError, Preprocessing, is_image_name

TEST_FRACTION = 0.1
# More undecodable files than this share of a folder means a wrong folder or a damaged copy,
# not a few stray files: training on the rest would hide it.
MAX_BAD_FRACTION = 0.1
# Undecodable files named one per line in the log (config.json lists them all).
LOGGED_BAD = 20
# Shuffle window of a --cache file: its images are read back in order, so a window this large
# (of training_base images) mixes them without holding the whole set in memory.
FILE_CACHE_SHUFFLE = 1024


@dataclasses.dataclass(frozen=True)
class FolderScan:
    root: str
    layout: str  # "train/test folders" or "class folders"
    class_names: tuple
    files: dict  # split -> tuple of (path relative to root, label); "val" only if DIR/val exists

    def record(self) -> dict:
        """What a run keeps to say which file went where."""
        return {"root": os.path.abspath(self.root), "layout": self.layout,
                "class_names": list(self.class_names),
                "test_fraction": TEST_FRACTION if self.layout == "class folders" else None,
                "seed": SPLIT_SEED if self.layout == "class folders" else None,
                "files": {split: [[p, int(y)] for p, y in items]
                          for split, items in self.files.items()}}


def _subfolders(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _class_folders(folder: str) -> tuple:
    """The class names in `folder`: its subfolders' names, which must be text (a run records
    them in JSON, a model in its config, predictions print them)."""
    names = _subfolders(folder)
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise FolderError(f"class folder {os.path.join(folder, name)!r} has a name that is "
                              "not valid UTF-8: rename it (class names are the folder names, "
                              "kept as text)") from None
    return tuple(names)


def printable(path: str) -> str:
    """`path` with any byte of a non-UTF-8 name as \\xNN, for a log line."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _class_files(folder: str, class_names, root: str) -> list[tuple[str, int]]:
    """(path relative to root, label) of every image below folder/<class>/, recursively."""
    items = []
    for label, name in enumerate(class_names):
        base = os.path.join(folder, name)
        if not os.path.isdir(base):
            continue
        found = sorted(os.path.relpath(os.path.join(r, f), root)
                       for r, _, names in os.walk(base) for f in names if is_image_name(f))
        items += [(p, label) for p in found]
    return items


def _need_two(folder: str, class_names) -> None:
    if len(class_names) < 2:
        raise FolderError(f"{folder} needs at least two class folders, found "
                          f"{list(class_names)}")


def scan(data_dir: str) -> FolderScan:
    if not data_dir:
        raise FolderError("--dataset folder needs --data-dir DIR (DIR/<class>/* or "
                          "DIR/train/<class>/* + DIR/test/<class>/*)")
    if not os.path.isdir(data_dir):
        raise FolderError(f"--data-dir {data_dir} is not a folder")
    top = _subfolders(data_dir)
    if "train" in top:
        train_dir = os.path.join(data_dir, "train")
        class_names = _class_folders(train_dir)
        _need_two(train_dir, class_names)
        if "test" not in top:
            raise FolderError(f"{data_dir} has train/ but no test/: add test/<class>/ folders, "
                              "or put the class folders directly in it to split one off")
        files = {"train": _class_files(train_dir, class_names, data_dir)}
        for split in ("val", "test"):
            if split not in top:
                continue
            folder = os.path.join(data_dir, split)
            unknown = sorted(set(_class_folders(folder)) - set(class_names))
            if unknown:
                raise FolderError(f"{folder} has classes that {train_dir} lacks: {unknown}")
            files[split] = _class_files(folder, class_names, data_dir)
            if not files[split]:
                raise FolderError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        layout = "train/test folders"
    else:
        class_names = _class_folders(data_dir)
        _need_two(data_dir, class_names)
        all_files = _class_files(data_dir, class_names, data_dir)
        rng = np.random.default_rng(SPLIT_SEED)
        train, test = [], []
        for label in range(len(class_names)):
            mine = [item for item in all_files if item[1] == label]
            n_test = max(1, int(round(len(mine) * TEST_FRACTION))) if len(mine) > 1 else 0
            picked = set(rng.permutation(len(mine))[:n_test].tolist())
            for i, item in enumerate(mine):
                (test if i in picked else train).append(item)
        if not test:
            raise FolderError(f"{data_dir} has too few images to split off a test set "
                              f"({TEST_FRACTION:.0%} of each class): add images")
        files = {"train": train, "test": test}
        layout = "class folders"
    empty = [n for i, n in enumerate(class_names) if not any(y == i for _, y in files["train"])]
    if empty:
        raise FolderError(f"no training images ({', '.join(IMAGE_SUFFIXES)}) for the classes "
                          f"{empty} in {data_dir}")
    return FolderScan(data_dir, layout, class_names,
                      {k: tuple(v) for k, v in files.items()})


@dataclasses.dataclass(frozen=True)
class FolderData:
    """A scanned folder after the decode check: what the pipelines read."""

    scan: FolderScan
    prep: Preprocessing
    files: dict  # split -> tuple of (path relative to root, label), undecodable files left out
    skipped: tuple  # (path relative to root, reason) of every undecodable file
    mean: tuple  # per channel, of the training images' evaluation view (0..255 units)
    std: tuple

    def skipped_record(self) -> dict:
        return {"count": len(self.skipped),
                "files": [{"path": p, "reason": r} for p, r in self.skipped]}


def check(scan: FolderScan, prep: Preprocessing, log=_log) -> FolderData:
    """Decodes every file of `scan` once; returns the decodable ones and the training images'
    per-channel mean/std. Raises FolderError when more than MAX_BAD_FRACTION fail."""
    items = [(split, path, label) for split, files in scan.files.items()
             for path, label in files]
    try:
        limit = preprocessing.max_image_pixels()
    except ImageError as e:
        raise FolderError(str(e)) from None
    # Headers first: a FIFO or a file declaring gigapixels never reaches the decoder.
    refused = {}
    for k, (_, path, _) in enumerate(items):
        try:
            preprocessing.check_image_file(os.path.join(scan.root, path), limit)
        except ImageError as e:
            refused[k] = e.reason
    passed = [k for k in range(len(items)) if k not in refused]
    ok = np.zeros(len(items), bool)
    ok[passed], mean, std = _decode_all(scan.root, [items[k] for k in passed], prep)
    bad = [(items[k][1], refused[k] if k in refused else
            _reason(os.path.join(scan.root, items[k][1]), prep))
           for k in np.flatnonzero(~ok)]
    where = os.path.abspath(scan.root)
    _report_bad(bad, len(items), where, log)
    dropped = {p for p, _ in bad}
    files = {split: tuple((p, y) for p, y in v if p not in dropped)
             for split, v in scan.files.items()}
    empty = [name for i, name in enumerate(scan.class_names)
             if not any(y == i for _, y in files["train"])]
    if empty:
        raise FolderError(f"no decodable training images for the classes {empty} in {where}")
    for split in ("val", "test"):
        if split in files and not files[split]:
            raise FolderError(f"no decodable images in the {split} split of {where}")
    return FolderData(scan, prep, files, tuple(bad), mean, std)


def _decode_all(root: str, items, prep: Preprocessing):
    """(which items decode, per-channel mean and std of the training items' evaluation view),
    every file decoded once, in parallel, by the pipelines' own functions."""
    import tensorflow as tf

    n, c = len(items), prep.channels
    train = np.array([split == "train" for split, _, _ in items])

    def stats(i, path):
        x = preprocessing.model_input(preprocessing.decode(tf.io.read_file(path), c), prep)
        x = tf.reshape(tf.cast(x, tf.float64), [-1, c])
        return i, tf.reduce_sum(x, 0), tf.reduce_sum(x * x, 0), tf.shape(x, tf.int64)[0]

    # As bytes: a file name that is not UTF-8 cannot become a string tensor from a str.
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.range(n, dtype=tf.int64),
         tf.constant([os.fsencode(os.path.join(root, p)) for _, p, _ in items], tf.string)))
    # ignore_errors drops a failing file without a word; the indices that do not come back
    # are those files, and each is named by the caller.
    ds = (ds.map(stats, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
          .ignore_errors().batch(256).prefetch(1))
    ok = np.zeros(n, bool)
    total, squares, count = np.zeros(c), np.zeros(c), 0
    for i, s, q, m in ds:
        i = i.numpy()
        ok[i] = True
        mine = train[i]
        total += s.numpy()[mine].sum(0)
        squares += q.numpy()[mine].sum(0)
        count += int(m.numpy()[mine].sum())
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - mean * mean, 0.0))
    return ok, tuple(float(v) for v in mean), tuple(float(max(v, 1.0)) for v in std)


def _reason(path: str, prep: Preprocessing) -> str:
    """Why a file failed the check pass, in the words of the eager reader."""
    try:
        preprocessing.load_image(path, prep)
    except ImageError as e:
        return e.reason
    return "failed to decode in the check pass"


def _report_bad(bad: list, n: int, where: str, log) -> None:
    where = printable(where)
    if len(bad) > MAX_BAD_FRACTION * n:
        raise FolderError(f"{len(bad)} of {n} image files in {where} cannot be decoded, more "
                          f"than {MAX_BAD_FRACTION:.0%} (e.g. {printable(bad[0][0])}: "
                          f"{bad[0][1]}): "
                          "check the folder, or remove the damaged files")
    if not bad:
        log(f"checked {n} image files in {where}: all decode")
        return
    log(f"{len(bad)} of {n} image files in {where} cannot be decoded and are skipped "
        "(all listed in config.json under skipped_images):")
    for path, reason in bad[:LOGGED_BAD]:
        log(f"  skipped {printable(path)}: {reason}")
    if len(bad) > LOGGED_BAD:
        log(f"  ... and {len(bad) - LOGGED_BAD} more")


def split_files(data: FolderData, split: str, val_fraction: float,
                subset: int | None = None) -> tuple:
    """(path, label) items of "train", "val" or "test": DIR/val/ when it exists, else
    `val_fraction` of the training files (drawn over the scanned list, so that a skipped file
    does not move the others between splits)."""
    if split == "test" or (split == "val" and "val" in data.files):
        return data.files[split]
    keep = set(data.files["train"])
    scanned = data.scan.files["train"]
    fraction = 0.0 if "val" in data.files else val_fraction
    idx = held_out(split, len(scanned), fraction, subset if split == "train" else None,
                   f"of {data.scan.root}", keep=[item in keep for item in scanned])
    return tuple(scanned[i] for i in idx)


def cache_file(cache: str, split: str, data: FolderData, items, augment: bool) -> str:
    """`cache` + a name that changes with the files and preprocessing, so that a cache
    written for other images or sizes is never read back."""
    key = json.dumps([data.prep.to_dict(), os.path.abspath(data.scan.root), list(items),
                      augment], sort_keys=True)
    return f"{cache}.{split}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def check_cache(cache: str | None) -> None:
    if cache is None or cache == "memory":
        return
    parent = os.path.dirname(os.path.abspath(cache))
    if not os.path.isdir(parent):
        raise FolderError(f"--cache {cache}: the folder {parent} does not exist (give 'memory' "
                          "or a file path prefix in an existing folder)")


class FileItems(Items):
    """Images streamed from files, decoded in parallel one batch at a time.

    augment: training views (random-resized crop + flip, or the stretched image with a
    batch-wise rotation and shift); else the evaluation view. cache: None, "memory" or a file
    path prefix; it keeps the deterministic part of each image (decoded and resized), never
    the random views. Every random view is drawn from the image's position in the epoch, so
    the slices of a distributed run hold the single-device pixels; without a cache the images
    other workers hold are never read.
    """

    def __init__(self, data: FolderData, items, split: str, cache: str | None = None):
        self.data, self.items, self.split, self.cache = data, tuple(items), split, cache
        self.n = len(self.items)
        prep = data.prep
        self.image_shape = (prep.height, prep.width, prep.channels)

    def batch_augmentation(self, augment: bool) -> str:
        return "mnist" if augment and self.data.prep.resize == "stretch" else "none"

    def batch_seed(self, epoch_seed, i):
        # Kept apart from the per-image seeds, which fold in positions 0..n-1 of the epoch.
        return fold_in(fold_in(epoch_seed, 2**31 - 1), i)

    def _stored(self, augment: bool):
        """path, label -> the deterministic part of an image's view, label."""
        import tensorflow as tf

        prep = self.data.prep
        view = preprocessing.training_base if augment else preprocessing.model_input

        def stored(path, label):
            return view(preprocessing.decode(tf.io.read_file(path), prep.channels), prep), label

        return stored

    def _tensors(self):
        import tensorflow as tf

        root = self.data.scan.root
        # As bytes: a file name that is not UTF-8 cannot become a string tensor from a str.
        return (tf.constant([os.fsencode(os.path.join(root, p)) for p, _ in self.items],
                            tf.string),
                tf.constant([y for _, y in self.items], tf.int32))

    def epoch_batches(self, plan: Plan, epoch_seed, augment: bool, order=None):
        import tensorflow as tf

        autotune = tf.data.AUTOTUNE
        stored = self._stored(augment)
        if order is None:
            paths, labels = self.tensors
            batch = plan.batch_size

            def images_of(i, r, idx):
                j = i * batch + r * plan.layout[3] + tf.range(tf.size(idx, tf.int64))
                return tf.data.Dataset.from_tensor_slices(
                    (tf.fill(tf.shape(j), i), tf.fill(tf.shape(j), r), j, idx))

            ds = plan.index_batches(epoch_seed).flat_map(images_of).map(
                lambda i, r, j, k: (i, r, j, stored(tf.gather(paths, k), tf.gather(labels, k))),
                num_parallel_calls=autotune, deterministic=True)
        else:
            batch, per_replica = plan.batch_size, plan.layout[3]
            ds = order.enumerate()
            if plan.replicas is not None:
                ds = ds.filter(lambda j, xy: plan.holds(j))
            ds = ds.map(lambda j, xy: (j // batch, (j % batch) // per_replica, j, xy))
        prep = self.data.prep
        if augment and prep.resize == "crop":
            ds = ds.map(lambda i, r, j, xy: (i, r, j, (preprocessing.training_view(
                xy[0], prep, fold_in(epoch_seed, j)), xy[1])),
                num_parallel_calls=autotune, deterministic=True)
        ds = ds.map(lambda i, r, j, xy: (i, r, xy[0], xy[1]))
        return ds.batch(plan.slice_size, plan.drop_remainder).map(
            lambda i, r, x, y: (i[0], r[0], x, y))

    def prepare(self) -> None:
        if not hasattr(self, "tensors"):  # once for every pipeline over these items
            self.tensors = self._tensors()

    def epochs(self, one_epoch, plan: Plan, augment: bool, seed: int, epochs: int | None,
               initial_epoch: int):
        if self.cache is None:
            return super().epochs(one_epoch, plan, augment, seed, epochs, initial_epoch)
        import tensorflow as tf

        target = "" if self.cache == "memory" else cache_file(
            self.cache, self.split, self.data, self.items, augment)
        kept = (tf.data.Dataset.from_tensor_slices(self.tensors)
                .map(self._stored(augment), num_parallel_calls=tf.data.AUTOTUNE)
                .cache(target))
        buffer = self.n if self.cache == "memory" else min(self.n, FILE_CACHE_SHUFFLE)
        if epochs is None:
            order = kept.shuffle(buffer, seed=seed, reshuffle_each_iteration=True) \
                if plan.shuffle else kept
            return fresh_key(seed).flat_map(lambda key: one_epoch(key, order))

        # One dataset per epoch with a Python shuffle seed: Dataset.shuffle refuses a tensor
        # seed once a global seed of 0 is set (keras.utils.set_random_seed(0)).
        def epoch(key):
            order = kept.shuffle(buffer, seed=seed * 1000003 + key) if plan.shuffle else kept
            return one_epoch(key, order)

        def chain(keys):
            if len(keys) == 1:
                return epoch(keys[0])
            return chain(keys[:len(keys) // 2]).concatenate(chain(keys[len(keys) // 2:]))

        return chain(list(range(initial_epoch, epochs))) if epochs > initial_epoch else \
            epoch(0).take(0)
