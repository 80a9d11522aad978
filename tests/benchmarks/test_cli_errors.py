"""Usage errors of the benchmark CLIs: one argparse-style line, exit 2, before any framework
loads (a benchmark that starts and then dies on `--steps 0` wastes minutes)."""

import pytest

from tests.keras_resnet.test_summary_cli import assert_usage_error
from tests.test_startup import run_python

CASES = [
    ("benchmarks.model.bench", ["--batch", "0"], "--batch: must be positive"),
    ("benchmarks.model.bench", ["--steps", "0"], "--steps: must be positive"),
    ("benchmarks.model.bench", ["--repeats", "0"], "--repeats: must be positive"),
    ("benchmarks.model.bench", ["--warmup", "-1"], "--warmup: must be at least 0"),
    ("benchmarks.model.bench", ["--width", "0"], "--width: must be positive"),
    ("benchmarks.model.bench", ["--num-classes", "0"], "--num-classes: must be positive"),
    ("benchmarks.model.bench", ["--input-shape", "0,28,1"], "--input-shape: height, width and"),
    ("benchmarks.model.bench", ["--input-shape", "28,x,1"],
     "--input-shape: must be H,W,C integers"),
    ("benchmarks.model.bench", ["--input-shape", "28,28"], "--input-shape: needs 3 values"),
    ("benchmarks.model.profile", ["--batch", "0"], "--batch: must be positive"),
    ("benchmarks.model.profile", ["--steps", "0"], "--steps: must be positive"),
    ("benchmarks.model.profile", ["--top", "-1"], "--top: must be at least 0"),
    ("benchmarks.model.profile", ["--input-shape", "32,32"], "--input-shape: needs 3 values"),
    ("benchmarks.train.e2e", ["--steps", "0"], "--steps: must be positive"),
    ("benchmarks.train.e2e", ["--repeats", "0"], "--repeats: must be positive"),
    ("benchmarks.train.e2e", ["--epochs", "2"], "--epochs: must be at least 3, got 2"),
    ("benchmarks.train.e2e", ["--torch-workers", "-1"], "--torch-workers: must be at least 0"),
    ("benchmarks.deploy.memory", ["--input-size", "0"], "--input-size: must be positive"),
    ("benchmarks.deploy.memory", ["--width", "0"], "--width: must be positive"),
    ("benchmarks.deploy.memory", ["--num-classes", "0"], "--num-classes: must be positive"),
    ("benchmarks.deploy.memory", ["--latency-runs", "0"], "--latency-runs: must be positive"),
    ("benchmarks.deploy.memory", ["--calibration-images", "0"], "--calibration-images: must be"),
    ("benchmarks.deploy.memory", ["--arch", "resnet19"], "--arch: invalid choice"),
    ("benchmarks.train.accuracy", ["--datasets", "cifar10"], "--datasets takes a subset of"),
]


@pytest.mark.parametrize("cli, argv, message", CASES,
                         ids=[f"{c} {' '.join(a)}" for c, a, _ in CASES])
def test_bad_options_are_one_line_before_any_framework(cli, argv, message, tmp_path):
    proc = run_python(tmp_path, "-X", "importtime", "-m", cli, *argv, timeout=120)
    assert_usage_error(proc, f"python -m {cli}", message)


@pytest.mark.parametrize("cli", ["benchmarks.model.bench", "benchmarks.model.profile",
                                 "benchmarks.train.e2e", "benchmarks.deploy.memory"])
def test_help_documents_the_exit_codes(cli, tmp_path):
    proc = run_python(tmp_path, "-m", cli, "--help")
    assert proc.returncode == 0
    assert "exit status:" in proc.stdout and "2  bad input or usage" in proc.stdout
