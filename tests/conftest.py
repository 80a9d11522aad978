import gc
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_resnet.archs import ARCHS
from tests.exports import basic_model_file, exported  # noqa: F401  (session fixtures)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
# Under pytest-xdist (scripts/test.sh runs one worker per core) torch and OpenMP compute on
# one thread per worker. TensorFlow keeps its own pool: with TF_NUM_INTRAOP_THREADS=1 and
# ONEDNN_MAX_CPU_ISA=AVX2, TF 2.21's Conv2DBackpropFilter segfaults on an AVX-512 CPU.
if WORKER:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    """torchvision first, where tests run (not in xdist's controller, which only hands out
    tests: it would spend seconds importing it before starting the workers)."""
    if config.getoption("numprocesses", None) and not WORKER:
        return
    # torchvision 0.29.1 segfaults when it is imported *after* TensorFlow 2.21 (the reverse
    # order works); the parity tests import it, so load it first when it is installed.
    # Keras is left to the test modules: importing it imports our layers (they register with
    # it), which coverage, started later in an xdist worker, would not see.
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pass
    else:
        if WORKER:
            import torch

            torch.set_num_threads(1)


_modules_when_frozen = [0]


def _freeze_new_modules() -> None:
    """Modules live as long as the process, and so do most objects they make: frozen, they are
    skipped by every garbage collection, so the gc.collect() in the per-test clear_session
    below walks only what tests made. Tests import most of TensorFlow, Keras, tf2onnx, JAX and
    mediapipe lazily (850,000 objects; a collection walking them took 0.5 s, and one ran
    before each of the 800 tests): whenever modules were added, what is alive after a
    collection is frozen (garbage is collected first; a module-scoped fixture alive then stays
    in memory to the end)."""
    if len(sys.modules) != _modules_when_frozen[0]:
        gc.collect()
        gc.freeze()
        _modules_when_frozen[0] = len(sys.modules)


def pytest_collection_finish(session):
    _freeze_new_modules()


REPO = Path(__file__).resolve().parents[1]
ALL_ARCHS = list(ARCHS)  # the table's order: resnet18 first, the fast ones fail first


def random_images(shape, batch=2, seed=0, high=1.0) -> np.ndarray:
    """(batch, *shape) float32, uniform in [0, high): high=255 for raw pixels."""
    return np.random.default_rng(seed).uniform(0, high, (batch, *shape)).astype("float32")


def logit_tolerance(reference) -> float:
    """The parity bound for logits computed another way (another backend, framework or
    runtime): float32 round-off grows with the logits' magnitude, hence the relative part."""
    return 1e-4 + 1e-5 * float(np.abs(reference).max())


@pytest.fixture(autouse=True)
def _float32_policy_and_fresh_names():
    """Every test starts and ends with the float32 policy and a fresh Keras name scope."""
    import keras

    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()
    _freeze_new_modules()
    yield
    keras.config.set_dtype_policy("float32")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n N --dist loadgroup`` (scripts/test.sh) the tests that share the
    session's export of every format go to one worker, and so do the tests of a file that
    share a module-scoped fixture (a training run, a model file): each is made once. Every
    other test goes to whichever worker is free."""
    for item in items:
        defs = [d for ds in item._fixtureinfo.name2fixturedefs.values() for d in ds]
        if "exported" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("exported"))
        elif any(d.scope == "module" for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
