"""Warnings of our dependencies that say nothing to our users stay off stderr, filtered where
they are raised (each by its own text: other warnings still show)."""

import warnings

import numpy as np


def test_the_tf2onnx_patch_raises_no_numpy_future_warning(monkeypatch):
    from keras.src.export import tf2onnx_lib

    from keras_resnet import _keras_compat

    tf2onnx_lib.patch_tf2onnx.cache_clear()  # run the patch again, as in a fresh process
    monkeypatch.delattr(np, "object", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _keras_compat.patch_tf2onnx()
    assert not [w for w in caught if "np.object" in str(w.message)], caught


def test_a_class_name_the_font_lacks_draws_without_a_warning(tmp_path):
    from training.report import plot_confusion

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_confusion(np.eye(2, dtype=int), ["猫", "犬"], str(tmp_path / "cm.png"), "pets")
    assert (tmp_path / "cm.png").stat().st_size > 0
    assert not [w for w in caught if "Glyph" in str(w.message)], [str(w.message) for w in caught]
