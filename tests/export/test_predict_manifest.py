"""export.predict trusts nothing in manifest.json it has not checked: a field edited by hand or
an artifact changed after the export is one line naming it, exit 2."""

import json
import shutil

import numpy as np
import pytest

from export.predict import main
from tests import harness

PROG = "python -m export.predict: error: "


@pytest.fixture
def export_copy(exported, tmp_path):
    """A copy of the session's export (its ONNX file and manifest) and one image file."""
    from PIL import Image

    out = tmp_path / "artifacts"
    out.mkdir()
    shutil.copy(exported.out / "model.onnx", out / "model.onnx")
    shutil.copy(exported.out / "manifest.json", out / "manifest.json")
    h, w, c = exported.manifest["input"]["shape"][1:]
    pixels = exported.images[0].astype(np.uint8)
    image = tmp_path / "x.png"
    Image.fromarray(pixels[..., 0] if c == 1 else pixels).save(image)
    return out, image


def predict(capsys, out, image):
    return harness.run_cli(main, capsys, "--artifact", out / "model.onnx", image)


def test_the_copy_predicts(export_copy, capsys):
    result = predict(capsys, *export_copy)
    assert result.code == 0, result.err


def _tamper(out, edit):
    manifest = json.loads((out / "manifest.json").read_text())
    edit(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))


def _set_preprocessing(key, value):
    def edit(m):
        m["source"].setdefault("run_config", {}).setdefault("preprocessing", {
            "height": m["input"]["shape"][1], "width": m["input"]["shape"][2],
            "channels": m["input"]["shape"][3], "resize": "stretch"})[key] = value
    return edit


TAMPERED = {
    "shape not a list": (lambda m: m["input"].update(shape="28x28"), "input.shape"),
    "shape of 3": (lambda m: m["input"].update(shape=[None, 28, 28]), "input.shape"),
    "negative height": (lambda m: m["input"]["shape"].__setitem__(1, -28), "input.shape"),
    "huge width": (lambda m: m["input"]["shape"].__setitem__(2, 10**12), "input.shape"),
    "text channels": (lambda m: m["input"]["shape"].__setitem__(3, "1"), "input.shape"),
    "no input": (lambda m: m.pop("input"), "input.shape"),
    "height text": (_set_preprocessing("height", "28"), "preprocessing.height"),
    "height zero": (_set_preprocessing("height", 0), "preprocessing.height"),
    "height huge": (_set_preprocessing("height", 10**9), "preprocessing.height"),
    "resize": (_set_preprocessing("resize", "zoom"), "preprocessing.resize"),
    "crop fraction": (_set_preprocessing("crop_fraction", "all"), "preprocessing.crop_fraction"),
    "class names": (lambda m: m.update(class_names="abcd"), "class_names"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_tampered_manifest_field_is_one_line_naming_it(export_copy, capsys, case):
    out, image = export_copy
    edit, field = TAMPERED[case]
    _tamper(out, edit)
    result = predict(capsys, out, image)
    assert result.code == 2, result.err
    line = harness.one_line(result.err, PROG)
    assert f"field {'source.run_config.' if 'preprocessing' in field else ''}{field} " in line


def test_an_artifact_changed_after_the_export_is_refused(export_copy, capsys):
    out, image = export_copy
    with open(out / "model.onnx", "ab") as f:
        f.write(b"\0")
    result = predict(capsys, out, image)
    assert result.code == 2, result.err
    line = harness.one_line(result.err, PROG)
    assert "sha256" in line and "changed after the export" in line and "--overwrite" in line


def test_an_export_of_a_model_without_a_classifier_is_named_a_feature_extractor(
        export_copy, capsys):
    out, image = export_copy

    def edit(m):
        m["source"]["model_config"] = {**m["source"].get("model_config", {}),
                                       "include_top": False}
        m["class_names"] = [str(i) for i in range(32)]  # what the export records for features
    _tamper(out, edit)
    result = predict(capsys, out, image)
    assert result.code == 2, result.err
    line = harness.one_line(result.err, PROG)
    assert "has no classifier (built with include_top=False): it is a feature extractor " \
           "giving 32 features per image" in line
