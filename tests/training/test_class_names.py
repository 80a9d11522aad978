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
