"""Start-up of every CLI: --help and usage errors without TensorFlow, and TF's log lines off
stderr by default (keras_resnet._cli).

Each CLI runs as users run it, ``python -m ...`` in a fresh process from a folder outside the
repository; ``-X importtime`` lists every module that process imported.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from keras_resnet import _cli, _tflog

from tests.conftest import REPO

PACKAGES = ("keras_resnet", "training", "export", "benchmarks")
CLIS = (
    "training.fit", "training.evaluate", "export", "keras_resnet.convert",
    "keras_resnet.summary", "benchmarks.model.bench", "benchmarks.model.profile",
    "benchmarks.model.peak", "benchmarks.model.conv_paths", "benchmarks.train.e2e",
    "benchmarks.model.weight_grad", "training.predict",
    "export.predict",
)
# Not one of them may be loaded to print --help or a usage error.
HEAVY = ("tensorflow", "keras", "torch", "torchvision", "tf2onnx", "onnx", "onnxruntime",
         "ai_edge_litert", "tensorflow_datasets", "sklearn", "matplotlib")
# absl/TensorFlow C++ log lines ("I0000 00:00:1795545021.495 10078 port.cc:153] ...").
TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} ", re.MULTILINE)
TF_NOISE = ("cuInit", "oneDNN custom operations", "absl::InitializeLog")


def discovered_clis() -> set[str]:
    """Every module of the packages that runs as a program (``__main__`` guard or file)."""
    found = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            if path.name == "__main__.py":
                found.add(module.rsplit(".", 1)[0])
            elif re.search(r"^if __name__ == .__main__.:", path.read_text(), re.MULTILINE):
                found.add(module)
    return found


def run_python(tmp_path, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in (_cli.ENV_VAR, _cli.TF_LEVEL_VAR, _tflog._STATE_VAR)}
    clean["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), clean.get("PYTHONPATH")) if p)
    clean.update(env or {})
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=clean, text=True,
                          capture_output=True, timeout=timeout)


def imported(importtime_stderr: str) -> set[str]:
    """Top-level names of the modules listed by ``-X importtime``."""
    names = re.findall(r"^import time:[^|]*\|[^|]*\| *([\w.]+)$", importtime_stderr, re.MULTILINE)
    return {n.split(".")[0] for n in names}


def test_every_program_in_the_packages_is_known():
    assert set(CLIS) <= discovered_clis()


@pytest.mark.parametrize("cli", sorted(set(CLIS) | discovered_clis()))
def test_help_loads_no_framework(cli, tmp_path):
    proc = run_python(tmp_path, "-X", "importtime", "-m", cli, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: python -m ")
    loaded = imported(proc.stderr)
    assert "argparse" in loaded  # the listing was parsed
    assert not loaded & set(HEAVY), f"{cli} --help imported {sorted(loaded & set(HEAVY))}"
    if cli in CLIS:
        assert "--log-level {quiet,info,debug}" in proc.stdout


USAGE_ERRORS = [(cli, ["--log-level", "loud"], "invalid choice") for cli in CLIS] + [
    ("training.fit", ["--arch", "resnet19"], "invalid choice"),
    ("training.fit", ["--width", "0"], "width must be positive"),
    ("training.fit", ["--no-such-option"], "unrecognized arguments"),
    ("keras_resnet.summary", ["--input-shape", "1,2"], "needs 3 values"),
    ("benchmarks.model.bench", ["--modes", "fly"], "--modes accepts"),
    ("benchmarks.model.profile", ["--arch", "resnet19"], "invalid choice"),
    ("export", ["--model", "m.keras"], "required: --out"),
    ("keras_resnet.convert", ["--out", "x.keras"], "one of the arguments"),
]


@pytest.mark.parametrize("cli, argv, message", USAGE_ERRORS)
def test_usage_errors_are_answered_before_any_framework_loads(cli, argv, message, tmp_path):
    proc = run_python(tmp_path, "-X", "importtime", "-m", cli, *argv)
    assert proc.returncode == 2
    assert message in proc.stderr
    # The error and where help is, not argparse's usage dump.
    assert "usage:" not in proc.stderr and "--help" in proc.stderr.splitlines()[-1]
    loaded = imported(proc.stderr)
    assert not loaded & set(HEAVY), f"{cli} {argv} imported {sorted(loaded & set(HEAVY))}"


def test_library_names_resolve_on_first_use_and_layers_register_with_keras(tmp_path):
    """import keras_resnet / export stay light; `import keras_resnet` then Keras still loads
    a .keras file with our layers (they register when Keras is imported)."""
    from keras_resnet import build_resnet

    model = build_resnet("resnet18", input_shape=(32, 32, 3), num_classes=5, stem="cifar",
                         width=4)
    path = tmp_path / "tiny.keras"
    model.save(path)
    script = f"""
import sys
import export, keras_resnet
light = [m for m in {HEAVY!r} if m in sys.modules]
assert not light, light
assert keras_resnet.ARCHS["resnet50"][0] == "bottleneck" and "cifar" in keras_resnet.STEMS
assert "keras" not in sys.modules
assert set(keras_resnet.__all__) <= set(dir(keras_resnet)), dir(keras_resnet)
assert set(export.__all__) <= set(dir(export))
import keras
loaded = keras.models.load_model({str(path)!r}, compile=False)
assert type(loaded.get_layer("stage1_block1")).__name__ == "BasicBlock"
from keras_resnet import resnet50
print(resnet50(input_shape=(32, 32, 3), num_classes=10).count_params())
assert callable(export.saved_model) and callable(export.onnx) and export.TFLITE_VARIANTS
print(keras_resnet.builder.build_resnet is keras_resnet.build_resnet)
"""
    proc = run_python(tmp_path, "-c", script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["23581642", "True"]


@pytest.mark.parametrize("module", [
    "keras_resnet.blocks", pytest.param("keras_resnet.layers", marks=pytest.mark.slow)])
def test_any_module_of_the_library_imports_first_and_registers_the_layers(module, tmp_path):
    """A submodule imported first loads Keras itself: the registration waits until it has run
    instead of importing it back half-made."""
    script = """
import sys
module = sys.argv[1]
__import__(module)
import keras
for name in ("ResNet", "BasicBlock", "Bottleneck"):
    assert keras.saving.get_registered_object("keras_resnet>" + name) is not None, (module, name)
"""
    proc = run_python(tmp_path, "-c", script, module)
    assert proc.returncode == 0, proc.stderr[-3000:]


SUMMARY = ("-m", "keras_resnet.summary", "--width", "4", "--input-shape", "32,32,3",
           "--stem", "cifar")


@pytest.mark.slow
def test_tensorflow_log_lines_are_off_by_default_and_on_with_info(tmp_path):
    quiet = run_python(tmp_path, *SUMMARY)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "Total params" in quiet.stdout
    assert not TF_LOG_LINE.search(quiet.stderr), quiet.stderr
    assert not any(noise in quiet.stderr for noise in TF_NOISE), quiet.stderr
    shown = run_python(tmp_path, *SUMMARY, env={_cli.ENV_VAR: "info"})
    assert shown.returncode == 0, shown.stderr[-3000:]
    # At level 0 TensorFlow's import always logs (oneDNN, CUDA probing) on the CPU builds here.
    assert TF_LOG_LINE.search(shown.stderr), shown.stderr
    assert "Total params" in shown.stdout


def test_our_errors_still_show_once_tensorflow_is_loaded_quietly(tmp_path):
    proc = run_python(tmp_path, "-m", "keras_resnet.summary", "--input-shape", "8,8,1")
    assert proc.returncode == 2
    assert "input height 8 is too small for the 'imagenet' stem" in proc.stderr
    assert not TF_LOG_LINE.search(proc.stderr), proc.stderr


@pytest.mark.parametrize("level, env, expected", [
    (None, {}, ("quiet", "3")),
    ("info", {}, ("info", "0")),
    ("debug", {"TF_CPP_MIN_LOG_LEVEL": "3"}, ("debug", "0")),  # the option wins
    (None, {"KERAS_RESNET_LOG": "info"}, ("info", "0")),
    (None, {"TF_CPP_MIN_LOG_LEVEL": "2"}, ("quiet", "2")),  # the user's own level is kept
    (None, {"TF_CPP_MIN_LOG_LEVEL": "0"}, ("info", "0")),
])
def test_level_resolution(level, env, expected):
    resolved, settings = _cli.resolve(level, env)
    assert (resolved, settings[_tflog._STATE_VAR].split(":")[1]) == expected
    assert settings.get(_cli.TF_LEVEL_VAR, env.get(_cli.TF_LEVEL_VAR)) == expected[1]


def test_bad_environment_level_is_an_error():
    with pytest.raises(ValueError, match="KERAS_RESNET_LOG='loud'"):
        _cli.resolve(None, {"KERAS_RESNET_LOG": "loud"})


def test_filter_drops_only_tensorflow_lines_below_the_level():
    text = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1795545021.495154   10078 port.cc:153] oneDNN custom operations are on.\n"
        "I0000 00:00:1795545021.552239    9365 cpu_feature_guard.cc:227] This TensorFlow binary\n"
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild.\n"
        "E0000 00:00:1795544967.596556    9365 cuda_platform.cc:52] failed call to cuInit\n"
        "our own message\n"
    )
    assert _cli.filter_log_lines(text, 3) == "our own message\n"
    assert _cli.filter_log_lines(text, 2).splitlines()[0].startswith("E0000")
    assert _cli.filter_log_lines(text, 0) == text


# The order users write: our model first (TensorFlow loads), torchvision after. Without our
# guard this process dies with a segfault and no message.
TORCHVISION_AFTER_TENSORFLOW = """
import numpy as np
from keras_resnet import build_resnet
model = build_resnet("resnet18", (32, 32, 3), 10, stem="cifar", width=8)
import torch, torchvision
net = torchvision.models.resnet18(num_classes=10).eval()
with torch.no_grad():
    theirs = tuple(net(torch.zeros(1, 3, 32, 32)).shape)
print(theirs, tuple(model(np.zeros((1, 32, 32, 3), "float32")).shape))
"""


@pytest.mark.slow
def test_torchvision_imported_after_our_models_works_and_says_what_it_turned_off(tmp_path):
    # torchvision is a test dependency (requirements-dev.txt): its absence is a failure here.
    r = run_python(tmp_path, "-c", TORCHVISION_AFTER_TENSORFLOW)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split("\n")[0] == "(1, 10) (1, 10)"
    if importlib.util.find_spec("triton") is not None:
        assert "triton (torch.compile's GPU kernels) is off in this process" in r.stderr


def test_os_errors_a_user_can_fix_are_one_line_and_ours_are_not():
    import errno

    from keras_resnet import _cli

    full = OSError(errno.ENOSPC, "No space left on device", "/data/out/model.onnx")
    assert _cli.os_error_line(full) == "No space left on device: '/data/out/model.onnx'"
    assert _cli.os_error_line(OSError(errno.EROFS, "Read-only file system"), "out") == \
        "Read-only file system: 'out'"
    assert _cli.os_error_line(OSError(errno.ENAMETOOLONG, "File name too long", "x" * 300))
    assert _cli.os_error_line(FileNotFoundError("weights file 'w.pth' is gone")) == \
        "weights file 'w.pth' is gone"
    assert _cli.os_error_line(OSError(errno.EBADF, "Bad file descriptor")) is None
    assert _cli.os_error_line(OSError("no errno")) is None


def test_after_double_dash_drops_only_the_first():
    from keras_resnet import _cli

    assert _cli.after_double_dash(["--", "--epochs", "1", "--", "x"]) == [
        "--epochs", "1", "--", "x"]
    assert _cli.after_double_dash(["--epochs", "1"]) == ["--epochs", "1"]
    assert _cli.after_double_dash([]) == []
