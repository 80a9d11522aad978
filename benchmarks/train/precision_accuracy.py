"""Does mixed_bfloat16 train to the float32 accuracy? The same `python -m training.fit` recipe under
both precisions, over several seeds, on scikit-learn's digits (`--dataset digits`) and on the
same scans written as MNIST's IDX archive files (`--dataset mnist --data-dir`: MNIST's loader,
normalization and pipeline; real MNIST needs a download this benchmark does not make).

    python -m benchmarks.train.precision_accuracy --seeds 3

Prints each run's test accuracy and, per data set, the mean of each precision and their
difference in points. Figures only: nothing here asserts an accuracy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

from keras_resnet import _cli
from benchmarks.train.accuracy import RECIPE_OPTIONS, fit, write_digits_as_mnist
from benchmarks.machine import describe, write_json

PRECISIONS = ("float32", "mixed_bfloat16")
# The previous quick-start line, as benchmarks.train.accuracy runs it.
RECIPE = ("--arch", "resnet18", *RECIPE_OPTIONS["seed"])


def train(args: list, run_dir: str) -> float:
    return fit(args, run_dir)["test_accuracy"]


def main(argv=None) -> int:
    p = _cli.ArgumentParser(prog="python -m benchmarks.train.precision_accuracy",
                            description=__doc__, epilog=_cli.EXIT_CODES,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=_cli.positive_int, default=3, help="seeds 0..N-1")
    p.add_argument("--datasets", default="digits,mnist",
                   help="comma-separated: digits, mnist (the digits as IDX files)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    _cli.add_log_level_argument(p)
    a = p.parse_args(argv)
    _cli.configure(a)
    datasets = [d for d in a.datasets.split(",") if d]
    if not datasets or set(datasets) - {"digits", "mnist"}:
        p.error(f"--datasets takes digits and/or mnist, got {a.datasets!r}")
    result = {"machine": describe(), "recipe": "python -m training.fit " + " ".join(RECIPE),
              "runs": {}}
    with tempfile.TemporaryDirectory(prefix="precision-") as tmp:
        idx = write_digits_as_mnist(os.path.join(tmp, "data"))
        for dataset in datasets:
            data = ["--dataset", dataset] + (["--data-dir", idx] if dataset == "mnist" else [])
            for precision in PRECISIONS:
                accs = []
                for seed in range(a.seeds):
                    run_dir = os.path.join(tmp, f"{dataset}-{precision}-{seed}")
                    accs.append(train([*RECIPE, *data, "--precision", precision,
                                       "--seed", str(seed)], run_dir))
                    print(f"{dataset} {precision} seed {seed}: test accuracy {accs[-1]:.4f}",
                          flush=True)
                result["runs"][f"{dataset} {precision}"] = accs
    print(f"\n{result['recipe']}  ({result['machine']})")
    for dataset in datasets:
        f32, bf16 = (statistics.mean(result["runs"][f"{dataset} {p}"]) for p in PRECISIONS)
        print(f"  {dataset}: float32 {f32:.4f}, mixed_bfloat16 {bf16:.4f} (mean of {a.seeds} "
              f"seeds): difference {100 * (bf16 - f32):+.2f} points")
    if a.json:
        write_json(a.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
