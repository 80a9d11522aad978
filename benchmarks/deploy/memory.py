"""Peak resident memory of ``python -m export`` and ``python -m keras_resnet.convert``, run as a
user runs them.

    python -m benchmarks.deploy.memory                                  # ResNet-50, 224x224, 1000 classes
    python -m benchmarks.deploy.memory --arch resnet18 --input-size 32 --width 16 --num-classes 10 \\
        --what export --formats onnx,tflite --tflite-variants float32

In a temporary folder it writes the inputs (a ``.keras`` model from keras_resnet, a torchvision
``.pth`` state_dict with random weights, random calibration images as ``.npy``), in a child
process of their own, then runs each CLI as a subprocess and reads that subprocess's peak
resident set size from the kernel (``os.wait4``: the ``ru_maxrss`` that ``/usr/bin/time -v``
prints as "Maximum resident set size"). Rows:

* ``convert``: ``python -m keras_resnet.convert --from-torch X.pth --out Y.keras --input-size H
  --normalization imagenet`` (needs torch and torchvision; skipped with a note otherwise).
* ``export (all)``: ``python -m export`` with every requested format and TFLite variant,
  ``--no-dataset --calibration calib.npy``.
* ``export <format>``: the same, one format or TFLite variant alone (``--no-alone`` skips them).

Random weights and images: the figures are memory, not accuracy. No assertions: it prints
figures (and the commands, so that any row can be rerun by hand).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import describe
from keras_resnet import _cli
from keras_resnet._provenance import library_versions
from keras_resnet.archs import ARCHS

WHAT = ("export", "convert")
FORMATS = ("saved_model", "onnx", "tflite")
VARIANTS = ("float32", "float16", "dynamic_int8", "int8")
VERSIONS = ("onnx", "tf2onnx", "onnxruntime", "ai-edge-litert", "torch", "torchvision")


def _csv(allowed, what):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {bad or text!r}; expected a comma-separated subset of "
                f"{','.join(allowed)}")
        return list(dict.fromkeys(items))

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _cli.ArgumentParser(
        prog="python -m benchmarks.deploy.memory",
        description="Peak resident memory of the export and convert CLIs, each run as a "
        "subprocess on inputs made in a temporary folder.",
        epilog=_cli.EXIT_CODES.replace("a failed check", "a command measured failed"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet50", choices=sorted(ARCHS),
                   help="keras_resnet / torchvision arch")
    p.add_argument("--input-size", type=_cli.positive_int, default=224,
                   help="H = W of the model input")
    p.add_argument("--width", type=_cli.positive_int, default=64,
                   help="stem width of the .keras model that export reads (convert always "
                   "gets torchvision's width 64)")
    p.add_argument("--num-classes", type=_cli.positive_int, default=1000)
    p.add_argument("--what", type=_csv(WHAT, "command"), default=list(WHAT),
                   help="export, convert or both (default)")
    p.add_argument("--formats", type=_csv(FORMATS, "format"), default=list(FORMATS))
    p.add_argument("--tflite-variants", type=_csv(VARIANTS, "variant"), default=list(VARIANTS))
    p.add_argument("--no-alone", dest="alone", action="store_false",
                   help="skip the runs of one format / TFLite variant at a time")
    p.add_argument("--calibration-images", type=_cli.positive_int, default=32,
                   help="random images in calib.npy (int8 calibration)")
    p.add_argument("--latency-runs", type=_cli.positive_int, default=20,
                   help="passed to python -m export (its default 20)")
    p.add_argument("--keep", default=None, help="use this folder instead of a temporary one")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--make-inputs", default=None, help=argparse.SUPPRESS)
    return p


def has_torch() -> bool:
    import importlib.util

    return bool(importlib.util.find_spec("torch") and importlib.util.find_spec("torchvision"))


def make_inputs(folder: Path, args) -> None:
    """Runs in a child process: writes model.keras, model.pth (with torch) and calib.npy."""
    if has_torch() and "convert" in args.what:
        import torch  # before TensorFlow: torchvision imported after it segfaults
        import torchvision

        torch.manual_seed(0)
        net = getattr(torchvision.models, args.arch)(num_classes=args.num_classes)
        torch.save(net.state_dict(), folder / "model.pth")
        del net
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    import keras

    from keras_resnet import build_resnet

    keras.utils.set_random_seed(0)  # the same weights each run, so each run checks the same model
    s = args.input_size
    model = build_resnet(args.arch, input_shape=(s, s, 3), num_classes=args.num_classes,
                         width=args.width)
    model.save(folder / "model.keras")
    rng = np.random.default_rng(0)
    np.save(folder / "calib.npy",
            rng.uniform(0, 255, (args.calibration_images, s, s, 3)).astype(np.float32))


def run_measured(cmd: list[str], log_path: Path) -> dict:
    """Runs ``cmd``; returns its exit code, wall time and peak RSS (MiB) from ``wait4``."""
    start = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    # ru_maxrss: KiB on Linux, bytes on macOS.
    kib = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss
    return {"command": shlex.join(cmd), "exit_code": proc.returncode, "wall_s": wall,
            "peak_rss_mib": kib / 1024, "log": str(log_path)}


def machine() -> dict:
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) / 2**20
    except OSError:
        pass
    versions = library_versions(*VERSIONS)
    return {"platform": platform.platform(), "cpu": describe(),
            "memory_gib": round(mem, 1) if mem else None, "versions": versions}


def plan(folder: Path, args) -> list[tuple[str, list[str]]]:
    py = sys.executable
    rows = []
    if "convert" in args.what:
        rows.append(("convert", [
            py, "-m", "keras_resnet.convert", "--from-torch", str(folder / "model.pth"),
            "--out", str(folder / "converted.keras"), "--input-size", str(args.input_size),
            "--normalization", "imagenet",
        ]))
    if "export" in args.what:
        variants = args.tflite_variants if "tflite" in args.formats else []

        def export_cmd(out, formats, tflite_variants):
            cmd = [py, "-m", "export", "--model", str(folder / "model.keras"), "--out",
                   str(folder / out), "--overwrite", "--no-dataset", "--formats",
                   ",".join(formats), "--latency-runs", str(args.latency_runs)]
            if "tflite" in formats:
                cmd += ["--tflite-variants", ",".join(tflite_variants)]
                if "int8" in tflite_variants:
                    cmd += ["--calibration", str(folder / "calib.npy")]
            return cmd

        rows.append(("export (all)", export_cmd("all", args.formats, variants)))
        if args.alone and len(args.formats) + max(len(variants) - 1, 0) > 1:
            for fmt in args.formats:
                if fmt == "tflite":
                    for v in variants:
                        cmd = export_cmd(f"tflite_{v}", ["tflite"], [v])
                        rows.append((f"export tflite {v}", cmd))
                else:
                    rows.append((f"export {fmt}", export_cmd(fmt, [fmt], variants)))
    return rows


def format_report(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['memory_gib']} GiB, {m['platform']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        f"model: {report['config']['arch']}, {report['config']['input_size']}x"
        f"{report['config']['input_size']}x3, width {report['config']['width']}, "
        f"{report['config']['num_classes']} classes (random weights)",
        "",
    ]
    head = ["run", "peak RSS MiB", "peak RSS GiB", "wall s", "exit"]
    rows = [[r["name"], f"{r['peak_rss_mib']:.0f}", f"{r['peak_rss_mib'] / 1024:.2f}",
             f"{r['wall_s']:.1f}", str(r["exit_code"])] for r in report["runs"]]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    lines += [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    lines.append("")
    lines.append("peak RSS: ru_maxrss of each subprocess (os.wait4), as /usr/bin/time -v "
                 "reports it")
    for note in report["notes"]:
        lines.append(f"note: {note}")
    lines.append("commands:")
    lines += [f"  {r['name']}: {r['command']}" for r in report["runs"]]
    return "\n".join(lines)


def run(args, folder: Path) -> dict:
    notes = []
    if "convert" in args.what and not has_torch():
        notes.append("torch/torchvision not installed: convert skipped")
        args.what = [w for w in args.what if w != "convert"]
    started = run_measured(
        [sys.executable, "-m", "benchmarks.deploy.memory", "--make-inputs", str(folder)]
        + _forward(args), folder / "make_inputs.log")
    if started["exit_code"] != 0:
        raise RuntimeError(f"making the inputs failed; see {started['log']}:\n"
                           + Path(started["log"]).read_text()[-2000:])
    runs = []
    for name, cmd in plan(folder, args):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        result = run_measured(cmd, folder / (re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
                                             + ".log"))
        result["name"] = name
        runs.append(result)
        if result["exit_code"] != 0:
            # The log's folder may be temporary: keep its last lines, which say why.
            tail = [line for line in Path(result["log"]).read_text(errors="replace").splitlines()
                    if line.strip()][-3:]
            notes.append(f"{name} exited with {result['exit_code']}; the end of its output:\n"
                         + "\n".join("    " + line for line in tail))
    config = {k: getattr(args, k) for k in ("arch", "input_size", "width", "num_classes", "what",
                                            "formats", "tflite_variants", "calibration_images",
                                            "latency_runs")}
    return {"config": config, "machine": machine(), "runs": runs, "notes": notes}


def _forward(args) -> list[str]:
    return ["--arch", args.arch, "--input-size", str(args.input_size), "--width",
            str(args.width), "--num-classes", str(args.num_classes), "--what",
            ",".join(args.what), "--calibration-images", str(args.calibration_images)]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.make_inputs:
        make_inputs(Path(args.make_inputs), args)
        return 0
    if args.keep:
        folder = Path(args.keep)
        folder.mkdir(parents=True, exist_ok=True)
        report = run(args, folder)
    else:
        with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
            report = run(args, Path(tmp))
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r["exit_code"] == 0 for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
