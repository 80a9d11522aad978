"""Test accuracy of `python -m training.fit` as users run it, over seeds, beside scikit-learn.

    python -m benchmarks.train.accuracy --seeds 5 --datasets digits --out benchmarks/results/accuracy.md
    python -m benchmarks.train.accuracy --seeds 3 --datasets idx,folder --recipes auto

Each dataset x recipe x seed is one `python -m training.fit --arch resnet18 ...` in its own
process, with the recipe's defaults (nothing else given but the data and --seed):
- digits: scikit-learn's digits (`--dataset digits`, the 1438 / 359 split of
  training/data/bundled.py);
- idx: the same scans written as MNIST's four IDX .gz files (`--dataset mnist --data-dir`:
  MNIST's reader and the mnist recipe; real MNIST needs a download this machine cannot make);
- folder: the same scans as an image folder (`python -m training.sample_folder`, then
  `--dataset folder --image-size 28,28`: the folder reader, its own split and recipe).
Per run: the test accuracy (the test split is read once, at the end of the run), the training
wall time (metrics.json's train_wall_time_s) and the time at which the validation accuracy first
reached 0.99 (training time of the epochs up to it, validation included). Beside them, fitted by
this command on the same split: scikit-learn's SVC(gamma=0.001), SVC(), 3-nearest-neighbours and
logistic regression on the 8x8 features. Figures only: nothing here asserts an accuracy.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile

from keras_resnet import _cli
from benchmarks.train.e2e import ROOT, _idx
from benchmarks.machine import describe, write_json
DATASETS = ("digits", "idx", "folder")
# What each --recipes word runs: "seed" is the previous quick-start line's recipe.
RECIPE_OPTIONS = {"auto": [], "seed": ["--recipe", "seed", "--width", "16", "--epochs", "10"]}
TARGET = 0.99


def write_digits_as_mnist(folder: str) -> str:
    """scikit-learn's digits (in MNIST's 28x28 layout) as the four IDX .gz files of MNIST."""
    from training.data import load_arrays
    from training.data.archives import IDX_FILES

    out = os.path.join(folder, "mnist")
    os.makedirs(out, exist_ok=True)
    for split, (images_file, labels_file) in IDX_FILES.items():
        x, y, _ = load_arrays("digits", split, None, "auto", 0.0, None)
        x = x[..., 0]
        y = y.astype("uint8")
        for base, data in ((images_file, _idx(x, x.shape)), (labels_file, _idx(y, y.shape))):
            with open(os.path.join(out, base + ".gz"), "wb") as f:
                f.write(data)
    return folder


def data_options(dataset: str, tmp: str) -> list:
    """training.fit's data options for `dataset`, writing its files into `tmp` once."""
    if dataset == "digits":
        return ["--dataset", "digits"]
    if dataset == "idx":
        folder = os.path.join(tmp, "idx")
        if not os.path.isdir(folder):
            write_digits_as_mnist(folder)
        return ["--dataset", "mnist", "--data-dir", folder]
    from training.sample_folder import write_digit_scans

    folder = os.path.join(tmp, "scans")
    if not os.path.isdir(folder):
        write_digit_scans(folder)
    return ["--dataset", "folder", "--data-dir", folder, "--image-size", "28,28"]


def fit(args: list, run_dir: str) -> dict:
    """One training.fit run: its metrics.json, log.csv rows and config.json."""
    cmd = [sys.executable, "-m", "training.fit", *args, "--run-dir", run_dir, "--verbose", "0"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"training.fit exited {proc.returncode}: {proc.stderr[-2000:]}")
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(run_dir, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    return {"test_accuracy": metrics["test_accuracy"],
            "train_wall_time_s": metrics["train_wall_time_s"],
            "time_to_target_s": time_to(rows, metrics["epoch_seconds"], TARGET),
            "epochs": metrics["epochs_completed"], "recipe": config["recipe"]["name"],
            "command": _shown(config["command"]), "test_names": _test_names(run_dir)}


def _shown(command: str) -> str:
    """A run's command without the benchmark's own --run-dir, --verbose and temporary paths."""
    import shlex

    words, shown = shlex.split(command), []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in ("--run-dir", "--verbose"):
            skip = True
        else:
            shown.append("DIR" if word.startswith(tempfile.gettempdir()) else word)
    return shlex.join(shown)


def time_to(rows: list, epoch_seconds: list, target: float):
    """Seconds of training (whole epochs) until validation accuracy first reached `target`."""
    spent = 0.0
    for row, seconds in zip(rows, epoch_seconds):
        spent += seconds
        if float(row["val_accuracy"]) >= target:
            return spent
    return None


def _test_names(run_dir: str):
    """The test files of a folder run (split.json), else None (the digits split)."""
    path = os.path.join(run_dir, "split.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return [os.path.basename(p) for p, _ in json.load(f)["files"]["test"]]


def baselines(test_names=None) -> dict:
    """scikit-learn's classifiers on the 8x8 features, on the digits split or on the scans of a
    folder run's test split (sample_folder names each file by its index in load_digits)."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    from training.data.bundled import digits_test_mask

    digits = load_digits()
    x, y = digits.data, digits.target
    if test_names is None:
        test = digits_test_mask(y)
    else:
        test = np.zeros(len(y), bool)
        test[[int(os.path.splitext(n)[0]) for n in test_names]] = True
    models = {"SVC(gamma=0.001)": SVC(gamma=0.001), "SVC()": SVC(),
              "KNeighborsClassifier(3)": KNeighborsClassifier(3),
              "LogisticRegression(max_iter=5000)": LogisticRegression(max_iter=5000)}
    return {name: float(m.fit(x[~test], y[~test]).score(x[test], y[test]))
            for name, m in models.items()} | {"test_images": int(test.sum())}


def summarize(runs: list) -> dict:
    accs = [r["test_accuracy"] for r in runs]
    reached = [r["time_to_target_s"] for r in runs if r["time_to_target_s"] is not None]
    return {"mean": statistics.mean(accs), "min": min(accs), "max": max(accs),
            "seeds": accs, "train_wall_time_s": statistics.mean(r["train_wall_time_s"]
                                                             for r in runs),
            "time_to_target_s": statistics.mean(reached) if reached else None,
            "reached_target": len(reached), "epochs": runs[0]["epochs"],
            "recipe": runs[0]["recipe"], "command": runs[0]["command"]}


def markdown(result: dict) -> str:
    lines = [
        "# Accuracy: `python -m training.fit` over seeds, beside scikit-learn",
        "",
        "Back to [README](../../README.md). Written by the command below (nothing here is typed "
        "by hand); the test split of each run is read once, at its end.",
        "",
        "```bash",
        result["command"],
        "```",
        "",
        f"Machine: {result['machine']}. Date: {result['date']}. Seeds: {result['seeds']}.",
        "",
        "| data | recipe | test accuracy mean | min | max | per seed | epochs | training wall "
        f"time (s) | validation >= {TARGET} after (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, s in result["summaries"].items():
        reached = (f"{s['time_to_target_s']:.1f} ({s['reached_target']}/{len(s['seeds'])} runs)"
                   if s["time_to_target_s"] is not None else "never")
        lines.append(
            f"| {key.split()[0]} | {s['recipe']} | **{s['mean']:.4f}** | {s['min']:.4f} | "
            f"{s['max']:.4f} | {' '.join(f'{a:.4f}' for a in s['seeds'])} | {s['epochs']} | "
            f"{s['train_wall_time_s']:.1f} | {reached} |")
    lines += ["", "The commands (seed 0; `--run-dir` left out):", ""]
    lines += [f"- {key}: `{s['command']}`" for key, s in result["summaries"].items()]
    lines += ["", "scikit-learn on the same test images (8x8 features, fitted on the same "
              "training images, validation included):", "",
              "| data | test images | " + " | ".join(
                  k for k in next(iter(result["baselines"].values())) if k != "test_images")
              + " |", "|---|---|" + "---|" * (len(next(iter(result["baselines"].values()))) - 1)]
    for data, b in result["baselines"].items():
        lines.append(f"| {data} | {b['test_images']} | " + " | ".join(
            f"{v:.4f}" for k, v in b.items() if k != "test_images") + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = _cli.ArgumentParser(prog="python -m benchmarks.train.accuracy", description=__doc__,
                            epilog=_cli.EXIT_CODES,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=_cli.positive_int, default=5, help="seeds 0..N-1")
    p.add_argument("--datasets", default="digits,idx,folder",
                   help=f"comma-separated subset of {', '.join(DATASETS)}")
    p.add_argument("--recipes", default="auto,seed",
                   help="comma-separated --recipe values of training.fit (auto: the default; "
                   "seed: the previous quick-start line, --recipe seed --width 16 --epochs 10)")
    p.add_argument("--out", metavar="PATH", help="write the Markdown table there")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    _cli.add_log_level_argument(p)
    a = p.parse_args(argv)
    _cli.configure(a)
    from training.recipes import RECIPES

    datasets = [d for d in a.datasets.split(",") if d]
    recipes = [r for r in a.recipes.split(",") if r]
    if not datasets or set(datasets) - set(DATASETS):
        p.error(f"--datasets takes a subset of {list(DATASETS)}, got {a.datasets!r}")
    if not recipes or set(recipes) - {"auto", *RECIPES}:
        p.error(f"--recipes takes a subset of {['auto', *RECIPES]}, got {a.recipes!r}")
    result = {"machine": describe(), "date": datetime.date.today().isoformat(),
              "seeds": f"0-{a.seeds - 1}", "summaries": {}, "baselines": {},
              "command": "python -m benchmarks.train.accuracy " + " ".join(
                  argv if argv is not None else sys.argv[1:])}
    with tempfile.TemporaryDirectory(prefix="accuracy-") as tmp:
        for dataset in datasets:
            for recipe in recipes:
                runs = []
                for seed in range(a.seeds):
                    args = ["--arch", "resnet18", *data_options(dataset, tmp), "--seed", str(seed),
                            *RECIPE_OPTIONS.get(recipe, ["--recipe", recipe])]
                    runs.append(fit(args, os.path.join(tmp, f"{dataset}-{recipe}-{seed}")))
                    print(f"{dataset} {recipe} seed {seed}: test accuracy "
                          f"{runs[-1]['test_accuracy']:.4f}, training "
                          f"{runs[-1]['train_wall_time_s']:.1f} s", flush=True)
                result["summaries"][f"{dataset} {recipe}"] = summarize(runs)
            result["baselines"][dataset] = baselines(runs[0]["test_names"])
    text = markdown(result)
    print("\n" + text)
    if a.out:
        tmp_out = a.out + ".tmp"
        with open(tmp_out, "w") as f:
            f.write(text)
        os.replace(tmp_out, a.out)
    if a.json:
        write_json(a.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
