"""Batch normalization on TensorFlow's fused kernel (FusedBatchNormV3), torch's statistics.

Keras 3 normalises with separate moments / normalize ops; the fused kernel does the forward and
backward pass in one op each (a faster CPU training step, which ``python -m benchmarks.model.bench``
measures), and in inference TensorFlow's optimizer folds Conv2D + FusedBatchNorm + ReLU into one
oneDNN convolution. The moving variance follows the unbiased batch variance, as in
torch.nn.BatchNorm2d (Keras's own layer uses the biased one); normalisation uses the biased one
in both.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_resnet import _keras_compat, kernels


def _fusable(layer, inputs, mask) -> bool:
    return (
        kernels.enabled("fused_batch_norm")
        and keras.backend.backend() == "tensorflow"
        and mask is None
        and not layer.renorm
        and layer.center
        and layer.scale
        and len(inputs.shape) == 4
        and layer.axis in (-1, 3)
    )


def batch_norm(layer, inputs, training=None, mask=None):
    """``layer`` (a keras.layers.BatchNormalization) applied to ``inputs`` on the fused kernel,
    its moving statistics updated in training; None where the kernel does not apply (masks,
    renorm, non-4D inputs, other backends), and the layer then computes it itself."""
    if not _fusable(layer, inputs, mask):
        return None
    gamma = ops.cast(layer.gamma, "float32")
    beta = ops.cast(layer.beta, "float32")
    if training and layer.trainable and layer.synchronized and _replicas_in_sync() > 1:
        return _synchronized(layer, inputs, gamma, beta)
    if training and layer.trainable:
        y, mean, variance = _keras_compat.fused_batch_norm(
            inputs, gamma, beta, epsilon=layer.epsilon, is_training=True
        )
        m = layer.momentum
        layer.moving_mean.assign(layer.moving_mean * m + mean * (1.0 - m))
        layer.moving_variance.assign(layer.moving_variance * m + variance * (1.0 - m))
    else:
        y, _, _ = _keras_compat.fused_batch_norm(
            inputs,
            gamma,
            beta,
            mean=ops.cast(layer.moving_mean, "float32"),
            variance=ops.cast(layer.moving_variance, "float32"),
            epsilon=layer.epsilon,
            is_training=False,
        )
    return ops.cast(y, layer.compute_dtype)


def _synchronized(layer, inputs, gamma, beta):
    """Training-mode normalisation with the statistics of the global batch.

    Two all-reduces per layer through the strategy's own collective: (sum, count) for the
    mean, then the sum of squared deviations from it. The one-pass E[x^2] - mean^2 would
    save one, but it cancels catastrophically where a channel's mean dwarfs its spread (a
    flat image background), and the replicas would then no longer match one device.
    """
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    x = tf.cast(inputs, tf.float32)
    channels = x.shape[-1]
    local = tf.concat([
        tf.reduce_sum(x, axis=[0, 1, 2]),
        tf.cast(tf.reshape(tf.reduce_prod(tf.shape(x)[:3]), [1]), tf.float32),
    ], axis=0)
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
    count = total[channels]
    mean = total[:channels] / count
    centred = x - mean
    variance = context.all_reduce(
        tf.distribute.ReduceOp.SUM, tf.reduce_sum(tf.square(centred), axis=[0, 1, 2])) / count
    y = centred * (gamma * tf.math.rsqrt(variance + layer.epsilon)) + beta
    m = layer.momentum
    unbiased = variance * (count / tf.maximum(count - 1.0, 1.0))
    layer.moving_mean.assign(layer.moving_mean * m + mean * (1.0 - m))
    layer.moving_variance.assign(layer.moving_variance * m + unbiased * (1.0 - m))
    return ops.cast(y, layer.compute_dtype)


def _replicas_in_sync() -> int:
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1
