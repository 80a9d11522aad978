"""keras_resnet.weights' built-in table against the installed torchvision's own
(``torchvision.models.ResNet*_Weights``): names, URLs, hashes, figures, transforms, categories,
defaults; and each set's parameter count against our model's."""

import sys

import pytest

from keras_resnet import weights as kw
from tests.conftest import ALL_ARCHS


def _torchvision():
    sys.modules.setdefault("triton", None)  # see test_convert._torch
    import torchvision

    return torchvision


def torchvision_table() -> dict:
    """{(arch, name): torchvision's Weights} for every ResNet weight set."""
    models = _torchvision().models
    return {(arch, w.name): w for arch in ALL_ARCHS for w in models.get_model_weights(arch)}


def test_the_same_sets_as_torchvision():
    ours = {(ws.arch, ws.name) for ws in kw.all_weights() if ws.builtin}
    assert ours == set(torchvision_table())
    models = _torchvision().models
    for arch in ALL_ARCHS:
        assert kw.get("DEFAULT", arch).name == models.get_model_weights(arch).DEFAULT.name


@pytest.mark.parametrize("key", sorted(torchvision_table()), ids=lambda k: f"{k[0]}-{k[1]}")
def test_every_figure_is_torchvisions(key):
    from torch.hub import HASH_REGEX

    tv = torchvision_table()[key]
    ws = kw.get(key[1], key[0])
    meta, t = tv.meta, tv.transforms()
    assert ws.url == tv.url
    assert ws.sha256 == HASH_REGEX.search(tv.url.rsplit("/", 1)[1]).group(1)
    assert ws.file_name == tv.url.rsplit("/", 1)[1]
    assert ws.qualified_name == f"{type(tv).__name__}.{tv.name}"
    assert ws.num_params == meta["num_params"]
    assert (ws.acc1, ws.acc5) == (meta["_metrics"]["ImageNet-1K"]["acc@1"],
                                  meta["_metrics"]["ImageNet-1K"]["acc@5"])
    assert ws.gflops == meta["_ops"] and ws.file_size_mb == meta["_file_size"]
    assert ws.recipe == meta["recipe"]
    assert ws.categories == tuple(meta["categories"])
    assert [ws.resize_size] == t.resize_size and [ws.crop_size] == t.crop_size
    assert list(ws.mean) == t.mean and list(ws.std) == t.std
    assert t.interpolation.value == "bilinear" and t.antialias is True


def test_parameter_counts_are_our_models():
    # test_models.test_trainable_params_equal_torchvision builds every arch and checks its
    # trainable count (torchvision's: parameters, not BatchNorm's buffers) against this table.
    from tests.keras_resnet.test_models import TORCHVISION_PARAMS

    builtin = [ws for ws in kw.all_weights() if ws.builtin]
    assert {ws.arch for ws in builtin} == set(ALL_ARCHS)
    for ws in builtin:
        assert ws.num_params == TORCHVISION_PARAMS[ws.arch], ws.qualified_name


def test_the_categories_file_is_torchvisions_list():
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    assert kw.imagenet_categories() == tuple(_IMAGENET_CATEGORIES)
    assert kw.categories("DEFAULT", "resnet50") == list(_IMAGENET_CATEGORIES)


@pytest.mark.parametrize("arch", [  # one full-size model build apiece (3-12 s): slow
    a if a == "resnet18" else pytest.param(a, marks=pytest.mark.slow) for a in ALL_ARCHS])
def test_multiply_accumulates_are_torchvisions_ops(arch):
    from keras_resnet import build_resnet
    from keras_resnet.summary import total_macs

    model = build_resnet(arch, input_shape=(224, 224, 3))
    assert round(total_macs(model) / 1e9, 3) == kw.get("DEFAULT", arch).gflops
