"""keras_resnet: torchvision's ResNet family (ResNet-18 ... 152 v1.5, ResNeXt, Wide ResNet) as
Keras 3 models.

The public names are resolved on first use (PEP 562), so ``import keras_resnet`` and the
architecture table (``keras_resnet.ARCHS``, ``STEMS``) do not load Keras/TensorFlow: the CLIs
answer ``--help`` and usage errors in a fraction of a second. The custom layers are registered
for ``keras.models.load_model`` as soon as Keras is imported, whichever comes first.
"""

from __future__ import annotations

import functools
import importlib
import sys

from keras_resnet import _imports

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "ARCHS": "keras_resnet.archs",
    "STEMS": "keras_resnet.archs",
    "stem_for_kernel": "keras_resnet.archs",
    "BN_EPSILON": "keras_resnet.layers",
    "BN_MOMENTUM": "keras_resnet.layers",
    "BasicBlock": "keras_resnet.blocks",
    "Bottleneck": "keras_resnet.blocks",
    "ResNet": "keras_resnet.builder",
    "build_resnet": "keras_resnet.builder",
    "model_config": "keras_resnet.builder",
    "min_input_size": "keras_resnet.builder",
    "output_stride": "keras_resnet.builder",
    "resnet18": "keras_resnet.builder",
    "resnet34": "keras_resnet.builder",
    "resnet50": "keras_resnet.builder",
    "resnet101": "keras_resnet.builder",
    "resnet152": "keras_resnet.builder",
    "resnext50_32x4d": "keras_resnet.builder",
    "resnext101_32x8d": "keras_resnet.builder",
    "resnext101_64x4d": "keras_resnet.builder",
    "wide_resnet50_2": "keras_resnet.builder",
    "wide_resnet101_2": "keras_resnet.builder",
    "feature_extractor": "keras_resnet.features",
    "freeze": "keras_resnet.features",
    "model_from_keras_weights": "keras_resnet.transfer",
    "with_dtype": "keras_resnet.transfer",
}

# public subpackages, imported on first use: keras_resnet.weights (named weight sets)
_SUBMODULES = ("weights",)

__all__ = [
    "ARCHS", "STEMS", "BN_EPSILON", "BN_MOMENTUM", "BasicBlock", "Bottleneck", "ResNet",
    "build_resnet", "feature_extractor", "freeze", "min_input_size", "model_config",
    "model_from_keras_weights", "output_stride", "stem_for_kernel", "resnet18", "resnet34",
    "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
    "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2", "weights", "with_dtype",
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# The modules that define registered classes and import Keras themselves.
_LAYER_MODULES = ("keras_resnet.layers", "keras_resnet.blocks", "keras_resnet.builder")


def _register_layers(finished: str = "") -> None:
    # Importing builder (and through it blocks and layers) runs their
    # @register_keras_serializable decorators. When Keras (or layers) is first loaded by one of
    # these modules, that module is still half-run and importing the builder now would import
    # it back half-made: the hook after that module's own import registers instead.
    # (`__spec__._initializing` is how importlib marks a module whose code is running.)
    if any(getattr(getattr(sys.modules.get(name), "__spec__", None), "_initializing", False)
           for name in _LAYER_MODULES if name != finished):
        return
    importlib.import_module("keras_resnet.builder")


# A .keras file names our classes "keras_resnet>ResNet", "keras_resnet>BasicBlock" etc.; Keras
# finds them only when registered, so register them the moment Keras is loaded (now, if it
# already is). A process that never imports keras_resnet cannot load our .keras files: Keras
# then says "Could not locate class 'ResNet'".
_imports.after_import("keras", _register_layers)
for _name in _LAYER_MODULES[:2]:
    _imports.after_import(_name, functools.partial(_register_layers, _name))
# `from keras_resnet import resnet50` loads TensorFlow; a later `import torchvision` would crash
# the process without a word (STACK_NOTES).
_imports.keep_torchvision_importable()
