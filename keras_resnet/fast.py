"""Device-dependent defaults that keep the models on their fast path."""

from __future__ import annotations


def default_jit_compile(gpus=None) -> bool:
    """Whether to XLA-compile training/inference steps by default: on with a GPU, off on CPU.

    On CPU, XLA made these models several times slower (``python -m benchmarks.bench
    --jit on`` against the default; figures in README), because its CPU convolutions do
    not use oneDNN. On GPUs XLA fuses batch norm and ReLU into the cuDNN
    convolutions. This is what Keras's ``jit_compile="auto"`` resolves to for these models; it is
    spelled out so that the benchmarks, ``training.fit`` and the README agree. ``gpus``: the
    visible GPU devices when the caller has listed them already.
    """
    if gpus is None:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
    return bool(gpus)
