"""A model trained under mixed_float16 is rebuilt in float32, weights copied, then exported."""

import numpy as np
import pytest

import export
from export.model_io import is_float32

from tests.exports import NUM_CLASSES, separable_images


@pytest.mark.slow
def test_mixed_precision_model_exports_and_verifies(tmp_path):
    import keras

    import keras_resnet

    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = keras_resnet.build_resnet("resnet18", (28, 28, 1), NUM_CLASSES, width=8,
                                          normalization=(100.0, 70.0))
        x, y = separable_images((28, 28, 1), 32, seed=4)
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # moves the weights and BN stats
        model.save(tmp_path / "mixed.keras")
    finally:
        keras.config.set_dtype_policy("float32")
    loaded = export.load_model(tmp_path / "mixed.keras")
    assert not is_float32(loaded)

    rebuilt = export.float32_model(loaded)
    assert rebuilt is not loaded and is_float32(rebuilt)
    for a, b in zip(loaded.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(a, b)
    ref = np.asarray(rebuilt(x, training=False))
    # Loaded under the float32 global policy, the file still computes in float16: every layer,
    # block sublayers included, kept the policy it was saved with.
    half = np.asarray(loaded(x, training=False), dtype=np.float32)
    np.testing.assert_array_equal(half, np.asarray(model(x, training=False), dtype=np.float32))
    assert np.abs(ref - half).max() <= 0.05 * max(1.0, np.abs(ref).max())  # same net, fp16 math

    manifest = export.export_all(
        loaded, tmp_path / "out", formats="saved_model,onnx,tflite",
        tflite_variants="float32,float16", images=x, labels=y, batch_sizes=(1, 7),
        latency_runs=0, log=lambda m: None,
    )
    assert manifest["passed"], [a["verification"]["failures"] for a in manifest["artifacts"]]
    assert manifest["source"]["rebuilt_in_float32"] is True
    assert "mixed_float16" in manifest["source"]["dtype_policies"]
    assert "rebuilt from mixed precision" in manifest["verification"]["reference"]
    onnx_diff = [a for a in manifest["artifacts"] if a["format"] == "onnx"][0]["verification"]
    assert onnx_diff["max_abs_diff"] <= onnx_diff["tolerance"]
