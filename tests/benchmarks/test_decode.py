"""The decode benchmark runs its pipelines on JPEGs it writes and prints a rate for each (no
figures are asserted)."""

import re

from benchmarks.train.decode import main


def test_decode_benchmark_prints_every_pipeline_per_core(capsys):
    assert main(["--images", "8", "--size", "32", "--batch-size", "4", "--passes", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("machine: ")
    assert "8 JPEG files of 32x32" in out and "--resize stretch" in out
    for name in ("decode check", "training pipeline", "evaluation pipeline"):
        line = next(line for line in out.splitlines() if name in line)
        rate, per_core = map(int, re.findall(r"(\d+) (?:images/s|per core)", line))
        assert rate > 0 and per_core > 0, line


def test_bad_counts_are_usage_errors(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        main(["--images", "1"])
    assert e.value.code == 2 and "--images" in capsys.readouterr().err
