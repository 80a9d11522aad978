"""What a written file records about itself: its sha256 and the library versions that made it.

One place for training's run directory, export's manifest and the benchmarks, so that their
records use the same keys. Standard library only: nothing here may load TensorFlow.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from importlib import metadata

# Our own pip name ("keras-resnet" on PyPI is an unrelated package with the same import name).
DISTRIBUTION = "keras-tv-resnet"
CORE_LIBRARIES = ("tensorflow", "keras", "numpy")
# pip name -> import name, where they differ; the module's __version__ is asked when pip's
# metadata has no such distribution (tensorflow-cpu installs the module "tensorflow").
_MODULES = {"tensorflow-datasets": "tensorflow_datasets", "scikit-learn": "sklearn",
            "ai-edge-litert": "ai_edge_litert"}


def sha256_file(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def library_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        module = sys.modules.get(_MODULES.get(dist, dist))
        return getattr(module, "__version__", None)


def library_versions(*extra: str) -> dict:
    """{"python", "platform", DISTRIBUTION, tensorflow, keras, numpy, *extra: version or None},
    keyed by pip distribution name."""
    from keras_resnet import __version__

    versions = {"python": platform.python_version(), "platform": platform.platform(),
                DISTRIBUTION: __version__}
    for dist in dict.fromkeys(CORE_LIBRARIES + extra):
        versions[dist] = library_version(dist)
    return versions
