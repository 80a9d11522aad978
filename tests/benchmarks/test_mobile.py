"""benchmarks.deploy --mobile on the session's export, in this process: a row for each runtime,
variant and thread count (figures are printed, never asserted)."""

import re

from benchmarks.deploy import latency as deploy


def test_mobile_table_has_every_runtime_and_variant(exported, capsys):
    assert deploy.main(["--export", str(exported.out), "--mobile", "--repeats", "1",
                        "--iters", "1"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| ([^|]+) \| (\w+) \| ([-\d]) \| ([\d.]+) \|", out, re.M)
    got = {(runtime, variant, threads) for runtime, variant, threads, _ in rows}
    tflite = ("float32", "float16", "dynamic_int8", "int8")
    want = {("LiteRT XNNPACK", v, t) for v in tflite for t in "12"}
    want |= {("MediaPipe ImageClassifier", v, "-") for v in tflite}
    want |= {("ONNX Runtime", v, t) for v in ("float32", "int8") for t in "12"}
    assert got == want, out
    assert all(float(ms) > 0 for *_, ms in rows)
