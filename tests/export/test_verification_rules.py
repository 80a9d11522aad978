"""The pass/fail rules of export.verify, on artifacts whose outputs the test controls."""

import numpy as np
import pytest

from export import verification


class FakeRunner:
    """Stands in for a loaded artifact: returns `logits`, optionally wrong for one image."""

    precision = "float16"
    input = {"name": "image", "shape": [None, 4, 4, 1], "dtype": "float32"}
    outputs = ["logits", "probabilities"]

    def __init__(self, logits, flip_index=None, garbage_at_batch1=False):
        self.logits, self.flip, self.garbage = logits, flip_index, garbage_at_batch1

    def __call__(self, images):
        idx = images[:, 0, 0, 0].astype(int)  # each image carries its own index
        out = self.logits[idx].copy()
        if self.flip is not None and self.flip in idx:
            row = int(np.where(idx == self.flip)[0][0])
            out[row] = out[row][::-1]  # a different top-1 for that one image
        if self.garbage and len(images) == 1:
            out = out + 100.0
        return out


@pytest.fixture
def data():
    n = 256
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, 3)).astype(np.float32)
    images = np.zeros((n, 4, 4, 1), np.float32)
    images[:, 0, 0, 0] = np.arange(n)
    return images, logits


def run(monkeypatch, runner, images, logits):
    monkeypatch.setattr(verification, "load_runner", lambda path, kind=None: runner)
    return verification.verify("fake.tflite", logits, images, kind="tflite", variant="float16",
                                batch_sizes=(1, 8), latency_runs=1)


def test_one_flip_among_the_batch1_images_does_not_fail_a_float16_artifact(monkeypatch, data):
    images, logits = data
    flipped = int(np.argmax(logits[0]) == np.argmax(logits[0][::-1]))  # an index that flips
    result = run(monkeypatch, FakeRunner(logits, flip_index=flipped), images, logits)
    assert result["top1_agreement"] == pytest.approx(255 / 256)
    assert result["passed"], result["failures"]


def test_a_broken_batch1_path_fails(monkeypatch, data):
    images, logits = data
    result = run(monkeypatch, FakeRunner(logits, garbage_at_batch1=True), images, logits)
    assert not result["passed"]
    assert any("batch 1 vs batch 8" in f for f in result["failures"])


def test_low_agreement_fails(monkeypatch, data):
    images, logits = data
    bad = logits.copy()
    bad[:20] = bad[:20, ::-1]
    runner = FakeRunner(bad)
    result = run(monkeypatch, runner, images, logits)
    assert not result["passed"]
    assert any("top-1 agreement" in f for f in result["failures"])


def ops_runner(logits, ops, precision):
    runner = FakeRunner(logits)
    runner.ops = {"ops": sorted(set(ops["non_builtin"]) | {"CONV_2D"}), **ops}
    runner.precision = precision
    return runner


def run_tflite(monkeypatch, runner, images, logits, variant):
    monkeypatch.setattr(verification, "load_runner", lambda path, kind=None: runner)
    return verification.verify("fake.tflite", logits, images, kind="tflite", variant=variant,
                                batch_sizes=(1, 8), latency_runs=0)


def test_a_non_builtin_op_fails_any_tflite_variant(monkeypatch, data):
    images, logits = data
    runner = ops_runner(logits, {"non_builtin": ["FlexConv2D"], "float_compute_ops": []},
                        "float32")
    result = run_tflite(monkeypatch, runner, images, logits, "float32")
    assert not result["passed"]
    assert result["failures"] == ["non-builtin ops ['FlexConv2D']"]
    assert result["ops"]["non_builtin"] == ["FlexConv2D"]


def test_float_computation_fails_int8_only(monkeypatch, data):
    images, logits = data
    ops = {"non_builtin": [], "float_compute_ops": ["FULLY_CONNECTED"]}
    result = run_tflite(monkeypatch, ops_runner(logits, ops, "dynamic_int8"), images, logits,
                        "int8")
    assert result["failures"] == ["float computation in the int8 model: ['FULLY_CONNECTED']"]
    result = run_tflite(monkeypatch, ops_runner(logits, ops, "dynamic_int8"), images, logits,
                        "dynamic_int8")
    assert result["passed"], result["failures"]
    # Without a stated variant the runner's reading of the file decides: dynamic range here.
    result = run_tflite(monkeypatch, ops_runner(logits, ops, "dynamic_int8"), images, logits,
                        None)
    assert result["variant"] == "dynamic_int8" and result["passed"], result
