"""--weights NAME in the CLIs (training.predict, export, export.predict, training.fit), run on a
weight set registered from a torchvision checkpoint in a local file: the real download, hash,
conversion and cache code, no network. The one-line errors of names, downloads and hashes."""

import hashlib
import json
import re

import numpy as np
import pytest
from PIL import Image

from tests import harness

NAME = "TINY_TEST"
CATEGORIES = ("ant", "bee", "cat")
# Small sizes keep the full-width ResNet-18 cheap; the ratio is torchvision's 256/224.
RESIZE, CROP = 37, 32


def torch_checkpoint(folder, num_classes=len(CATEGORIES), seed=0):
    """(path, sha256) of a random torchvision ResNet-18 state_dict saved by torch, and the net."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.resnet18(num_classes=num_classes).eval()
    path = folder / f"tiny-{seed}.pth"
    torch.save(net.state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), net


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    """A registered set (its checkpoint behind a file:// URL), a private weights cache, photos."""
    from sklearn.datasets import load_sample_images

    from keras_resnet import weights

    root = tmp_path_factory.mktemp("named")
    path, sha, net = torch_checkpoint(root)
    patch = pytest.MonkeyPatch()
    patch.setenv("KERAS_HOME", str(root / "keras_home"))
    ws = weights.register(NAME, arch="resnet18", url=path.as_uri(), sha256=sha,
                          categories=CATEGORIES, resize_size=RESIZE, crop_size=CROP)
    photos = root / "photos"
    photos.mkdir()
    china, flower = load_sample_images().images
    Image.fromarray(china).save(photos / "china.png")
    Image.fromarray(flower[::3, ::2]).convert("L").save(photos / "flower_grey.png")
    yield ws, net, photos
    weights.unregister(NAME, "resnet18")
    patch.undo()


def torch_probabilities(net, inputs):
    """torchvision's softmax of our transform's outputs (NHWC -> NCHW)."""
    import torch

    with torch.no_grad():
        logits = net(torch.from_numpy(np.ascontiguousarray(inputs.transpose(0, 3, 1, 2))))
    return torch.softmax(logits.double(), 1).numpy()


def test_predict_by_name_gives_the_checkpoints_classes(named, capsys):
    from keras_resnet import weights
    from training.predict import main
    from training.weightsets import load_transformed

    ws, net, photos = named
    files = sorted(str(p) for p in photos.iterdir())
    result = harness.run_cli(main, capsys, "--weights", NAME, "--arch", "resnet18", photos,
                             "--top-k", "3", "--json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    assert [r["path"] for r in rows] == files
    inputs = load_transformed(files, weights.transform(ws))
    assert inputs.shape == (2, CROP, CROP, 3)
    expected = torch_probabilities(net, normalized(ws, inputs))
    for row, p in zip(rows, expected):
        assert [t["class"] for t in row["top"]] == [CATEGORIES[i] for i in np.argsort(-p)]
        np.testing.assert_allclose([t["probability"] for t in row["top"]], np.sort(p)[::-1],
                                   atol=1e-4)


def normalized(ws, inputs):
    """What torchvision's net takes, from our transform's raw 0..255 pixels."""
    return ((inputs / 255.0 - np.array(ws.mean)) / np.array(ws.std)).astype(np.float32)


@pytest.mark.parametrize("argv, message", [
    (["--weights", "IMAGENET1K_V9", "--arch", "resnet50"], "unknown weight set 'IMAGENET1K_V9'"),
    (["--weights", "IMAGENET1K_V2", "--arch", "resnet18"], "it exists for resnet50"),
    (["--weights", "ResNet50_Weights.IMAGENET1K_V2", "--arch", "resnet34"], "not resnet34"),
])
def test_a_name_that_is_unknown_or_of_another_arch_is_one_line(argv, message, tmp_path, capsys):
    from export.cli import main as export
    from training.fit import main as fit
    from training.predict import main as predict

    photo = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    for main, more in ((predict, [photo]), (export, ["--out", tmp_path / "out"]),
                       (fit, ["--dataset", "folder", "--data-dir", tmp_path, "--image-size",
                              "32,32"])):
        result = harness.run_cli(main, capsys, *argv, *more)
        assert result.code == 2, result.err
        assert message in harness.one_line(result.err)
    assert not (tmp_path / "out").exists()


def test_download_failures_and_hash_mismatch_are_one_line(named, tmp_path, capsys):
    from keras_resnet import weights
    from training.predict import main

    ws, _, photos = named
    wrong = weights.register("TINY_WRONG_HASH", arch="resnet18", url=ws.url,
                             sha256="0" * 12, categories=CATEGORIES)
    gone = weights.register("TINY_OFFLINE", arch="resnet18", sha256="0" * 12,
                            url="http://127.0.0.1:9/tiny-00000000.pth", categories=CATEGORIES)
    try:
        for name, message in (("TINY_WRONG_HASH", "sha256"),
                              ("TINY_OFFLINE", "http://127.0.0.1:9/tiny-00000000.pth")):
            result = harness.run_cli(main, capsys, "--weights", name, photos)
            assert result.code == 2, result.err
            # Above the error: keras.utils.get_file's progress bar, on stderr.
            line = harness.one_line(result.err.strip().splitlines()[-1],
                                    "python -m training.predict: error")
            assert message in line
        assert str(weights.cache_path(gone)) in line  # where to place it by hand
        assert not weights.cache_path(wrong).exists() and not weights.cache_path(gone).exists()
    finally:
        weights.unregister("TINY_WRONG_HASH", "resnet18")
        weights.unregister("TINY_OFFLINE", "resnet18")


def test_readmes_table_is_the_registry():
    from keras_resnet import weights
    from tests.conftest import REPO

    rows = re.findall(r"^\| ((?:wide_)?resn\w+) \| `(\w+)`( \(DEFAULT\))? \| ([\d.]+) \| ([\d.]+) \| "
                      r"([\d,]+) \| ([\d.]+) \| (\d+) → (\d+) \| ([\d.]+) \|",
                      (REPO / "README.md").read_text(), re.MULTILINE)
    assert rows == [
        (ws.arch, ws.name, " (DEFAULT)" if weights.get("DEFAULT", ws.arch) == ws else "",
         f"{ws.acc1:.3f}", f"{ws.acc5:.3f}", f"{ws.num_params:,}", f"{ws.gflops:.2f}",
         str(ws.resize_size), str(ws.crop_size), f"{ws.file_size_mb:.1f}")
        for ws in weights.all_weights() if ws.builtin]


def image_folder(root, photos, n=8):
    """Two classes of 48x40 crops of the two photos, as PNG files."""
    for name in ("china", "flower_grey"):
        image = np.asarray(Image.open(photos / f"{name}.png").convert("RGB"))
        (root / name).mkdir(parents=True)
        for i in range(n):
            y, x = 20 * i, 30 * i
            Image.fromarray(image[y:y + 40, x:x + 48]).save(root / name / f"{i}.png")
    return root


@pytest.mark.slow  # a fine-tuning run and its resumption, an ONNX export, three predictions
def test_fine_tune_export_and_predict_with_a_named_set(named, tmp_path, capsys):
    import keras

    from export.cli import main as export
    from export.predict import main as export_predict
    from training.fit import main as fit
    from training.predict import main as predict

    ws, net, photos = named
    run = tmp_path / "run"
    args = ["--arch", "resnet18", "--weights", NAME, "--dataset", "folder", "--data-dir",
            image_folder(tmp_path / "pics", photos), "--image-size", "32,32",
            "--freeze-stages", "2", "--batch-size", "8", "--verbose", "0", "--run-dir", run,
            # The fine-tuning recipe's cosine schedule would refuse a longer resumed run.
            "--schedule", "step"]
    assert harness.run_cli(fit, capsys, *args, "--epochs", "1").code == 0
    config = json.loads((run / "config.json").read_text())
    assert config["weight_set"]["name"] == NAME and config["options"]["weights"] == NAME
    assert config["weight_set"]["sha256"] == ws.sha256
    model = keras.models.load_model(run / "last.keras")
    # Frozen stem: the checkpoint's conv1 after training (OIHW -> HWIO); a new 2-class head.
    np.testing.assert_array_equal(np.asarray(model.get_layer("stem_conv").kernel),
                                  net.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
    assert model.output_shape == (None, 2)
    resumed = harness.run_cli(fit, capsys, *args, "--epochs", "2", "--resume")
    assert resumed.code == 0, resumed.err
    assert json.loads((run / "metrics.json").read_text())["epochs_completed"] == 2

    out = tmp_path / "art"
    exported = harness.run_cli(export, capsys, "--arch", "resnet18", "--weights", NAME,
                               "--formats", "onnx", "--out", out)
    assert exported.code == 0, exported.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["class_names"] == list(CATEGORIES)
    assert manifest["source"]["weights"]["name"] == NAME
    assert manifest["source"]["transform"] == ws.transform_config()
    assert manifest["input"]["shape"] == [None, CROP, CROP, 3]
    keras_rows = harness.run_cli(predict, capsys, "--weights", NAME, photos, "--json")
    onnx_rows = harness.run_cli(export_predict, capsys, "--artifact", out / "model.onnx",
                                photos, "--json")
    assert onnx_rows.code == 0, onnx_rows.err
    keras_rows, onnx_rows = json.loads(keras_rows.out), json.loads(onnx_rows.out)
    assert [[t["class"] for t in r["top"]] for r in keras_rows] == \
        [[t["class"] for t in r["top"]] for r in onnx_rows]
    np.testing.assert_allclose([[t["probability"] for t in r["top"]] for r in keras_rows],
                               [[t["probability"] for t in r["top"]] for r in onnx_rows],
                               atol=1e-4)

    # A manifest whose transform no longer fits the artifact is refused in one line.
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["source"]["transform"]["crop_size"] = 2 * CROP
    (out / "manifest.json").write_text(json.dumps(manifest))
    refused = harness.run_cli(export_predict, capsys, "--artifact", out / "model.onnx", photos)
    assert refused.code == 2
    assert "field source.transform cannot be used" in harness.one_line(refused.err)
