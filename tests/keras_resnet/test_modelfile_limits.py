""".keras archives from anywhere: every member's declared size is checked before Keras
inflates it, the weights against what the model's parameters need."""

import json
import zipfile

import pytest

from keras_resnet import build_resnet
from keras_resnet.modelfile import (MAX_MEMBER_BYTES, ModelFileError, _max_weights_bytes,
                                    load_model, resnet_parameters)
from tests.keras_resnet.test_model_config import small

MiB = 2**20


def with_member(src, dst, name, size, fill=b"\0"):
    """A copy of the archive `src` whose member `name` is `size` bytes of `fill` (written in
    pieces: the test never holds it whole)."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as b:
        for item in a.infolist():
            if item.filename != name:
                b.writestr(item, a.read(item.filename))
        with b.open(name, "w", force_zip64=True) as f:
            for _ in range(size // MiB):
                f.write(fill * MiB)
    return dst


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("limits") / "good.keras"
    small(path)
    return path


def test_a_weights_member_larger_than_the_parameters_need_is_refused_uninflated(good, tmp_path):
    config = json.loads(zipfile.ZipFile(good).read("config.json"))["config"]
    limit = 5 * 4 * resnet_parameters(config) + 16 * MiB
    bomb = with_member(good, tmp_path / "bomb.keras", "model.weights.h5", 24 * MiB)
    assert bomb.stat().st_size < MiB
    with pytest.raises(ModelFileError) as e:
        load_model(bomb)
    message = str(e.value)
    assert (f"its member model.weights.h5 inflates to {24 * MiB} bytes, more than the limit of "
            f"{limit}") in message and "KERAS_RESNET_MAX_WEIGHTS_BYTES" in message
    assert "\n" not in message


def test_a_config_member_over_its_cap_is_refused(good, tmp_path):
    bomb = with_member(good, tmp_path / "bomb.keras", "config.json", MAX_MEMBER_BYTES + MiB,
                       fill=b" ")
    with pytest.raises(ModelFileError, match=f"its member config.json inflates to "
                                             f"{MAX_MEMBER_BYTES + MiB} bytes, more than the "
                                             f"{MAX_MEMBER_BYTES}"):
        load_model(bomb)


def test_the_weights_limit_is_set_by_the_environment(good, monkeypatch):
    assert load_model(good).count_params() > 0
    monkeypatch.setenv("KERAS_RESNET_MAX_WEIGHTS_BYTES", "1000")
    with pytest.raises(ModelFileError, match="more than the limit of 1000 "
                                             r"\(KERAS_RESNET_MAX_WEIGHTS_BYTES"):
        load_model(good)
    monkeypatch.setenv("KERAS_RESNET_MAX_WEIGHTS_BYTES", "big")
    with pytest.raises(ModelFileError, match="KERAS_RESNET_MAX_WEIGHTS_BYTES='big' is not"):
        load_model(good)


def test_models_we_did_not_build_get_the_flat_cap():
    from keras_resnet.modelfile import DEFAULT_MAX_WEIGHTS_BYTES

    other = json.dumps({"module": "keras", "class_name": "Sequential", "config": {}}).encode()
    assert _max_weights_bytes(other, None)[0] == DEFAULT_MAX_WEIGHTS_BYTES
    assert _max_weights_bytes(b"not json", None)[0] == DEFAULT_MAX_WEIGHTS_BYTES


@pytest.mark.parametrize("arch,stem,top,width", [("resnet18", "imagenet", True, 4),
                                                 ("resnet50", "cifar", False, 4),
                                                 ("resnet34", "cifar", True, 4),
                                                 ("resnext50_32x4d", "cifar", True, 16)])
def test_resnet_parameters_counts_what_the_builder_makes(arch, stem, top, width):
    model = build_resnet(arch, (32, 32, 3), 5, width=width, stem=stem, include_top=top,
                         normalization=(100.0, 50.0))
    assert resnet_parameters(model.builder_config) == model.count_params()
