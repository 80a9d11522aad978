"""Mobile figures of an export: each TFLite file in the LiteRT interpreter (XNNPACK, the CPU
path of Android and iOS) at 1 and 2 threads and in MediaPipe's ImageClassifier, beside ONNX
Runtime's float32 (and int8) file: milliseconds per image at batch 1 and size in MB.

    python -m benchmarks.deploy --export artifacts/ --mobile

Every runner takes what an app hands it: the TFLite files their own input (RGB, float32 raw
pixels; uint8 for the full-integer int8 file), MediaPipe an RGB uint8 picture of the model's
size (its time includes its preprocessing and the labels of the result; its thread count is
its own), ONNX Runtime the export's input. Same timing discipline as benchmarks.deploy: every
runner in turn within a round, the median over rounds of the mean time per call.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

THREADS = (1, 2)


def tflite_feed(entry: dict):
    """A function turning raw-pixel NHWC float32 images into what the TFLite file of ``entry``
    (a manifest artifact) takes: three channels, float32 or its integer type."""
    dtype = np.dtype(entry["input"]["dtype"])
    channels = entry["input"]["shape"][-1]

    def feed(x):
        if x.shape[-1] != channels:
            x = np.repeat(x, channels, axis=-1)
        if dtype.kind != "f":
            q = entry["input"].get("quantization", {"scale": 1.0, "zero_point": 0})
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / q["scale"] + q["zero_point"]), info.min, info.max)
        return np.ascontiguousarray(x.astype(dtype))

    return feed


def _mediapipe(path):
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    classifier = vision.ImageClassifier.create_from_options(vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(path)), max_results=-1))

    def run(x):
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=x)
        return classifier.classify(image)

    return run, classifier


def _onnx(path, threads: int):
    """(ONNX Runtime's logits of an NHWC batch, the feed maker) for one ONNX file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    nchw = session.get_modelmeta().custom_metadata_map.get("keras_resnet.input_layout") == "NCHW"
    make = (lambda x: np.ascontiguousarray(x.transpose(0, 3, 1, 2))) if nchw else (lambda x: x)
    return (lambda x: session.run(["logits"], {name: x})[0]), make


def runners(export_dir: Path, manifest: dict, with_mediapipe: bool = True):
    """({(runtime, variant, threads): (callable on one prepared input, that input's maker)},
    the MediaPipe classifiers to close when done)."""
    from export.mediapipe_check import pixels
    from export.tflite_format import interpreter

    out, keep = {}, []
    for entry in manifest["artifacts"]:
        path, variant = export_dir / entry["path"], entry["variant"]
        if entry["format"] == "tflite":
            for threads in THREADS:
                runner = interpreter(path, num_threads=threads).get_signature_runner()
                out[("LiteRT XNNPACK", variant, threads)] = (
                    lambda x, r=runner: r(image=x), tflite_feed(entry))
            if with_mediapipe and entry.get("metadata", {}).get("written"):
                run, classifier = _mediapipe(path)
                keep.append(classifier)
                out[("MediaPipe ImageClassifier", variant, "-")] = (
                    run, lambda x: np.ascontiguousarray(pixels(x)[0]))
        elif entry["format"] == "onnx":
            for threads in THREADS:
                out[("ONNX Runtime", variant, threads)] = _onnx(path, threads)
    return out, keep


def measure(runs: dict, shape, repeats: int, iters: int) -> dict:
    """{key: median ms per image} at batch 1, every runner in turn within each round."""
    x = np.random.default_rng(0).uniform(0, 255, (1, *shape)).astype(np.float32)
    feeds = {key: make(x) for key, (_, make) in runs.items()}
    for key, (fn, _) in runs.items():
        fn(feeds[key])
        fn(feeds[key])
    times = {key: [] for key in runs}
    for _ in range(repeats):
        for key, (fn, _) in runs.items():
            start = time.perf_counter()
            for _ in range(iters):
                fn(feeds[key])
            times[key].append((time.perf_counter() - start) * 1e3 / iters)
    return {key: statistics.median(values) for key, values in times.items()}


def table(figures: dict, manifest: dict) -> str:
    sizes = {(a["format"], a["variant"]): a["size_bytes"] for a in manifest["artifacts"]}
    fmt = {"ONNX Runtime": "onnx"}
    lines = ["| runtime | variant | threads | ms per image | images/s | size MB |",
             "|---|---|---|---|---|---|"]
    for (runtime, variant, threads), ms in figures.items():
        size = sizes[(fmt.get(runtime, "tflite"), variant)] / 2**20  # as the export table
        lines.append(f"| {runtime} | {variant} | {threads} | {ms:.2f} | {1e3 / ms:.1f} | "
                     f"{size:.2f} |")
    return "\n".join(lines)


def report(export_dir: Path, manifest: dict, repeats: int, iters: int) -> str:
    """The mobile table of an export (see the module)."""
    shape = tuple(manifest["input"]["shape"][1:])
    runs, keep = runners(export_dir, manifest)
    try:
        figures = measure(runs, shape, repeats, iters)
    finally:
        for classifier in keep:
            classifier.close()
    return table(figures, manifest)
