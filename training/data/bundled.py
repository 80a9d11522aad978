"""Data that needs no download: scikit-learn's bundled handwritten digits and synthetic noise."""

from __future__ import annotations

import numpy as np

from training.data.table import DatasetInfo


def digits_test_mask(y) -> np.ndarray:
    """Which of scikit-learn's digits (labels `y`, in load_digits' order) are the test split:
    sklearn has no official split, so a fixed stratified 80/20 one (1438 / 359)."""
    rng = np.random.default_rng(0)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        test_idx.extend(rng.choice(idx, size=round(len(idx) * 0.2), replace=False))
    test_mask = np.zeros(len(y), bool)
    test_mask[np.array(test_idx)] = True
    return test_mask


def read_digits(split: str):
    import tensorflow as tf
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32) * (255.0 / 16.0)
    x = tf.image.resize(x[..., None], (20, 20), method="bilinear").numpy()
    x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    x = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    y = digits.target.astype(np.int32)
    test_mask = digits_test_mask(y)
    mask = test_mask if split == "test" else ~test_mask
    return x[mask], y[mask]


def read_synthetic(info: DatasetInfo, split: str):
    n = info.splits[split]
    rng = np.random.default_rng(1 if split == "train" else 2)
    images = rng.integers(0, 256, size=(n, *info.image_size), dtype=np.uint8)
    labels = rng.integers(0, info.num_classes, size=n).astype(np.int32)
    return images, labels
