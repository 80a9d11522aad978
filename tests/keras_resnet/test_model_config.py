"""Loading what build_resnet saved: a process finds our classes only once keras_resnet is
imported, and a file naming a class we lack says so."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from keras_resnet import build_resnet
from keras_resnet._keras_compat import flatten_layers
from keras_resnet.modelfile import ModelFileError, load_model

REPO = Path(__file__).resolve().parents[2]


def small(path, **kwargs):
    build_resnet("resnet18", input_shape=(16, 16, 1), num_classes=2, width=2, stem="cifar",
                 **kwargs).save(path)


@pytest.mark.slow  # two fresh TensorFlow processes
def test_a_fresh_process_loads_our_keras_files_after_importing_keras_resnet(tmp_path):
    """As README says: Keras alone cannot find the ResNet class; `import keras_resnet` first."""
    path = tmp_path / "m.keras"
    small(path, class_names=["no", "yes"])
    load = f"import keras; print(keras.models.load_model({str(path)!r}).class_names)"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def run(code):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, cwd=REPO, timeout=300)

    bare = run(load)
    assert bare.returncode != 0 and "Could not locate class 'ResNet'" in bare.stderr
    ok = run("import keras_resnet; " + load)
    assert ok.returncode == 0 and ok.stdout.strip() == "('no', 'yes')", ok.stderr[-2000:]


def test_a_file_naming_a_class_we_lack_says_what_to_import(tmp_path):
    good, bad = tmp_path / "good.keras", tmp_path / "bad.keras"
    small(good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config["class_name"] = "ResNetV9"
                config["registered_name"] = "keras_resnet>ResNetV9"
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.raises(ModelFileError, match=r"ResNetV9.*load after `import keras_resnet`"):
        load_model(bad)


def _rewrite_config(src_path, dst_path, change) -> None:
    with zipfile.ZipFile(src_path) as src, zipfile.ZipFile(dst_path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                change(config["config"])
                data = json.dumps(config).encode()
            dst.writestr(item, data)


def test_a_saved_file_carries_format_version_1_and_round_trips_bit_identically(tmp_path):
    import keras
    import numpy as np

    path = tmp_path / "m.keras"
    model = build_resnet("resnet18", input_shape=(16, 16, 1), num_classes=2, width=2,
                         stem="cifar", normalization=(3.0, 2.0), class_names=["no", "yes"])
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 1)).astype("float32")
    model.save(path)
    with zipfile.ZipFile(path) as z:
        assert json.loads(z.read("config.json"))["config"]["format_version"] == 1
    loaded = load_model(path)
    assert loaded.get_config() == model.get_config()
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)),
                                  np.asarray(model(x, training=False)))
    # Files saved before the format had a number are version 1.
    unnumbered = tmp_path / "unnumbered.keras"
    _rewrite_config(path, unnumbered, lambda c: c.pop("format_version"))
    np.testing.assert_array_equal(np.asarray(keras.models.load_model(unnumbered)(x)),
                                  np.asarray(model(x)))


def test_a_file_of_a_newer_format_says_so_in_one_line(tmp_path):
    good, newer = tmp_path / "good.keras", tmp_path / "newer.keras"
    small(good)
    _rewrite_config(good, newer, lambda c: c.update(format_version=2))
    with pytest.raises(ModelFileError, match="saved in keras_resnet format version 2; this "
                       "keras_resnet reads version 1") as err:
        load_model(newer)
    assert "\n" not in str(err.value)


def test_a_frozen_model_loads_frozen_with_its_optimizer_state(tmp_path):
    import warnings

    import keras
    import numpy as np

    from keras_resnet import freeze

    model = build_resnet("resnet18", input_shape=(16, 16, 1), num_classes=2, width=2,
                         stem="cifar")
    freeze(model, 1)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(np.zeros((2, 16, 16, 1), "float32"), np.array([0, 1]), verbose=0)
    model.save(tmp_path / "frozen.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # Keras warns when it drops optimizer variables
        loaded = keras.models.load_model(tmp_path / "frozen.keras")
    frozen = [layer.name for layer in flatten_layers(model) if not layer.trainable]
    assert "stage1_block2_conv1" in frozen and "stage2_block1" not in frozen
    assert [layer.name for layer in flatten_layers(loaded) if not layer.trainable] == frozen
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    with pytest.raises(ValueError, match=r"frozen_layers \['nope'\] are not layers"):
        type(model).from_config({**model.get_config(), "frozen_layers": ["nope"]})


def test_the_classifier_activation_is_kept_by_name():
    import keras

    model = build_resnet("resnet18", input_shape=(16, 16, 1), num_classes=2, width=2,
                         stem="cifar", classifier_activation=keras.activations.softmax)
    assert model.builder_config["classifier_activation"] == "softmax"
    with pytest.raises(ValueError, match="classifier_activation must be None or a Keras"):
        build_resnet("resnet18", input_shape=(16, 16, 1), num_classes=2, width=2, stem="cifar",
                     classifier_activation=lambda x: x)


def test_build_resnet_takes_exactly_the_model_class_arguments():
    """build_resnet documents and forwards ResNet's arguments: the two lists cannot drift."""
    import inspect

    from keras_resnet import ResNet, build_resnet

    built = inspect.signature(build_resnet).parameters
    cls = dict(inspect.signature(ResNet.__init__).parameters)
    del cls["self"]
    loader_only = {"trainable", "frozen_layers"}  # what a loaded config also carries
    builder_only = {"weights"}  # a built model holds its weights: the config need not name them
    assert set(cls) - set(built) == loader_only
    assert set(built) - set(cls) == builder_only
    assert [p for p in built if p not in builder_only] == [p for p in cls if p not in loader_only]
    # num_classes: None is 1000, or the class count of the named weights.
    assert built["num_classes"].default is None and cls["num_classes"].default == 1000
    assert {p: built[p].default for p in cls if p in built and p != "num_classes"} == {
        p: cls[p].default for p in cls if p in built and p != "num_classes"}
