"""Code run around the first import of a module (standard library only, no heavy imports).

Two users: ``keras_resnet/__init__`` registers the custom layers as soon as Keras is loaded
(so ``import keras_resnet`` stays light yet ``keras.models.load_model`` finds our layers), and
``keras_resnet._cli`` filters TensorFlow's start-up log lines while TensorFlow loads, wherever
in the code (or in which library) that import happens.
"""

from __future__ import annotations

import functools
import sys
import threading

_lock = threading.Lock()
_hooks: dict[str, list] = {}  # module name -> [hook(load) that must call load() once]


class _Finder:
    """A meta-path finder that only wraps the loader of modules with pending hooks."""

    def find_spec(self, fullname, path=None, target=None):
        with _lock:
            hooks = _hooks.pop(fullname, None)
        if not hooks:
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec  # not found, or not a loader we can wrap: import as usual
        real = loader.exec_module

        def exec_module(module):
            load = functools.partial(real, module)
            for hook in hooks:
                load = functools.partial(hook, load)
            try:
                load()
            finally:
                loader.__dict__.pop("exec_module", None)  # back to the class's method

        loader.exec_module = exec_module
        return spec


_finder = _Finder()


def around_import(name: str, hook) -> bool:
    """Runs ``hook(load)`` in place of loading top-level module ``name`` the first time it is
    imported; ``hook`` must call ``load()`` (which raises what the import raises).

    Returns False, and installs nothing, when ``name`` is already imported.
    """
    if name in sys.modules:
        return False
    with _lock:
        _hooks.setdefault(name, []).append(hook)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
    return True


def after_import(name: str, callback) -> None:
    """Calls ``callback()`` once module ``name`` is imported: now if it already is."""
    def hook(load):
        load()
        callback()

    if not around_import(name, hook):
        callback()


# torch.compile's GPU compiler. Its native library loaded after TensorFlow's crashes Python
# (segfault, no message: TF 2.21 with triton 3.8), and torchvision imports it through
# torch._dynamo; torch alone does not. torch treats a module it cannot import as not installed
# and runs without it, so a process that has TensorFlow gets an ImportError instead of a crash.
_TRITON = "triton"
_triton_blocked = False


def _block_triton() -> None:
    global _triton_blocked
    import importlib.util

    if _TRITON not in sys.modules and importlib.util.find_spec(_TRITON) is not None:
        sys.modules[_TRITON] = None  # every later `import triton` raises ImportError
        _triton_blocked = True


def _say_triton_is_blocked() -> None:
    if _triton_blocked and sys.modules.get(_TRITON, "") is None:
        import warnings

        warnings.warn("keras_resnet: torchvision was imported after TensorFlow, so triton "
                      "(torch.compile's GPU kernels) is off in this process: loading it after "
                      "TensorFlow crashes Python. Import torch and torchvision before keras, "
                      "tensorflow or keras_resnet's models to keep it.", RuntimeWarning,
                      stacklevel=2)


def keep_torchvision_importable() -> None:
    """After TensorFlow loads, `import torchvision` works (without triton, with a warning)
    instead of crashing the process."""
    after_import("tensorflow", _block_triton)
    after_import("torchvision", _say_triton_is_blocked)
