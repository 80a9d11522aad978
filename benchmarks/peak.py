"""The arithmetic ceiling of this machine, to read the throughput figures of bench.py against.

    python -m benchmarks.peak

Two figures, in float32 multiply-accumulates per second (GMAC/s) over all CPU threads:

- ``fma``: benchmarks/fma_peak.c, compiled here with the system C compiler (-O3 -march=native
  -fopenmp), runs nothing but independent fused multiply-add chains on the widest vector
  registers: no real convolution or matrix product can go faster. Skipped, with the reason,
  when no C compiler with OpenMP is found.
- ``sgemm``: TensorFlow's float32 matrix product (oneDNN on x86) of two n x n matrices, the best
  case of the kernels our models run.

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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4096, help="matrix size for sgemm")
    p.add_argument("--iters", type=int, default=50_000_000, help="FMA loop iterations")
    a = p.parse_args(argv)
    if a.n < 1 or a.iters < 1:
        p.error(f"--n and --iters must be positive, got {a.n} and {a.iters}")
    gmacs, how = fma_gmacs(a.iters)
    if gmacs is None:
        print(f"fma    skipped: {how}")
    else:
        print(f"fma    {gmacs:8.1f} GMAC/s  ({how})")
    print(f"sgemm  {sgemm_gmacs(a.n):8.1f} GMAC/s  (TensorFlow float32 matmul, n={a.n})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
