"""Runs the rows of ``python -m benchmarks.gpu``, each as its own ``benchmarks.gpu.row`` process,
in priority order, under a time limit per row and one for the whole run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

PRECISION_ORDER = {"mixed_bfloat16": 0, "mixed_float16": 1, "float32": 2}
MODEL_ORDER = {"resnet50": 0, "resnet18": 1}
# Below this much budget a row is not started: a framework's import and a first compilation
# alone take longer.
MIN_ROW_SECONDS = 20
STDERR_TAIL = 3000


def priority(row: dict) -> tuple:
    """The order rows run in, so that a run cut short by its budget still holds the comparison
    that matters most: first ResNet-50 under bfloat16 (ours, torch eager, torch.compile), then
    ours and torch eager for the other rows (bfloat16, float16, float32; ResNet-50 first), then
    the other torch.compile rows, whose compilation costs the most."""
    headline = row["precision"] == "mixed_bfloat16" and row["model"] == "resnet50"
    compiled_torch = row["framework"] == "torch" and row["compiled"]
    tier = 0 if headline else 2 if compiled_torch else 1
    variant = 0 if row["framework"] == "keras" else 1 + row["compiled"]
    return (tier, PRECISION_ORDER[row["precision"]], MODEL_ORDER.get(row["model"], 9), variant)


def label(row: dict) -> str:
    if row["framework"] == "keras":
        return f"ours {row['model']} {row['precision']}"
    return (f"torch {row['model']} {row['precision']} "
            f"{'torch.compile' if row['compiled'] else 'eager'}")


def child_env(device: str) -> dict:
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONUNBUFFERED="1")
    # No silent fallback: with "gpu", JAX fails instead of running on the CPU.
    env["JAX_PLATFORMS"] = "cuda" if device == "gpu" else "cpu"
    # Compiled programs are kept on disk and shared by the rows (and a rerun): Keras compiles
    # one small program per variable initializer, tens per model, each under JAX's default
    # one-second threshold for the cache.
    env.setdefault("JAX_COMPILATION_CACHE_DIR",
                   os.path.join(tempfile.gettempdir(), "keras-resnet-jax-cache"))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    return env


def run_one(spec: dict, timeout: float, folder: str, index: int) -> dict:
    """Runs one row; returns its spec with the figures it reported, its status and notes."""
    spec_path = os.path.join(folder, f"row{index}.json")
    out_path = os.path.join(folder, f"result{index}.json")
    err_path = os.path.join(folder, f"stderr{index}.txt")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    start = time.monotonic()
    with open(err_path, "w") as err:
        # Its own session, so that a timeout also ends the compile workers it started.
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.gpu.row", spec_path, out_path],
                                stdout=err, stderr=err, env=child_env(spec["device"]),
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            _end_session(proc)
    row = dict(spec, wall_s=round(time.monotonic() - start, 1), notes=[])
    if os.path.exists(out_path):
        with open(out_path) as f:
            row.update(json.load(f))
    with open(err_path, errors="replace") as f:
        tail = f.read()[-STDERR_TAIL:]
    return finish(row, code, timeout, tail)


def _end_session(proc) -> None:
    """Kills what is left of a row's process session: the row itself if it is still running
    (a timeout, or this process interrupted), and compile workers it left behind."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def finish(row: dict, code, timeout: float, stderr_tail: str) -> dict:
    """Sets the row's status ("ok", "partial", "failed", "timed out") and the note that says
    why a figure is missing."""
    have = [m for m in row["modes"] if row.get(m)]
    if code is None:
        row["status"] = "timed out"
        row["notes"].append(f"stopped after {timeout:.0f} s (--row-timeout/--budget)")
    elif code != 0:
        row["status"] = "failed"
        lines = [line for line in stderr_tail.splitlines() if line.strip()]
        row["notes"].append(f"exit {code}: {lines[-1].strip()[:300] if lines else 'no output'}")
    else:
        row["status"] = "ok" if len(have) == len(row["modes"]) else "partial"
    if row["status"] != "ok":
        row["stderr_tail"] = stderr_tail
        if have:  # a stopped or failed row keeps the modes it measured
            row["status"] = "partial"
    return row


def run_all(specs: list[dict], row_timeout: float, budget: float) -> tuple[list[dict], bool]:
    """Every row in order, and whether the run was interrupted (Ctrl-C, SIGTERM). A row that
    would start with less than MIN_ROW_SECONDS of the budget left is not run, and says so;
    after an interruption the rows not finished say that instead."""
    deadline = time.monotonic() + budget
    rows = []
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="gpu-rows-") as folder:
        for index, spec in enumerate(specs):
            left = deadline - time.monotonic()
            if interrupted or left < MIN_ROW_SECONDS:
                why = "interrupted" if interrupted else f"--budget {budget:.0f} s spent"
                rows.append(dict(spec, status="not run", wall_s=0.0, notes=[why]))
                continue
            print(f"[{index + 1}/{len(specs)}] {label(spec)} ...", file=sys.stderr, flush=True)
            try:
                row = run_one(spec, min(row_timeout, left), folder, index)
            except KeyboardInterrupt:
                interrupted = True
                rows.append(dict(spec, status="not run", wall_s=0.0, notes=["interrupted"]))
                continue
            rows.append(row)
            print(f"    {summary(row)}", file=sys.stderr, flush=True)
            if row["status"] in ("failed", "timed out"):
                sys.stderr.write(row.get("stderr_tail", "")[-1500:] + "\n")
    return rows, interrupted


def summary(row: dict) -> str:
    parts = [row["status"]]
    for mode in row["modes"]:
        if row.get(mode):
            parts.append(f"{mode} {row[mode]['images_per_s']:.1f} img/s")
    parts += row["notes"]
    return f"{'; '.join(parts)} ({row['wall_s']:.0f} s)"
