"""The arithmetic ceiling of this machine, to read the throughput figures of bench.py against.

    python -m benchmarks.model.peak

Two figures, in float32 multiply-accumulates per second (GMAC/s) over all CPU threads:

- ``fma``: benchmarks/model/fma_peak.c, compiled here with the system C compiler (-O3 -march=native
  -fopenmp), runs nothing but independent fused multiply-add chains on the widest vector
  registers: no real convolution or matrix product can go faster. Skipped, with the reason,
  when no C compiler with OpenMP is found.
- ``sgemm``: TensorFlow's float32 matrix product (oneDNN on x86) of two n x n matrices, the best
  case of the kernels our models run.

- ``conv``: TensorFlow's 3x3 convolution (oneDNN) on work without padding, 64x6x6x512 -> 4x4.
- ``padding``: how much of the zero padding TensorFlow's convolution skips: the time of a 3x3
  "same" convolution on 4x4 maps (batch 64, 512 channels) over that of a 3x3 "valid" one on
  6x6 maps, which has the same output and multiply-accumulates but no padding. 1.0 would mean
  the taps on padding are computed; 0.69 is the share of taps that land on real pixels.

bench.py prints each model's rate in the same unit (forward MACs per image x images/s, x3 for
a training step), so "ours at 98% of the FMA ceiling" can be read directly. Figures only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe
from keras_resnet import _cli

SOURCE = Path(__file__).with_name("fma_peak.c")


def fma_gmacs(iters: int = 50_000_000) -> tuple[float | None, str]:
    """(GMAC/s of the FMA loop on all threads, description) or (None, why it was skipped)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler (cc/gcc) found"
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "fma_peak"
        build = subprocess.run([cc, "-O3", "-march=native", "-fopenmp", str(SOURCE), "-o",
                                str(exe)], capture_output=True, text=True)
        if build.returncode != 0:
            return None, f"{cc} could not build {SOURCE.name}: {build.stderr.strip()[:300]}"
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
        out = subprocess.run([str(exe), str(iters)], capture_output=True, text=True, env=env,
                             check=True).stdout.split()
    threads, lanes, gmacs = int(out[0]), int(out[1]), float(out[2])
    return gmacs, f"{threads} threads, {lanes}-lane float32 FMA"


def sgemm_gmacs(n: int = 4096, repeats: int = 5) -> float:
    """Best GMAC/s of TensorFlow's float32 n x n matrix product (n**3 MACs per product)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = tf.constant(rng.random((n, n), dtype=np.float32))
    b = tf.constant(rng.random((n, n), dtype=np.float32))
    product = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    product(a, b).numpy()  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        product(a, b).numpy()
        best = min(best, time.perf_counter() - t0)
    return n**3 / best / 1e9


def padding_time_ratio(size: int = 4, channels: int = 512, batch: int = 64,
                       repeats: int = 20) -> tuple[float, float, float]:
    """(time of a padded 3x3 conv / time of the same work without padding, on-pixel tap share,
    GMAC/s of the unpadded convolution)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    kernel = tf.constant(rng.normal(size=(3, 3, channels, channels)).astype(np.float32))
    same = tf.constant(rng.random((batch, size, size, channels), dtype=np.float32))
    valid = tf.constant(rng.random((batch, size + 2, size + 2, channels), dtype=np.float32))
    conv = tf.function(lambda x, padding: tf.reduce_sum(tf.nn.conv2d(x, kernel, 1, padding)))
    times = {"SAME": [], "VALID": []}
    for x, padding in ((same, "SAME"), (valid, "VALID")):
        conv(x, padding).numpy()
    for _ in range(repeats):  # alternate, so a slow moment hits both
        for x, padding in ((same, "SAME"), (valid, "VALID")):
            t0 = time.perf_counter()
            conv(x, padding).numpy()
            times[padding].append(time.perf_counter() - t0)
    ratio = float(np.median(times["SAME"]) / np.median(times["VALID"]))
    gmacs = batch * size * size * 9 * channels * channels / float(np.median(times["VALID"])) / 1e9
    return ratio, ((3 * size - 2) / (3 * size)) ** 2, gmacs


def main(argv=None) -> int:
    p = _cli.ArgumentParser(prog="python -m benchmarks.model.peak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=_cli.positive_int, default=4096, help="matrix size for sgemm")
    p.add_argument("--iters", type=_cli.positive_int, default=50_000_000,
                   help="FMA loop iterations")
    _cli.add_log_level_argument(p)
    a = p.parse_args(argv)
    _cli.configure(a)
    print(f"machine: {describe()}")
    gmacs, how = fma_gmacs(a.iters)
    if gmacs is None:
        print(f"fma    skipped: {how}")
    else:
        print(f"fma    {gmacs:8.1f} GMAC/s  ({how})")
    print(f"sgemm  {sgemm_gmacs(a.n):8.1f} GMAC/s  (TensorFlow float32 matmul, n={a.n})")
    ratio, share, gmacs = padding_time_ratio()
    print(f"conv   {gmacs:8.1f} GMAC/s  (TensorFlow 3x3 convolution, 64x6x6x512 -> 4x4, "
          "no padding)")
    print(f"padding  {ratio:6.2f}  time of a 3x3 conv on padded 4x4 maps / same work unpadded "
          f"(taps on real pixels: {share:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
