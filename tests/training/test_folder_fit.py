"""training.fit on a user's image folder: both layouts, start weights, frozen stages, and the
commands that read the run afterwards (evaluate, predict)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from training.fit import main as fit_main


def main(argv):
    """training.fit's exit status, whether it returns it or argparse exits with it."""
    try:
        return fit_main(argv)
    except SystemExit as e:
        return e.code


def make_folder(root, layout="class folders", n=24, size=(36, 40), seed=0):
    """Two learnable classes (dark and bright images) as PNG files."""
    rng = np.random.default_rng(seed)
    splits = {"": n} if layout == "class folders" else {"train": n, "val": 4, "test": 6}
    for split, count in splits.items():
        for name, level in (("dark", 60), ("bright", 190)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(level, 30, (size[1], size[0], 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8), "RGB").save(folder / f"{i}.png")
    return root


def fit(tmp_path, *extra):
    args = ["--arch", "resnet18", "--dataset", "folder", "--image-size", "32,32", "--width", "4",
            "--epochs", "1", "--batch-size", "16", "--verbose", "0", *extra]
    return main(args)


def test_class_folders_train_and_record_the_split(tmp_path, capsys):
    data = make_folder(tmp_path / "pics")
    run = tmp_path / "run"
    assert fit(tmp_path, "--data-dir", str(data), "--run-dir", str(run)) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["class_names"] == ["bright", "dark"] and config["input_shape"] == [32, 32, 3]
    split = json.loads((run / "split.json").read_text())
    assert split["layout"] == "class folders" and len(split["files"]["test"]) == 4  # 10% of 24, x2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["per_class_accuracy"].keys() == {"bright", "dark"}
    # The commands that read a run afterwards know the folder from the run's config.json.
    from training.evaluate import main as evaluate
    from training.predict import main as predict

    assert evaluate(["--model", str(run / "best.keras")]) == 0
    capsys.readouterr()
    assert predict(["--model", str(run / "best.keras"), str(data / "dark" / "0.png"),
                    "--json"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["top"]
    assert {t["class"] for t in top} == {"bright", "dark"}


@pytest.mark.slow
def test_train_val_test_folders_use_the_val_folder(tmp_path):
    data = make_folder(tmp_path / "pics", layout="split folders")
    run = tmp_path / "run"
    assert fit(tmp_path, "--data-dir", str(data), "--run-dir", str(run), "--channels", "1") == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["num_train"], config["num_val"], config["num_test"]) == (48, 8, 12)
    assert config["input_shape"] == [32, 32, 1]


@pytest.mark.slow
def test_start_from_torchvision_weights_with_a_new_classifier_and_frozen_stages(tmp_path,
                                                                               capsys):
    import torch  # requirements-dev.txt: only the tests need it
    import torchvision

    import keras_resnet

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=7)
    torch.save(net.state_dict(), tmp_path / "start.pth")
    data = make_folder(tmp_path / "pics", n=12)
    run = tmp_path / "run"
    assert fit(tmp_path, "--data-dir", str(data), "--run-dir", str(run), "--weights",
               str(tmp_path / "start.pth"), "--freeze-stages", "1") == 0
    # The weights bring their width and stem: the record says what was trained, not --width 4.
    config = json.loads((run / "config.json").read_text())
    assert (config["stem"], config["width"]) == ("imagenet", 64)
    assert config["options"]["width"] == 4
    assert "--stem imagenet --width 4 do not apply" in capsys.readouterr().out
    import keras

    model = keras.models.load_model(run / "best.keras")
    assert keras_resnet  # registers the layers for load_model
    assert model.output_shape == (None, 2)
    # Frozen: the stem holds torchvision's conv1 after training (OIHW -> HWIO).
    want = net.conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(np.asarray(model.get_layer("stem_conv").kernel), want)
    # ImageNet normalization came with the weights.
    mean = np.ravel(np.asarray(model.get_layer("normalization").mean))
    np.testing.assert_allclose(mean, [0.485 * 255, 0.456 * 255, 0.406 * 255], rtol=1e-6)


@pytest.mark.slow
def test_start_from_a_keras_model(tmp_path):
    data = make_folder(tmp_path / "pics", n=12)
    first, second = tmp_path / "first", tmp_path / "second"
    assert fit(tmp_path, "--data-dir", str(data), "--run-dir", str(first)) == 0
    assert fit(tmp_path, "--data-dir", str(data), "--run-dir", str(second), "--weights",
               str(first / "best.keras"), "--freeze-stages", "4") == 0
    import keras

    import keras_resnet  # noqa: F401

    a = keras.models.load_model(first / "best.keras")
    b = keras.models.load_model(second / "best.keras")
    # Everything but the classifier was frozen, so it is the first run's.
    np.testing.assert_array_equal(np.asarray(a.get_layer("stem_conv").kernel),
                                  np.asarray(b.get_layer("stem_conv").kernel))


@pytest.mark.parametrize("extra,message", [
    (["--data-dir", "{data}"], "needs --image-size"),
    (["--data-dir", "{data}", "--image-size", "32"], "needs --image-size H,W"),
    (["--image-size", "32,32"], "needs --data-dir"),
    (["--data-dir", "{data}", "--image-size", "32,32", "--weights", "nope.pth"],
     "nope.pth does not exist"),
    (["--data-dir", "{data}", "--image-size", "32,32", "--weights", "x.txt"],
     "expected a weight-set name (e.g. IMAGENET1K_V2) or a .pth"),
    (["--data-dir", "{data}", "--image-size", "32,32", "--freeze-stages", "5"],
     "--freeze-stages must be"),
    (["--data-dir", "{tmp}", "--image-size", "32,32"], "at least two class folders"),
])
def test_bad_folder_options_are_one_line_exit_2(tmp_path, capsys, extra, message):
    data = make_folder(tmp_path / "pics", n=8)
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["--arch", "resnet18", "--dataset", "folder", "--width", "4", "--epochs", "1",
            "--run-dir", str(tmp_path / "run")]
    args += [a.format(data=data, tmp=empty) for a in extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err.strip().splitlines()[0], err
    assert not os.path.exists(tmp_path / "run" / "state.json")


def test_image_size_is_refused_for_other_datasets(capsys):
    assert main(["--dataset", "digits", "--image-size", "32,32"]) == 2
    assert "--image-size is for --dataset folder" in capsys.readouterr().err


def test_broken_start_weights_name_the_file(tmp_path, capsys):
    import torch
    import torchvision

    state = torchvision.models.resnet18(num_classes=2).state_dict()
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    data = make_folder(tmp_path / "pics", n=8)
    code = main(["--arch", "resnet18", "--dataset", "folder", "--data-dir", str(data),
                 "--image-size", "32,32", "--epochs", "1", "--run-dir", str(tmp_path / "run"),
                 "--weights", str(tmp_path / "nan.pth")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--weights" in err[-1] and "nan.pth" in err[-1] and "NaN" in err[-1]


def mixed_folder(root, n, bad):
    from tests.training.test_folders import make_mixed_folder

    return make_mixed_folder(root, n=n, bad=bad)


@pytest.mark.slow
def test_mixed_formats_sizes_and_a_corrupt_file_learn_and_predict_as_model_predict(
        tmp_path, capsys):
    # Grey/RGBA PNG, palette GIF, JPEG and BMP of 20-44 px, junk files, one undecodable .jpg;
    # no preprocessing options: 32 px is below the crop threshold, so "stretch".
    data = mixed_folder(tmp_path / "pics", n=30, bad=1)
    run = tmp_path / "run"
    # The seed code's recipe: the learning floor below was measured with it.
    assert fit(tmp_path, "--data-dir", str(data), "--run-dir", str(run), "--epochs", "3",
               "--recipe", "seed") == 0
    out = capsys.readouterr().out
    assert "1 of 61 image files" in out and "skipped dark/broken0.jpg" in out
    config = json.loads((run / "config.json").read_text())
    assert config["skipped_images"]["count"] == 1
    assert config["skipped_images"]["files"][0]["path"] == "dark/broken0.jpg"
    assert config["preprocessing"]["resize"] == "stretch"
    assert config["num_train"] + config["num_val"] + config["num_test"] == 60
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.8, metrics  # two classes: chance is 0.5
    assert (run / "confusion_matrix.png").is_file()

    import keras

    import training
    from training.predict import main as predict

    files = sorted(str(p) for p in data.rglob("*") if p.suffix in (".png", ".gif", ".bmp")
                   or p.name[0].isdigit() and p.suffix == ".jpg")
    assert predict(["--model", str(run / "best.keras"), *files, "--json", "--top-k", "1"]) == 0
    cli = json.loads(capsys.readouterr().out)
    model = keras.models.load_model(run / "best.keras")
    prep = training.preprocessing_for(str(run / "best.keras"))
    api = training.decode_predictions(
        model.predict(training.load_images(files, prep), verbose=0), config["class_names"], 1)
    assert [r["top"][0]["class"] for r in cli] == [r[0]["class"] for r in api]
    right = sum(r["top"][0]["class"] == os.path.basename(os.path.dirname(r["path"]))
                for r in cli)
    assert right >= 0.8 * len(files), (right, len(files))


def test_more_than_a_tenth_corrupt_is_one_line_exit_2(tmp_path, capsys):
    data = mixed_folder(tmp_path / "pics", n=8, bad=3)  # 3 of 19
    assert fit(tmp_path, "--data-dir", str(data), "--run-dir", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 of 19 image files" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # three short trainings
def test_folder_runs_resume_with_a_file_cache_in_bfloat16(tmp_path):
    data = mixed_folder(tmp_path / "pics", n=10, bad=1)
    run = tmp_path / "run"
    args = ["--data-dir", str(data), "--run-dir", str(run), "--cache", str(tmp_path / "c"),
            "--precision", "mixed_bfloat16", "--resize", "crop",
            # A longer resumed run: the recipe's cosine schedule would refuse it.
            "--schedule", "step"]
    assert fit(tmp_path, *args) == 0
    assert fit(tmp_path, *args, "--epochs", "2", "--resume") == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 2 and metrics["precision"] == "mixed_bfloat16"
    config = json.loads((run / "config.json").read_text())
    assert config["preprocessing"]["resize"] == "crop"
    assert list(tmp_path.glob("c.train-*.index"))
    assert fit(tmp_path, "--data-dir", str(data), "--run-dir", str(tmp_path / "mem"),
               "--cache", "memory") == 0


def test_cache_and_resize_are_refused_for_other_datasets(capsys):
    assert main(["--dataset", "digits", "--cache", "memory"]) == 2
    assert "--cache is for --dataset folder" in capsys.readouterr().err
    assert main(["--dataset", "folder", "--data-dir", ".", "--image-size", "8,8",
                 "--resize", "zoom"]) == 2
    assert "invalid choice: 'zoom'" in capsys.readouterr().err
    assert main(["--dataset", "folder", "--data-dir", ".", "--image-size", "8,8",
                 "--cache", "/no/such/folder/cache"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--cache /no/such/folder/cache: the folder /no/such/folder does not exist" in err[0]


@pytest.mark.slow  # trains on 1797 scans for the default 10 epochs
def test_digit_scans_of_mixed_sizes_train_well_with_no_preprocessing_options(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    formats = (("png", "L"), ("png", "RGBA"), ("gif", "P"), ("jpg", "RGB"), ("bmp", "RGB"))
    for i in range(len(digits.images)):
        side = int(rng.integers(24, 49))  # scans of 24-48 px
        img = Image.fromarray(np.clip(digits.images[i] * 16, 0, 255).astype(np.uint8), "L")
        ext, mode = formats[i % len(formats)]
        folder = tmp_path / "scans" / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        img.resize((side, side), Image.Resampling.BILINEAR).convert(mode).save(
            folder / f"{i}.{ext}")
    run = tmp_path / "run"
    assert main(["--arch", "resnet18", "--dataset", "folder", "--data-dir",
                 str(tmp_path / "scans"), "--image-size", "28,28", "--width", "8",
                 "--verbose", "0", "--run-dir", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["preprocessing"]["resize"] == "stretch"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9, metrics  # ten classes: chance is 0.1
