"""PyTorch interop (keras_resnet.convert): parity with torchvision, round trips, bad inputs.

The parity and pickle tests need torch + torchvision (requirements-dev.txt, which
scripts/test.sh installs). Run with ``-s`` to see the measured differences per arch.
"""

import os
import pickle
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_resnet import build_resnet
from keras_resnet.convert import (
    IMAGENET_NORMALIZATION,
    from_torch,
    infer_config,
    load_torch_state_dict,
    main,
    read_state_dict,
    save_torch_state_dict,
    to_torch_state_dict,
    torch_compat_notes,
)
from keras_resnet.archs import ARCHS, min_width
from tests.conftest import ALL_ARCHS, logit_tolerance


def _torch():
    """torch and torchvision (test dependencies: their absence fails the test).

    torchvision imports torch._dynamo, which imports triton; triton's native library segfaults
    when it is loaded after TensorFlow (torch 2.14.1 / triton 3.8 / TF 2.21). tests/conftest.py
    imports torchvision first; should this module run without it, triton (never needed on the
    CPU) is made unimportable before torchvision loads, and torch then reports it absent.
    """
    import torch
    sys.modules.setdefault("triton", None)
    import torchvision
    return torch, torchvision


def randomize(model, seed=0):
    """Random weights everywhere, BN statistics included, so no layer is an identity."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(v.shape)
        if "moving_variance" in v.path:
            value = rng.uniform(0.5, 2.0, shape)
        elif "gamma" in v.path:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0, 0.1, shape)
        v.assign(value.astype("float32"))
    return model


def small_model(arch="resnet18", shape=(28, 28, 1), stem="cifar", width=8, **kwargs):
    return randomize(
        build_resnet(arch, input_shape=shape, num_classes=7, stem=stem, width=width, **kwargs)
    )


def images(shape, batch=2, seed=1):
    return np.random.default_rng(seed).normal(0, 1, (batch, *shape)).astype("float32")


def assert_same_weights(a, b):
    wa = {w.path: w.numpy() for w in a.weights}
    wb = {w.path: w.numpy() for w in b.weights}
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


# ------------------------------------------------------------------------------------------
# Parity with torchvision: random weights, randomized BN statistics and affine, eval mode.

PARITY_CASES = {
    # name: (input HWC, torch conv1 replaced by a 3x3/1 conv + no max-pool?, batch, width)
    "imagenet_224x3": ((224, 224, 3), False, 2, 64),
    "cifar_32x3": ((32, 32, 3), True, 4, 64),
    "cifar_28x1": ((28, 28, 1), True, 4, 64),
    # torchvision's blocks at the narrowest width the arch takes (see narrow_torchvision)
    "narrow_imagenet_64x3": ((64, 64, 3), False, 2, None),
    "narrow_cifar_28x1": ((28, 28, 1), True, 4, None),
}
DEEP = ("resnet101", "resnet152")
GROUPED_OR_WIDE = ("resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
                   "wide_resnet50_2", "wide_resnet101_2")
MEASURED = {}


def narrow_torchvision(arch, width, channels, cifar, num_classes=10):
    """torchvision's ``arch`` (its own Bottleneck and grouped 3x3s) at base ``width`` instead of
    64: every stage's ``planes`` scaled by width / 64, the rest as torchvision builds it."""
    torch, torchvision = _torch()
    resnet, spec = torchvision.models.resnet, ARCHS[arch]
    block = resnet.Bottleneck if spec.block == "bottleneck" else resnet.BasicBlock

    class Narrow(resnet.ResNet):
        def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
            if planes == 64:
                self.inplanes = width
            return super()._make_layer(block, planes * width // 64, blocks, stride, dilate)

    net = Narrow(block, list(spec.depths), num_classes=num_classes, groups=spec.groups,
                 width_per_group=spec.width_per_group)
    stem = (3, 1, 1) if cifar else (7, 2, 3)
    net.conv1 = torch.nn.Conv2d(channels, width, *stem, bias=False)
    net.bn1 = torch.nn.BatchNorm2d(width)
    if cifar:
        net.maxpool = torch.nn.Identity()
    net.fc = torch.nn.Linear(width * 8 * block.expansion, num_classes)
    return net


def torchvision_model(arch, cifar, channels, seed=0, width=64):
    from benchmarks.model.bench import torch_resnet

    torch, torchvision = _torch()
    torch.manual_seed(seed)
    if width == 64:
        net = torch_resnet(torchvision, torch, arch, "cifar" if cifar else "imagenet", channels,
                           10)
    else:
        net = narrow_torchvision(arch, width, channels, cifar)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return net.eval()


def _parity_marks(arch, case):
    """Every day: ResNet-18/50 at full width on every case, ResNet-34 on one, ResNet-101/152
    narrow on the one-channel CIFAR case; each ResNeXt and Wide ResNet narrow on one stem
    (TensorFlow's CPU grouped convolution is slow, and the full widths hold 25-127 M
    parameters). Slow run: ResNet-101/152 at full
    width on three-channel images of both stems; ResNeXt and Wide ResNet at full width on both
    stems (224x224 and 28x28) for the 50-layer ones, only the 28x28 case for the 101-layer ones
    (their 224x224 cases would add minutes)."""
    narrow = case.startswith("narrow")
    if arch in DEEP and case in ("narrow_cifar_28x1", "cifar_28x1"):
        return [] if narrow else None
    if arch in GROUPED_OR_WIDE:
        if narrow:  # every day one stem per arch, alternating: both stems across the family
            stem = "imagenet" if GROUPED_OR_WIDE.index(arch) % 2 == 0 else "cifar"
            return [] if stem in case else [pytest.mark.slow]
        if case == "cifar_32x3" or ("101" in arch and case != "cifar_28x1"):
            return None
        return [pytest.mark.slow]
    if narrow:
        return None
    if arch == "resnet34":  # ResNet-18's blocks: every day on one case
        return [] if case == "cifar_28x1" else [pytest.mark.slow]
    return [pytest.mark.slow] if arch in DEEP else []


PARITY_PARAMS = [
    pytest.param(arch, case, id=f"{arch}-{case}", marks=_parity_marks(arch, case))
    for arch in ALL_ARCHS for case in PARITY_CASES if _parity_marks(arch, case) is not None
]


@pytest.mark.parametrize("arch,case", PARITY_PARAMS)
def test_torchvision_parity_and_export(arch, case):
    torch, _ = _torch()
    shape, cifar, batch, width = PARITY_CASES[case]
    width = width or max(4, min_width(arch))
    if arch in (*DEEP, *GROUPED_OR_WIDE) and not cifar and width == 64:
        batch = 1  # the most expensive cases in the suite; one image still checks parity
    start = time.perf_counter()
    net = torchvision_model(arch, cifar, shape[-1], width=width)
    torch_sd = {k: v.clone() for k, v in net.state_dict().items()}

    model = from_torch(torch_sd, arch)  # arch given: checked against the weights
    assert model.input_shape == (None, None, None, shape[-1])
    assert model.get_layer("predictions").units == 10
    x = images(shape, batch)
    with torch.no_grad():
        want = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    got = np.asarray(model(x, training=False))
    scale = float(np.max(np.abs(want)))
    diff = float(np.max(np.abs(got - want)))
    MEASURED[(arch, case)] = (diff, diff / scale)
    print(
        f"\n[parity] {arch:16s} {case:20s} max|logit| {scale:10.4g}  max|dlogit| {diff:.3g}  "
        f"relative {diff / scale:.3g}  ({time.perf_counter() - start:.1f} s)"
    )
    assert diff <= logit_tolerance(want)

    # Export: the state_dict we write loads into the torchvision module, strict, exactly.
    sd = to_torch_state_dict(model)
    with torch.no_grad():
        for t in [*net.parameters(), *net.buffers()]:
            t.zero_()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    for k, v in net.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, torch_sd[k]), k
    counter = sd["bn1.num_batches_tracked"]
    assert counter.shape == () and counter.dtype == np.int64


# ------------------------------------------------------------------------------------------
# Keras -> torch -> Keras round trips (numpy only for .safetensors)


@pytest.mark.parametrize(
    "arch,shape,stem",
    [
        ("resnet18", (28, 28, 1), "cifar"),
        ("resnet50", (32, 32, 3), "imagenet"),
    ],
)
def test_round_trip_safetensors_exact(arch, shape, stem, tmp_path, monkeypatch):
    norm = ((120.0,) * shape[-1], (60.0,) * shape[-1])
    model = small_model(arch, shape, stem, normalization=norm)
    path = tmp_path / "w.safetensors"
    monkeypatch.setitem(sys.modules, "torch", None)  # .safetensors must not need torch
    with pytest.warns(UserWarning) as record:
        save_torch_state_dict(model, path)
    notes = [str(r.message) for r in record]
    assert notes == torch_compat_notes(model)
    assert any("normalizes its input" in n for n in notes)
    assert any("width 8" in n for n in notes)
    back = from_torch(path, input_shape=shape, normalization=norm)
    assert back.name == arch
    assert_same_weights(model, back)
    x = images(shape) * 60 + 120
    np.testing.assert_array_equal(
        np.asarray(model(x, training=False)), np.asarray(back(x, training=False))
    )


def test_round_trip_pth_exact(tmp_path):
    _torch()
    model = small_model("resnet34", (32, 32, 3), "cifar")
    path = tmp_path / "w.pth"
    with pytest.warns(UserWarning):
        sd = save_torch_state_dict(model, path)
    back = from_torch(path, input_shape=(32, 32))
    assert back.input_shape == (None, 32, 32, 3)
    assert_same_weights(model, back)
    loaded, notes = read_state_dict(path)
    assert notes == [] and loaded.keys() == sd.keys()


def test_bfloat16_safetensors_from_torch(tmp_path):
    torch, _ = _torch()
    from safetensors.torch import save_file

    sd = to_torch_state_dict(small_model("resnet18", (32, 32, 3), "imagenet"))
    bf16 = {k: torch.from_numpy(v) for k, v in sd.items()}
    bf16 = {k: v.bfloat16() if v.is_floating_point() else v for k, v in bf16.items()}
    save_file(bf16, tmp_path / "w.safetensors")
    back = to_torch_state_dict(from_torch(tmp_path / "w.safetensors"))
    for k, v in bf16.items():
        if not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[k], v.float().numpy(), err_msg=k)


def test_cli_round_trip(tmp_path, capsys):
    model = small_model("resnet18", (28, 28, 1), "cifar")
    src = tmp_path / "m.keras"
    model.save(src)
    st, keras_out = tmp_path / "m.safetensors", tmp_path / "back.keras"
    outs = [str(st)]
    try:
        import torch  # noqa: F401

        outs.append(str(tmp_path / "m.pth"))
    except ImportError:
        pass
    assert main(["--to-torch", str(src), "--out", *outs]) == 0
    assert main(
        ["--from-torch", str(st), "--arch", "resnet18", "--out", str(keras_out),
         "--input-size", "28"]
    ) == 0
    text = capsys.readouterr().out
    assert "nn.Conv2d(1, 8, 3, 1, 1, bias=False)" in text and "expects torch-normalized" in text
    back = keras.models.load_model(keras_out, compile=False)
    assert back.input_shape == (None, 28, 28, 1)
    assert_same_weights(model, back)
    # A mismatch is one readable error on stderr and exit status 2, not a traceback.
    assert main(["--from-torch", str(st), "--arch", "resnet34", "--out", str(keras_out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m keras_resnet.convert: error: {st}: state_dict does not "
                          "match 'resnet34'") and "layer3.5" in err


# ------------------------------------------------------------------------------------------
# Inference from the weights, wrappers, bad inputs


def test_infer_config_one_channel_cifar_stem():
    sd = to_torch_state_dict(small_model("resnet50", (28, 28, 1), "cifar", width=4))
    assert infer_config(sd) == {
        "arch": "resnet50", "block": "bottleneck", "depths": (3, 4, 6, 3), "groups": 1,
        "inner_width": 4, "stem": "cifar", "width": 4, "in_channels": 1, "num_classes": 7,
        "include_top": True,
    }
    model = from_torch(sd)
    assert model.input_shape == (None, None, None, 1)
    assert model.get_layer("stem_conv").kernel.shape == (3, 3, 1, 4)
    assert "stem_pool" not in [layer.name for layer in model.layers]
    notes = torch_compat_notes(model)
    assert any("nn.Conv2d(1, 4, 3, 1, 1, bias=False); model.maxpool = nn.Identity()" in n
               for n in notes)


def test_infer_config_tells_resnext_and_wide_resnet_from_resnet():
    # torchvision's own modules (narrow: no Keras model is built), their state_dicts read.
    for arch in ("resnet101", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2"):
        width = max(4, min_width(arch))
        sd = {k: v.numpy() for k, v in
              narrow_torchvision(arch, width, 3, cifar=False).state_dict().items()}
        found = infer_config(sd)
        spec = ARCHS[arch]
        assert (found["arch"], found["groups"], found["width"]) == (arch, spec.groups, width)
    with pytest.raises(ValueError, match=r"1 group\(s\), bottleneck 3x3 width 12 at width 16 "
                                         r"match no known arch"):
        sd = {k: v.numpy() for k, v in narrow_torchvision(
            "resnet50", 16, 3, cifar=False).state_dict().items()}
        sd["layer1.0.conv2.weight"] = np.zeros((12, 12, 3, 3), "float32")
        from_torch(sd)


def test_notes_read_the_models_config():
    model = build_resnet("resnet18", input_shape=(32, 32, 1), num_classes=3, stem="cifar",
                         width=4, normalization=(33.0, 78.0), classifier_activation="softmax",
                         class_names=["a", "b", "c"])
    notes = torch_compat_notes(model)
    assert [n.split(":")[0].split(" (")[0] for n in notes] == [
        "torchvision model needs", "width 4", "the Keras model normalizes its input",
        "the Keras classifier applies softmax; torch's fc does not"]
    back = from_torch(to_torch_state_dict(model), class_names=["x", "y", "z"])
    assert back.class_names == ("x", "y", "z") and back.builder_config["stem"] == "cifar"


def test_wrappers_are_unwrapped():
    sd = to_torch_state_dict(small_model())
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}
    got, notes = read_state_dict(wrapped)
    assert got.keys() == sd.keys()
    assert notes == [
        "took the state_dict from the checkpoint's 'state_dict' entry",
        "stripped the 'module.' prefix from every key",
    ]
    got, _ = read_state_dict({"model": sd, "optimizer": {"lr": 0.1}})
    assert got.keys() == sd.keys()


def test_one_error_names_every_missing_unexpected_and_misshaped_tensor():
    model = small_model()
    sd = to_torch_state_dict(randomize(small_model(), seed=5))
    del sd["layer2.0.downsample.1.running_var"]
    sd["layer1.0.se.fc.weight"] = np.zeros(3, "float32")
    sd["fc.weight"] = np.zeros((9, 64), "float32")
    before = [w.numpy() for w in model.weights]
    with pytest.raises(ValueError) as err:
        load_torch_state_dict(model, sd)
    msg = str(err.value)
    assert "1 missing:\n  layer2.0.downsample.1.running_var" in msg
    assert "1 unexpected:\n  layer1.0.se.fc.weight" in msg
    assert "fc.weight: torch shape (9, 64), model needs (7, 64)" in msg
    assert "Nothing was loaded" in msg
    for b, w in zip(before, model.weights):  # nothing partially loaded
        np.testing.assert_array_equal(b, w.numpy())


def test_non_strict_loads_the_rest_and_says_what_it_skipped():
    model = small_model()
    sd = to_torch_state_dict(randomize(small_model(), seed=5))
    sd["fc.weight"] = np.zeros((9, 64), "float32")
    with pytest.warns(UserWarning, match=r"loaded 101 of 102 tensors[\s\S]*fc.weight"):
        report = load_torch_state_dict(model, sd, strict=False)
    assert report["mismatched"] == ["fc.weight: torch shape (9, 64), model needs (7, 64)"]
    np.testing.assert_array_equal(model.get_layer("stem_conv").kernel.numpy(),
                                  sd["conv1.weight"].transpose(2, 3, 1, 0))


def test_wrong_arch_is_named():
    sd = to_torch_state_dict(small_model("resnet18"))
    with pytest.raises(ValueError, match=r"basic blocks \[2, 2, 2, 2\] = resnet18") as err:
        from_torch(sd, "resnet34")
    assert "layer3.5.conv2.weight" in str(err.value)  # resnet34 has 6 blocks in stage 3


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("conv1.weight", np.zeros((8, 1, 5, 5), "float32"), "5x5 kernel"),
        ("conv1.weight", None, "no 'conv1.weight'"),
        ("layer1.0.conv1.weight", "x", r"entries \[.layer1.0.conv1.weight.\] are not tensors"),
    ],
)
def test_unusable_state_dicts(key, value, match):
    sd = dict(to_torch_state_dict(small_model()))
    if value is None:
        del sd[key]
    else:
        sd[key] = value
    with pytest.raises(ValueError, match=match):
        from_torch(sd)


def test_unknown_prefix_gets_a_hint():
    sd = {f"model.{k}": v for k, v in to_torch_state_dict(small_model()).items()}
    with pytest.raises(ValueError, match=r"keys seem to start with 'model.'"):
        from_torch(sd)


class _RunsCode:
    """Unpickling this would call os.mkdir(path): stands in for arbitrary code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_is_refused_and_never_runs(writer, tmp_path):
    torch, _ = _torch()
    sentinel = str(tmp_path / "pwned")
    path = tmp_path / "evil.pth"
    payload = {"conv1.weight": torch.zeros(1), "x": _RunsCode(sentinel)}
    if writer == "pickle":
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    else:
        torch.save(payload, path)
    with pytest.raises(ValueError, match="refused to load"):
        from_torch(path)
    assert not os.path.exists(sentinel)


def test_corrupt_pth_is_a_clear_error(tmp_path):
    _torch()
    path = tmp_path / "w.pth"
    path.write_bytes(b"hello, not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint|refused to load"):
        read_state_dict(path)


def test_torch_is_never_imported_at_module_level():
    import ast
    import keras_resnet.convert as convert

    modules = list(Path(convert.__file__).parent.glob("*.py"))
    assert {m.stem for m in modules} >= {"__init__", "formats", "architecture", "names", "weights",
                                         "cli"}
    for module in modules:
        tree = ast.parse(module.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top for a in n.names] + [n.module or "" for n in top
                                                          if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] in ("torch", "torchvision")], module


def test_old_format_pth_without_torch_says_how(tmp_path, monkeypatch):
    path = tmp_path / "w.pth"
    path.write_bytes(b"\x80\x02not read")  # a bare pickle stream: torch before 1.6
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="needs PyTorch"):
        read_state_dict(path)


# ------------------------------------------------------------------------------------------
# The deployment path: torchvision -> Keras (raw-pixel input) -> ONNX / TFLite, still torch's logits


@pytest.mark.slow  # two converters on a full-width ResNet (~45 s)
def test_torchvision_to_keras_to_onnx_and_tflite(tmp_path):
    torch, torchvision = _torch()
    import export

    net = torchvision_model("resnet18", cifar=False, channels=3)
    shape = (64, 64, 3)  # ImageNet stem (padding + max-pool) at a small size; export needs one
    model = from_torch(net.state_dict(), input_shape=shape, normalization=IMAGENET_NORMALIZATION)

    raw = np.random.default_rng(2).uniform(0, 255, (2, *shape)).astype("float32")
    # torchvision's preprocessing: ToTensor (/255) then Normalize(ImageNet mean, std).
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    torch_in = ((raw / 255 - mean) / std).astype("float32").transpose(0, 3, 1, 2).copy()
    with torch.no_grad():
        want = net(torch.from_numpy(torch_in)).numpy()
    scale = float(np.max(np.abs(want)))

    artifacts = {
        "keras": None,
        "onnx": export.onnx(model, tmp_path / "m.onnx"),
        "tflite": export.tflite(model, tmp_path / "m.tflite", "float32"),
    }
    for kind, path in artifacts.items():
        if path is None:
            got = np.asarray(model(raw, training=False))
        else:
            got = np.asarray(export.load_runner(path)(raw))
        diff = float(np.max(np.abs(got - want)))
        print(f"\n[deploy] resnet18 64x64x3 {kind:6s} max|dlogit| {diff:.3g} "
              f"relative {diff / scale:.3g}")
        assert diff <= logit_tolerance(want), kind
