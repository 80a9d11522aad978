"""Image folders as a dataset: both layouts, the fixed split, decoding, and one-line errors."""

import glob
import os

import numpy as np
import pytest
from PIL import Image

from training.data import SPLIT_SEED
from training.data import folder as folders
from training.preprocessing import is_image_name


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
    assert record["seed"] == SPLIT_SEED and len(record["files"]["test"]) == 3


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


def write_formats(folder, size=(30, 20), seed=0):
    """One image per format and mode a user's folder may hold, plus junk; returns the images'
    RGB pixels by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(rgb, "RGB")
    img.convert("L").save(folder / "grey.png")
    img.convert("RGBA").save(folder / "alpha.png")
    img.convert("P").save(folder / "palette.gif")
    img.save(folder / "photo.jpg", quality=95)
    img.save(folder / "plain.bmp")
    img.save(folder / "modern.webp", lossless=True)
    (folder / "notes.txt").write_text("not an image")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return rgb


def test_every_format_and_mode_decodes_to_the_asked_channels(tmp_path):
    from training.preprocessing import Preprocessing, load_image

    rgb = write_formats(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if is_image_name(p.name)) == [
        "alpha.png", "grey.png", "modern.webp", "palette.gif", "photo.jpg", "plain.bmp"]
    # No resize (the model's input size is the images' own): exact pixels for lossless files.
    same = {c: Preprocessing(20, 30, c, "stretch") for c in (1, 3)}
    grey = np.asarray(Image.fromarray(rgb).convert("L"), np.float32)[..., None]
    np.testing.assert_array_equal(load_image(tmp_path / "grey.png", same[1]), grey)
    np.testing.assert_array_equal(load_image(tmp_path / "grey.png", same[3]),
                                  np.repeat(grey, 3, -1))  # grey into RGB: repeated
    for name in ("alpha.png", "plain.bmp", "modern.webp"):  # alpha dropped
        np.testing.assert_array_equal(load_image(tmp_path / name, same[3]), rgb)
        # RGB into grey: the luma of PIL's convert("L")
        np.testing.assert_array_equal(load_image(tmp_path / name, same[1]), grey)
    with Image.open(tmp_path / "palette.gif") as gif:
        want = np.asarray(gif.convert("RGB"), np.float32)
    np.testing.assert_array_equal(load_image(tmp_path / "palette.gif", same[3]), want)
    with Image.open(tmp_path / "photo.jpg") as jpg:  # lossy: PIL's decoder is the reference
        want = np.asarray(jpg.convert("RGB"), np.float32)
    np.testing.assert_array_equal(load_image(tmp_path / "photo.jpg", same[3]), want)
    for mode in ("crop", "stretch"):
        for c in (1, 3):
            x = load_image(tmp_path / "photo.jpg", Preprocessing(16, 12, c, mode))
            assert x.shape == (16, 12, c) and x.dtype == np.float32


def test_crop_is_resize_then_centre_crop_and_auto_picks_by_size(tmp_path):
    import tensorflow as tf

    from training.preprocessing import Preprocessing, load_image, resolve_resize

    rgb = np.zeros((40, 80, 3), np.uint8)
    rgb[:, 20:60] = 255  # a white centre square between black sides
    Image.fromarray(rgb).save(tmp_path / "wide.png")
    crop = load_image(tmp_path / "wide.png", Preprocessing(28, 28, 3, "crop"))
    # Shorter side to 28 / 0.875 = 32 (so 32x64), then the centre 28x28: inside the square.
    want = tf.image.resize(rgb, (32, 64), antialias=True)[2:30, 18:46].numpy()
    np.testing.assert_allclose(crop, want, atol=1e-4)
    stretch = load_image(tmp_path / "wide.png", Preprocessing(28, 28, 3, "stretch"))
    assert stretch[:, 0].max() < 1 and crop.min() > 250  # stretch keeps the black sides
    assert resolve_resize("auto", 28, 28) == "stretch" and resolve_resize("auto", 48, 64) == "stretch"
    assert resolve_resize("auto", 64, 64) == "crop" and resolve_resize("auto", 224, 224) == "crop"
    with pytest.raises(ValueError, match="--resize: unknown value 'zoom'"):
        resolve_resize("zoom", 28, 28)


def make_mixed_folder(root, n=10, bad=1):
    """Two learnable classes (dark, bright) in every format, sizes 20..44 px, junk files and
    `bad` undecodable .jpg files in the dark class."""
    rng = np.random.default_rng(0)
    formats = (("png", "L"), ("png", "RGBA"), ("gif", "P"), ("jpg", "RGB"), ("bmp", "RGB"))
    for name, level in (("dark", 50), ("bright", 200)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            w, h = rng.integers(20, 45, 2)
            pixels = np.clip(rng.normal(level, 25, (h, w, 3)), 0, 255).astype(np.uint8)
            ext, mode = formats[i % len(formats)]
            Image.fromarray(pixels, "RGB").convert(mode).save(root / name / f"{i}.{ext}")
    for i in range(bad):
        (root / "dark" / f"broken{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (root / "dark" / "notes.txt").write_text("not an image")
    (root / "bright" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return root


def test_check_names_skips_and_counts_undecodable_files(tmp_path):
    from training.preprocessing import Preprocessing

    root = make_mixed_folder(tmp_path / "pics", n=10, bad=1)
    scan = folders.scan(str(root))
    assert sum(len(v) for v in scan.files.values()) == 21  # junk never listed
    lines = []
    data = folders.check(scan, Preprocessing(16, 16, 3, "stretch"), log=lines.append)
    assert [p for p, _ in data.skipped] == [os.path.join("dark", "broken0.jpg")]
    assert "not a decodable image" in data.skipped[0][1]
    assert data.skipped_record()["count"] == 1
    assert any("1 of 21 image files" in line for line in lines)
    assert any("dark/broken0.jpg" in line for line in lines)
    assert sum(len(v) for v in data.files.values()) == 20
    assert 50 < data.mean[0] < 200 and data.std[0] > 40  # both classes in the statistics


def test_more_than_a_tenth_undecodable_stops_with_one_line(tmp_path):
    from training.preprocessing import Preprocessing

    root = make_mixed_folder(tmp_path / "pics", n=10, bad=3)  # 3 of 23
    with pytest.raises(folders.FolderError) as e:
        folders.check(folders.scan(str(root)), Preprocessing(16, 16, 3, "stretch"),
                      log=lambda m: None)
    message = str(e.value)
    assert "3 of 23 image files" in message and "broken" in message and "\n" not in message


@pytest.mark.parametrize("resize", ["crop", "stretch"])
def test_folder_pipelines_keep_a_static_shape_and_cache_changes_nothing(tmp_path, resize):
    import tensorflow as tf

    from training import data as datasets
    from training.preprocessing import load_images

    root = make_mixed_folder(tmp_path / "pics", n=10, bad=0)
    shape = (24, 20, 3)
    kw = dict(data_dir=str(root), image_shape=shape, resize=resize, val_fraction=0.2)
    runs = {}
    for cache in (None, "memory", str(tmp_path / "cache")):
        data = datasets.load_pipelines("folder", batch_size=4, epochs=2, cache=cache, **kw)
        for ds in (data.train, data.val, data.test):
            assert ds.element_spec[0].shape.as_list() == [None, *shape], ds.element_spec
        runs[cache] = [np.concatenate([x for x, _ in d]) for d in (data.val, data.test)]
        x, _ = next(iter(data.train))
        assert x.shape == (4, *shape) and x.dtype == tf.float32
        assert float(tf.reduce_max(x)) <= 255.0 and float(tf.reduce_min(x)) >= 0.0
    for cached in (runs["memory"], runs[str(tmp_path / "cache")]):
        for a, b in zip(runs[None], cached):
            np.testing.assert_array_equal(a, b)
    assert glob.glob(str(tmp_path / "cache") + ".train-*.index")  # named after the data
    # The evaluation pipeline gives exactly the pixels of the Python API (predict's).
    source = datasets.open_source("folder", str(root), image_shape=shape, resize=resize)
    items = source.items("test", 0.2).items
    want = load_images([root / p for p, _ in items], source.preprocessing)
    np.testing.assert_array_equal(runs[None][1], want)


@pytest.mark.parametrize("cache", [None, "memory"])
def test_resumed_epochs_see_the_same_batches(tmp_path, cache):
    import keras

    from training import data as datasets

    keras.utils.set_random_seed(0)  # training.fit sets one; shuffles must take it
    root = make_mixed_folder(tmp_path / "pics", n=8, bad=0)
    kw = dict(data_dir=str(root), image_shape=(16, 16, 1), batch_size=4, seed=3, cache=cache)
    whole = [x.numpy() for x, _ in datasets.load("folder", "train", epochs=3, **kw)]
    resumed = [x.numpy() for x, _ in datasets.load("folder", "train", epochs=3,
                                                    initial_epoch=1, **kw)]
    assert len(whole) == 3 * len(resumed) // 2
    for a, b in zip(whole[len(whole) - len(resumed):], resumed):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(whole[0], whole[len(whole) // 3])  # epochs differ
