"""Training and inference throughput of keras_resnet beside torchvision's ResNet, side by side.

    python -m benchmarks.model.bench --arch resnet18 --input-shape 28,28,1 --stem imagenet --batch 128

Each framework runs in its own worker process (so peak memory is its own); the parent alternates
between them: one timed run of ours, one of torchvision's, and so on, so that a slow moment of
the machine hits both. Figures: median images/s over the timed runs after warm-up, the ratio
ours/torch, and each worker's peak resident memory. Random inputs and labels; nothing here is
an accuracy. No assertions: it prints figures.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time

# Module level on purpose: the spawned workers re-import this module, and _cli then sets up
# the same filtering of TensorFlow's load-time log lines there.
from benchmarks.machine import describe, write_json
from keras_resnet import _cli
from keras_resnet._cli import parse_shape
from keras_resnet.archs import ARCHS, STEMS

MODES = ("train", "infer")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------- ours (Keras / TensorFlow)
class KerasRunner:
    name = "keras_resnet"

    def __init__(self, cfg):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
        import numpy as np

        from keras_resnet import build_resnet
        from keras_resnet.fast import default_jit_compile

        from keras_resnet import kernels

        # Chosen for every step (the first traces the model's function): see keras_resnet.kernels.
        self.kernels = kernels.active()
        if cfg.get("input_gradient", "forward") == "tensorflow":
            self.kernels -= {"flipped_input_gradient"}
        keras.utils.set_random_seed(0)
        h, w, c = cfg["input_shape"]
        self.batch = cfg["batch"]
        self.model = build_resnet(cfg["arch"], input_shape=(h, w, c),
                                  num_classes=cfg["num_classes"], stem=cfg["stem"],
                                  width=cfg.get("width", 64), dtype=cfg["precision"])
        jit = {"on": True, "off": False}.get(cfg["jit"], None)
        if jit is None:
            jit = default_jit_compile()
        self.jit = jit
        self.model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
        )
        from keras_resnet.summary import total_macs

        # Same architecture as torchvision's, so the same work for both. Taps on zero padding are
        # not counted: oneDNN's kernels skip them (a 3x3 conv on 4x4 maps takes 0.73x the time of
        # one on 6x6 maps without padding: python -m benchmarks.model.peak).
        self.macs = total_macs(self.model, on_pixels=True)
        rng = np.random.default_rng(0)
        self.x = rng.uniform(0, 1, (self.batch, h, w, c)).astype("float32")
        self.y = rng.integers(0, cfg["num_classes"], self.batch).astype("int32")

    def step(self, mode: str) -> None:
        from keras_resnet import kernels

        with kernels.use(self.kernels):
            if mode == "train":
                self.model.train_on_batch(self.x, self.y)
            else:
                self.model.predict_on_batch(self.x)

    def describe(self) -> str:
        import keras
        import tensorflow as tf

        grad = ("forward conv" if "flipped_input_gradient" in self.kernels
                else "Conv2DBackpropInput")
        return (f"tensorflow {tf.__version__}, keras {keras.__version__}, jit_compile={self.jit}, "
                f"stride-1 3x3 input gradient: {grad}")


# ---------------------------------------------------------------- torchvision (PyTorch)
def torch_resnet(torchvision, torch, arch: str, stem: str, channels: int, num_classes: int):
    """torchvision's `arch` with our stem: the CIFAR stem is a 3x3/1 conv and no max-pool."""
    model = getattr(torchvision.models, arch)(num_classes=num_classes)
    if stem == "cifar":
        model.conv1 = torch.nn.Conv2d(channels, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
    elif channels != 3:
        model.conv1 = torch.nn.Conv2d(channels, model.conv1.out_channels, 7, 2, 3, bias=False)
    return model


class TorchRunner:
    name = "torchvision"

    def __init__(self, cfg):
        import torch
        import torchvision

        torch.manual_seed(0)
        h, w, c = cfg["input_shape"]
        self.torch = torch
        self.batch = cfg["batch"]
        model = torch_resnet(torchvision, torch, cfg["arch"], cfg["stem"], c, cfg["num_classes"])
        self.channels_last = cfg["torch_channels_last"]
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = model.to(memory_format=fmt)
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        self.loss = torch.nn.CrossEntropyLoss()
        self.x = torch.rand(self.batch, c, h, w).contiguous(memory_format=fmt)
        self.y = torch.randint(0, cfg["num_classes"], (self.batch,))
        self.autocast = cfg["precision"] == "mixed_bfloat16"

    def step(self, mode: str) -> None:
        torch = self.torch
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            if mode == "train":
                self.model.train()
                self.opt.zero_grad(set_to_none=True)
                self.loss(self.model(self.x), self.y).backward()
                self.opt.step()
            else:
                self.model.eval()
                with torch.inference_mode():
                    self.model(self.x)

    def describe(self) -> str:
        import torchvision

        return (f"torch {self.torch.__version__}, torchvision {torchvision.__version__}, "
                f"threads={self.torch.get_num_threads()}, channels_last={self.channels_last}")


RUNNERS = {"keras_resnet": KerasRunner, "torchvision": TorchRunner}


def _worker(kind: str, cfg: dict, conn) -> None:
    try:
        runner = RUNNERS[kind](cfg)
        conn.send(("ready", runner.describe(), getattr(runner, "macs", None)))
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                break
            _, mode, steps = msg
            t0 = time.perf_counter()
            for _ in range(steps):
                runner.step(mode)
            dt = time.perf_counter() - t0
            conn.send(("done", steps * runner.batch / dt, _peak_rss_mib()))
    except Exception as e:  # report, don't hang the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))


def run(cfg: dict) -> dict:
    ctx = mp.get_context("spawn")  # TensorFlow and torch must not be forked after import
    kinds = ["keras_resnet"] + (["torchvision"] if cfg["torch"] else [])
    workers, macs = {}, None
    for kind in kinds:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(kind, cfg, child), daemon=True)
        proc.start()
        msg = parent.recv()
        if msg[0] == "error":
            print(f"{kind}: could not start: {msg[1]}", file=sys.stderr)
            proc.join()
            continue
        workers[kind] = (proc, parent, msg[1])
        if msg[2] is not None:
            macs = msg[2]
    results = {"config": cfg, "versions": {k: w[2] for k, w in workers.items()},
               "forward_macs_per_image": macs,
               "machine": describe()}
    for mode in cfg["modes"]:
        rates = {k: [] for k in workers}
        peak = {}
        for kind, (_, conn, _) in workers.items():  # warm-up (tracing, compilation, caches)
            conn.send(("run", mode, cfg["warmup"]))
            conn.recv()
        for _ in range(cfg["repeats"]):
            for kind, (_, conn, _) in workers.items():
                conn.send(("run", mode, cfg["steps"]))
                msg = conn.recv()
                if msg[0] == "error":
                    raise RuntimeError(f"{kind} failed: {msg[1]}")
                rates[kind].append(msg[1])
                peak[kind] = msg[2]
        results[mode] = {k: {"median_img_s": statistics.median(v), "runs": v,
                             "peak_rss_mib": peak[k]} for k, v in rates.items()}
    for proc, conn, _ in workers.values():
        conn.send(("stop",))
        proc.join(timeout=30)
    return results


def pipeline_throughput(dataset: str, batch: int, batches: int = 100) -> float:
    """Images/s that training's tf.data pipeline delivers for `dataset`, model excluded.

    Runs training.data.make_pipeline (gather, uint8 -> float32, the dataset's augmentation,
    shuffle, prefetch) over uint8 arrays of the dataset's real train-split size and image shape,
    so it needs no download; the pixel values do not change the work done.
    """
    import numpy as np

    from training.data import DATASETS, make_pipeline

    info = DATASETS[dataset]
    n = info.splits["train"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, *info.image_size), dtype=np.uint8)
    labels = rng.integers(0, info.num_classes, n).astype(np.int32)
    ds = make_pipeline(images, labels, batch, shuffle=True, augmentation=info.augmentation,
                       epochs=1000)
    it = iter(ds)
    for _ in range(5):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - t0)


def print_results(res: dict) -> None:
    cfg = res["config"]
    print(f"\n{cfg['arch']} {cfg['input_shape']} stem={cfg['stem']} batch={cfg['batch']} "
          f"precision={cfg['precision']}  ({res['machine']})")
    for k, v in res["versions"].items():
        print(f"  {k}: {v}")
    macs = res.get("forward_macs_per_image")
    print(f"  {'mode':<7}{'ours img/s':>12}{'torch img/s':>13}{'ratio':>8}"
          f"{'ours MiB':>10}{'torch MiB':>11}{'ours GMAC/s':>13}{'torch GMAC/s':>14}")
    for mode in cfg["modes"]:
        ours = res[mode]["keras_resnet"]
        theirs = res[mode].get("torchvision")
        # Compute rate: forward MACs per image x images/s; a training step does the forward
        # product and two backward ones (input and weight gradients), so x3.
        scale = (macs or 0) * (3 if mode == "train" else 1) / 1e9
        line = f"  {mode:<7}{ours['median_img_s']:>12.1f}"
        if theirs:
            line += (f"{theirs['median_img_s']:>13.1f}"
                     f"{ours['median_img_s'] / theirs['median_img_s']:>8.2f}"
                     f"{ours['peak_rss_mib']:>10.0f}{theirs['peak_rss_mib']:>11.0f}")
        else:
            line += f"{'-':>13}{'-':>8}{ours['peak_rss_mib']:>10.0f}{'-':>11}"
        if scale:
            line += f"{ours['median_img_s'] * scale:>13.1f}"
            line += f"{theirs['median_img_s'] * scale:>14.1f}" if theirs else f"{'-':>14}"
        print(line)
    if macs:
        print(f"  GMAC/s: forward pass {macs / 1e9:.3f} GMAC per image, taps on zero padding "
              "excluded (training counted as 3x); the machine's ceiling: "
              "python -m benchmarks.model.peak")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--arch, --input-shape, --stem, --num-classes, --width, --batch, --log-level (bench and
    profile)."""
    p.add_argument("--arch", default="resnet18", choices=sorted(ARCHS))
    p.add_argument("--input-shape", type=parse_shape, default=(28, 28, 1), help="H,W,C")
    p.add_argument("--stem", default="imagenet", choices=STEMS)
    p.add_argument("--num-classes", type=_cli.positive_int, default=10)
    p.add_argument("--width", type=_cli.positive_int, default=64,
                   help="base width of ours (torchvision's is fixed at 64: use 64 to compare)")
    p.add_argument("--batch", type=_cli.positive_int, default=128)
    _cli.add_log_level_argument(p)


def main(argv=None) -> int:
    p = _cli.ArgumentParser(prog="python -m benchmarks.model.bench", description=__doc__,
                                epilog=_cli.EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--precision", default="float32",
                   help="comma-separated dtype policies to measure one after the other, of "
                        f"{', '.join(PRECISIONS)} (torch: bfloat16 autocast for "
                        "mixed_bfloat16); default %(default)s")
    p.add_argument("--modes", default="train,infer",
                   help="comma-separated subset of train,infer (default: %(default)s)")
    p.add_argument("--jit", default="default", choices=("default", "on", "off"),
                   help="XLA for ours: default = what keras_resnet picks for this device")
    p.add_argument("--warmup", type=_cli.non_negative_int, default=3,
                   help="untimed steps per mode")
    p.add_argument("--steps", type=_cli.positive_int, default=5, help="steps per timed run")
    p.add_argument("--repeats", type=_cli.positive_int, default=5,
                   help="timed runs (median reported)")
    p.add_argument("--input-gradient", default="forward", choices=("forward", "tensorflow"),
                   help="ours: input gradient of stride-1 3x3 convolutions as a forward "
                        "convolution (default) or TensorFlow's Conv2DBackpropInput (A/B)")
    p.add_argument("--no-torch", dest="torch", action="store_false",
                   help="skip torchvision even when installed")
    p.add_argument("--torch-channels-last", action="store_true")
    p.add_argument("--pipeline", metavar="DATASET",
                   help="also measure training's tf.data pipeline alone for DATASET's shape, "
                        "size and augmentation (e.g. mnist, cifar10)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    a = p.parse_args(argv)
    _cli.configure(a)
    modes = tuple(m for m in a.modes.split(",") if m)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        p.error(f"--modes accepts {list(MODES)}, got {a.modes!r}")
    if a.torch:
        import importlib.util

        # Only looked up here: each framework is imported in its own worker process.
        if not (importlib.util.find_spec("torch") and importlib.util.find_spec("torchvision")):
            print("torch/torchvision not installed: measuring keras_resnet only",
                  file=sys.stderr)
            a.torch = False
    precisions = [x for x in a.precision.split(",") if x]
    if not precisions or set(precisions) - set(PRECISIONS):
        p.error(f"--precision takes a comma-separated subset of {list(PRECISIONS)}, got "
                f"{a.precision!r}")
    if a.width != 64 and a.torch:
        print("--width != 64: torchvision has no such option; measuring keras_resnet only",
              file=sys.stderr)
        a.torch = False
    results = []
    for precision in precisions:
        cfg = dict(arch=a.arch, input_shape=a.input_shape, stem=a.stem,
                   num_classes=a.num_classes, width=a.width, batch=a.batch, precision=precision,
                   modes=modes, jit=a.jit, warmup=a.warmup, steps=a.steps, repeats=a.repeats,
                   torch=a.torch, torch_channels_last=a.torch_channels_last,
                   input_gradient=a.input_gradient)
        results.append(run(cfg))
        print_results(results[-1])
    res = results[0] if len(results) == 1 else {"precisions": results}
    if a.pipeline:
        rate = pipeline_throughput(a.pipeline, a.batch)
        res["pipeline_img_s"] = rate
        train = results[0].get("train", {}).get("keras_resnet", {}).get("median_img_s")
        extra = f" = {rate / train:.1f}x the model's training rate" if train else ""
        print(f"  tf.data pipeline ({a.pipeline}, augmented): {rate:.0f} img/s{extra}")
    if a.json:
        write_json(a.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
