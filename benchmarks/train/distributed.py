"""One device, MirroredStrategy over logical CPUs, and N local workers: same weights, what speed.

    python -m benchmarks.train.distributed [--replicas 2] [-- training.fit options]

Runs `python -m training.fit` four times with the same options, seed and global batch:
on one device, on one device with one intra-op thread (the same arithmetic summed in another
order: the float32 round-off floor of the comparison), with `--cpu-replicas R`
(MirroredStrategy), and through `python -m training.launch --nproc R`
(MultiWorkerMirroredStrategy over loopback), then prints for each the largest difference of its
final weights from the one-device run (relative L2 over all weights, and the worst
variable's), the test accuracy and the training images/s after the first epoch (metrics.json),
and the difference between the two distributed runs. On one CPU the replicas share the same cores, so the
distributed forms are slower here: the figure shows their overhead, not a speed-up. Exit
status 2 on bad options, 1 when a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from keras_resnet import _cli

# Noise images: on the digits, any two float32 runs (one device at 1 and 2 threads included)
# part ways within a few steps, likely where their flat background sits at a ReLU's threshold.
DEFAULT_FIT = ["--arch", "resnet18", "--dataset", "synthetic", "--synthetic-shape", "16,16,3",
               "--stem", "cifar", "--width", "8", "--batch-size", "32", "--subset", "160",
               "--epochs", "2", "--optimizer", "sgd", "--lr", "0.01", "--deterministic",
               "--verbose", "2"]


class RunFailed(RuntimeError):
    """One of the compared training runs did not finish; the message ends with its output."""


def _run(name: str, cmd: list[str], env=None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise RunFailed(f"{name}: {' '.join(cmd[:4])} ... exited with {proc.returncode}:\n"
                        f"{tail}")


def weight_difference(reference: str, other: str) -> tuple[float, float, str]:
    """(||a - b|| / ||a|| over all weights, the largest per-variable ||a - b|| / ||a||, its
    variable) of two .keras files."""
    import numpy as np

    import keras_resnet  # noqa: F401  (registers the layers)
    from training.modelio import load_model

    a, b = load_model(reference), load_model(other)
    worst, where, num, den = 0.0, "", 0.0, 0.0
    for x, y in zip(a.weights, b.weights):
        u, v = np.asarray(x, np.float64), np.asarray(y, np.float64)
        d, n = float(np.sum((u - v) ** 2)), float(np.sum(u ** 2))
        num, den = num + d, den + n
        if n > 0 and (d / n) ** 0.5 > worst:
            worst, where = (d / n) ** 0.5, x.path
    return (num / den) ** 0.5, worst, where


def main(argv=None) -> int:
    parser = _cli.ArgumentParser(prog="python -m benchmarks.train.distributed",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=_cli.at_least(2), default=2,
                        help="replicas of the mirrored run and workers of the launched run")
    parser.add_argument("fit_args", nargs=argparse.REMAINDER,
                        help="-- then training.fit options (default: "
                             + " ".join(DEFAULT_FIT) + ")")
    args = parser.parse_args(argv)
    fit = _cli.after_double_dash(args.fit_args) or DEFAULT_FIT
    if any(a.startswith(("--run-dir", "--strategy", "--cpu-replicas")) for a in fit):
        parser.error("--run-dir, --strategy and --cpu-replicas are set by the benchmark")
    return _cli.exit_status(lambda: _compare(fit, args.replicas))


def _compare(fit: list[str], replicas: int) -> None:
    from benchmarks.machine import describe

    print(describe(), flush=True)
    r = str(replicas)
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        one_thread = dict(os.environ, TF_NUM_INTRAOP_THREADS="1", OMP_NUM_THREADS="1")
        runs = {
            "one device": [sys.executable, "-m", "training.fit", *fit],
            "one device, 1 thread": [sys.executable, "-m", "training.fit", *fit],
            f"mirrored, {r} logical CPUs": [sys.executable, "-m", "training.fit", *fit,
                                            "--cpu-replicas", r],
            f"{r} workers (training.launch)": [sys.executable, "-m", "training.launch",
                                              "--nproc", r, "--", *fit],
        }
        results = {}
        for name, cmd in runs.items():
            run_dir = os.path.join(tmp, str(len(results)))
            _run(name, [*cmd, "--run-dir", run_dir],
                 one_thread if name == "one device, 1 thread" else None)
            with open(os.path.join(run_dir, "metrics.json")) as f:
                results[name] = (run_dir, json.load(f))
        reference = os.path.join(results["one device"][0], "last.keras")
        print(f"training.fit {' '.join(fit)}")
        print(f"{'run':32s} {'rel. L2 diff':>12s} {'worst variable (its rel. L2 diff)':>58s} "
              f"{'test acc':>8s} {'img/s':>7s}")
        for name, (run_dir, metrics) in results.items():
            if name == "one device":
                diff, worst, where = 0.0, 0.0, "(reference)"
            else:
                diff, worst, where = weight_difference(reference,
                                                       os.path.join(run_dir, "last.keras"))
            speed = metrics.get("train_images_per_s_after_first_epoch")
            accuracy = metrics.get("test_accuracy")
            accuracy = "-" if accuracy is None or metrics.get("synthetic") else f"{accuracy:.4f}"
            print(f"{name:32s} {diff:12.2e} {where:>48s} ({worst:.1e}) {accuracy:>8s} "
                  f"{'-' if speed is None else round(speed):>7}")
        mirrored, workers = list(results)[2:]
        diff, worst, where = weight_difference(
            os.path.join(results[mirrored][0], "last.keras"),
            os.path.join(results[workers][0], "last.keras"))
        print(f"{mirrored} vs {workers}: rel. L2 diff {diff:.2e} (worst {where} {worst:.1e})")


if __name__ == "__main__":
    sys.exit(main())
