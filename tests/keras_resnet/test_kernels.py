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


def _grouped_conv_and_stock(layer, x):
    """(outputs, input gradient, kernel gradient, graph op types) with the kernels in use,
    then the same with stock Keras."""
    results = []
    for choice in ("fast", "stock"):
        with kernels.use(choice):
            @tf.function
            def step(x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = layer(x, training=True)
                    loss = tf.reduce_sum(tf.cast(y, "float32") * np.linspace(-1, 1, y.shape[-1]))
                return y, *tape.gradient(loss, [x, layer.kernel])

            ops = {op.type for op in step.get_concrete_function(x).graph.get_operations()}
            results.append([np.asarray(t, "float32") for t in step(x)] + [ops])
    return results


@pytest.mark.parametrize("shape, filters, groups, strides, padding, explicit", [
    ((2, 7, 7, 8), 8, 4, 1, "same", None),
    ((2, 8, 8, 16), 16, 8, 2, "valid", 1),  # torch's symmetric padding at stride 2
    ((2, 6, 6, 6), 12, 2, 1, "valid", ((0, 1), (2, 0))),  # one-sided padding
    ((1, 6, 5, 64), 16, 2, 2, "same", None),  # Keras's asymmetric "same" at stride 2
    ((2, 5, 5, 128), 64, 4, 1, "same", None),  # 32 input channels per group
])
def test_grouped_conv_kernel_matches_stock_keras_outputs_and_gradients(
        shape, filters, groups, strides, padding, explicit):
    from keras_resnet.layers import Conv2D

    layer = Conv2D(filters, 3, strides=strides, padding=padding, groups=groups,
                   explicit_padding=explicit, use_bias=False)
    x = tf.constant(random_images(shape[1:], batch=shape[0]) - 0.5)
    (*fast, fast_ops), (*stock, stock_ops) = _grouped_conv_and_stock(layer, x)
    assert layer.kernel.shape == (3, 3, shape[-1] // groups, filters)
    # Keras runs a grouped convolution as an XLA function; the kernel, as dense Conv2D ops.
    assert {"Conv2D", "Conv2DBackpropFilter"} <= fast_ops and "PartitionedCall" not in fast_ops
    assert "PartitionedCall" in stock_ops and "Conv2D" not in stock_ops
    # dense convolutions only: TensorFlow's grouped Conv2D breaks inference graphs (below)
    graph = tf.function(layer).get_concrete_function(x).graph
    assert not [op for op in graph.get_operations() if op.type == "Conv2D"
                and op.inputs[1].shape[2] != op.inputs[0].shape[3]]
    for got, want in zip(fast, stock):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_grouped_conv_kernel_computes_in_the_layers_mixed_precision():
    from keras_resnet.layers import Conv2D

    # 2 input channels per group, then 32
    model = keras.Sequential([
        keras.Input((6, 6, 16)),
        Conv2D(64, 3, padding="same", groups=8, use_bias=False, dtype="mixed_bfloat16"),
        Conv2D(32, 3, strides=2, padding="valid", explicit_padding=1, groups=2, use_bias=False,
               dtype="mixed_bfloat16")])
    x = tf.constant(random_images((6, 6, 16)))
    results = []
    for choice in ("fast", "stock"):
        with kernels.use(choice):
            @tf.function
            def step(x):
                with tf.GradientTape() as tape:
                    y = model(x, training=True)
                    loss = tf.reduce_sum(tf.cast(y, "float32") ** 2)
                return y, tape.gradient(loss, model.trainable_weights)

            results.append(step(x))
    (y, grads), (y_stock, grads_stock) = results
    assert y.dtype == "bfloat16" and all(w.dtype == "float32" for w in model.weights)
    y, y_stock = np.asarray(tf.cast(y, "float32")), np.asarray(tf.cast(y_stock, "float32"))
    np.testing.assert_allclose(y, y_stock, rtol=0, atol=2e-2 * np.abs(y_stock).max())
    for g, g_stock in zip(grads, grads_stock):
        np.testing.assert_allclose(g, g_stock, rtol=0, atol=5e-2 * np.abs(g_stock).max())


def test_grouped_conv_chunks_divide_the_groups():
    from keras_resnet.kernels.grouped import groups_per_chunk

    for groups in (2, 3, 4, 32, 64):
        for in_per_group in (1, 4, 8, 16, 64):
            per = groups_per_chunk(groups, in_per_group)
            assert groups % per == 0 and 1 <= per <= groups
    assert groups_per_chunk(32, 4) * 4 >= 16 and groups_per_chunk(32, 64) == 2


def test_a_grouped_model_saves_the_same_file_whichever_path_ran(tmp_path):
    from keras_resnet.layers import Conv2D

    def model():
        inputs = keras.Input((6, 6, 8))
        return keras.Model(inputs, Conv2D(8, 3, padding="same", groups=4, name="g")(inputs))

    x = random_images((6, 6, 8))
    saved = {}
    for choice in ("fast", "stock"):
        with kernels.use(choice):
            m = model()
            m.set_weights([np.arange(3 * 3 * 2 * 8, dtype="float32").reshape(3, 3, 2, 8) / 100,
                           np.zeros(8, "float32")])
            m.predict(x, verbose=0)
            m.save(tmp_path / f"{choice}.keras")
            saved[choice] = (m.get_layer("g").get_config(), [w.shape for w in m.weights])
    assert saved["fast"] == saved["stock"]
    assert saved["fast"][1][0] == (3, 3, 2, 8)
    plain = keras.layers.Conv2D(8, 3, padding="same", groups=4, name="g").get_config()
    assert {k: v for k, v in saved["fast"][0].items() if k != "dtype"} == {
        k: v for k, v in plain.items() if k != "dtype"}
    with kernels.use("stock"):
        loaded = keras.saving.load_model(tmp_path / "fast.keras")
        stock = loaded.predict(x, verbose=0)
    fast = keras.saving.load_model(tmp_path / "stock.keras").predict(x, verbose=0)
    np.testing.assert_allclose(fast, stock, rtol=1e-5, atol=1e-5 * np.abs(stock).max())


def test_a_grouped_layer_freezes_to_plain_ops_that_exporters_convert():
    # Keras's grouped convolution is an XLA function call, which tf2onnx leaves as an
    # unknown StatefulPartitionedCall node; the kernel's frozen graph has none.
    from keras_resnet._keras_compat import variables_to_constants_as_graph
    from keras_resnet.layers import Conv2D

    inputs = keras.Input((6, 6, 64))
    y = Conv2D(64, 3, padding="same", groups=16, use_bias=False)(inputs)
    y = Conv2D(64, 3, strides=2, padding="valid", explicit_padding=1, groups=2, use_bias=False)(y)
    model = keras.Model(inputs, y)
    ops = {}
    for choice in ("fast", "stock"):
        with kernels.use(choice):
            fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(
                tf.TensorSpec((None, 6, 6, 64)))
            ops[choice] = {node.op for node in variables_to_constants_as_graph(fn)[1].node}
    assert "StatefulPartitionedCall" in ops["stock"]
    assert {"Conv2D", "Split", "ConcatV2"} <= ops["fast"]
    assert not any("PartitionedCall" in op for op in ops["fast"])


def test_a_grouped_conv_batch_norm_relu_runs_in_inference():
    # TensorFlow's optimizer fuses Conv2D + batch norm + ReLU in inference graphs into a fused
    # convolution that rejects a grouped Conv2D at run time; the kernel's are dense.
    from keras_resnet.layers import Conv2D, make_bn

    inputs = keras.Input((5, 5, 64))
    y = Conv2D(64, 3, padding="same", groups=2, use_bias=False)(inputs)
    model = keras.Model(inputs, keras.layers.ReLU()(make_bn("bn")(y)))
    x = tf.constant(random_images((5, 5, 64)))
    fast = np.asarray(tf.function(lambda x: model(x, training=False))(x))
    with kernels.use("stock"):
        stock = np.asarray(tf.function(lambda x: model(x, training=False))(x))
    np.testing.assert_allclose(fast, stock, rtol=1e-5, atol=1e-5 * np.abs(stock).max())
