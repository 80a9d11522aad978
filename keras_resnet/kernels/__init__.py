"""CPU speed-ups for keras_resnet's Conv2D and BatchNorm layers, and the one switch that picks them.

The layers (``keras_resnet.layers``) describe what they compute; a kernel here computes the same
thing faster where it applies, and everywhere else the layer runs Keras's own computation:

- ``"matmul_conv"``: convolutions on maps of at most 3x3 pixels (or with a single output pixel)
  as matrix products over the taps that meet a pixel (``kernels.conv``; any backend).
- ``"flipped_input_gradient"``: in training, the input gradient of a stride-1 "same"
  convolution as a forward convolution (``kernels.conv``; TensorFlow on CPU).
- ``"grouped_conv"``: convolutions with ``groups > 1`` as a few dense convolutions with
  block-diagonal kernels, with gradients of their own (``kernels.grouped``; TensorFlow on
  CPU).
- ``"fused_batch_norm"``: TensorFlow's fused batch norm, whose moving variance follows the
  unbiased batch variance as torch's does (``kernels.batch_norm``; TensorFlow).

The choice is ``KERAS_RESNET_KERNELS`` in the environment, read once on first use: ``fast``
(the default: every kernel), ``stock`` (none: Keras's own layers' computation) or a
comma-separated list of kernel names. ``with use(...):`` chooses others for the thread that
enters the block, until it leaves it: another thread (building or tracing another model
meanwhile) keeps its own choice, and so do the threads tf.distribute traces replicas in (they
take the environment's). A layer reads the choice when it is called, i.e. when Keras traces a
model's train or predict function: trace inside the block.

"stock" gives the same results up to float round-off, except that Keras's batch norm updates
the moving variance with the biased batch variance (as on backends other than TensorFlow).
"""

from __future__ import annotations

import os
import threading

KERNELS = ("matmul_conv", "flipped_input_gradient", "grouped_conv", "fused_batch_norm")
MODES = {"fast": frozenset(KERNELS), "stock": frozenset()}
ENV = "KERAS_RESNET_KERNELS"

_from_environment: frozenset | None = None  # None: the environment is not read yet
_chosen = threading.local()  # .kernels: this thread's choice inside a `use` block


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
    """The names of the kernels in use on this thread."""
    global _from_environment
    chosen = getattr(_chosen, "kernels", None)
    if chosen is not None:
        return chosen
    if _from_environment is None:
        _from_environment = _parse(os.environ.get(ENV, "fast"))
    return _from_environment


def enabled(name: str) -> bool:
    """Whether kernel ``name`` is in use on this thread."""
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; expected one of {list(KERNELS)}")
    return name in active()


class use:
    """``with use(choice):`` the kernels ``choice`` names (``"fast"``, ``"stock"``, or kernel
    names: a list, or one string separated by commas) are in use on this thread; the previous
    choice comes back at the end of the block. A bad choice fails at the call."""

    def __init__(self, choice):
        self.kernels = _parse(choice)
        self._previous = []

    def __enter__(self) -> frozenset:
        self._previous.append(getattr(_chosen, "kernels", None))
        _chosen.kernels = self.kernels
        return self.kernels

    def __exit__(self, *exc) -> None:
        _chosen.kernels = self._previous.pop()
