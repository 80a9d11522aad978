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


def test_one_near_tie_flip_among_the_batch1_images_does_not_fail_a_float16_artifact(
        monkeypatch, data):
    images, logits = data
    logits = logits.copy()
    logits[0] = [1.0, 1.0 + 1e-4, -1.0]  # near-tied: float16 round-off may swap the two
    artifact = logits + np.random.default_rng(1).normal(0, 1e-3, logits.shape).astype("float32")
    artifact[0] = [1.0 + 1e-4, 1.0, -1.0]
    result = run(monkeypatch, StoredRunner(artifact), images, logits)
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


class StoredRunner(FakeRunner):
    """An artifact whose outputs are given: row i for the image carrying index i."""

    def __init__(self, outputs):
        super().__init__(outputs)


def quantized(monkeypatch, artifact, images, logits, variant="dynamic_int8"):
    monkeypatch.setattr(verification, "load_runner", lambda path, kind=None: StoredRunner(
        artifact))
    return verification.verify("fake.tflite", logits, images, kind="tflite", variant=variant,
                                batch_sizes=(1, 8), latency_runs=0)


@pytest.fixture
def untrained():
    """Logits of an untrained model: near-tied, so quantization noise of a correct int8
    conversion (about 1% of the logits, as measured on an untrained ResNet-18) flips many
    top-1 classes without anything being wrong."""
    rng = np.random.default_rng(0)
    n = 256
    logits = (5 + rng.normal(0, 0.3, (n, 10))).astype(np.float32)
    images = np.zeros((n, 4, 4, 1), np.float32)
    images[:, 0, 0, 0] = np.arange(n)
    return images, logits, rng


def test_a_faithful_int8_artifact_of_an_untrained_model_passes(monkeypatch, untrained):
    images, logits, rng = untrained
    artifact = logits + rng.normal(0, 0.05, logits.shape).astype(np.float32)
    result = quantized(monkeypatch, artifact, images, logits)
    assert result["top1_agreement"] < 0.95  # what the old top-1 rule failed
    assert result["relative_logit_error"] == pytest.approx(0.01, rel=0.1)
    assert result["top1_agreement_decisive"] == 1.0 and result["decisive_images"] > 20
    assert result["passed"], result["failures"]
    assert result["max_relative_logit_error"] == 0.25 and "relative logit error" in (
        result["check"])


@pytest.mark.parametrize("broken", ["scale", "noise", "subset"])
def test_a_broken_int8_artifact_fails(monkeypatch, untrained, broken):
    images, logits, rng = untrained
    if broken == "scale":  # same top-1 everywhere, wrong logits
        artifact = logits * 0.5
    elif broken == "noise":
        artifact = logits + rng.normal(0, 2, logits.shape).astype(np.float32)
    else:  # a tenth of the images get their classes shuffled: a small error overall
        artifact = logits.copy()
        artifact[::10] = np.roll(logits[::10], 1, axis=1)
    result = quantized(monkeypatch, artifact, images, logits, "int8")
    assert not result["passed"]
    assert any("relative logit error" in f or "top-1 agreement" in f
               for f in result["failures"]), result["failures"]


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


def test_a_real_untrained_models_dynamic_int8_file_passes_and_a_wrong_scale_fails(tmp_path):
    import keras

    import keras_resnet
    from export import tflite_format

    keras.utils.set_random_seed(1)  # flips 1 of 32 top-1 classes: near-tied logits
    model = keras_resnet.resnet18(input_shape=(32, 32, 3), num_classes=10, stem="cifar",
                                  width=8)
    images = np.random.default_rng(0).uniform(0, 255, (32, 32, 32, 3)).astype(np.float32)
    path = tflite_format.tflite(model, tmp_path / "m.tflite", "dynamic_int8")
    ref = verification.reference_logits(model, images)
    result = verification.verify(path, ref, images, latency_runs=0)
    assert result["variant"] == "dynamic_int8"
    assert result["passed"], result["failures"]
    assert result["relative_logit_error"] < 0.05
    result = verification.verify(path, ref * 2, images, latency_runs=0)
    assert not result["passed"]
    assert "relative logit error" in result["failures"][0]


@pytest.mark.parametrize("noise, passed", [(1e-4, True), (0.5, False)])
def test_a_one_class_models_float16_artifact_is_judged_by_its_logit_error(
        monkeypatch, data, noise, passed):
    images, logits = data
    one = logits[:, :1].copy()  # build_resnet(..., num_classes=1): one logit per image
    artifact = one + np.random.default_rng(1).normal(0, noise, one.shape).astype("float32")
    result = run(monkeypatch, StoredRunner(artifact), images, one)
    assert result["passed"] is passed, result["failures"]
    assert result["top1_agreement_decisive"] is None  # no ranking of one class to agree on
    if not passed:
        assert any("relative logit error" in f for f in result["failures"])


@pytest.mark.slow
def test_a_one_class_model_exports_to_tflite_float16(tmp_path, capsys):
    import json

    import keras_resnet
    from export.cli import main

    keras_resnet.build_resnet("resnet18", (32, 32, 3), 1, width=4).save(tmp_path / "one.keras")
    code = main(["--model", str(tmp_path / "one.keras"), "--out", str(tmp_path / "out"),
                 "--formats", "tflite", "--tflite-variants", "float16", "--no-dataset",
                 "--num-verify", "16", "--latency-runs", "1"])
    assert code == 0, capsys.readouterr().err[-2000:]
    (artifact,) = json.loads((tmp_path / "out" / "manifest.json").read_text())["artifacts"]
    assert artifact["variant"] == "float16" and artifact["passed"]
