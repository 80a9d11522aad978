"""Everything ``python -m export`` does, as one function: write, verify, describe, publish."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from keras_resnet._provenance import library_versions, sha256_file
from export.model_io import (
    ExportError,
    float32_model,
    image_array,
    input_spec,
    is_float32,
    normalization,
    num_classes,
    release_memory,
)
from export.onnx_format import DEFAULT_OPSET, check_opset, onnx
from export.outdir import MANIFEST, check_out_dir, publish, staging_dir
from export.savedmodel_format import INPUT_NAME, OUTPUT_NAMES, saved_model
from export.tflite_format import IO_DTYPES, VARIANTS, op_report, tflite
from export.verification import (
    DEFAULT_BATCH_SIZES,
    batch1_latency_ms,
    reference_logits,
    verify,
)

FORMATS = ("saved_model", "tflite", "onnx")
MANIFEST_VERSION = 1
RANDOM_VERIFY_IMAGES = 32


def parse_list(value, allowed, what):
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    items = [v for v in items if v]
    unknown = [v for v in items if v not in allowed]
    if unknown or not items:
        raise ExportError(
            f"Unknown {what} {unknown or value!r}; expected a comma-separated subset of "
            f"{list(allowed)}"
        )
    return list(dict.fromkeys(items))


def describe_path(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256). For a folder: total size, and the sha256 over its sorted
    ``relative/path\\0<sha256 of file>\\n`` lines."""
    if path.is_file():
        return path.stat().st_size, sha256_file(path)
    h, size = hashlib.sha256(), 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        size += f.stat().st_size
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return size, h.hexdigest()


def export_all(
    model,
    out,
    formats=FORMATS,
    tflite_variants=VARIANTS,
    images=None,
    labels=None,
    calibration_images=None,
    class_names=None,
    opset: int = DEFAULT_OPSET,
    int8_io: str = "float32",
    overwrite: bool = False,
    batch_sizes=DEFAULT_BATCH_SIZES,
    latency_runs: int = 20,
    data_description: str | None = None,
    calibration_description: str | None = None,
    source: dict | None = None,
    log=print,
) -> dict:
    """Writes every requested artifact into ``out``, verifies each, writes ``manifest.json``.

    Everything is written into a temporary folder beside ``out`` (inside it when it is a mount
    point) and renamed into place only when all artifacts were written and checked; an error
    leaves ``out`` as it was. ``overwrite`` replaces only a previous export (see
    export.outdir.check_out_dir for the folders that are refused). Artifacts
    that fail their check are still published (with ``"passed": false`` in the manifest);
    the returned manifest's ``passed`` says whether all passed.

    Args:
        images / labels: verification data, raw pixels (N, H, W, C); random images when None.
        calibration_images: training images for the full-integer int8 variant.
    """
    formats = parse_list(formats, FORMATS, "format")
    variants = parse_list(tflite_variants, VARIANTS, "TFLite variant") if "tflite" in formats else []
    if int8_io not in IO_DTYPES:
        raise ExportError(f"Unknown int8 I/O type {int8_io!r}; expected one of {list(IO_DTYPES)}")
    if "onnx" in formats:
        check_opset(opset)
    out = check_out_dir(out, overwrite, log=log)
    shape = input_spec(model)
    classes = num_classes(model)
    if images is not None:
        images = image_array(images, shape, "verification images")
    if calibration_images is not None:
        calibration_images = image_array(calibration_images, shape, "calibration images")
    if "int8" in variants and calibration_images is None:
        raise ExportError(
            "the full-integer 'int8' TFLite variant needs calibration data from the training "
            "set and none was given (CLI: a run whose config.json names its dataset, "
            "--dataset NAME, or --calibration FILE.npy); or drop it with --tflite-variants "
            "float32,float16,dynamic_int8"
        )
    if class_names is not None and len(class_names) != classes:
        raise ExportError(f"{len(class_names)} class names for a {classes}-class model")
    if labels is not None:
        if images is None:
            raise ExportError("labels were given without images")
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if len(labels) != len(images):
            raise ExportError(f"{len(labels)} labels for {len(images)} verification images")
    if images is None:
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, (RANDOM_VERIFY_IMAGES, *shape)).astype(np.float32)
        data_description = (
            f"{RANDOM_VERIFY_IMAGES} random uniform 0..255 images (no data set or inputs given;"
            " agreement on noise says little about quantized accuracy)"
        )
        log(f"note: verifying on {data_description}")

    rebuilt = not is_float32(model)
    reference = float32_model(model)
    ref_logits = reference_logits(reference, images)
    ref_latency = batch1_latency_ms(_keras_fn(reference), images[:1], latency_runs)
    release_memory()

    tmp = staging_dir(out)
    try:
        artifacts = []

        def add(fmt, variant, path, extra=None):
            log(f"verifying {fmt} {variant}: {path.relative_to(tmp)}")
            result = verify(path, ref_logits, images, labels, kind=fmt, variant=variant,
                            batch_sizes=batch_sizes, latency_runs=latency_runs)
            size, sha = describe_path(path)
            entry = {
                "format": fmt,
                "variant": variant,
                "path": path.relative_to(tmp).as_posix(),
                "size_bytes": size,
                "sha256": sha,
                "input": result.pop("input"),
                "outputs": result.pop("outputs"),
                **(extra or {}),
                "verification": result,
                "passed": result["passed"],
            }
            ops = (extra or {}).get("ops")
            if ops:  # TFLite: builtin ops only; full-integer int8 computes in int8 only
                if ops["non_builtin"]:
                    result["failures"].append(f"non-builtin ops {ops['non_builtin']}")
                if variant == "int8" and ops["float_compute_ops"]:
                    result["failures"].append(
                        f"float computation in the int8 model: {ops['float_compute_ops']}")
                result["passed"] = entry["passed"] = not result["failures"]
            artifacts.append(entry)
            if not result["passed"]:
                log(f"FAILED {fmt} {variant}: " + "; ".join(result["failures"]))
            # One artifact's converter and runtime at a time: what they left is freed before
            # the next starts: without this, the peaks of the formats add up.
            release_memory()

        sm_dir = None
        if "saved_model" in formats:
            log("writing SavedModel")
            sm_dir = saved_model(reference, tmp / "saved_model", version=1)
            add("saved_model", "float32", sm_dir,
                {"signature": "serving_default", "tf_serving_base_path": "saved_model"})
        if "onnx" in formats:
            log(f"writing ONNX (opset {opset})")
            path = onnx(reference, tmp / "model.onnx", opset=opset)
            add("onnx", "float32", path, {"opset": opset})
        for variant in variants:
            log(f"writing TFLite {variant}")
            path = tmp / "tflite" / f"model_{variant}.tflite"
            tflite(reference, path, variant, calibration_images,
                   io_dtype=int8_io if variant == "int8" else "float32")
            extra = {"ops": op_report(path)}
            if variant == "int8":
                extra["calibration"] = {
                    "images": int(len(calibration_images)),
                    "source": calibration_description or "given calibration images",
                }
            add("tflite", variant, path, extra)

        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": {
                **(source or {}),
                "model_name": model.name,
                "dtype_policies": sorted({getattr(l.dtype_policy, "name", "float32")
                                          for l in model._flatten_layers()}),
                "rebuilt_in_float32": rebuilt,
            },
            "input": {
                "name": INPUT_NAME,
                "shape": [None, *shape],
                "dtype": "float32",
                "layout": "NHWC",
                "range": "raw pixels 0..255 (normalization is inside the model)",
            },
            "outputs": list(OUTPUT_NAMES),
            "class_names": list(class_names) if class_names is not None else
            [str(i) for i in range(classes)],
            "normalization": normalization(reference),
            "verification": {
                "reference": "float32 Keras model" + (" (rebuilt from mixed precision)"
                                                      if rebuilt else ""),
                "data": data_description or f"{len(images)} given images",
                "n": int(len(images)),
                "labels": labels is not None,
                "batch_sizes": sorted(set(batch_sizes)),
                "reference_latency_ms_batch1_median": ref_latency,
                "reference_accuracy": (float(np.mean(np.argmax(ref_logits, 1) == labels))
                                       if labels is not None else None),
                "threads": os.cpu_count(),
            },
            "artifacts": artifacts,
            "passed": all(a["passed"] for a in artifacts),
            "versions": library_versions("onnx", "tf2onnx", "onnxruntime", "ai-edge-litert"),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _keras_fn(model):
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False))
    return lambda x: fn(tf.constant(x)).numpy()


def _fmt_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def format_table(manifest: dict) -> str:
    """The summary printed at the end of an export."""
    has_acc = manifest["verification"]["labels"]
    head = ["format", "file", "size", "max|Δlogit|", "tolerance", "top-1 agree"]
    if has_acc:
        head.append("accuracy")
    head += ["batch-1 ms", "status"]
    rows = []
    v = manifest["verification"]
    ref_row = ["keras (reference)", "-", "-", "0", "-", "1.0000"]
    if has_acc:
        ref_row.append(f"{v['reference_accuracy']:.4f}")
    lat = v["reference_latency_ms_batch1_median"]
    rows.append(ref_row + [f"{lat:.2f}" if lat is not None else "-", "-"])
    for a in manifest["artifacts"]:
        r = a["verification"]
        name = a["format"] if a["format"] != "tflite" else f"tflite {a['variant']}"
        row = [
            name,
            a["path"],
            _fmt_size(a["size_bytes"]),
            f"{r['max_abs_diff']:.2e}",
            f"{r['tolerance']:.2e}" if "tolerance" in r else f"agree≥{r['min_agreement']}",
            f"{r['top1_agreement']:.4f}",
        ]
        if has_acc:
            row.append(f"{r['accuracy']:.4f}")
        lat = r["latency_ms_batch1_median"]
        row += [f"{lat:.2f}" if lat is not None else "-", "ok" if a["passed"] else "FAILED"]
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    text = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    text.append(
        f"verified on {v['data']}; n={v['n']}, batch sizes {v['batch_sizes']}, "
        f"{v['threads']} CPU threads"
    )
    for a in manifest["artifacts"]:
        for failure in a["verification"]["failures"]:
            text.append(f"FAILED {a['format']} {a['variant']}: {failure}")
    return "\n".join(text)
