"""python -m benchmarks.gpu: its options, row plan, statuses and table without a framework;
then, marked slow, the whole benchmark on JAX's CPU backend at tiny sizes, and a torch.compile
that fails becoming its row's note."""

import json
import math
import os
import subprocess
import sys

import pytest

from benchmarks.gpu import cli as gpu
from benchmarks.gpu import report as gpu_report
from benchmarks.gpu import rows as gpu_rows
from tests import harness
from tests.conftest import REPO

PROG = "python -m benchmarks.gpu"


USAGE_ERRORS = [
    (["--steps", "0"], "argument --steps: must be positive"),
    (["--models", "resnet19"], "argument --models: expected a comma-separated list of resnet50"),
    (["--precisions", "fp8"], "argument --precisions: expected a comma-separated list"),
    (["--torch", "jit"], "argument --torch: expected a comma-separated list of eager, compile"),
    (["--image-size", "8"], "argument --image-size: must be at least 17"),
    (["--device", "tpu"], "argument --device: invalid choice"),
]


def test_a_bad_option_is_one_line_and_exit_2_before_any_row(tmp_path, capsys):
    for argv, message in USAGE_ERRORS:
        result = harness.run_cli(gpu.main, capsys, *argv)
        assert result.code == 2
        lines = result.err.strip().splitlines()
        assert lines[0].startswith(f"{PROG}: error: {message}"), result.err
        assert lines[1:] == [f"see {PROG} --help"], result.err
    (tmp_path / "f").write_text("")
    result = harness.run_cli(gpu.main, capsys, "--out", tmp_path / "f")
    assert result.code == 2
    assert "is a file; expected a folder" in harness.one_line(result.err, f"{PROG}: error: ")


def test_plan_runs_the_headline_rows_first_at_each_models_sizes():
    rows = gpu.plan(gpu.build_parser().parse_args([]), "gpu", "full")
    assert len(rows) == 2 * 3 * 3  # models x precisions x (ours, torch eager, torch.compile)
    head = [(r["framework"], r["model"], r["precision"], r["compiled"]) for r in rows[:3]]
    assert head == [("keras", "resnet50", "mixed_bfloat16", True),
                    ("torch", "resnet50", "mixed_bfloat16", False),
                    ("torch", "resnet50", "mixed_bfloat16", True)]
    rest = rows[3:]
    first_compiled = next(i for i, r in enumerate(rest) if r["framework"] == "torch"
                          and r["compiled"])
    assert all(r["framework"] == "torch" and r["compiled"] for r in rest[first_compiled:])
    r50 = next(r for r in rows if r["model"] == "resnet50")
    r18 = next(r for r in rows if r["model"] == "resnet18")
    assert (r50["input_shape"], r50["batch"], r50["stem"], r50["num_classes"]) == (
        [224, 224, 3], 256, "imagenet", 1000)
    assert (r18["input_shape"], r18["batch"], r18["stem"], r18["num_classes"]) == (
        [32, 32, 3], 512, "cifar", 10)
    assert (r50["warmup"], r50["steps"], r50["repeats"]) == gpu.TIMING["full"]

    tiny = gpu.plan(gpu.build_parser().parse_args(
        ["--models", "resnet18", "--frameworks", "keras", "--repeats", "3"]), "cpu", "tiny")
    assert [r["precision"] for r in tiny] == ["mixed_bfloat16", "mixed_float16", "float32"]
    assert all(r["batch"] == gpu.TINY_BATCH and r["repeats"] == 3 and r["device"] == "cpu"
               and r["input_shape"] == [16, 16, 3] for r in tiny)


def _row(framework, precision, compiled=False, train=None, infer=None, **more):
    spec = dict(framework=framework, model="resnet50", arch="resnet50", stem="imagenet",
                input_shape=[224, 224, 3], batch=256, num_classes=1000, precision=precision,
                compiled=compiled, modes=["infer", "train"], notes=[], status="ok")
    for mode, rate in (("train", train), ("infer", infer)):
        spec[mode] = None if rate is None else {"images_per_s": rate, "peak_mib": 2048.0,
                                                "first_step_s": 30.0}
    return dict(spec, **more)


def test_table_ratios_and_notes_from_rows():
    rows = [_row("keras", "mixed_bfloat16", True, train=3000.0, infer=9000.0),
            _row("torch", "mixed_bfloat16", False, train=2000.0, infer=10000.0),
            _row("torch", "mixed_bfloat16", True, train=2500.0, infer=None, status="partial",
                 notes=["torch.compile failed in infer: RuntimeError: no compiler"]),
            _row("keras", "float32", True, status="not run", notes=["--budget 420 s spent"])]
    found = gpu_report.ratios(rows)
    by = {(r["mode"], r["torch"]): r["ratio"] for r in found}
    assert by == {("train", "eager"): 1.5, ("infer", "eager"): 0.9,
                  ("train", "torch.compile"): 1.2}
    result = {"rows": rows, "ratios": found, "device": "gpu", "size": "full",
              "gpu_name": "NVIDIA H200", "date": "2026-12-05T00:00:00+00:00",
              "python": "3.12.3", "host": "x", "command": "python -m benchmarks.gpu",
              "versions": {"jax": "0.11.2", "keras": "3.15.1", "torch": "2.11.0",
                           "torchvision": "0.26.0", "jax_backend": "gpu", "cuda": "13.0",
                           "cudnn": 91300}}
    text = gpu_report.markdown(result)
    assert text.splitlines()[0] == "ResNet images/s on NVIDIA H200"
    assert "jax 0.11.2 (gpu), keras 3.15.1" in text and "cuDNN 91300" in text
    table = [line for line in text.splitlines() if line.startswith("| ResNet-50")]
    assert len(table) == 4
    ours_bf16 = next(line for line in table if "mixed_bfloat16" in line and "ours" in line)
    cells = [c.strip() for c in ours_bf16.strip("|").split("|")]
    assert cells[4:10] == ["3,000", "9,000", "1.50 / 1.20", "0.90 / –", "2,048 / 2,048",
                           "30.0 / 30.0"]
    assert "partial: torch.compile failed in infer: RuntimeError: no compiler" in text
    assert "not run: --budget 420 s spent" in text


def test_a_row_that_fails_or_outlasts_its_limit_keeps_what_it_measured():
    def fresh():
        return _row("keras", "float32", True, infer=50.0, notes=[])

    ok = gpu_rows.finish(fresh(), 0, 60, "")
    assert ok["status"] == "partial" and "stderr_tail" in ok  # train missing
    failed = gpu_rows.finish(_row("keras", "float32", notes=[]), 1, 60, "x\nKeyError: 'a'\n")
    assert failed["status"] == "failed" and failed["notes"] == ["exit 1: KeyError: 'a'"]
    stopped = gpu_rows.finish(fresh(), None, 60, "")
    assert stopped["status"] == "partial"
    assert stopped["notes"] == ["stopped after 60 s (--row-timeout/--budget)"]


def test_a_row_process_is_stopped_at_its_time_limit(tmp_path):
    spec = gpu.plan(gpu.build_parser().parse_args(
        ["--models", "resnet18", "--precisions", "float32", "--frameworks", "keras"]),
        "cpu", "tiny")[0]
    row = gpu_rows.run_one(spec, 1.0, str(tmp_path), 0)  # stopped while it imports
    assert row["status"] == "timed out" and not row.get("train") and not row.get("infer")
    assert row["notes"] == ["stopped after 1 s (--row-timeout/--budget)"]


@pytest.mark.slow  # two rows, each its own process: ours (JAX compiles) and torch eager
def test_the_benchmark_end_to_end_on_jax_cpu_at_tiny_sizes(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("KERAS_BACKEND", None)
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--device", "cpu", "--models", "resnet18",
         "--precisions", "mixed_float16", "--torch", "eager",
         "--out", str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    result = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert (result["device"], result["size"], result["gpu_name"]) == ("cpu", "tiny", None)
    assert {"jax", "jaxlib", "keras", "torch", "torchvision"} <= set(result["versions"])
    rows = result["rows"]
    # float16 with loss scaling: the LossScaleOptimizer's state inside the compiled step
    assert sorted((r["framework"], r["precision"], r["compiled"]) for r in rows) == [
        ("keras", "mixed_float16", True), ("torch", "mixed_float16", False)]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["platform"] == "cpu" and row["tensorflow_loaded"] is False
        assert row["versions"].get("jax_backend", "cpu") == "cpu"
        for mode in ("train", "infer"):
            figures = row[mode]
            assert figures["images_per_s"] > 0 and len(figures["seconds"]) == 2
            assert figures["peak_mib"] is None  # no device memory counter on a CPU
        assert math.isfinite(row["train"]["last_loss"])
    ratios = result["ratios"]
    assert sorted(r["mode"] for r in ratios) == ["infer", "train"]  # against torch eager
    for ratio in ratios:
        assert ratio["ratio"] == pytest.approx(
            ratio["ours_images_per_s"] / ratio["torch_images_per_s"])
    table = (tmp_path / "out" / "gpu.md").read_text()
    assert table == r.stdout
    assert table.startswith("ResNet images/s on the CPU, tiny sizes")
    lines = [line for line in table.splitlines() if line.startswith("| ResNet-18 cifar 16x16x3")]
    assert len(lines) == 2
    assert sum("ours, Keras-JAX" in line for line in lines) == 1


@pytest.mark.slow  # imports torch and torchvision in this process
def test_a_failing_torch_compile_is_the_rows_note(monkeypatch):
    import torch

    from benchmarks.gpu import torch_runner as gpu_torch

    def broken(model, *args, **kwargs):
        def call(*a, **k):
            raise RuntimeError("InductorError: no working C++ compiler\nsecond line")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    spec = gpu.plan(gpu.build_parser().parse_args(
        ["--models", "resnet18", "--precisions", "mixed_bfloat16", "--frameworks", "torch",
         "--torch", "compile"]), "cpu", "tiny")[0]
    runner = gpu_torch.Runner(spec)
    figures, note = runner.measure("infer")
    assert figures is None
    assert note == ("torch.compile failed in infer: RuntimeError: InductorError: no working "
                    "C++ compiler")
