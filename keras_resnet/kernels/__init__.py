"""CPU speed-ups for keras_resnet's Conv2D and BatchNorm layers, and the one switch that picks them.

The layers (``keras_resnet.layers``) describe what they compute; a kernel here computes the same
thing faster where it applies, and everywhere else the layer runs Keras's own computation:

- ``"matmul_conv"``: convolutions on maps of at most 3x3 pixels (or with a single output pixel)
  as matrix products over the taps that meet a pixel (``kernels.conv``; any backend).
- ``"flipped_input_gradient"``: in training, the input gradient of a stride-1 "same"
  convolution as a forward convolution (``kernels.conv``; TensorFlow on CPU).
- ``"fused_batch_norm"``: TensorFlow's fused batch norm, whose moving variance follows the
  unbiased batch variance as torch's does (``kernels.batch_norm``; TensorFlow).

The switch is ``KERAS_RESNET_KERNELS`` in the environment, read once on first use: ``fast``
(the default: every kernel), ``stock`` (none: Keras's own layers' computation) or a
comma-separated list of kernel names. ``use(...)`` changes it for the process, or inside a
``with use(...):`` block only. A layer reads it when it is called, i.e. when Keras traces a
model's train or predict function: choose before a model's first ``fit``/``predict``.

"stock" gives the same results up to float round-off, except that Keras's batch norm updates
the moving variance with the biased batch variance (as on backends other than TensorFlow).
"""

from __future__ import annotations

import os

KERNELS = ("matmul_conv", "flipped_input_gradient", "fused_batch_norm")
MODES = {"fast": frozenset(KERNELS), "stock": frozenset()}
ENV = "KERAS_RESNET_KERNELS"

_active: frozenset | None = None  # None: the environment is not read yet


def _parse(choice) -> frozenset:
    if isinstance(choice, str) and choice.strip() in MODES:
        return MODES[choice.strip()]
    names = [n.strip() for n in choice.split(",")] if isinstance(choice, str) else list(choice)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in KERNELS]
    if unknown or (isinstance(choice, str) and not names):
        raise ValueError(f"unknown kernel choice {choice!r}; expected one of {sorted(MODES)} or "
                         f"kernel names from {list(KERNELS)}")
    return frozenset(names)


def active() -> frozenset:
    """The names of the kernels in use."""
    global _active
    if _active is None:
        _active = _parse(os.environ.get(ENV, "fast"))
    return _active


def enabled(name: str) -> bool:
    """Whether kernel ``name`` is in use."""
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; expected one of {list(KERNELS)}")
    return name in active()


class use:
    """Chooses the kernels: ``"fast"``, ``"stock"``, or kernel names (a list, or one string
    separated by commas). Takes effect at once; as a context manager, the previous choice
    comes back at the end of the block."""

    def __init__(self, choice):
        global _active
        self._previous = active()
        _active = _parse(choice)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        global _active
        _active = self._previous
