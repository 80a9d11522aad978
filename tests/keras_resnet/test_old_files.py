"""Model files saved by earlier versions still load and compute what they computed then."""

from pathlib import Path

import keras
import numpy as np
import pytest

import keras_resnet
from keras_resnet.summary import summarize, total_macs
from tests.conftest import logit_tolerance

DATA = Path(__file__).parent / "data"
# arch -> (file stem, builder arguments)
OLD = {
    "resnet18": ("resnet18_w2_imagenet_stem_pad_layers",
                 dict(input_shape=(32, 32, 3), stem="imagenet", width=2)),
    "resnet50": ("resnet50_w2_pad_layers", dict(input_shape=(16, 16, 3), stem="cifar", width=2)),
}
# What the summary of the version that saved the file counted (data/README.md).
OLD_MACS = {"resnet18": (109104, 86512)}


@pytest.mark.parametrize("arch", sorted(OLD))
def test_files_with_padding_layers_load_and_give_their_logits(arch, tmp_path):
    stem, builder_args = OLD[arch]
    recorded = np.load(DATA / f"{stem}_logits.npz")
    model = keras.models.load_model(DATA / f"{stem}.keras")
    assert isinstance(model, keras_resnet.ResNet) and list(model.class_names) == ["a", "b", "c"]
    # A ResNet is rebuilt from its builder arguments: today's layers, the file's weights.
    assert "stem_conv_pad" not in [layer.name for layer in model.layers]
    logits = np.asarray(model(recorded["x"], training=False))
    # Recorded on another machine: round-off differs between CPUs, hence the parity bound.
    assert np.abs(logits - recorded["logits"]).max() <= logit_tolerance(recorded["logits"])

    # Saved again by this version and loaded: the same numbers.
    model.save(tmp_path / "again.keras")
    again = keras.models.load_model(tmp_path / "again.keras")
    np.testing.assert_array_equal(np.asarray(again(recorded["x"], training=False)), logits)

    # The same architecture built today: same weights layout, same cost in the summary.
    fresh = keras_resnet.build_resnet(arch, num_classes=3, **builder_args)
    assert [w.path for w in fresh.weights] == [w.path for w in model.weights]
    fresh.set_weights(model.get_weights())
    np.testing.assert_allclose(np.asarray(fresh(recorded["x"], training=False)), logits,
                               rtol=1e-5, atol=1e-5)
    assert total_macs(fresh) == total_macs(model)
    assert total_macs(fresh, on_pixels=True) == total_macs(model, on_pixels=True)
    if arch in OLD_MACS:
        assert (total_macs(model), total_macs(model, on_pixels=True)) == OLD_MACS[arch]
    assert [r.name for r in summarize(fresh)] == [r.name for r in summarize(model)]


def test_frozen_file_naming_its_padding_layers_loads_frozen():
    recorded = np.load(DATA / "resnet18_w2_frozen2_pad_layers_logits.npz")
    model = keras.models.load_model(DATA / "resnet18_w2_frozen2_pad_layers.keras")
    logits = np.asarray(model(recorded["x"], training=False))
    assert np.abs(logits - recorded["logits"]).max() <= logit_tolerance(recorded["logits"])
    frozen = {layer.name for layer in model._flatten_layers(include_self=False)
              if not layer.trainable}
    assert {"stem_conv", "stage1_block1", "stage2_block2_conv2"} <= frozen
    assert not frozen & {"stage3_block1", "stage4_block2", "predictions"}
