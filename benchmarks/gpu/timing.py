"""Timing and result files shared by a row and the framework runners it loads."""

from __future__ import annotations

import json
import os
import statistics
import time


def measure(step, sync, batch: int, warmup: int, steps: int, repeats: int) -> dict:
    """Images/s of ``step`` (one batch): ``warmup`` untimed steps (the first one compiles),
    then the median of ``repeats`` timed runs of ``steps`` steps, each ended by ``sync``."""
    start = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        step()
    sync()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"images_per_s": batch * steps / median, "median_s": median, "seconds": seconds,
            "first_step_s": first, "steps": steps, "repeats": repeats, "warmup": warmup}


def write_json(path: str, data: dict) -> None:
    """Writes ``data`` to ``path`` through a temporary name, so a reader sees all or nothing."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
