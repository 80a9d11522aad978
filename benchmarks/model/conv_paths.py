"""Time keras_resnet's Conv2D formulations against keras.layers.Conv2D, layer by layer.

    python -m benchmarks.model.conv_paths

For each convolution shape that keras_resnet.layers.Conv2D computes differently (tiny maps as
matrix products; the last row is a plain convolution for reference) it prints the median time of
a forward pass and of a forward + backward pass (input and kernel gradients) for ours and for
a plain keras.layers.Conv2D with the same kernel (strided convolutions padded by ZeroPadding2D
first, as torch's padding), both inside tf.function, taking turns call by call, and the
largest difference of outputs. Figures only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from keras_resnet import _cli

# (label, batch, input size, in channels, out channels, kernel, stride, torch padding)
SHAPES = (
    ("R18 28x28 stage3 3x3 on 2x2", 128, 2, 256, 256, 3, 1, 1),
    ("R18 28x28 stage4 3x3 on 1x1", 128, 1, 512, 512, 3, 1, 1),
    ("R18 28x28 stage4 3x3/2 2x2->1x1", 128, 2, 256, 512, 3, 2, 1),
    ("R18 28x28 stage4 1x1/2 shortcut", 128, 2, 256, 512, 1, 2, 0),
    ("R18 28x28 stage3 3x3/2 4x4->2x2", 128, 4, 128, 256, 3, 2, 1),  # 16 px: plain conv
)


def _median_ms(fns: dict, x, repeats: int) -> dict:
    """Median ms per function; the functions take turns, so a slow moment hits all of them."""
    for fn in fns.values():
        for _ in range(3):
            fn(x)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            [t.numpy() for t in fn(x)]
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def measure(batch, size, cin, cout, kernel, stride, pad, repeats=20) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_resnet.layers import Conv2D

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, size, size, cin)).astype("float32"))
    padding = ((pad, pad), (pad, pad))
    padded = (batch, size + 2 * pad, size + 2 * pad, cin)
    conv_padding = "valid" if stride > 1 else "same"
    explicit = padding if stride > 1 and pad else None
    ours = Conv2D(cout, kernel, strides=stride, padding=conv_padding, use_bias=False,
                  explicit_padding=explicit)
    ref = keras.layers.Conv2D(cout, kernel, strides=stride, padding=conv_padding, use_bias=False)
    ours.build(padded if stride > 1 else x.shape)
    ref.build(padded if stride > 1 else x.shape)
    ref.kernel.assign(ours.kernel)
    zero_pad = keras.layers.ZeroPadding2D(padding)

    def ours_fwd(x):
        return ours(x)

    def ref_fwd(x):
        return ref(zero_pad(x) if stride > 1 and pad else x)

    fns = {}
    for name, fwd, layer in (("ours", ours_fwd, ours), ("keras", ref_fwd, ref)):
        fns[name, "forward"] = tf.function(lambda x, fwd=fwd: [fwd(x)])

        @tf.function
        def train(x, fwd=fwd, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = fwd(x)
                loss = tf.reduce_sum(y * y)
            return tape.gradient(loss, [x, layer.kernel])

        fns[name, "train"] = train
    ms = _median_ms(fns, x, repeats)
    out = {name: (ms[name, "forward"], ms[name, "train"]) for name in ("ours", "keras")}
    out["max_abs_diff"] = float(np.abs(ours_fwd(x).numpy() - ref_fwd(x).numpy()).max())
    return out


def main(argv=None) -> int:
    p = _cli.ArgumentParser(prog="python -m benchmarks.model.conv_paths", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20, help="timed calls per figure (median)")
    p.add_argument("--only", help="measure only the shapes whose label contains this text")
    _cli.add_log_level_argument(p)
    a = p.parse_args(argv)
    _cli.configure(a)
    if a.repeats < 1:
        p.error(f"--repeats must be positive, got {a.repeats}")
    shapes = [s for s in SHAPES if not a.only or a.only in s[0]]
    if not shapes:
        p.error(f"--only {a.only!r} matches none of: {[s[0] for s in SHAPES]}")
    print(f"{'shape (batch)':<38}{'fwd ours':>10}{'fwd keras':>11}{'f+b ours':>10}"
          f"{'f+b keras':>11}{'max|diff|':>11}   (ms, median)")
    for label, *args in shapes:
        r = measure(*args, repeats=a.repeats)
        print(f"{label + f' ({args[0]})':<38}{r['ours'][0]:>10.2f}{r['keras'][0]:>11.2f}"
              f"{r['ours'][1]:>10.2f}{r['keras'][1]:>11.2f}{r['max_abs_diff']:>11.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
