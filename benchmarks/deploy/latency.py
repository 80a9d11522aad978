"""Every artifact of an export folder in its own runtime, beside torch.onnx's export of the same
weights: median latency at batch 1 and 16.

    python -m benchmarks.deploy --export artifacts/ --repeats 7

Reads ``manifest.json`` of ``python -m export``: the SavedModel runs in TensorFlow, each
``.tflite`` in LiteRT, each ``.onnx`` in ONNX Runtime, all with ``--threads`` threads. The
Keras model the export came from (the manifest's ``source.model_file``, or ``--model``) is
converted to a torchvision ResNet (``keras_resnet.convert``) and exported by
``torch.onnx.export`` (the TorchScript exporter: torch's long-standing graph, no onnxscript);
its logits are compared with our float32 ONNX file's before anything is timed. torch's model
takes normalized NCHW tensors; ours raw NHWC pixels with the normalization inside.

Timing: each round runs every artifact ``--iters`` times in turn (so that a slow moment of a
shared machine hits all of them), after warm-up; a figure is the median over ``--repeats``
rounds of the mean time per call. ``--profile`` adds ONNX Runtime's profile of every ONNX file
(time per op type at the largest batch). No assertions: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.deploy import mobile
from benchmarks.machine import describe
from benchmarks.deploy.mobile import tflite_feed
from keras_resnet import _cli

TORCH = "torch.onnx"


def _onnx_session(path, threads: int, profile_prefix: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_runner(path, threads: int):
    """(a callable images NHWC -> logits, whose input it is fed) for one ONNX file."""
    session = _onnx_session(path, threads)
    name = session.get_inputs()[0].name
    nchw = session.get_modelmeta().custom_metadata_map.get("keras_resnet.input_layout") == "NCHW"
    return lambda x: session.run(["logits"], {name: x})[0], nchw


def runners(export_dir: Path, manifest: dict, threads: int) -> dict:
    """{label: (callable, takes NCHW)} for every artifact of the export."""
    import tensorflow as tf

    from export.tflite_format import interpreter

    out = {}
    for entry in manifest["artifacts"]:
        path = export_dir / entry["path"]
        label = f"{entry['format']} {entry['variant']}"
        if entry["format"] == "onnx":
            out[label] = _onnx_runner(path, threads)
        elif entry["format"] == "tflite":
            runner = interpreter(path, num_threads=threads).get_signature_runner()
            out[label] = (lambda x, r=runner, f=tflite_feed(entry): r(image=f(x))["logits"],
                          False)
        else:
            loaded = tf.saved_model.load(str(path))
            fn = loaded.signatures["serving_default"]
            out[label] = (lambda x, f=fn, keep=loaded: f(image=tf.constant(x))["logits"].numpy(),
                          False)
    return out


def torch_onnx(model_file: Path, folder: Path) -> tuple[Path, tuple, tuple]:
    """torch.onnx's export of torchvision's ResNet holding the weights of ``model_file``;
    returns (path, normalization mean, std) in raw pixel units ((0,), (1,) when none)."""
    import torch
    import torchvision

    import keras

    from benchmarks.model.bench import torch_resnet
    from keras_resnet.builder import model_config
    from keras_resnet.convert import to_torch_state_dict

    model = keras.models.load_model(model_file, compile=False)
    config = model_config(model)
    h, w, c = model.input_shape[1:]
    net = torch_resnet(torchvision, torch, config["arch"], config["stem"], c,
                       model.output_shape[-1])
    state = {k: torch.from_numpy(np.asarray(v)) for k, v in to_torch_state_dict(model).items()}
    net.load_state_dict(state, strict=True)
    net.eval()
    path = folder / "torch.onnx"
    torch.onnx.export(net, torch.zeros(1, c, h, w), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    norm = config.get("normalization")
    mean, std = (norm if norm else ((0.0,), (1.0,)))
    return path, tuple(np.atleast_1d(mean)), tuple(np.atleast_1d(std))


def _inputs(shape, batch: int, mean, std) -> dict:
    """The same images for every runner: raw NHWC, raw NCHW, and normalized NCHW (torch's)."""
    x = np.random.default_rng(0).uniform(0, 255, (batch, *shape)).astype(np.float32)
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return {"nhwc": x, "nchw": nchw, "torch": np.ascontiguousarray((nchw - m) / s)}


def measure(runs: dict, shape, batches, repeats: int, iters: int, mean, std) -> dict:
    """{(label, batch): median ms per call}, every runner in turn within each round."""
    figures = {}
    for batch in batches:
        data = _inputs(shape, batch, mean, std)
        feeds = {label: data["torch" if label == TORCH else "nchw" if nchw else "nhwc"]
                 for label, (_, nchw) in runs.items()}
        for label, (fn, _) in runs.items():
            fn(feeds[label])
            fn(feeds[label])
        times = {label: [] for label in runs}
        for _ in range(repeats):
            for label, (fn, _) in runs.items():
                start = time.perf_counter()
                for _ in range(iters):
                    fn(feeds[label])
                times[label].append((time.perf_counter() - start) * 1e3 / iters)
        for label, values in times.items():
            figures[(label, batch)] = statistics.median(values)
    return figures


def op_profile(path, shape, batch: int, threads: int, nchw: bool, runs: int = 5) -> dict:
    """{op type: ms per run} from ONNX Runtime's profiler at ``batch``."""
    with tempfile.TemporaryDirectory() as tmp:
        session = _onnx_session(path, threads, profile_prefix=str(Path(tmp) / "profile"))
        x = _inputs(shape, batch, (0.0,), (1.0,))["nchw" if nchw else "nhwc"]
        if Path(path).name == "torch.onnx":
            x = _inputs(shape, batch, (0.0,), (1.0,))["nchw"]
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            totals[op] = totals.get(op, 0.0) + event["dur"] / 1e3 / runs
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def table(figures: dict, batches) -> str:
    """One row per artifact and batch; ONNX rows also give torch.onnx's time over theirs."""
    lines = ["| artifact | batch | median ms | images/s | torch.onnx / this |",
             "|---|---|---|---|---|"]
    labels = list(dict.fromkeys(label for label, _ in figures))
    for batch in batches:
        for label in labels:
            ms = figures[(label, batch)]
            torch_ms = figures.get((TORCH, batch))
            ratio = (f"{torch_ms / ms:.2f}" if torch_ms and label.startswith("onnx")
                     else "")
            lines.append(f"| {label} | {batch} | {ms:.2f} | {batch * 1e3 / ms:.1f} | {ratio} |")
    return "\n".join(lines)


def _torch_check(runs: dict, shape, mean, std) -> str:
    """Our float32 ONNX against torch.onnx on the same images: their logits must agree."""
    ours = runs.get("onnx float32")
    if ours is None or TORCH not in runs:
        return "no float32 ONNX file to compare with torch.onnx"
    data = _inputs(shape, 2, mean, std)
    a = ours[0](data["nchw" if ours[1] else "nhwc"])
    b = runs[TORCH][0](data["torch"])
    diff = float(np.max(np.abs(a - b)))
    if not diff <= 1e-3 * max(1.0, float(np.max(np.abs(b)))):
        raise RuntimeError(f"torch.onnx's logits differ from ours by up to {diff:.3g}: "
                           "not the same weights; the timings would compare different models")
    return f"torch.onnx logits agree with ours: max|Δ| {diff:.2e}"


def build_parser() -> argparse.ArgumentParser:
    p = _cli.ArgumentParser(prog="python -m benchmarks.deploy", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", required=True, help="a folder written by python -m export")
    p.add_argument("--model", default=None,
                   help="the .keras file for torch.onnx (default: the manifest's model_file)")
    p.add_argument("--no-torch", action="store_true", help="leave torch.onnx out")
    p.add_argument("--batches", default="1,16", help="comma-separated batch sizes (default 1,16)")
    p.add_argument("--repeats", type=_cli.positive_int, default=7)
    p.add_argument("--iters", type=_cli.positive_int, default=3, help="calls per timed round")
    p.add_argument("--threads", type=_cli.positive_int, default=2)
    p.add_argument("--profile", action="store_true",
                   help="ONNX Runtime's time per op type for every ONNX file")
    p.add_argument("--mobile", action="store_true",
                   help="instead: the mobile table (benchmarks.deploy.mobile: each TFLite file in "
                   "LiteRT at 1 and 2 threads and in MediaPipe, beside ONNX Runtime, batch 1)")
    return p


def _manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        raise _cli.UsageError(f"--export {folder}: no readable manifest.json of python -m "
                              f"export ({err})") from None


def main(argv=None) -> int:
    return _cli.run(build_parser(), _main, argv, prefix="benchmarks.deploy: error")


def _main(args) -> None:
    folder = Path(args.export)
    manifest = _manifest(folder)
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise _cli.UsageError(f"--batches {args.batches!r}: expected positive integers, e.g. 1,16")
    if args.mobile:
        print(f"machine: {describe()}")
        print(f"export: {folder}; batch 1, median of {args.repeats} rounds of {args.iters} "
              "calls")
        print(mobile.report(folder, manifest, args.repeats, args.iters))
        return
    if not args.no_torch:
        import torch  # noqa: F401  (before TensorFlow: torchvision after it crashes)
        import torchvision  # noqa: F401
    shape = tuple(manifest["input"]["shape"][1:])
    with tempfile.TemporaryDirectory() as tmp:
        runs = runners(folder, manifest, args.threads)
        mean, std = (0.0,), (1.0,)
        if not args.no_torch:
            model = Path(args.model or manifest["source"]["model_file"])
            path, mean, std = torch_onnx(model, Path(tmp))
            runs[TORCH] = _onnx_runner(path, args.threads)[0], True
            print(_torch_check(runs, shape, mean, std))
        figures = measure(runs, shape, batches, args.repeats, args.iters, mean, std)
        print(f"machine: {describe()}; {args.threads} threads per runtime")
        print(f"export: {folder} ({manifest['source'].get('model_config', {}).get('arch', '?')}"
              f", input {list(shape)}); median of {args.repeats} rounds of {args.iters} calls")
        print(table(figures, batches))
        if args.profile:
            _print_profiles(folder, manifest, Path(tmp), shape, max(batches), args.threads,
                            with_torch=not args.no_torch)


def _print_profiles(folder, manifest, tmp, shape, batch, threads, with_torch) -> None:
    files = [(f"onnx {a['variant']}", folder / a["path"], a.get("layout") == "NCHW")
             for a in manifest["artifacts"] if a["format"] == "onnx"]
    if with_torch:
        files.append((TORCH, tmp / "torch.onnx", True))
    for label, path, nchw in files:
        ops = op_profile(path, shape, batch, threads, nchw)
        total = sum(ops.values())
        print(f"\n{label} at batch {batch}: ONNX Runtime profile, ms per run by op type")
        for op, ms in ops.items():
            print(f"  {op:28s} {ms:9.3f}  {100 * ms / total:5.1f}%")


if __name__ == "__main__":
    sys.exit(main())
