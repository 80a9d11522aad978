"""A new keras_resnet model from a torchvision-style state_dict (``from_torch``): the one part
of keras_resnet.convert that builds models, kept apart so that the rest (which
keras_resnet.weights uses while the builder imports it) never imports the builder."""

from __future__ import annotations

import warnings

from keras_resnet.archs import ARCHS
from keras_resnet.convert.architecture import infer_config
from keras_resnet.convert.formats import read_state_dict
from keras_resnet.convert.weights import load_torch_state_dict


def from_torch(
    source,
    arch: str | None = None,
    *,
    input_shape=None,
    num_classes: int | None = None,
    include_top: bool | None = None,
    normalization=None,
    strict: bool = True,
    class_names=None,
    name: str | None = None,
    verbose: bool = False,
):
    """Builds a keras_resnet model holding the weights of a torchvision-style ResNet.

    Args:
        source: path to a ``.pth``/``.pt``/``.bin``/``.ckpt`` (read without torch, by
            ``torch.load(weights_only=True)``'s rule: see ``keras_resnet.convert.pth``) or
            ``.safetensors`` file, or a state_dict (mapping of names to numpy arrays or torch
            tensors). Wrappers (``{"state_dict": ...}``, ``{"model": ...}``, ``"module."``
            prefixes) are unwrapped.
        arch: one of ``ARCHS``; inferred from the block counts when None. When given, the
            state_dict is checked against it.
        input_shape: (height, width) or (height, width, channels); channels come from
            ``conv1``. Default ``(None, None, C)``: any image size. Fix the size to export
            (TFLite/ONNX through ``export``).
        num_classes: default: rows of ``fc.weight``. A different value fails in strict mode
            (use ``strict=False`` to keep a fresh classifier for fine-tuning).
        include_top: default: whether the state_dict has ``fc.*``. ``False`` drops ``fc.*``
            (with a warning if they were present).
        normalization: ``(mean, std)`` in raw pixel units, or None. The torch model has no such
            layer: without it the Keras model expects torch-preprocessed input. For torchvision's
            ImageNet weights pass ``IMAGENET_NORMALIZATION`` to feed raw 0..255 RGB pixels.
        strict: see ``load_torch_state_dict``.
        class_names: optional names of the classes, kept in the model (see ``build_resnet``).
        verbose: print what was inferred and unwrapped.

    The stem is read from ``conv1``: 7x7 -> ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool),
    3x3 -> ``"cifar"`` (assumed stride 1, padding 1 and no max-pool, the usual CIFAR variant).
    """
    # Here, not at the top: the convert CLI answers --help before Keras loads.
    from keras_resnet.builder import build_resnet

    sd, notes = read_state_dict(source)
    found = infer_config(sd)
    arch = _arch_of(found, arch, notes)
    include_top, sd = _top_of(found, include_top, sd)
    if num_classes is None:
        num_classes = found["num_classes"] or 1000
    model = build_resnet(
        arch, input_shape=_full_input_shape(input_shape, found["in_channels"]),
        num_classes=num_classes, include_top=include_top, stem=found["stem"],
        width=found["width"], normalization=normalization, class_names=class_names, name=name,
    )
    report = load_torch_state_dict(model, sd, strict=strict)
    if verbose:
        _print_what_was_built(model, found, notes, report)
    return model


def _print_what_was_built(model, found: dict, notes: list, report: dict) -> None:
    config = model.builder_config
    for note in notes:
        print(f"  {note}")
    print(
        f"  {config['arch']}, stem {found['stem']!r}, width {found['width']}, input "
        f"{model.input_shape[1:]}, "
        + (f"{config['num_classes']} classes" if config["include_top"] else "no classifier")
        + f"; loaded {len(report['loaded'])} tensors"
        + ("" if config["normalization"] else
           "; expects torch-normalized input (no normalization layer)")
    )


def _arch_of(found: dict, arch, notes: list) -> str:
    """The given arch, or the one the block counts name (noted in ``notes``)."""
    if arch is not None:
        return arch
    if found["arch"] is None:
        raise ValueError(
            f"the state_dict's {found['block']} blocks per stage {list(found['depths'])}, "
            f"{found['groups']} group(s), bottleneck 3x3 width {found['inner_width']} at width "
            f"{found['width']} match no known arch ({ {a: _spec(a) for a in ARCHS} }); "
            "pass arch= to see which tensors differ"
        )
    notes.append(f"inferred arch {found['arch']!r} from the block counts {list(found['depths'])}"
                 + ("" if found["groups"] == 1 else f" and {found['groups']} groups"))
    return found["arch"]


def _spec(arch: str) -> str:
    spec = ARCHS[arch]
    grouping = ("" if (spec.groups, spec.width_per_group) == (1, 64) else
                f" {spec.groups}x{spec.width_per_group}")
    return f"{spec.block} {list(spec.depths)}{grouping}"


def _top_of(found: dict, include_top, sd):
    """(include_top, state_dict): the state_dict's own choice by default; without the top,
    its ``fc.*`` tensors are dropped with a warning."""
    if include_top is None:
        return found["include_top"], sd
    if not include_top:
        dropped = [k for k in sd if k.startswith("fc.")]
        if dropped:
            warnings.warn(f"include_top=False: not loading {dropped}", stacklevel=3)
            sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    return include_top, sd


def _full_input_shape(input_shape, channels: int) -> tuple:
    """(height, width, channels) from what the caller gave and the channels conv1 takes."""
    if input_shape is None:
        return (None, None, channels)
    if len(input_shape) == 2:
        return (*input_shape, channels)
    if len(input_shape) != 3 or input_shape[-1] != channels:
        raise ValueError(
            f"input_shape {tuple(input_shape)} must be (height, width) or (height, width, "
            f"{channels}): conv1 takes {channels} channel(s)"
        )
    return tuple(input_shape)
