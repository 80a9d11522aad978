"""The distribution a user installs with `pip install .`: its name, packages and commands."""

import importlib
import shutil
import subprocess
import sys
import tomllib
import zipfile

from tests.conftest import REPO



def test_wheel_holds_the_packages_and_the_console_scripts(tmp_path):
    # A copy, because setuptools builds in the source tree (build/, *.egg-info).
    src = tmp_path / "src"
    for name in ("keras_resnet", "training", "export", "benchmarks", "tests"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    # --no-build-isolation: setuptools is already installed, and the test stays offline.
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", str(src), "-w", str(tmp_path / "dist")], capture_output=True,
                       text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # "keras-resnet" on PyPI is somebody else's package with the same import name.
    assert project["name"] != "keras-resnet"
    assert wheel.name.startswith(project["name"].replace("-", "_") + "-")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {
        "keras_resnet", "training", "export"}
    assert "keras_resnet/convert/cli.py" in names  # subpackages too
    # Data files: the ImageNet category names of the named weight sets.
    assert "keras_resnet/weights/imagenet_categories.txt" in names
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for script, target in project["scripts"].items():
        assert f"{script} = {target}" in entry_points
        module, func = target.split(":")
        assert f"{module.replace('.', '/')}.py" in names
        assert callable(getattr(importlib.import_module(module), func)), target
