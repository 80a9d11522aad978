"""Image folders as a dataset: both layouts, the fixed split, decoding, and one-line errors."""

import numpy as np
import pytest
from PIL import Image

from training import folders


def write_images(folder, n, size=(20, 30), mode="RGB", seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
            folder / f"img{i:03d}.png")


def test_class_folders_split_off_a_fixed_stratified_test_set(tmp_path):
    write_images(tmp_path / "cat", 20)
    write_images(tmp_path / "dog", 10, seed=1)
    write_images(tmp_path / "dog" / "more", 2, seed=2)  # nested folders count
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    a, b = folders.scan(str(tmp_path)), folders.scan(str(tmp_path))
    assert a == b  # the same folder always gives the same split
    assert a.layout == "class folders" and a.class_names == ("cat", "dog")
    tests = [y for _, y in a.files["test"]]
    assert tests.count(0) == 2 and tests.count(1) == 1  # 10% of 20 and of 12, rounded
    assert len(a.files["train"]) + len(a.files["test"]) == 32
    assert not set(a.files["train"]) & set(a.files["test"])
    record = a.record()
    assert record["seed"] == folders.SPLIT_SEED and len(record["files"]["test"]) == 3


def test_train_val_test_folders(tmp_path):
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        for c in ("b", "a"):
            write_images(tmp_path / split / c, n)
    s = folders.scan(str(tmp_path))
    assert s.layout == "train/test folders" and s.class_names == ("a", "b")
    assert {k: len(v) for k, v in s.files.items()} == {"train": 12, "val": 4, "test": 6}
    assert all(p.startswith("val/") for p, _ in s.files["val"])


@pytest.mark.parametrize("make,message", [
    (lambda d: None, "at least two class folders"),
    (lambda d: write_images(d / "only", 5), "at least two class folders"),
    (lambda d: (write_images(d / "train" / "a", 2), write_images(d / "train" / "b", 2)),
     "has train/ but no test/"),
    (lambda d: (write_images(d / "train" / "a", 2), write_images(d / "train" / "b", 2),
                write_images(d / "test" / "c", 2)), "has classes that"),
    (lambda d: (write_images(d / "a", 1), write_images(d / "b", 1)), "too few images"),
    (lambda d: (write_images(d / "a", 20), (d / "b").mkdir()), "no training images"),
])
def test_unusable_folders_name_the_problem(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(folders.FolderError, match=message):
        folders.scan(str(tmp_path))


def test_missing_dir_and_no_dir():
    with pytest.raises(folders.FolderError, match="needs --data-dir"):
        folders.scan(None)
    with pytest.raises(folders.FolderError, match="is not a folder"):
        folders.scan("/no/such/folder")


def test_decode_converts_and_resizes_like_read_image(tmp_path):
    write_images(tmp_path / "a", 3, size=(20, 30))
    write_images(tmp_path / "b", 3, size=(16, 16), mode="L")
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    items = [("a/img000.png", 0), ("b/img001.png", 1)]
    images, labels = folders.decode(str(tmp_path), items, (12, 10, 1))
    assert images.shape == (2, 12, 10, 1) and images.dtype == np.uint8
    assert labels.tolist() == [0, 1]
    with Image.open(tmp_path / "a" / "img000.png") as img:
        want = np.asarray(img.convert("L").resize((10, 12), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(images[0, ..., 0], want)
    rgb, _ = folders.decode(str(tmp_path), items, (8, 8, 3))
    assert rgb.shape == (2, 8, 8, 3)
    with pytest.raises(folders.FolderError, match="broken.png is not a readable image"):
        folders.decode(str(tmp_path), [("b/broken.png", 1)], (8, 8, 3))
