"""Decode + augment throughput of the image-folder pipelines, per core.

    python -m benchmarks.train.decode                     # 512 JPEGs of 224x224, 2 passes
    python -m benchmarks.train.decode --images 2000 --size 32   # small files (e.g. the check pass)

In a temporary folder it writes `--images` JPEG files of `--size` x `--size` pixels (smooth
random colour fields with noise, quality 90: photo-like file sizes), as two class folders,
then times, as training.fit runs them:
- the decode check that runs once before training (training.data.folder.check: every file decoded
  and measured, undecodable ones named);
- the training pipeline (training.data's, with augmentation: random-resized crop and flip for
  "crop", resize plus batch-wise rotation and shift for "stretch");
- the evaluation pipeline (resize and centre crop, or resize).
Each pipeline runs `--passes` times; the first pass (tracing, file cache of the OS) is left
out of the figure. Images/s are divided by the logical CPUs this process may use (tf.data
spreads decoding over all of them). No model runs: these are the input pipeline's own rates.
Figures from a machine that other work keeps busy understate the rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from benchmarks.machine import describe
from keras_resnet import _cli
from keras_resnet._cli import at_least, positive_int

EXIT_CODES = """exit status: 0 figures printed; 2 bad usage (the one-line message names the
option); 1 an internal error."""


def write_jpegs(folder: str, n: int, size: int, seed: int = 0) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        cls = os.path.join(folder, f"class{i % 2}")
        os.makedirs(cls, exist_ok=True)
        coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
        pixels = np.asarray(img, np.int16) + rng.integers(-12, 13, (size, size, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            os.path.join(cls, f"{i:06d}.jpg"), quality=90)


def images_per_second(ds, passes: int) -> float:
    rates = []
    for _ in range(passes):
        count, start = 0, time.perf_counter()
        for x, _ in ds:
            count += int(x.shape[0])
        rates.append(count / (time.perf_counter() - start))
    warm = rates[1:] or rates
    return sum(warm) / len(warm)


def build_parser() -> argparse.ArgumentParser:
    p = _cli.ArgumentParser(prog="python -m benchmarks.train.decode", description=__doc__,
                                epilog=EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=at_least(2), default=512, help="JPEG files written")
    p.add_argument("--size", type=positive_int, default=224,
                   help="side of the written JPEGs and of --image-size")
    p.add_argument("--resize", choices=["auto", "crop", "stretch"], default="auto",
                   help="the preprocessing timed (auto: crop from 64 px up)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch")
    p.add_argument("--passes", type=at_least(2), default=3,
                   help="passes over the files per pipeline (the first is not counted)")
    _cli.add_log_level_argument(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _cli.configure(args)
    import tensorflow  # noqa: F401 - loaded before the clock starts, as in training.fit

    from training.data import folder
    from training.data.pipeline import pipeline
    from training.preprocessing import Preprocessing

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory(prefix="decode-bench-") as root:
        write_jpegs(root, args.images, args.size)
        mb = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(root)
                 for f in fs) / 1e6
        prep = Preprocessing.for_shape((args.size, args.size, 3), args.resize)
        print(f"{args.images} JPEG files of {args.size}x{args.size} ({mb:.1f} MB), "
              f"--resize {prep.resize}, batch {args.batch_size}, {cores} cores for tf.data")
        start = time.perf_counter()
        data = folder.check(folder.scan(root), prep, log=lambda msg: None)
        check_s = time.perf_counter() - start
        rate = args.images / check_s
        print(f"  decode check (once per run, first read): {check_s:.2f} s, {rate:.0f} "
              f"images/s, {rate / cores:.0f} per core")
        items = tuple(item for split in ("train", "test") for item in data.files[split])
        for name, augment in (("training pipeline", True), ("evaluation pipeline", False)):
            ds = pipeline(folder.FileItems(data, items, "train"), args.batch_size,
                          shuffle=augment, augment=augment)
            rate = images_per_second(ds, args.passes)
            print(f"  {name}: {rate:.0f} images/s, {rate / cores:.0f} per core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
