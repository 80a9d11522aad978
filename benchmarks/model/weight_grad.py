"""The weight gradient of stride-1 3x3 'same' convolutions: TensorFlow's Conv2DBackpropFilter
beside three exact reformulations, on the four stage shapes of a CIFAR-stem ResNet-18.

    python -m benchmarks.model.weight_grad
    ONEDNN_MAX_CPU_ISA=AVX2 python -m benchmarks.model.weight_grad

The weight gradient is the largest share of a CIFAR-stem training step when oneDNN runs AVX2
kernels (`python -m benchmarks.model.profile --mode train` under that cap), so this checks whether
another formulation of the same sums runs faster:
- taps: nine matrix products, one per kernel tap, of the shifted padded input with the output
  gradient (batch x pixels as the long inner dimension);
- im2col: tf.image.extract_patches, then one matrix product;
- conv: a forward convolution of the padded input with channels and batch swapped, taking the
  output gradient as its (H x W) kernel.
Each runs inside tf.function; the four take turns call by call and the median is printed with
its GMAC/s and its largest difference from TensorFlow's gradient, relative to that gradient's
largest value. Figures only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks.machine import describe
from keras_resnet import _cli

# (label, batch, map size, channels): ResNet-18, CIFAR stem, batch 64
SHAPES = (
    ("stage1 32x32x64", 64, 32, 64),
    ("stage2 16x16x128", 64, 16, 128),
    ("stage3 8x8x256", 64, 8, 256),
    ("stage4 4x4x512", 64, 4, 512),
)
METHODS = ("tensorflow", "taps", "im2col", "conv")


def formulations(x, dy):
    """{method: tf.function () -> (3, 3, C_in, C_out) kernel gradient} for input x, gradient dy."""
    import tensorflow as tf

    n, h, w, cin = x.shape
    cout = dy.shape[-1]

    def tensorflow():
        return tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=[3, 3, cin, cout], out_backprop=dy, strides=[1, 1, 1, 1],
            padding="SAME")

    def taps():
        xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        d = tf.reshape(dy, [-1, cout])
        grads = [tf.matmul(tf.reshape(xp[:, i:i + h, j:j + w, :], [-1, cin]), d, transpose_a=True)
                 for i in range(3) for j in range(3)]
        return tf.reshape(tf.stack(grads), [3, 3, cin, cout])

    def im2col():
        patches = tf.image.extract_patches(x, [1, 3, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")
        return tf.reshape(tf.matmul(tf.reshape(patches, [-1, 9 * cin]),
                                    tf.reshape(dy, [-1, cout]), transpose_a=True),
                          [3, 3, cin, cout])

    def conv():
        xt = tf.transpose(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), [3, 1, 2, 0])
        out = tf.nn.conv2d(xt, tf.transpose(dy, [1, 2, 0, 3]), 1, "VALID")  # (C_in, 3, 3, C_out)
        return tf.transpose(out, [1, 2, 0, 3])

    return {name: tf.function(fn) for name, fn in
            zip(METHODS, (tensorflow, taps, im2col, conv))}


def measure(batch, size, channels, repeats=10) -> dict:
    """{method: (median ms, GMAC/s, max relative difference from TensorFlow's gradient)}."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, size, size, channels)).astype("float32"))
    dy = tf.constant(rng.normal(size=(batch, size, size, channels)).astype("float32"))
    fns = formulations(x, dy)
    ref = fns["tensorflow"]().numpy()
    scale = float(np.abs(ref).max())
    diff = {name: float(np.abs(fn().numpy() - ref).max()) / scale for name, fn in fns.items()}
    for fn in fns.values():
        fn().numpy()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn().numpy()
            times[name].append(time.perf_counter() - t0)
    macs = batch * size * size * channels * channels * 9
    return {name: (statistics.median(t) * 1e3, macs / statistics.median(t) / 1e9, diff[name])
            for name, t in times.items()}


def main(argv=None) -> int:
    p = _cli.ArgumentParser(prog="python -m benchmarks.model.weight_grad", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=_cli.positive_int, default=10,
                   help="timed calls per figure (median)")
    p.add_argument("--batch", type=_cli.positive_int, default=64)
    _cli.add_log_level_argument(p)
    a = p.parse_args(argv)
    _cli.configure(a)
    print(f"machine: {describe()}")
    print(f"{'shape (batch)':<24}" + "".join(f"{m:>22}" for m in METHODS)
          + "   ms (GMAC/s) max rel. diff")
    for label, _, size, channels in SHAPES:
        r = measure(a.batch, size, channels, a.repeats)
        cells = "".join(f"{f'{ms:.1f} ({g:.0f}) {d:.0e}':>22}" for ms, g, d in r.values())
        print(f"{label + f' ({a.batch})':<24}{cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
