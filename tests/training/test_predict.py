"""training.predict and export.predict: image files -> top-k classes, the same from the .keras
model and from every exported artifact."""

import json
import os

import numpy as np
import pytest
from PIL import Image

CLASSES = ["zero", "one", "two", "three"]


@pytest.fixture(scope="module")
def run_and_images(tmp_path_factory):
    import keras

    import keras_resnet

    root = tmp_path_factory.mktemp("predict")
    keras.utils.set_random_seed(0)
    model = keras_resnet.build_resnet("resnet18", (28, 28, 1), 4, width=8,
                                      normalization=(100.0, 70.0))
    run = root / "run"
    run.mkdir()
    model.save(run / "best.keras")
    (run / "config.json").write_text(json.dumps({"class_names": CLASSES}))
    rng = np.random.default_rng(0)
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(images / "a.png")
    # RGB at another size: converted to grayscale and resized like a user's photo.
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), "RGB").save(
        images / "sub" / "b.jpg", quality=95)
    (images / "notes.txt").write_text("not an image")  # ignored when searching a folder
    return model, run, images


def expected_probabilities(model, paths):
    """What user code gets from the public API: training.load_images, then model.predict."""
    import training

    x = training.load_images(paths, training.Preprocessing.for_shape(model.input_shape[1:]))
    logits = np.asarray(model.predict(x, verbose=0), np.float64)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_python_api_gives_the_cli_answers(run_and_images, capsys):
    import training
    from training.predict import main

    model, run, images = run_and_images
    paths = [str(images / "a.png"), str(images / "sub" / "b.jpg")]
    prep = training.preprocessing_for(str(run / "best.keras"))
    assert (prep.height, prep.width, prep.channels, prep.resize) == (28, 28, 1, "stretch")
    x = training.load_images(paths, prep)
    assert x.shape == (2, 28, 28, 1) and x.dtype == np.float32
    api = training.decode_predictions(model.predict(x, verbose=0), CLASSES, top_k=3)
    assert main(["--model", str(run / "best.keras"), *paths, "--top-k", "3", "--json"]) == 0
    cli = [row["top"] for row in json.loads(capsys.readouterr().out)]
    assert [[t["class"] for t in r] for r in api] == [[t["class"] for t in r] for r in cli]
    np.testing.assert_allclose([[t["probability"] for t in r] for r in api],
                               [[t["probability"] for t in r] for r in cli], atol=1e-6)


def test_keras_model_top_k_from_files_and_folders(run_and_images, capsys):
    from training.predict import main

    model, run, images = run_and_images
    assert main(["--model", str(run / "best.keras"), str(images), "--top-k", "3", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    paths = [str(images / "a.png"), str(images / "sub" / "b.jpg")]
    assert [g["path"] for g in got] == paths
    probs = expected_probabilities(model, paths)
    for row, p in zip(got, probs):
        assert len(row["top"]) == 3
        assert [t["index"] for t in row["top"]] == list(np.argsort(-p, kind="stable")[:3])
        for t in row["top"]:
            assert t["class"] == CLASSES[t["index"]]
            assert t["probability"] == pytest.approx(p[t["index"]], abs=1e-6)
    assert main(["--model", str(run / "best.keras"), str(images / "a.png"), "--top-k", "9"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0] == paths[0] and len(text) == 1 + len(CLASSES)  # k capped at the classes


@pytest.mark.parametrize("argv,message", [
    (["{images}/missing.png"], "does not exist"),
    (["{images}/notes.txt"], "is not a readable image"),
    (["{images}/sub/../../run"], "holds no image files"),
])
def test_bad_paths_are_one_line_and_exit_2(run_and_images, capsys, argv, message):
    from training.predict import main

    _, run, images = run_and_images
    argv = [a.format(images=images) for a in argv]
    assert main(["--model", str(run / "best.keras"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_special_files_and_huge_headers_are_refused_unread(run_and_images, tmp_path, capsys,
                                                            monkeypatch):
    from tests.training.test_untrusted_files import bomb_png
    from training import preprocessing
    from training.predict import main

    _, run, images = run_and_images
    os.mkfifo(tmp_path / "fifo.png")
    bomb_png(tmp_path / "bomb.png")

    def decode(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(preprocessing, "decode", decode)
    for path, message in [("fifo.png", "fifo.png is not a regular file (a FIFO)"),
                          ("bomb.png", "bomb.png is too large: 23000x23000")]:
        assert main(["--model", str(run / "best.keras"), str(tmp_path / path)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert "KERAS_RESNET_MAX_IMAGE_PIXELS" in err
    monkeypatch.undo()
    monkeypatch.setenv("KERAS_RESNET_MAX_IMAGE_PIXELS", "100")  # a.png has 28x28
    assert main(["--model", str(run / "best.keras"), str(images / "a.png")]) == 2
    assert "a.png is too large: 28x28 = 784 pixels" in capsys.readouterr().err


@pytest.mark.parametrize("exported", ["basic"], indirect=True)
def test_artifacts_predict_as_the_keras_model(exported, run_and_images, tmp_path, capsys):
    """The session's export of the basic-block model (every format, tests/exports.py) against
    its own model."""
    from export.predict import main as export_main
    from training.predict import main

    _, _, images = run_and_images
    run = tmp_path / "run"
    run.mkdir()
    exported.model.save(run / "best.keras")
    (run / "config.json").write_text(json.dumps({"class_names": exported.manifest["class_names"]}))
    assert main(["--model", str(run / "best.keras"), str(images), "--json"]) == 0
    keras_rows = json.loads(capsys.readouterr().out)
    out = exported.out
    for artifact in (out / "saved_model" / "1", out / "model.onnx",
                     out / "tflite" / "model_float32.tflite"):
        assert export_main(["--artifact", str(artifact), str(images), "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [r["path"] for r in rows] == [r["path"] for r in keras_rows]
        for r, k in zip(rows, keras_rows):
            assert [t["class"] for t in r["top"]] == [t["class"] for t in k["top"]]
            np.testing.assert_allclose([t["probability"] for t in r["top"]],
                                       [t["probability"] for t in k["top"]], atol=1e-5)
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes((out / "model.onnx").read_bytes())
    assert export_main(["--artifact", str(lonely), str(images)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_non_finite_outputs_are_a_failure_not_invalid_json(run_and_images, tmp_path, capsys):
    import keras

    from tests.harness import one_line, run_cli
    from training.predict import main
    from training.predicting import NonFiniteOutputs, predict_files

    model, _, images = run_and_images
    broken = keras.models.clone_model(model)
    broken.set_weights([w * np.nan for w in model.get_weights()])
    broken.save(tmp_path / "nan.keras")
    result = run_cli(main, capsys, "--model", tmp_path / "nan.keras", images / "a.png", "--json")
    assert result.code == 1 and result.out == ""
    assert "non-finite outputs" in one_line(result.err)
    # export.predict ranks an artifact's outputs through the same predict_files.
    with pytest.raises(NonFiniteOutputs):
        predict_files(lambda x: np.full((len(x), 4), np.inf), (28, 28, 1),
                      [images / "a.png"], 2, None, 8)


def test_a_model_without_a_classifier_is_named_a_feature_extractor(run_and_images, tmp_path,
                                                                   capsys):
    import keras_resnet
    from tests.harness import one_line, run_cli
    from training.predict import main

    _, _, images = run_and_images
    model = keras_resnet.build_resnet("resnet18", (28, 28, 1), include_top=False, width=4)
    model.save(tmp_path / "features.keras")
    result = run_cli(main, capsys, "--model", tmp_path / "features.keras", images / "a.png")
    assert result.code == 2 and result.out == ""
    line = one_line(result.err, "python -m training.predict: error: ")
    assert "has no classifier (built with include_top=False): it is a feature extractor " \
           "giving 32 features per image, not class scores" in line
