"""Named weight sets: torchvision's ImageNet ResNet weights (and your own) by name.

::

    import keras_resnet
    model = keras_resnet.resnet50(weights="IMAGENET1K_V2")    # downloaded once, then cached
    preprocess = keras_resnet.weights.transform("IMAGENET1K_V2", arch="resnet50")
    logits = model.predict(preprocess(image)[None])           # image: uint8 HxWx3, any size
    model.class_names[logits[0].argmax()]                     # ImageNet's category names

torchvision's sets (``IMAGENET1K_V1`` for every arch, ``IMAGENET1K_V2`` for resnet50/101/152,
``DEFAULT`` = the best of each) carry their URL, published hash, parameter count, ImageNet
accuracy, GFLOPS, recipe, evaluation transform and the 1000 ImageNet categories (``get``).
The checkpoint is downloaded to ``$KERAS_HOME/models`` (default ``~/.keras/models``) under its
own name, kept only if its sha256 starts with the published hash, and its converted copy is
cached beside it (``fetch``, ``state_dict``). ``KERAS_RESNET_WEIGHTS_URL`` replaces the base URL
of torchvision's files (a mirror, or a folder holding them). ``register`` adds your own sets.

Importing this package loads neither TensorFlow nor torch; ``load_into`` and ``transform`` load
TensorFlow. A .pth is read once, by ``keras_resnet.convert`` (torch's ``weights_only`` rule); its
converted copy is read without torch.
"""

from __future__ import annotations

from keras_resnet.weights.download import (
    URL_VAR,
    cache_dir,
    cache_path,
    converted_path,
    download_url,
    fetch,
    sha256_of,
    state_dict,
)
from keras_resnet.weights.loading import load_into
from keras_resnet.weights.registry import (
    DEFAULT,
    WeightSet,
    WeightsError,
    WeightsHashMismatch,
    WeightsUnavailable,
    all_weights,
    categories,
    get,
    imagenet_categories,
    looks_like_name,
    names,
    keras_home,
    register,
    saved_path,
    unregister,
)

__all__ = [
    "DEFAULT", "URL_VAR", "WeightSet", "WeightsError", "WeightsHashMismatch", "WeightsUnavailable",
    "all_weights", "cache_dir", "cache_path", "categories", "converted_path", "download_url",
    "fetch", "get", "imagenet_categories", "keras_home", "load_into", "looks_like_name", "names",
    "register", "saved_path", "sha256_of", "state_dict", "transform", "unregister",
]


def transform(name, arch: str | None = None):
    """torchvision's evaluation transform of weight set ``name`` in TensorFlow (see
    ``keras_resnet.weights.transform``); ``name`` may also be a ``transform_config()`` dict."""
    from keras_resnet.weights.transforms import transform as make

    return make(name, arch)
