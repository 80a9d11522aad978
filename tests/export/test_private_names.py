"""Keras/TensorFlow names that are not public API are used only through
keras_resnet/_keras_compat.py, where a version change is checked in one place."""

import re

import pytest

from tests.conftest import REPO

PRIVATE = re.compile(r"\._flatten_layers\b|\btensorflow\.python\b|\bkeras\.src\b|"
                     r"\._get_ops_details\b|\._symbolic_build\b")
COMPAT = REPO / "keras_resnet" / "_keras_compat.py"


@pytest.mark.parametrize("package", ["keras_resnet", "training", "export", "benchmarks"])
def test_private_names_only_in_the_compat_module(package):
    found = [f"{path.relative_to(REPO)}:{n}: {line.strip()}"
             for path in sorted((REPO / package).rglob("*.py")) if path != COMPAT
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if PRIVATE.search(line)]
    assert not found, "\n".join(found)
