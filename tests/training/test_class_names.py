"""Class names travel inside the .keras model: training.predict and the export manifest name
classes from the model itself, with the run's config.json only for files saved before."""

import json

import numpy as np
import pytest
from PIL import Image

NAMES = ["cat", "dog", "owl"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import keras

    import keras_resnet

    root = tmp_path_factory.mktemp("class_names")
    keras.utils.set_random_seed(0)
    model = keras_resnet.build_resnet("resnet18", (16, 16, 1), 3, width=2, stem="cifar",
                                      normalization=(100.0, 70.0), class_names=NAMES)
    bare = root / "bare"  # a .keras copied away from its run: no config.json beside it
    bare.mkdir()
    model.save(bare / "model.keras")
    old = root / "old_run"  # saved before models held their names: only config.json has them
    old.mkdir()
    keras.Model(model.input, model.output, name="resnet18").save(old / "best.keras")
    (old / "config.json").write_text(json.dumps({"class_names": ["a", "b", "c"]}))
    image = root / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8),
                    "L").save(image)
    return bare / "model.keras", old / "best.keras", image


def predicted_classes(capsys, model, image):
    from training.predict import main

    assert main(["--model", str(model), str(image), "--top-k", "3", "--json"]) == 0
    return sorted(t["class"] for t in json.loads(capsys.readouterr().out)[0]["top"])


def test_class_names_survive_the_keras_file(files):
    from training.modelio import load_model

    assert load_model(files[0]).class_names == tuple(NAMES)


def test_predict_names_classes_from_the_model_without_a_run_directory(files, capsys):
    assert predicted_classes(capsys, files[0], files[2]) == sorted(NAMES)


def test_predict_falls_back_to_config_json_for_older_files(files, capsys):
    assert predicted_classes(capsys, files[1], files[2]) == ["a", "b", "c"]


@pytest.mark.slow
def test_the_export_manifest_takes_the_models_class_names(files, tmp_path, capsys):
    from export.cli import main

    out = tmp_path / "export"
    code = main(["--model", str(files[0]), "--out", str(out), "--formats", "saved_model",
                 "--no-dataset", "--latency-runs", "1"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == NAMES
    assert manifest["source"]["model_config"]["arch"] == "resnet18"  # no run directory needed


def _image_folder(root, classes, shape=(16, 16)):
    from PIL import Image

    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), "L").save(
                    root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder_run(files, tmp_path_factory):
    """The named model as a folder run's best.keras (its config.json gives the image size)."""
    import shutil

    run = tmp_path_factory.mktemp("folder_run")
    shutil.copy(files[0], run / "best.keras")
    (run / "config.json").write_text(json.dumps({
        "dataset": "folder", "input_shape": [16, 16, 1], "num_classes": 3,
        "class_names": NAMES, "options": {}}))
    return run / "best.keras"


def _evaluate(capsys, model, data_dir, out):
    from training.evaluate import main

    code = main(["--model", str(model), "--dataset", "folder", "--data-dir", str(data_dir),
                 "--out", str(out)])
    return code, capsys.readouterr().err


def test_evaluate_refuses_classes_the_model_does_not_know(folder_run, tmp_path, capsys):
    data = _image_folder(tmp_path / "data", ["ant", "bee", "cow"])
    code, err = _evaluate(capsys, folder_run, data, tmp_path / "eval")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "[ant, bee, cow]" in err and "[cat, dog, owl]" in err
    assert not (tmp_path / "eval").exists()


def test_evaluate_matches_a_subset_of_the_classes_by_name(folder_run, tmp_path, capsys):
    from training.modelio import load_model
    from training.preprocessing import Preprocessing, load_images

    data = _image_folder(tmp_path / "data", ["owl", "dog"])
    code, err = _evaluate(capsys, folder_run, data, tmp_path / "eval")
    assert code == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert list(metrics["per_class_accuracy"]) == ["dog", "owl"]
    assert np.array(metrics["confusion_matrix"]).shape == (3, 3)
    paths = sorted((data / "test").glob("*/*.png"))
    truth = [NAMES.index(p.parent.name) for p in paths]
    logits = load_model(folder_run).predict(
        load_images([str(p) for p in paths], Preprocessing.for_shape((16, 16, 1))), verbose=0)
    expected = float(np.mean(logits.argmax(axis=1) == np.array(truth)))
    assert metrics["test_accuracy"] == pytest.approx(expected)
    assert metrics["num_examples"] == len(paths)
