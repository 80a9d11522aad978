"""The machine line every benchmark prints beside its figures: CPU model, logical CPUs and the
instruction set oneDNN may use (speed ratios between frameworks differ by 2x between AVX2 and
AVX-512 machines, so a figure without it cannot be compared)."""

from __future__ import annotations

import json
import os
import platform


def cpu_model_and_isa() -> tuple[str, str]:
    model, isa = platform.processor() or platform.machine(), "unknown ISA"
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return model, isa
    names = [line.split(":", 1)[1].strip() for line in text.splitlines()
             if line.startswith("model name")]
    flags = text.split()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return (names[0] if names else model), isa


def describe() -> str:
    """E.g. 'AMD EPYC, 2 logical CPUs, AVX-512, ONEDNN_MAX_CPU_ISA=AVX2'."""
    model, isa = cpu_model_and_isa()
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return (f"{model}, {os.cpu_count()} logical CPUs, {isa}"
            + (f", ONEDNN_MAX_CPU_ISA={cap}" if cap else ""))


def write_json(path: str, figures: dict) -> None:
    """A benchmark's --json file, written whole or not at all."""
    with open(path + ".tmp", "w") as f:
        json.dump(figures, f, indent=2)
    os.replace(path + ".tmp", path)
