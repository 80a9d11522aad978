"""PyTorch interop: torchvision-style ResNet state_dicts <-> keras_resnet models.

Import (PyTorch -> Keras)::

    model = from_torch("resnet50.pth")                 # arch, stem, classes... inferred
    model = from_torch("resnet50.safetensors", arch="resnet50", input_shape=(224, 224, 3),
                       normalization=IMAGENET_NORMALIZATION)   # takes raw 0..255 pixels

Export (Keras -> PyTorch)::

    save_torch_state_dict(model, "resnet50.pth")       # or .safetensors
    torchvision.models.resnet50().load_state_dict(torch.load("resnet50.pth"), strict=True)

CLI::

    python -m keras_resnet.convert --from-torch resnet50.pth --arch resnet50 --out resnet50.keras
    python -m keras_resnet.convert --to-torch resnet50.keras --out resnet50.pth resnet50.safetensors

Name mapping (torch -> Keras): ``conv1`` -> ``stem_conv``, ``bn1`` -> ``stem_bn``,
``layer{s}.{i}.conv{j}`` / ``.bn{j}`` -> ``stage{s}_block{i+1}_conv{j}`` / ``_bn{j}``,
``layer{s}.{i}.downsample.0`` / ``.1`` -> ``stage{s}_block{i+1}_shortcut`` / ``_shortcut_bn``,
``fc`` -> ``predictions``. Convolutions are OIHW in torch and HWIO in Keras; the classifier is
(out, in) in torch and (in, out) in Keras; batch norm weight, bias, running_mean, running_var are
gamma, beta, moving_mean, moving_variance (``num_batches_tracked`` is ignored on import and
written as 0 on export).

torch is optional: it is imported only to write ``.pth``/``.pt`` files and to read torch's old
(pre-1.6, non-zip) format. ``.safetensors`` files are read and written with ``safetensors.numpy``.
``.pth`` files of torch's zip format (every torch since 1.6) are read without torch, by ``keras_resnet.convert.pth``: torch's
``weights_only`` rule, and every size and offset checked against the file before anything is
allocated.

A torchvision model has no input normalization: a converted model expects the input that the torch
model expected (for torchvision's ImageNet weights: RGB in 0..1, normalized with the ImageNet mean
and std) unless ``normalization`` is given, which puts a ``normalization`` layer in front so the
Keras model takes raw 0..255 pixels. That layer is never exported to torch.

Modules, by role: ``formats`` (reading and writing state_dict files), ``architecture`` (what a
state_dict says about the network), ``names`` (the torch key <-> Keras variable map),
``weights`` (the conversions), ``build`` (``from_torch``: a new model) and ``cli`` (``python -m keras_resnet.convert``).
"""

from keras_resnet.convert.architecture import STEM_BY_KERNEL, infer_config
from keras_resnet.convert.build import from_torch
from keras_resnet.convert.cli import EXIT_CODES, CheckFailed, main
from keras_resnet.convert.formats import (
    KEY_PREFIXES,
    SAFETENSORS_SUFFIX,
    TORCH_SUFFIXES,
    WRAPPER_KEYS,
    read_state_dict,
    unwrap_state_dict,
)
from keras_resnet.convert.names import BN_PARAMS, torch_key_map
from keras_resnet.convert.weights import (
    IMAGENET_NORMALIZATION,
    load_torch_state_dict,
    save_torch_state_dict,
    to_torch_state_dict,
    torch_compat_notes,
)

__all__ = [
    "BN_PARAMS", "EXIT_CODES", "IMAGENET_NORMALIZATION", "KEY_PREFIXES", "SAFETENSORS_SUFFIX",
    "STEM_BY_KERNEL", "TORCH_SUFFIXES", "WRAPPER_KEYS", "CheckFailed", "from_torch",
    "infer_config", "load_torch_state_dict", "main", "read_state_dict", "save_torch_state_dict",
    "to_torch_state_dict", "torch_compat_notes", "torch_key_map", "unwrap_state_dict",
]
