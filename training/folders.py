"""Image folders as a dataset: class names from folder names, images decoded with PIL.

Two layouts of DIR are read:
- DIR/train/<class>/*, DIR/test/<class>/* and optionally DIR/val/<class>/*;
- DIR/<class>/* alone: a fixed share of each class (`TEST_FRACTION`, at least one image of a
  class with two or more; drawn with `SPLIT_SEED`)
  becomes the test split, so the same folder always gives the same split.
Class names are the folder names, sorted. Every image is read with PIL, converted to grayscale
("L") for one channel or "RGB" for three, and resized to the requested height and width with
bilinear interpolation: `read_image` is also what training.predict and export.predict use, so
a model sees the same pixels in training and in prediction.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TEST_FRACTION = 0.1
SPLIT_SEED = 20261124


class FolderError(ValueError):
    """An image folder that cannot be used as a dataset; the message names the path."""


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


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def _subfolders(folder: str) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


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
        class_names = tuple(_subfolders(train_dir))
        _need_two(train_dir, class_names)
        if "test" not in top:
            raise FolderError(f"{data_dir} has train/ but no test/: add test/<class>/ folders, "
                              "or put the class folders directly in it to split one off")
        files = {"train": _class_files(train_dir, class_names, data_dir)}
        for split in ("val", "test"):
            if split not in top:
                continue
            folder = os.path.join(data_dir, split)
            unknown = sorted(set(_subfolders(folder)) - set(class_names))
            if unknown:
                raise FolderError(f"{folder} has classes that {train_dir} lacks: {unknown}")
            files[split] = _class_files(folder, class_names, data_dir)
            if not files[split]:
                raise FolderError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        layout = "train/test folders"
    else:
        class_names = tuple(top)
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


def read_image(path: str, height: int | None, width: int | None, channels: int) -> np.ndarray:
    """uint8 (H, W, C) pixels of an image file: converted, then resized (bilinear) if needed."""
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise FolderError(f"images can be read with 1 or 3 channels, not {channels}")
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if height is not None and width is not None and img.size != (width, height):
                img = img.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise FolderError(f"{path} is not a readable image ({e})") from None
    return array.reshape(array.shape[0], array.shape[1], channels)


def decode(root: str, items, image_size) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W, C) images and int32 labels, decoded on a thread per CPU."""
    h, w, c = image_size
    images = np.empty((len(items), h, w, c), np.uint8)

    def one(i):
        images[i] = read_image(os.path.join(root, items[i][0]), h, w, c)

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(one, range(len(items))))
    return images, np.array([y for _, y in items], np.int32)
