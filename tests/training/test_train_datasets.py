"""Dataset table and tf.data pipelines: shapes, dtypes, normalization, seeded augmentation."""

import collections
import itertools

import numpy as np
import pytest

from training import data as datasets
from training.data import DATASETS, load, load_arrays, make_pipeline


def test_table_is_consistent():
    assert {"mnist", "fashion_mnist", "cifar10", "cifar100", "digits", "synthetic"} <= set(DATASETS)
    for name, info in DATASETS.items():
        h, w, c = info.image_size
        assert info.name == name
        assert len(info.class_names) == info.num_classes == len(set(info.class_names))
        assert len(info.mean) in (1, c) and len(info.std) in (1, c)
        assert all(0 < m < 255 for m in info.mean) and all(0 < s < 255 for s in info.std)
        assert info.augmentation in ("mnist", "cifar", "none")
    assert DATASETS["cifar100"].num_classes == 100
    assert DATASETS["mnist"].mean[0] == pytest.approx(0.1307 * 255)
    assert DATASETS["synthetic"].synthetic and not DATASETS["digits"].synthetic


def test_digits_arrays_are_real_upscaled_digits():
    x_tr, y_tr, source = load_arrays("digits", "train", val_fraction=0.0)
    x_te, y_te, _ = load_arrays("digits", "test")
    assert source == "sklearn"
    assert x_tr.shape == (1438, 28, 28, 1) and x_te.shape == (359, 28, 28, 1)
    assert x_tr.dtype == np.uint8 and y_tr.dtype == np.int32
    assert set(np.unique(y_te)) == set(range(10))
    # MNIST layout: 4-pixel empty border around a 20x20 digit, full 0..255 range inside.
    assert x_tr[:, :4].max() == 0 and x_tr[:, -4:].max() == 0
    assert x_tr.max() == 255
    both = np.concatenate([x_tr, x_te]).astype(np.float64)
    assert both.mean() == pytest.approx(DATASETS["digits"].mean[0], abs=0.01)
    assert both.std() == pytest.approx(DATASETS["digits"].std[0], abs=0.01)


def test_val_split_is_disjoint_fixed_and_subset_applies():
    x_all, _, _ = load_arrays("digits", "train", val_fraction=0.0)
    x_tr, _, _ = load_arrays("digits", "train", val_fraction=0.1)
    x_va, _, _ = load_arrays("digits", "val", val_fraction=0.1)
    assert len(x_tr) + len(x_va) == len(x_all) and len(x_va) == 144
    rows = lambda a: {r.tobytes() for r in a.reshape(len(a), -1)}  # noqa: E731
    # A partition: every image in exactly one part. Compared as multisets because sklearn's
    # digits hold a few identical scans, which may land in both parts as different images.
    counts = lambda a: collections.Counter(r.tobytes() for r in a.reshape(len(a), -1))  # noqa: E731
    assert counts(x_tr) + counts(x_va) == counts(x_all)
    x_sub, _, _ = load_arrays("digits", "train", val_fraction=0.1, subset=100)
    assert len(x_sub) == 100 and rows(x_sub) <= rows(x_tr)
    x_va2, _, _ = load_arrays("digits", "val", val_fraction=0.1)
    assert np.array_equal(x_va, x_va2)


def test_pipeline_shapes_dtypes_and_raw_pixels():
    ds = load("digits", "test", batch_size=64)
    batches = list(ds)
    assert len(batches) == int(ds.cardinality()) == 6  # 359 / 64, last batch partial
    x, y = batches[0]
    assert x.shape == (64, 28, 28, 1) and x.dtype.name == "float32"
    assert y.shape == (64,) and y.dtype.name == "int32"
    assert float(x.numpy().max()) == 255.0 and float(x.numpy().min()) == 0.0
    x_te, y_te, _ = load_arrays("digits", "test")
    got = np.concatenate([b[0].numpy() for b in batches])
    assert np.array_equal(got, x_te.astype(np.float32))  # test split: unshuffled, unaugmented
    assert np.array_equal(np.concatenate([b[1].numpy() for b in batches]), y_te)


def test_model_normalization_layer_standardises_the_dataset():
    from keras_resnet import build_resnet

    info = DATASETS["digits"]
    model = build_resnet("resnet18", info.image_size, 10, stem="cifar", width=4,
                         normalization=(info.mean, info.std))
    x_te, _, _ = load_arrays("digits", "test")
    z = model.get_layer("normalization")(x_te.astype(np.float32)).numpy()
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05


def _epochs(ds, steps):
    batches = [(x.numpy(), y.numpy()) for x, y in ds]
    return [batches[i:i + steps] for i in range(0, len(batches), steps)]


def test_augmentation_is_deterministic_per_seed_and_epoch():
    kw = dict(batch_size=256, subset=512)
    a = _epochs(load("digits", "train", seed=3, epochs=3, **kw), 2)
    b = _epochs(load("digits", "train", seed=3, epochs=3, **kw), 2)
    c = _epochs(load("digits", "train", seed=4, epochs=3, **kw), 2)
    resumed = _epochs(load("digits", "train", seed=3, epochs=3, initial_epoch=1, **kw), 2)
    assert len(a) == 3
    for ea, eb in zip(a, b):
        for (xa, ya), (xb, yb) in zip(ea, eb):
            assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert not np.array_equal(a[0][0][0], c[0][0][0])  # another seed, other batches
    assert not np.array_equal(a[0][0][1], a[1][0][1])  # reshuffled each epoch
    for ea, er in zip(a[1:], resumed):  # a resumed run sees exactly the same epochs 1 and 2
        for (xa, ya), (xr, yr) in zip(ea, er):
            assert np.array_equal(xa, xr) and np.array_equal(ya, yr)


def test_user_pipeline_reshuffles_each_iteration_reproducibly():
    first = [y.numpy() for _, y in load("digits", "train", batch_size=2000, seed=1)]
    ds = load("digits", "train", batch_size=2000, seed=1)
    again = [y.numpy() for _, y in ds]
    second = [y.numpy() for _, y in ds]
    assert np.array_equal(first[0], again[0])
    assert not np.array_equal(again[0], second[0])
    assert sorted(again[0]) == sorted(second[0])


def test_mnist_augmentation_moves_pixels_but_keeps_labels_and_ink():
    x, y, _ = load_arrays("digits", "train", subset=256)
    plain = next(iter(make_pipeline(x, y, 256, shuffle=False, augmentation="none")))
    aug = next(iter(make_pipeline(x, y, 256, shuffle=False, augmentation="mnist", seed=0)))
    assert np.array_equal(plain[1].numpy(), aug[1].numpy())
    xa, xp = aug[0].numpy(), plain[0].numpy()
    assert xa.min() >= 0 and xa.max() <= 255.0 + 1e-3
    changed = np.abs(xa - xp).reshape(256, -1).max(axis=1) > 1
    assert changed.mean() > 0.95
    # Rotation <= 10 deg and shift <= 2.8 px keep the digit inside the 28x28 frame: ink is kept.
    ink_ratio = xa.reshape(256, -1).sum(1) / xp.reshape(256, -1).sum(1)
    assert np.all(ink_ratio > 0.85) and np.all(ink_ratio < 1.15)


def test_cifar_augmentation_is_pad4_crop_and_flip_exactly():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, size=(32, 32, 32, 3), dtype=np.uint8)  # no zeros: padding shows
    y = np.arange(32, dtype=np.int32)
    out = next(iter(make_pipeline(x, y, 32, shuffle=False, augmentation="cifar", seed=5)))[0]
    out = out.numpy()
    padded = np.pad(x.astype(np.float32), ((0, 0), (4, 4), (4, 4), (0, 0)))
    flips = 0
    for i in range(32):
        matches = [(dy, dx, f) for dy, dx, f in itertools.product(range(9), range(9), (0, 1))
                   if np.array_equal(out[i], (lambda c: c[:, ::-1] if f else c)(
                       padded[i, dy:dy + 32, dx:dx + 32]))]
        assert matches, f"image {i} is not a 4-pixel crop (+ flip) of its source"
        flips += matches[0][2]
    assert 4 < flips < 28  # both flipped and unflipped images occur


def test_synthetic_any_shape_and_unknown_names():
    ds = load("synthetic", "train", batch_size=8, image_shape=(12, 10, 2), num_classes=3)
    x, y = next(iter(ds))
    assert x.shape == (8, 12, 10, 2) and int(y.numpy().max()) < 3
    with pytest.raises(ValueError, match="Unknown dataset 'nope'"):
        load("nope")
    with pytest.raises(ValueError, match="Unknown split"):
        load("digits", "training")
    with pytest.raises(ValueError, match="only be chosen for 'synthetic'"):
        datasets.get_info("mnist", image_shape=(32, 32, 3))


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_pipeline_has_fully_known_image_shape(name):
    # Keras traces the train step with the dataset's element_spec: an unknown H or W there turns
    # off the models' shape-dependent fast paths (keras_resnet.layers.Conv2D's matrix products).
    info = DATASETS[name]
    n = 40
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, *info.image_size), dtype=np.uint8)
    labels = rng.integers(0, info.num_classes, n).astype(np.int32)
    for augmentation in ("none", "mnist", "cifar"):
        for epochs in (None, 3):
            ds = make_pipeline(images, labels, 16, shuffle=True, augmentation=augmentation,
                               epochs=epochs)
            spec = ds.element_spec[0]
            assert spec.shape.as_list() == [None, *info.image_size], (augmentation, spec)
            x, _ = next(iter(ds))
            assert x.shape == (16, *info.image_size)


def test_load_pipelines_train_val_test_all_have_static_shapes(tmp_path):
    from tests.training.test_folders import make_mixed_folder

    folder = str(make_mixed_folder(tmp_path / "pics", n=6, bad=0))  # images of many sizes
    for name, kwargs in (("digits", {}), ("synthetic", {"image_shape": (20, 24, 2)}),
                         ("folder", {"data_dir": folder, "image_shape": (20, 24, 1)}),
                         ("folder", {"data_dir": folder, "image_shape": (64, 72, 3),
                                     "cache": "memory"})):
        data = datasets.load_pipelines(name, batch_size=32, epochs=2, **kwargs)
        for ds in (data.train, data.val, data.test):
            assert ds.element_spec[0].shape[1:].is_fully_defined(), (name, ds.element_spec)
            assert tuple(ds.element_spec[0].shape[1:]) == data.info.image_size


def test_a_drawn_val_split_with_no_usable_image_is_a_data_error():
    from training.data import DataError
    from training.data.splits import held_out

    with pytest.raises(DataError, match="none of the 2 images drawn for the val split"):
        held_out("val", 10, 0.2, None, "of photos", keep=[False] * 10)
    assert list(held_out("train", 10, 0.2, 3, "of photos")) == sorted(
        held_out("train", 10, 0.2, 3, "of photos"))
