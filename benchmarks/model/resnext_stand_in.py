"""ResNeXt-50 32x4d images/s, a stand-in built here beside torchvision's, until the library has it.

    python -m benchmarks.model.resnext_stand_in --stem cifar --batch 64

The Keras model is torchvision's resnext50_32x4d layer for layer (bottlenecks of width
2 x planes, the 3x3 convolution grouped 32 ways and strided, 1x1 projection shortcuts),
built from keras_resnet.layers (its Conv2D, so the grouped kernel, and its BatchNorm); the
torch model is torchvision's, channels_last, with the same stem. One training step (SGD,
cross-entropy) or one inference batch of each in turn, in the same process; median images/s.
Random inputs. Figures only: the library's own builder replaces this stand-in.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks.machine import describe
from keras_resnet import _cli

GROUPS, STAGES = 32, ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))


def _conv(filters, kernel, stride, groups=1):
    from keras_resnet.layers import Conv2D, conv_initializer

    explicit = kernel // 2 if stride > 1 and kernel > 1 else None
    return Conv2D(filters, kernel, strides=stride, groups=groups, use_bias=False,
                  padding="same" if explicit is None else "valid", explicit_padding=explicit,
                  kernel_initializer=conv_initializer())


def _bottleneck(x, planes, stride):
    import keras

    from keras_resnet.layers import make_bn

    width, out = planes * 2, planes * 4
    shortcut = x
    if stride != 1 or x.shape[-1] != out:
        shortcut = make_bn(None)(_conv(out, 1, stride)(x))
    y = keras.layers.ReLU()(make_bn(None)(_conv(width, 1, 1)(x)))
    y = keras.layers.ReLU()(make_bn(None)(_conv(width, 3, stride, GROUPS)(y)))
    y = make_bn(None)(_conv(out, 1, 1)(y))
    return keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))


def keras_resnext50(size, stem, num_classes):
    import keras

    from keras_resnet.layers import make_bn

    inputs = keras.Input((size, size, 3))
    if stem == "cifar":
        x = keras.layers.ReLU()(make_bn(None)(_conv(64, 3, 1)(inputs)))
    else:
        x = keras.layers.ReLU()(make_bn(None)(_conv(64, 7, 2)(inputs)))
        # zeros are a max-pool's neutral padding after a ReLU (torch pads 1 on both sides)
        x = keras.layers.MaxPooling2D(3, 2)(keras.layers.ZeroPadding2D(1)(x))
    for planes, blocks, stride in STAGES:
        for i in range(blocks):
            x = _bottleneck(x, planes, stride if i == 0 else 1)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, dtype="float32")(x))


def _ours(size, stem, batch, num_classes):
    import keras
    import numpy as np
    import tensorflow as tf

    model = keras_resnext50(size, stem, num_classes)
    opt = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(batch, size, size, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, num_classes, batch))

    @tf.function
    def train():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    infer = tf.function(lambda: model(x, training=False))
    return {"train": lambda: train().numpy(), "infer": lambda: infer().numpy()}


def _torch(torch, torchvision, size, stem, batch, num_classes):
    model = torchvision.models.resnext50_32x4d(num_classes=num_classes)
    if stem == "cifar":
        model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch,))

    def train():
        model.train()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    def infer():
        model.eval()
        with torch.inference_mode():
            return model(x).numpy()

    return {"train": train, "infer": infer}


def main(argv=None) -> int:
    p = _cli.ArgumentParser(prog="python -m benchmarks.model.resnext_stand_in",
                            description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stem", choices=("imagenet", "cifar"), default="cifar")
    p.add_argument("--size", type=int, help="input size (default: 224 imagenet, 32 cifar)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timed steps per figure (median)")
    p.add_argument("--modes", default="train,infer", help="train, infer or both")
    _cli.add_log_level_argument(p)
    a = p.parse_args(argv)
    _cli.configure(a)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"train", "infer"}:
        p.error(f"--modes takes train and/or infer separated by commas, got {a.modes!r}")
    if a.batch < 1 or a.repeats < 1:
        p.error(f"--batch and --repeats must be positive, got {a.batch} and {a.repeats}")
    size = a.size or (224 if a.stem == "imagenet" else 32)
    num_classes = 1000 if a.stem == "imagenet" else 10
    import torch  # before TensorFlow, torchvision too: see STACK_NOTES (import order)
    import torchvision

    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"machine: {describe()}; load average at start: {load}; torch {torch.__version__}",
          flush=True)
    runners = {"ours": _ours(size, a.stem, a.batch, num_classes),
               "torchvision": _torch(torch, torchvision, size, a.stem, a.batch, num_classes)}
    for mode in modes:
        times = {name: [] for name in runners}
        for name, r in runners.items():
            r[mode]()  # trace / warm up
        for _ in range(a.repeats):
            for name, r in runners.items():
                time.sleep(0.05)
                t0 = time.perf_counter()
                r[mode]()
                times[name].append(time.perf_counter() - t0)
        ips = {name: a.batch / statistics.median(t) for name, t in times.items()}
        print(f"resnext50_32x4d {a.stem} {size}x{size} batch {a.batch} {mode}: ours "
              f"{ips['ours']:.1f} img/s, torchvision {ips['torchvision']:.1f} img/s, "
              f"ours/torch {ips['ours'] / ips['torchvision']:.2f}", flush=True)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"load average at the end: {load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
