"""--precision auto on a CPU (the CPU's flags and the environment mocked), and what stays float32
under mixed_bfloat16: batch-norm statistics, logits, loss, the checkpoint files and the exported
model."""

import os

import numpy as np
import pytest

from keras_resnet import fast
from training import fit

ZEN4 = "flags\t\t: fpu sse4_2 avx2 fma avx512f avx512_vnni avx512_bf16\n"
SAPPHIRE_RAPIDS = "flags\t\t: avx2 avx512f amx_tile amx_int8 amx_bf16\n"
AVX2_ONLY = "flags\t\t: fpu sse4_2 avx2 fma\n"


CASES = [
    (ZEN4, {}, "mixed_bfloat16", "avx512_bf16"),
    (SAPPHIRE_RAPIDS, {}, "mixed_bfloat16", "amx_bf16"),
    (AVX2_ONLY, {}, "float32", "no avx512_bf16 or amx_bf16"),
    (ZEN4, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "float32", "ONEDNN_MAX_CPU_ISA=AVX2"),
    (ZEN4, {"ONEDNN_MAX_CPU_ISA": "avx512_core_vnni"}, "float32", "AVX512_CORE_VNNI"),
    (ZEN4, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, "mixed_bfloat16", "avx512_bf16"),
    (SAPPHIRE_RAPIDS, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "mixed_bfloat16", "amx_bf16"),
    (ZEN4, {"ONEDNN_MAX_CPU_ISA": "ALL"}, "mixed_bfloat16", "avx512_bf16"),
    (ZEN4, {"ONEDNN_MAX_CPU_ISA": "NO_SUCH_ISA"}, "float32", "NO_SUCH_ISA"),
    (ZEN4, {"TF_ENABLE_ONEDNN_OPTS": "0"}, "float32", "TF_ENABLE_ONEDNN_OPTS"),
]


def test_auto_is_bfloat16_only_where_the_cpu_computes_it():
    for cpuinfo, environ, precision, words in CASES:
        chosen, why = fast.default_cpu_precision(fast.cpu_flags(cpuinfo), environ)
        assert (chosen, words in why) == (precision, True), (cpuinfo, environ, why)


def test_fit_resolves_auto_from_the_cpu_and_explicit_choices_win(monkeypatch):
    zen4, avx2 = fast.cpu_flags(ZEN4), fast.cpu_flags(AVX2_ONLY)
    monkeypatch.setattr(fast, "cpu_flags", lambda cpuinfo=None: zen4)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    precision, why = fit.resolve_precision("auto", [])
    assert precision == "mixed_bfloat16" and "no GPU" in why and "avx512_bf16" in why
    assert fit.resolve_precision("float32", []) == ("float32", "requested")
    assert fit.resolve_precision("auto", ["gpu:0"])[0] == "mixed_float16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert fit.resolve_precision("auto", [])[0] == "float32"
    monkeypatch.setattr(fast, "cpu_flags", lambda cpuinfo=None: avx2)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert fit.resolve_precision("auto", []) == (
        "float32", "auto: no GPU visible; the CPU has no avx512_bf16 or amx_bf16")


def test_unreadable_cpuinfo_is_no_flags():
    assert fast.cpu_flags("") == frozenset()
    assert fast.native_bfloat16(frozenset(), {})[0] is False


def test_bfloat16_training_keeps_statistics_logits_loss_and_files_float32(tmp_path):
    import keras

    import export
    from export.model_io import is_float32
    from keras_resnet import build_resnet
    from training.checkpoints import Snapshot
    from training.modelio import load_model

    keras.config.set_dtype_policy("mixed_bfloat16")
    model = build_resnet("resnet18", (8, 8, 3), 3, stem="cifar", width=4)
    keras.config.set_dtype_policy("float32")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.SGD(0.1), loss)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, 16)
    bn = model.get_layer("stem_bn")
    before = np.array(bn.moving_variance)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert model.get_layer("stem_conv").compute_dtype == "bfloat16"
    for var in (bn.moving_mean, bn.moving_variance, bn.gamma):
        assert var.dtype == "float32"
    assert not np.array_equal(before, np.array(bn.moving_variance))  # the update happened
    logits = model(x, training=False)
    assert logits.dtype == "float32"
    assert keras.ops.convert_to_numpy(loss(y, logits)).dtype == np.float32
    assert all(w.dtype == np.float32 for w in model.get_weights())

    path = str(tmp_path / "bf16.keras")
    Snapshot(model).write(path)  # as the run checkpoints write it
    loaded = load_model(path)
    assert loaded.get_layer("stem_conv").compute_dtype == "bfloat16"
    rebuilt = export.float32_model(loaded)
    assert is_float32(rebuilt)
    for a, b in zip(loaded.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(a, b)
    exact = np.asarray(rebuilt(x, training=False))
    approx = np.asarray(loaded(x, training=False))
    assert exact.dtype == approx.dtype == np.float32
    # bfloat16 keeps 8 bits of mantissa: the same net, within its round-off
    assert np.abs(exact - approx).max() <= 0.1 * max(1.0, np.abs(exact).max())
    assert (exact.argmax(1) == approx.argmax(1)).mean() >= 0.75
