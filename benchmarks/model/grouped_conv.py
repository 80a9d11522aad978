"""Time keras_resnet's grouped convolution beside torch's nn.Conv2d(groups=), layer by layer.

    python -m benchmarks.model.grouped_conv

For each 3x3 grouped convolution shape of ResNeXt-50 32x4d (ImageNet stem at 224x224, batch 16;
CIFAR stem at 32x32, batch 64) it prints the median time of a forward pass (inference) and of a
forward + backward pass (input and kernel gradients) of keras_resnet.layers.Conv2D(groups=)
inside tf.function, and of torch's nn.Conv2d(groups=) in channels_last (oneDNN), in the same
process, taking turns call by call, and the largest difference of their outputs. Then, per
model, the sum over its grouped layers (time x how many the model has), from the medians and
from the fastest calls. ``--per`` adds the kernel with other chunk sizes (groups per dense
convolution), ``--stock`` Keras's own grouped convolution (an XLA function on
CPU: slow, above all its gradients). A new order each round, a pause before each call; the
machine line, versions and load average come first. Figures only.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from benchmarks.machine import describe
from keras_resnet import _cli

GROUPS = 32
# (model, label, batch, input size, channels, stride, layers of this shape in the model)
SHAPES = (
    ("imagenet", "stage1 56x56 128", 16, 56, 128, 1, 3),
    ("imagenet", "stage2 56->28 256 /2", 16, 56, 256, 2, 1),
    ("imagenet", "stage2 28x28 256", 16, 28, 256, 1, 3),
    ("imagenet", "stage3 28->14 512 /2", 16, 28, 512, 2, 1),
    ("imagenet", "stage3 14x14 512", 16, 14, 512, 1, 5),
    ("imagenet", "stage4 14->7 1024 /2", 16, 14, 1024, 2, 1),
    ("imagenet", "stage4 7x7 1024", 16, 7, 1024, 1, 2),
    ("cifar", "stage1 32x32 128", 64, 32, 128, 1, 3),
    ("cifar", "stage2 32->16 256 /2", 64, 32, 256, 2, 1),
    ("cifar", "stage2 16x16 256", 64, 16, 256, 1, 3),
    ("cifar", "stage3 16->8 512 /2", 64, 16, 512, 2, 1),
    ("cifar", "stage3 8x8 512", 64, 8, 512, 1, 5),
    ("cifar", "stage4 8->4 1024 /2", 64, 8, 1024, 2, 1),
    ("cifar", "stage4 4x4 1024", 64, 4, 1024, 1, 2),
)


def _median_ms(fns: dict, repeats: int) -> dict:
    """(median, fastest) ms per function; the functions take turns, so a slow moment hits all
    of them."""
    for fn in fns.values():
        fn()
        fn()
    times = {name: [] for name in fns}
    order = list(fns)
    for _ in range(repeats):
        # A new order each round, and a pause before each call: whichever ran just before a
        # call (the other framework's threads still spinning) is not always the same one.
        random.Random(len(times[order[0]])).shuffle(order)
        for name in order:
            fn = fns[name]
            time.sleep(0.02)
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(t) * 1e3, min(t) * 1e3) for name, t in times.items()}


def _keras_paths(x, channels, stride, pers, stock):
    """{name: (forward, layer output fn, kernel variable)}: ours, ours with ``per`` groups per
    chunk, Keras's own; all sharing one kernel variable."""
    from keras_resnet import kernels
    from keras_resnet.kernels import grouped
    from keras_resnet.layers import Conv2D

    explicit = 1 if stride > 1 else None
    layer = Conv2D(channels, 3, strides=stride, padding="valid" if explicit else "same",
                   explicit_padding=explicit, groups=GROUPS, use_bias=False)
    layer.build(x.shape)
    paths = {"ours": lambda x: layer(x)}
    for per in pers:
        paths[f"ours per={per}"] = lambda x, per=per: grouped.grouped_conv(
            x, layer.kernel, GROUPS, (stride, stride), layer.padding, layer.explicit_padding,
            per=per)
    if stock:
        def stock_fwd(x):
            with kernels.use("stock"):  # read when tf.function traces, i.e. on the first call
                return layer(x)

        paths["keras stock"] = stock_fwd
    return paths, layer.kernel


def _torch_fns(torch, x, kernel, stride):
    """(forward, forward + backward, output) of nn.Conv2d(groups=) in channels_last."""
    channels = kernel.shape[-1]
    conv = torch.nn.Conv2d(x.shape[-1], channels, 3, stride, 1, groups=GROUPS, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(kernel.numpy().transpose(3, 2, 0, 1)))
    conv = conv.to(memory_format=torch.channels_last)
    tx = torch.from_numpy(x.numpy().transpose(0, 3, 1, 2)).contiguous(
        memory_format=torch.channels_last)

    def forward():
        with torch.inference_mode():
            return conv(tx)

    def train():
        xg = tx.detach().requires_grad_()
        y = conv(xg)
        (y * y).sum().backward()
        conv.weight.grad = None
        return xg.grad

    return forward, train, forward().numpy().transpose(0, 2, 3, 1)


def measure(torch, batch, size, channels, stride, pers=(), stock=False, repeats=10) -> dict:
    """{path: (forward ms, forward + backward ms, the same fastest)} and max_abs_diff (ours
    vs torch)."""
    import numpy as np
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # a new tf.function per shape and path is meant
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, size, size, channels)).astype("float32"))
    paths, kernel = _keras_paths(x, channels, stride, pers, stock)
    fns = {}
    for name, fwd in paths.items():
        forward = tf.function(fwd)
        fns[name, "forward"] = lambda forward=forward: forward(x).numpy()

        @tf.function
        def train(x, fwd=fwd):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = fwd(x)
                loss = tf.reduce_sum(y * y)
            return tape.gradient(loss, [x, kernel])

        fns[name, "train"] = lambda train=train: [t.numpy() for t in train(x)]
    t_forward, t_train, t_out = _torch_fns(torch, x, kernel, stride)
    fns["torch", "forward"], fns["torch", "train"] = t_forward, t_train
    ms = _median_ms(fns, repeats)
    # (forward, forward + backward) median, then the same fastest
    out = {name: (ms[name, "forward"][0], ms[name, "train"][0], ms[name, "forward"][1],
                  ms[name, "train"][1]) for name in [*paths, "torch"]}
    out["max_abs_diff"] = float(np.abs(fns["ours", "forward"]() - t_out).max())
    return out


def _header(torch) -> list[str]:
    import keras
    import tensorflow as tf

    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return [f"machine: {describe()}; load average (1, 5, 15 min) at start: {load}",
            f"tensorflow {tf.__version__}, keras {keras.__version__}, torch {torch.__version__} "
            f"(threads={torch.get_num_threads()}, oneDNN={torch.backends.mkldnn.is_available()})"
            f"; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"]


def _table(rows, names) -> list[str]:
    """Markdown rows: per shape, each path's forward and forward + backward ms, and torch's
    time over ours (above 1: ours is faster)."""
    head = ["model", "layer (batch)", "count"]
    for name in names:
        head += [f"fwd {name}", f"f+b {name}"]
    head += ["torch/ours fwd", "torch/ours f+b", "max abs diff"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (model, label, batch, *_, count), r in rows:
        cells = [model, f"{label} ({batch})", str(count)]
        for name in names:
            cells += [f"{r[name][0]:.1f}", f"{r[name][1]:.1f}"]
        cells += [f"{r['torch'][0] / r['ours'][0]:.2f}", f"{r['torch'][1] / r['ours'][1]:.2f}",
                  f"{r['max_abs_diff']:.1e}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _sums(rows) -> list[str]:
    """Per model: time x count summed over its grouped layers, ours and torch's, from the
    medians and from the fastest calls (less moved by other work on a shared machine)."""
    lines = ["| model | grouped layers | of | fwd ours | fwd torch | torch/ours fwd | f+b ours "
             "| f+b torch | torch/ours f+b |", "|---|---|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(shape[0] for shape, _ in rows):
        mine = [(shape[-1], r) for shape, r in rows if shape[0] == model]
        for of, first in (("medians", 0), ("fastest", 2)):
            total = {name: [sum(n * r[name][i] for n, r in mine) for i in (first, first + 1)]
                     for name in ("ours", "torch")}
            (fo, bo), (ft, bt) = total["ours"], total["torch"]
            lines.append(f"| {model} | {sum(n for n, _ in mine)} | {of} | {fo:.0f} | {ft:.0f} | "
                         f"{ft / fo:.2f} | {bo:.0f} | {bt:.0f} | {bt / bo:.2f} |")
    return lines


def main(argv=None) -> int:
    p = _cli.ArgumentParser(prog="python -m benchmarks.model.grouped_conv", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=10, help="timed calls per figure (median)")
    p.add_argument("--only", help="measure only the shapes whose model or label contains this")
    p.add_argument("--per", default="", help="also time these groups-per-chunk, e.g. 1,2,4")
    p.add_argument("--stock", action="store_true", help="also time Keras's grouped conv")
    p.add_argument("--out", help="also write the figures (markdown) to this file")
    _cli.add_log_level_argument(p)
    a = p.parse_args(argv)
    _cli.configure(a)
    if a.repeats < 1:
        p.error(f"--repeats must be positive, got {a.repeats}")
    try:
        pers = [int(v) for v in a.per.split(",") if v.strip()]
    except ValueError:
        pers = [0]
    if any(v < 1 or GROUPS % v for v in pers):
        p.error(f"--per takes divisors of {GROUPS} separated by commas, got {a.per!r}")
    shapes = [s for s in SHAPES if not a.only or a.only in s[0] or a.only in s[1]]
    if not shapes:
        p.error(f"--only {a.only!r} matches none of: {sorted({s[0] for s in SHAPES})} or "
                f"{[s[1] for s in SHAPES]}")
    import torch  # before TensorFlow: see STACK_NOTES (import order)

    lines = _header(torch)
    print(*lines, sep="\n", flush=True)
    names = ["ours", *(f"ours per={v}" for v in pers), *(["keras stock"] if a.stock else []),
             "torch"]
    rows = []
    for shape in shapes:
        r = measure(torch, *shape[2:6], pers=pers, stock=a.stock, repeats=a.repeats)
        rows.append((shape, r))
        print(_table([rows[-1]], names)[-1], flush=True)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    lines += ["", "Milliseconds, median of the timed calls.", ""] + _table(rows, names)
    lines += ["", "Sum over the model's grouped layers (ms x count):", ""] + _sums(rows)
    lines += ["", f"load average at the end: {load}"]
    print(*lines[2:], sep="\n")
    if a.out:
        with open(a.out + ".tmp", "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(a.out + ".tmp", a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
