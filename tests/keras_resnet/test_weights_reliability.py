"""keras_resnet.weights under stress: registrations from several processes, hostile or broken
values in a weight set, downloads that drip, never end or name a pipe, a cache that cannot
hold the converted copy. Offline (tests/weights_server.py); KERAS_HOME is temporary."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

from keras_resnet import weights as kw
from keras_resnet.weights import registry
from tests.conftest import REPO
from tests.keras_resnet.test_weights import (  # noqa: F401  (fixtures)
    _own_cache,
    cache_files,
    one_line,
    register_bytes,
    register_tiny,
)
from tests.weights_server import served_checkpoint, weights_server  # noqa: F401


# ------------------------------------------------------------------------------------------
# register(save=True) across processes, and the saved file read once.

_REGISTRAR = textwrap.dedent("""
    import sys
    from keras_resnet import weights
    tag, count = sys.argv[1], int(sys.argv[2])
    for i in range(count):
        weights.register(f"{tag}{i}", arch="resnet18", url=f"https://host/{tag}{i}.pth",
                         sha256="ab" * 4, save=True)
""")


def test_two_processes_registering_at_once_keep_every_set(_own_cache):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _REGISTRAR, tag, "25"], env=env, cwd=REPO,
                              stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()[-2000:]
    rows = json.loads(kw.saved_path().read_text())
    assert sorted(r["name"] for r in rows) == sorted(f"{t}{i}" for t in "ab" for i in range(25))
    assert [p.name for p in kw.saved_path().parent.iterdir() if p.suffix == ".part"] == []


def test_replacing_a_saved_set_is_said():
    kw.register("mine", arch="resnet18", url="https://host/a.pth", sha256="ab" * 4, save=True)
    with pytest.warns(UserWarning, match="replaced the saved weight set resnet18.mine .*"
                                         "https://host/a.pth"):
        kw.register("mine", arch="resnet18", url="https://host/b.pth", sha256="ab" * 4,
                    save=True)
    assert kw.get("mine", "resnet18").url == "https://host/b.pth"


def test_the_saved_file_is_parsed_once_until_it_changes(monkeypatch):
    kw.register("mine", arch="resnet18", url="https://host/a.pth", sha256="ab" * 4, save=True)
    parsed = []
    real = registry._sets_of
    monkeypatch.setattr(registry, "_sets_of", lambda *a: parsed.append(1) or real(*a))
    registry._user.clear()  # what a new process starts with
    for _ in range(5):
        assert kw.get("mine").url == "https://host/a.pth"
    assert len(parsed) <= 1
    rows = json.loads(kw.saved_path().read_text())
    rows[0]["url"] = "https://host/edited.pth"  # another process (or a hand) changes it
    kw.saved_path().write_text(json.dumps(rows) + "\n" * 3)
    assert kw.get("mine").url == "https://host/edited.pth"


# ------------------------------------------------------------------------------------------
# Every value of a weight set checked, in register and in weights.json.

@pytest.mark.parametrize("kwargs, field", [
    (dict(resize_size=2**31), "resize_size must be a whole number of pixels in 1..8192"),
    (dict(resize_size=100_000, crop_size=224), "resize_size must be"),
    (dict(crop_size=0), "crop_size must be"),
    (dict(resize_size=256.0), "resize_size must be"),
    (dict(mean=(0.5, float("nan"), 0.5)), "mean must be 3 finite numbers in [0, 1]"),
    (dict(mean=(123.7, 116.3, 103.5)), "mean must be 3 finite numbers in [0, 1]"),
    (dict(std=(0.2, 0.2, float("inf"))), "std must be 3 finite numbers in (0, 1]"),
    (dict(std=(0.2, 0.0, 0.2)), "std must be"),
    (dict(mean=(0.5, 0.5)), "mean must be 3 numbers"),
    (dict(mean="0.5"), "mean must be 3 numbers"),
    (dict(categories=["cat", "two\nlines"]), "categories must be non-empty printable"),
    (dict(categories=["x" * 201]), "at most 200 characters"),
    (dict(categories=[]), "categories must hold 1 to 100000"),
])
def test_register_refuses_each_bad_value_naming_its_field(kwargs, field):
    with pytest.raises(kw.WeightsError) as err:
        kw.register("mine", arch="resnet18", url="https://host/m.pth", sha256="ab" * 4,
                    **kwargs)
    assert field in one_line(err)


@pytest.mark.parametrize("field, value", [("resize_size", 10**30), ("std", [0.2, None, 0.2]),
                                          ("mean", [0.5, "nan", 0.5])])
def test_a_bad_value_in_the_saved_file_is_one_line_naming_the_file_and_field(field, value):
    kw.saved_path().parent.mkdir(parents=True)
    row = {"name": "mine", "arch": "resnet18", "url": "https://host/m.pth", "sha256": "ab" * 4,
           field: value}
    kw.saved_path().write_text(json.dumps([row]))
    try:
        with pytest.raises(kw.WeightsError) as err:
            kw.get("DEFAULT", "resnet18")
    finally:
        kw.saved_path().unlink()
    line = one_line(err)
    assert str(kw.saved_path()) in line and f"{field} must be" in line


# ------------------------------------------------------------------------------------------
# Downloads: bounded in time and size, regular files only, progress on lines of its own.

def test_a_server_that_drips_fails_within_the_stall_timeout(weights_server):
    weights_server.chunk, weights_server.chunk_delay_s = 200, 0.05  # 4 kB/s, never silent
    ws = register_bytes(weights_server)
    with pytest.raises(kw.WeightsUnavailable) as err:
        kw.fetch("tiny", progress=False)
    line = one_line(err)
    assert line.startswith(f"could not download {ws.url} (it came at ") and "bytes/s" in line
    assert cache_files() == []


def test_a_body_larger_than_the_bound_is_cut_off(weights_server, monkeypatch):
    monkeypatch.setenv("KERAS_RESNET_MAX_WEIGHTS_BYTES", "100000")
    register_bytes(weights_server)  # 300,000 bytes, announced by Content-Length
    with pytest.raises(kw.WeightsUnavailable, match="it is 300000 bytes, more than the 100000 "
                                                    "expected"):
        kw.fetch("tiny", progress=False)
    assert cache_files() == []


def test_torchvisions_sets_are_bounded_by_their_published_size():
    ws = kw.get("IMAGENET1K_V1", "resnet18")
    assert ws.file_size_mb == 44.661  # torchvision's _file_size, in MiB
    assert kw.download.download_bound(ws) == math.ceil(44.661 * 2**20) + 2**16


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_file_urls_take_regular_files_only(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "w.pth"
        os.mkfifo(path)  # opened, it would block for ever
        url = path.as_uri()
    elif kind == "device":
        (tmp_path / "zero.pth").symlink_to("/dev/zero")  # an endless body
        url = (tmp_path / "zero.pth").as_uri()
    else:
        (tmp_path / "d.pth").mkdir()
        url = (tmp_path / "d.pth").as_uri()
    kw.register("tiny", arch="resnet18", url=url, sha256="ab" * 4)
    with pytest.raises(kw.WeightsUnavailable) as err:
        kw.fetch("tiny", progress=False)
    assert "is not a regular file" in one_line(err)
    assert cache_files() == []


@pytest.mark.parametrize("value", [str(2**31), "3601"])
def test_the_timeout_variable_is_bounded(monkeypatch, weights_server, value):
    monkeypatch.setenv("KERAS_RESNET_DOWNLOAD_TIMEOUT", value)
    register_bytes(weights_server)
    with pytest.raises(kw.WeightsError, match=f"KERAS_RESNET_DOWNLOAD_TIMEOUT={value} is more "
                                              "than 3600 seconds"):
        kw.fetch("tiny", progress=False)


def test_progress_on_a_log_file_has_no_escape_codes_or_carriage_returns(weights_server, capsys):
    ws = register_bytes(weights_server)
    kw.fetch("tiny")
    err = capsys.readouterr().err
    assert not set(err) & {"\r", "\b", "\x1b"}, repr(err[:300])
    assert err.splitlines()[0] == f"downloading {ws.url} (0.3 MB)"


def test_on_a_terminal_the_error_starts_a_line_of_its_own(weights_server, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    register_bytes(weights_server, "stop")
    with pytest.raises(kw.WeightsUnavailable):
        kw.fetch("tiny")
    err = capsys.readouterr().err
    assert "\r" in err and err.endswith("\n")  # redrawn in place, then the line is ended


def test_a_folder_in_the_way_of_the_checkpoint_is_named(weights_server):
    ws = register_bytes(weights_server)
    kw.cache_path(ws).mkdir(parents=True)
    with pytest.raises(kw.WeightsUnavailable) as err:
        kw.fetch("tiny", progress=False)
    line = one_line(err)
    assert f"{kw.cache_path(ws)} is in the way" in line and ".part" not in line


# ------------------------------------------------------------------------------------------
# A cache with room for the checkpoint but not its converted copy.

def test_no_room_for_the_converted_copy_still_loads(weights_server, served_checkpoint,
                                                    monkeypatch):
    import safetensors.numpy
    from safetensors import SafetensorError

    ws = register_tiny(weights_server, served_checkpoint)

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise SafetensorError("No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.numpy, "save_file", full_disk)
    for _ in range(2):  # and again on the next load, which converts again
        sd = kw.state_dict("tiny")
        assert "fc.weight" in sd
    assert cache_files() == [ws.file_name]  # no converted copy, no part left behind


# ------------------------------------------------------------------------------------------
# weights/ and convert/ know a model by its builder_config: neither imports the builder.

def test_weights_and_convert_do_not_import_the_builder():
    import ast

    root = REPO / "keras_resnet"
    files = [*(root / "weights").glob("*.py"),
             *(p for p in (root / "convert").glob("*.py") if p.name not in ("build.py",
                                                                             "cli.py",
                                                                             "__init__.py",
                                                                             "__main__.py"))]
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            found += [f"{path.name}: {n}" for n in names if "builder" in n
                      or "convert.build" in n or n.split(".")[-1] in (
                          "build_resnet", "model_config", "ResNet", "from_torch")]
    assert found == []
