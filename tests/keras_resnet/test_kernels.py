"""The kernel switch, the Keras/TF compatibility module, and building from a saved model's
weights."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_resnet import _keras_compat, build_resnet, kernels, stem_for_kernel
from tests.conftest import random_images


def test_the_switch_chooses_modes_or_kernel_names_and_restores_after_a_block():
    before = kernels.active()
    assert before == frozenset(kernels.KERNELS)  # the default: every kernel
    with kernels.use("stock"):
        assert kernels.active() == frozenset()
        assert not kernels.enabled("fused_batch_norm")
        with kernels.use("matmul_conv, fused_batch_norm"):
            assert kernels.active() == {"matmul_conv", "fused_batch_norm"}
        assert kernels.active() == frozenset()
    assert kernels.active() == before
    for bad in ("fastest", "", ["matmul_conv", "nope"]):
        with pytest.raises(ValueError, match="unknown kernel choice"):
            kernels.use(bad)
    assert kernels.active() == before
    with pytest.raises(ValueError, match="unknown kernel 'nope'"):
        kernels.enabled("nope")


def test_a_choice_holds_for_the_thread_that_made_it_only():
    import threading

    seen = {}
    inside, leave = threading.Event(), threading.Event()

    def other_thread():
        inside.wait()
        seen["other"] = kernels.active()
        leave.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with kernels.use("stock"):
        inside.set()
        leave.wait()
        seen["own"] = kernels.active()
    thread.join()
    assert seen == {"own": frozenset(), "other": frozenset(kernels.KERNELS)}


def test_the_environment_variable_is_read_once(monkeypatch):
    monkeypatch.setattr(kernels, "_from_environment", None)
    monkeypatch.setenv(kernels.ENV, "stock")
    assert kernels.active() == frozenset()
    monkeypatch.setenv(kernels.ENV, "fast")
    assert kernels.active() == frozenset()
    monkeypatch.setattr(kernels, "_from_environment", None)
    monkeypatch.setenv(kernels.ENV, "flipped_input_gradient")
    assert kernels.active() == {"flipped_input_gradient"}


def test_stock_keras_computes_the_same_outputs_without_the_fast_kernels():
    model = build_resnet("resnet18", input_shape=(28, 28, 1), num_classes=3, width=4)
    x = random_images((28, 28, 1), batch=2) * 255

    def run():
        fn = tf.function(lambda x: model(x, training=False))
        graph_ops = {op.type for op in fn.get_concrete_function(x).graph.get_operations()}
        return np.asarray(fn(x)), graph_ops

    fast, fast_ops = run()
    with kernels.use("stock"):
        stock, stock_ops = run()
    assert "FusedBatchNormV3" in fast_ops and "FusedBatchNormV3" not in stock_ops
    assert "BatchMatMulV2" in fast_ops and "BatchMatMulV2" not in stock_ops
    np.testing.assert_allclose(stock, fast, rtol=1e-4, atol=1e-4 * np.abs(fast).max())


def test_stem_for_kernel_is_the_one_rule():
    assert (stem_for_kernel(7), stem_for_kernel(3)) == ("imagenet", "cifar")
    with pytest.raises(ValueError, match=r"'conv1.weight' is a 5x5 kernel; supported stems: "
                       r"7x7 -> 'imagenet', 3x3 -> 'cifar'"):
        stem_for_kernel(5, what="'conv1.weight'")


def test_an_untested_keras_version_warns_and_does_not_fail(monkeypatch):
    monkeypatch.setitem(_keras_compat.TESTED, "keras", "0.0.1")
    with pytest.warns(RuntimeWarning, match=r"tested with keras 0\.0\.1, this is 3\."):
        _keras_compat._check_versions()
    monkeypatch.setitem(_keras_compat.TESTED, "keras", keras.__version__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _keras_compat._check_versions()


def test_model_from_keras_weights_keeps_stem_width_normalization_and_copies_what_fits(
        tmp_path):
    from keras_resnet import model_config, model_from_keras_weights

    source = build_resnet("resnet18", input_shape=(32, 32, 3), num_classes=5, stem="cifar",
                          width=4, normalization=([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]))
    path = tmp_path / "source.keras"
    source.save(path)
    names = [f"c{i}" for i in range(7)]
    model, skipped = model_from_keras_weights(str(path), "resnet18", (24, 24, 3), 7, names)
    assert skipped == ["predictions"]
    config = model_config(model)
    assert (config["stem"], config["width"], config["num_classes"], config["input_shape"],
            config["class_names"]) == ("cifar", 4, 7, [24, 24, 3], names)
    assert config["normalization"] == model_config(source)["normalization"]
    for name in ("stem_conv", "stage4_block2"):
        for a, b in zip(model.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    fresh, none = model_from_keras_weights(source, "resnet34", (24, 24, 3), 7, load=False)
    assert none == [] and fresh.arch == "resnet34" and fresh.class_names is None
