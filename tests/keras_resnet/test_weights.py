"""Named weight sets (keras_resnet.weights): download, hash check, conversion, cache, loading.

Offline: every download is from a server on 127.0.0.1 (tests/weights_server.py) serving a
torchvision ResNet-18 checkpoint saved by torch with random weights, registered under a name
with its hash. KERAS_HOME is a temporary folder in every test.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_resnet import build_resnet, resnet18
from keras_resnet import weights as kw
from tests.conftest import REPO, logit_tolerance
from tests.weights_server import (  # noqa: F401  (fixtures)
    served_checkpoint,
    torchvision_resnet18,
    weights_server,
)

CATEGORIES = [f"class {i}" for i in range(10)]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """A fresh cache, no mirror, a short stall timeout, and no set left registered."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv(kw.URL_VAR, raising=False)
    monkeypatch.setenv("KERAS_RESNET_DOWNLOAD_TIMEOUT", "2")
    before = {(ws.arch, ws.name) for ws in kw.all_weights()}
    yield home
    for ws in kw.all_weights():
        if (ws.arch, ws.name) not in before:
            kw.unregister(ws.name, ws.arch)


def cache_files():
    folder = kw.cache_dir()
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def register_tiny(server, checkpoint, mode="ok", name="tiny", file="tiny-resnet18.pth",
                  **kwargs):
    url = server.serve(file, checkpoint.body, mode)
    kwargs.setdefault("sha256", checkpoint.sha256)
    return kw.register(name, arch="resnet18", url=url, categories=CATEGORIES,
                       resize_size=73, crop_size=64, **kwargs)


def photo():
    from sklearn.datasets import load_sample_images

    return load_sample_images().images[0]  # china.jpg, 427x640 uint8


# ------------------------------------------------------------------------------------------
# The journey: download, check, convert, cache, load; torchvision's logits.


def test_download_check_convert_cache_and_torchvision_logits(weights_server, served_checkpoint):
    import torch
    from PIL import Image
    from torchvision.transforms._presets import ImageClassification

    from keras_resnet.convert import torch_key_map

    ws = register_tiny(weights_server, served_checkpoint)
    model = build_resnet("resnet18", input_shape=(64, 64, 3), weights="tiny")
    assert weights_server.count("tiny-resnet18.pth") == 1
    assert cache_files() == sorted([ws.file_name, kw.converted_path(ws).name])
    assert ws.file_name == f"tiny-resnet18-{served_checkpoint.sha256[:8]}.pth"
    # The set's defaults: its categories, its normalization (raw 0..255 pixels in).
    assert model.class_names == tuple(CATEGORIES)
    assert model.builder_config["normalization"] == [list(v) for v in ws.normalization]

    net = torchvision_resnet18(10)
    tv_transform = ImageClassification(crop_size=64, resize_size=73)
    image = photo()
    x_torch = tv_transform(Image.fromarray(image))[None]
    with torch.no_grad():
        want = net(x_torch).numpy()
    # The same input: torchvision's crop, in raw pixels, through our normalization layer.
    mean, std = np.array(ws.mean), np.array(ws.std)
    raw = (x_torch[0].numpy().transpose(1, 2, 0) * std + mean) * 255
    got = np.asarray(model(raw[None].astype("float32"), training=False))
    assert np.abs(got - want).max() <= logit_tolerance(want)
    # Our transform: within its pixel bound of torchvision's, so the logits stay close.
    ours = np.asarray(model(kw.transform("tiny")(image)[None], training=False))
    assert np.abs(ours - want).max() <= 0.02 * np.abs(want).max()
    assert ours.argmax() == want.argmax()

    # Later loads: the cached file without a request; the converted copy without the .pth.
    assert kw.fetch("resnet18.tiny", progress=False) == kw.cache_path(ws)
    os.remove(kw.cache_path(ws))
    sd = kw.state_dict("tiny")
    assert weights_server.count("tiny-resnet18.pth") == 1
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(sd[key], value.numpy(), err_msg=key)
    # include_top=False leaves the model's classifier alone.
    head = [w.numpy() for w in model.get_layer("predictions").weights]
    model.get_layer("predictions").set_weights([np.zeros_like(w) for w in head])
    assert kw.load_into(model, "tiny", include_top=False)["head"] == "new"
    assert not np.any(model.get_layer("predictions").weights[0].numpy())
    # A local checkpoint file is accepted as well, and caches nothing.
    before = cache_files()
    report = kw.load_into(model, served_checkpoint.path)
    assert report == {"weights": str(served_checkpoint.path), "head": "loaded",
                      "loaded": len(torch_key_map(model))}
    assert cache_files() == before


@pytest.mark.slow
def test_another_class_count_keeps_the_backbone_and_starts_a_new_head(weights_server,
                                                                        served_checkpoint):
    from keras_resnet.convert.names import to_keras_layout, torch_key_map

    register_tiny(weights_server, served_checkpoint)
    model = build_resnet("resnet18", input_shape=(64, 64, 3), num_classes=3, weights="tiny")
    assert model.class_names is None and model.get_layer("predictions").units == 3
    head = [w.numpy() for w in model.get_layer("predictions").weights]
    sd = kw.state_dict("tiny")
    for key, var, kind in torch_key_map(model):
        if not key.startswith("fc."):
            np.testing.assert_array_equal(var.numpy(), to_keras_layout(sd[key], kind), key)
    # include_top=False leaves even a head of the same size alone.
    assert kw.load_into(model, "tiny", include_top=False)["head"] == "new"
    for before, after in zip(head, model.get_layer("predictions").weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert weights_server.count("tiny-resnet18.pth") == 1


@pytest.mark.slow
def test_include_top_false_takes_the_backbone(weights_server, served_checkpoint):
    register_tiny(weights_server, served_checkpoint)
    full = build_resnet("resnet18", input_shape=(64, 64, 3), weights="tiny")
    backbone = build_resnet("resnet18", input_shape=(None, None, 3), include_top=False,
                            pooling=None, weights="tiny")
    assert backbone.class_names is None and "predictions" not in [
        layer.name for layer in backbone.layers]
    for layer in backbone.layers:
        for a, b in zip(layer.weights, full.get_layer(layer.name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=layer.name)


# ------------------------------------------------------------------------------------------
# Failures: one line naming the URL and the exact cache path, and nothing cached. What is
# served need not be a checkpoint: the hash is checked before anything reads the file.

NOT_A_CHECKPOINT = np.random.default_rng(0).bytes(300_000)
NOT_A_CHECKPOINT_SHA256 = __import__("hashlib").sha256(NOT_A_CHECKPOINT).hexdigest()


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


def register_bytes(server, mode="ok", body=NOT_A_CHECKPOINT):
    url = server.serve("bytes.pth", body, mode)
    return kw.register("tiny", arch="resnet18", url=url, sha256=NOT_A_CHECKPOINT_SHA256,
                       categories=CATEGORIES)


@pytest.mark.parametrize("mode", ["tampered", "truncate"])
def test_a_file_whose_hash_differs_is_refused_and_nothing_is_cached(mode, weights_server):
    body = bytearray(NOT_A_CHECKPOINT)
    if mode == "tampered":
        body[len(body) // 2] ^= 0xFF
    ws = register_bytes(weights_server, "truncate" if mode == "truncate" else "ok", bytes(body))
    with pytest.raises(kw.WeightsHashMismatch) as err:
        resnet18(input_shape=(64, 64, 3), weights="tiny")  # refused before the model is built
    line = one_line(err)
    assert f"downloaded from {ws.url} has sha256" in line and "nothing was cached" in line
    assert cache_files() == []


@pytest.mark.parametrize("mode", ["stop", "404", pytest.param("stall", marks=pytest.mark.slow)])
def test_a_failed_download_is_one_line_with_the_url_and_the_cache_path(mode, weights_server):
    weights_server.stall_s = 4  # beyond KERAS_RESNET_DOWNLOAD_TIMEOUT=2
    ws = register_bytes(weights_server, mode)
    if mode == "404":
        ws = kw.register("tiny", arch="resnet18", url=f"{weights_server.base_url}/missing.pth",
                         sha256=NOT_A_CHECKPOINT_SHA256)
    with pytest.raises(kw.WeightsUnavailable) as err:
        kw.fetch("tiny", progress=False)
    line = one_line(err)
    assert line.startswith(f"could not download {ws.url} (")
    assert line.endswith(f"; download it yourself and place it at {kw.cache_path(ws)}")
    assert cache_files() == []


def test_an_unreachable_server_then_a_file_placed_by_hand():
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/bytes.pth"
    ws = kw.register("tiny", arch="resnet18", url=url, sha256=NOT_A_CHECKPOINT_SHA256[:12])
    with pytest.raises(kw.WeightsUnavailable) as err:
        kw.fetch("tiny", progress=False)
    line = one_line(err)
    assert url in line and str(kw.cache_path(ws)) in line and "refused" in line.lower()
    assert cache_files() == []
    # Placed where the message says, the file is checked and used without a download.
    kw.cache_path(ws).write_bytes(NOT_A_CHECKPOINT)
    assert kw.fetch("tiny") == kw.cache_path(ws)
    # A wrong file placed by hand is refused, naming it.
    kw.cache_path(ws).write_bytes(NOT_A_CHECKPOINT[:-10])
    with pytest.raises(kw.WeightsHashMismatch,
                       match=f"the file at {kw.cache_path(ws)} has sha256"):
        kw.fetch("tiny")


def test_the_mirror_variable_replaces_torchvisions_base_url(weights_server, monkeypatch,
                                                            tmp_path):
    ws = kw.get("DEFAULT", "resnet18")
    assert kw.download_url(ws) == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    monkeypatch.setenv(kw.URL_VAR, weights_server.base_url + "/mirror/")
    assert kw.download_url(ws) == weights_server.base_url + "/mirror/resnet18-f37072fd.pth"
    monkeypatch.setenv(kw.URL_VAR, str(tmp_path))
    assert kw.download_url(ws) == (tmp_path / "resnet18-f37072fd.pth").as_uri()
    # The mirror is asked, and its file (not torchvision's) is refused by torchvision's hash.
    monkeypatch.setenv(kw.URL_VAR, weights_server.base_url + "/mirror")
    weights_server.serve("mirror/resnet18-f37072fd.pth", b"not the weights")
    with pytest.raises(kw.WeightsHashMismatch, match="expected f37072fd"):
        kw.fetch("IMAGENET1K_V1", "resnet18", progress=False)
    assert weights_server.count("mirror/resnet18-f37072fd.pth") == 1
    assert cache_files() == []
    # A mirror that lacks the file: the line says where to place it, and that a mirror can.
    monkeypatch.setenv(kw.URL_VAR, weights_server.base_url + "/elsewhere")
    with pytest.raises(kw.WeightsUnavailable) as err:
        kw.fetch("DEFAULT", "resnet18", progress=False)
    assert one_line(err) == (
        f"could not download {weights_server.base_url}/elsewhere/resnet18-f37072fd.pth (HTTP 404 "
        f"Not Found); download it yourself and place it at {kw.cache_dir()}/resnet18-f37072fd.pth"
        f" (or set {kw.URL_VAR} to a mirror)")


def test_a_model_that_cannot_hold_the_set_is_refused_before_any_download():
    with pytest.raises(kw.WeightsError, match="stem 'cifar'"):
        build_resnet("resnet18", input_shape=(32, 32, 3), stem="cifar", weights="DEFAULT")
    with pytest.raises(kw.WeightsError, match="1 input channel"):
        build_resnet("resnet18", input_shape=(64, 64, 1), weights="IMAGENET1K_V1")
    with pytest.raises(kw.WeightsError, match="not one of resnet18's"):
        build_resnet("resnet18", weights="IMAGENET1K_V2")
    assert cache_files() == []


@pytest.mark.slow
def test_a_registered_checkpoint_of_another_arch_is_named(weights_server, served_checkpoint):
    url = weights_server.serve("tiny-resnet18.pth", served_checkpoint.body)
    kw.register("wrong", arch="resnet34", url=url, sha256=served_checkpoint.sha256,
                categories=CATEGORIES)
    with pytest.raises(kw.WeightsError, match="holds a resnet18 .* the model is a resnet34"):
        build_resnet("resnet34", input_shape=(64, 64, 3), weights="wrong")


# ------------------------------------------------------------------------------------------
# Names.


def test_names_and_files_are_told_apart(tmp_path):
    for text in ("IMAGENET1K_V2", "DEFAULT", "ResNet50_Weights.IMAGENET1K_V2", "my-set",
                 "resnet18.IMAGENET1K_V1"):
        assert kw.looks_like_name(text), text
    existing = tmp_path / "IMAGENET1K_V1"
    existing.write_text("")
    for text in ("model.keras", "w.pth", "w.safetensors", "runs/a/model.keras", str(existing),
                 "notes.txt", "", None):
        assert not kw.looks_like_name(text), text


def test_get_resolves_names_defaults_and_qualified_names():
    assert kw.get("DEFAULT", "resnet50").name == "IMAGENET1K_V2"
    assert kw.get("DEFAULT", "resnet34").name == "IMAGENET1K_V1"
    assert kw.get("imagenet1k_v2", "resnet101").url.endswith("resnet101-cd907fc2.pth")
    ws = kw.get("ResNet152_Weights.IMAGENET1K_V1")
    assert (ws.arch, ws.name, ws.sha256) == ("resnet152", "IMAGENET1K_V1", "394f9c45")
    assert kw.get("IMAGENET1K_V1", "resnet18") is kw.get("resnet18.IMAGENET1K_V1")
    # torchvision's enum names of ResNeXt and Wide ResNet, any case
    assert kw.get("ResNeXt101_64X4D_Weights.IMAGENET1K_V1") is kw.get("DEFAULT", "resnext101_64x4d")
    assert kw.get("wide_resnet50_2_weights.imagenet1k_v2").qualified_name == (
        "Wide_ResNet50_2_Weights.IMAGENET1K_V2")
    assert ws.describe()["transform"] == {"resize_size": 256, "crop_size": 224,
                                          "interpolation": "bilinear", "antialias": True,
                                          "mean": [0.485, 0.456, 0.406],
                                          "std": [0.229, 0.224, 0.225]}


@pytest.mark.parametrize("name,arch,match", [
    ("IMAGENET1K_V2", None, "exists for resnet50, resnet101, resnet152, resnext50_32x4d, "
                            "resnext101_32x8d, wide_resnet50_2, wide_resnet101_2: give the arch"),
    ("IMAGENET1K_V3", "resnet50", "unknown weight set 'IMAGENET1K_V3' for resnet50; known: "
                                  "IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT"),
    ("DEFAULT", None, "needs an arch"),
    ("ResNet50_Weights.IMAGENET1K_V2", "resnet18", "is for resnet50, not resnet18"),
])
def test_get_errors_are_one_line(name, arch, match):
    with pytest.raises(kw.WeightsError, match=match) as err:
        kw.get(name, arch)
    one_line(err)


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="IMAGENET1K_V1"), "torchvision's resnet18 weight set"),
    (dict(name="DEFAULT"), "must be a word"),
    (dict(sha256="abc"), "8 or more digits"),
    (dict(sha256="zz" * 8), "sha256 must be"),
    (dict(url="ftp://host/w.pth"), "http://, https:// or file://"),
    (dict(url="https://host/w.zip"), "must name a checkpoint file"),
    (dict(categories=["a", "a"]), "distinct"),
    (dict(resize_size=100, crop_size=224), "at least crop_size"),
    (dict(arch="resnet99"), "unknown arch"),
])
def test_register_checks_its_arguments(kwargs, match):
    args = dict(name="mine", arch="resnet18", url="https://host/mine.pth", sha256="ab" * 4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        kw.register(args.pop("name"), **args)


def test_a_registered_full_hash_names_the_cached_file():
    ws = kw.register("mine", arch="resnet50", url="https://host/path/mine.pth?x=1",
                     sha256="AB" * 32)
    assert ws.sha256 == "ab" * 32 and ws.file_name == "mine-abababab.pth"
    assert kw.get("mine").arch == "resnet50"
    assert ws.categories == kw.imagenet_categories()
    # Registering the same name again replaces the user's set.
    assert kw.register("mine", arch="resnet50", url="https://host/b.pth", sha256="cd" * 4) \
        is kw.get("mine", "resnet50")


def test_a_saved_set_is_known_to_later_processes(served_checkpoint):
    from keras_resnet.weights import registry

    url = served_checkpoint.path.as_uri()  # file:// works as http:// does
    kw.register("mine", arch="resnet18", url=url, sha256=served_checkpoint.sha256,
                categories=CATEGORIES, resize_size=80, crop_size=64, save=True)
    kw.register("other", arch="resnet50", url="https://host/o.pth", sha256="ab" * 4, save=True)
    registry._user.clear()  # what a new process starts with
    ws = kw.get("mine")
    assert (ws.url, ws.categories, ws.resize_size) == (url, tuple(CATEGORIES), 80)
    assert kw.get("other").categories == kw.imagenet_categories()
    assert kw.fetch("mine", progress=False).read_bytes() == served_checkpoint.body
    kw.unregister("mine", "resnet18")
    with pytest.raises(kw.WeightsError, match="unknown weight set 'mine'"):
        kw.get("mine")
    assert [s.name for s in kw.all_weights() if not s.builtin] == ["other"]
    kw.saved_path().write_text('[{"name": "x", "arch": "resnet18"}]')
    with pytest.raises(kw.WeightsError, match=f"{kw.saved_path()} holds a weight set that "
                                              "register would refuse"):
        kw.get("DEFAULT", "resnet18")
    kw.saved_path().unlink()


def test_without_torch_the_first_read_says_what_to_install(weights_server, served_checkpoint,
                                                           monkeypatch):
    from keras_resnet.convert import formats

    def without_torch(path):
        raise ImportError(f"reading {path} needs PyTorch (pip install torch)")

    ws = register_tiny(weights_server, served_checkpoint)
    monkeypatch.setattr(formats, "read_state_dict", without_torch)  # as a reader needing torch
    with pytest.raises(kw.WeightsError, match="needs PyTorch \\(pip install torch\\); later "
                                              "loads read the converted copy") as err:
        kw.state_dict("tiny")
    assert str(kw.converted_path(ws)) in one_line(err)
    assert cache_files() == [ws.file_name]  # the checked download is kept


_FETCHER = textwrap.dedent("""
    import sys
    from keras_resnet import weights
    weights.register("tiny", arch="resnet18", url=sys.argv[1], sha256=sys.argv[2])
    weights.fetch("tiny")
""")


@pytest.mark.slow
def test_a_killed_download_leaves_nothing_that_counts_as_complete(weights_server):
    import signal
    import time

    weights_server.stall_s = 60
    ws = register_bytes(weights_server, "stall")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3",
           "KERAS_RESNET_DOWNLOAD_TIMEOUT": "120"}
    proc = subprocess.Popen([sys.executable, "-c", _FETCHER, ws.url, NOT_A_CHECKPOINT_SHA256],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not any(n.endswith(".part") and (kw.cache_dir() / n).stat().st_size
                      for n in cache_files()) and time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    (part,) = cache_files()
    assert part.startswith(f".{ws.file_name}.") and part.endswith(".part")
    assert not kw.cache_path(ws).exists()
    # The next fetch downloads again; a part older than a day is cleared on the way.
    os.utime(kw.cache_dir() / part, (time.time() - 2 * 86400,) * 2)
    weights_server.modes["/bytes.pth"] = "ok"
    assert kw.fetch("tiny", progress=False).read_bytes() == NOT_A_CHECKPOINT
    assert cache_files() == [ws.file_name]


# ------------------------------------------------------------------------------------------
# Two processes loading the same set at once.

_LOADER = textwrap.dedent("""
    import sys
    import torch  # before TensorFlow (tests/conftest.py)
    from keras_resnet import build_resnet, weights
    url, sha = sys.argv[1:3]
    weights.register("tiny", arch="resnet18", url=url, sha256=sha,
                     categories=[f"c{i}" for i in range(10)])
    model = build_resnet("resnet18", input_shape=(32, 32, 3), weights="tiny")
    print("ok", model.count_params())
""")


@pytest.mark.slow
def test_two_processes_loading_the_same_set_at_once_both_succeed(weights_server,
                                                                   served_checkpoint):
    weights_server.chunk, weights_server.chunk_delay_s = 1 << 20, 0.05  # ~2 s each: overlap
    url = weights_server.serve("tiny-resnet18.pth", served_checkpoint.body)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [subprocess.Popen([sys.executable, "-c", _LOADER, url, served_checkpoint.sha256],
                              env=env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert out.startswith("ok ")
    ws = kw.register("tiny", arch="resnet18", url=url, sha256=served_checkpoint.sha256,
                     categories=CATEGORIES)
    assert cache_files() == sorted([ws.file_name, kw.converted_path(ws).name])
    assert kw.sha256_of(kw.cache_path(ws)) == served_checkpoint.sha256
