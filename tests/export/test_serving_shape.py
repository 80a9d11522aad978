"""Each artifact, run in its own runtime as a deployment would, takes images of the model's
height, width and channels at any batch size and refuses every other image shape."""

import numpy as np
import pytest

GOOD_BATCHES = (1, 5)


def _wrong_shapes(h, w, c):
    return [(1, h + 4, w + 4, c), (2, h, w + 1, c), (1, h, w, c + 2), (1, h // 2, w * 2, c),
            (1, 1, 1, c)]


def _runners(exported):
    """(name, callable images -> logits, its input's (H, W, C)) for every artifact, through the
    runtimes' own APIs (not export.load_runner, which could check shapes itself). The TFLite
    files take RGB (a grey model's too: MediaPipe feeds RGB), the int8 one as uint8."""
    import onnxruntime as ort
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    loaded = tf.saved_model.load(str(exported.out / exported.artifact("saved_model")["path"]))
    serve = loaded.signatures["serving_default"]
    shape = exported.model.input_shape[1:]
    yield "saved_model", lambda x: serve(image=tf.constant(x))["logits"].numpy(), shape
    session = ort.InferenceSession(str(exported.out / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    yield "onnx", lambda x: session.run(["logits"], {"image": x})[0], shape
    for a in exported.manifest["artifacts"]:
        if a["format"] != "tflite":
            continue
        runner = Interpreter(model_path=str(exported.out / a["path"])).get_signature_runner(
            "serving_default")
        dtype = np.dtype(a["input"]["dtype"])
        yield (f"tflite {a['variant']}", lambda x, r=runner, t=dtype: r(image=x.astype(t))[
            "logits"], tuple(a["input"]["shape"][1:]))


def test_artifacts_refuse_images_of_another_shape(exported):
    rng = np.random.default_rng(0)
    for name, run, shape in _runners(exported):
        images = np.repeat(exported.images, shape[-1] // exported.images.shape[-1], axis=-1)
        for n in GOOD_BATCHES:
            assert run(images[:n]).shape == (n, 4), name
        for bad in _wrong_shapes(*shape):
            x = rng.uniform(0, 255, bad).astype(np.float32)
            # pytest.fail raises an outcome that is no Exception: it is not caught here.
            with pytest.raises(Exception):
                out = run(x)
                pytest.fail(f"{name} accepted images of shape {bad} and returned {out.shape}")
        # A refused call leaves the runtime usable at the right shape.
        assert run(images[:2]).shape == (2, 4), name

