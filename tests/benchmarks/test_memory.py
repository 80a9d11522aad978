"""The memory harness runs the real CLIs and reports a positive peak for each (no figures
are asserted)."""

import importlib.util

import pytest

from benchmarks.memory import main


@pytest.mark.slow  # runs convert and six exports as subprocesses (~1 min)
def test_memory_harness_reports_peak_rss_of_each_cli(capsys, tmp_path):
    has_torch = bool(importlib.util.find_spec("torch") and importlib.util.find_spec("torchvision"))
    out = tmp_path / "memory.json"
    rc = main(["--arch", "resnet18", "--input-size", "32", "--width", "8", "--num-classes", "4",
               "--what", "export,convert", "--formats", "onnx,tflite", "--tflite-variants",
               "float32", "--latency-runs", "1", "--calibration-images", "4",
               "--keep", str(tmp_path / "work"), "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    import json

    runs = {r["name"]: r for r in json.loads(out.read_text())["runs"]}
    expected = {"export (all)", "export onnx", "export tflite float32"}
    if has_torch:
        expected.add("convert")
    assert set(runs) == expected
    for name, r in runs.items():
        assert r["exit_code"] == 0
        assert r["peak_rss_mib"] > 100, name  # a Python process with TensorFlow loaded
        assert name in text
    assert "peak RSS MiB" in text and "machine:" in text and "tensorflow" in text
    assert (tmp_path / "work" / "all" / "manifest.json").exists()
