"""Everything ``python -m export`` does, as one function: write, verify, describe, publish."""

from __future__ import annotations

import datetime
import json
import os
import shutil

import numpy as np

from keras_resnet._keras_compat import flatten_layers

from export import mediapipe_check, onnx_format, savedmodel_format, tflite_format
from export.artifact import Artifact, WriterOptions
from export.checks import DEFAULT_OPSET, describe_path, image_array, library_versions, parse_list
from export.model_io import ExportError, collecting_new_objects_only, release_memory
from export.outdir import (
    MANIFEST,
    check_out_dir,
    disk_full_error,
    is_disk_full,
    publish,
    staging_dir,
)
from export.source import INPUT_NAME, OUTPUT_NAMES, ExportSource
from export.verification import (
    DEFAULT_BATCH_SIZES,
    batch1_latency_ms,
    mediapipe_rule,
    reference_logits,
    verify,
)

# Written in this order; each module follows the protocol in export.artifact.
WRITERS = {m.FORMAT: m for m in (savedmodel_format, onnx_format, tflite_format)}
FORMATS = tuple(WRITERS)
MANIFEST_VERSION = 1
RANDOM_VERIFY_IMAGES = 32


def export_all(model, out, formats=FORMATS, tflite_variants=tflite_format.VARIANTS,
               images=None, labels=None, calibration_images=None, class_names=None,
               opset: int = DEFAULT_OPSET, int8_io: str = "uint8", overwrite: bool = False,
               batch_sizes=DEFAULT_BATCH_SIZES, latency_runs: int = 20,
               data_description: str | None = None, calibration_description: str | None = None,
               source: dict | None = None, log=print, onnx_variants=("float32",),
               onnx_layout: str = "nhwc") -> dict:
    """Writes every requested artifact into ``out``, verifies each, writes ``manifest.json``.

    Everything is written into a temporary folder beside ``out`` (inside it when it is a mount
    point) and renamed into place only when all artifacts were written and checked; an error
    leaves ``out`` as it was. ``overwrite`` replaces only a previous export (see
    export.outdir.check_out_dir for the folders that are refused). Artifacts
    that fail their check are still published (with ``"passed": false`` in the manifest);
    the returned manifest's ``passed`` says whether all passed.

    Args:
        model: a Keras model, or an ``ExportSource`` (which then holds the class names and
            ``source``, the manifest's account of where the model came from).
        images / labels: verification data, raw pixels (N, H, W, C); random images when None.
        calibration_images: training images for the int8 variants (TFLite and ONNX).
        onnx_variants: "float32" and/or "int8" (static QDQ, export.onnx_format.QUANTIZATION).
        onnx_layout: "nhwc" (the input of every artifact) or "nchw" for the ONNX files.
    """
    with collecting_new_objects_only():
        return _export_all(model, out, formats, tflite_variants, images, labels,
                           calibration_images, class_names, opset, int8_io, overwrite,
                           batch_sizes, latency_runs, data_description, calibration_description,
                           source, log, onnx_variants, onnx_layout)


def _export_all(model, out, formats, tflite_variants, images, labels, calibration_images,
                class_names, opset, int8_io, overwrite, batch_sizes, latency_runs,
                data_description, calibration_description, source, log, onnx_variants,
                onnx_layout) -> dict:
    if isinstance(model, ExportSource):
        export_source = model
        if class_names is not None or source is not None:
            raise ExportError("class_names and source belong to the ExportSource given as model")
    else:
        export_source = ExportSource(model, class_names, source)
    shape = export_source.shape
    plan, options = _checked_plan(formats, {"tflite": tflite_variants, "onnx": onnx_variants},
                                  shape, opset, int8_io, calibration_images,
                                  calibration_description, onnx_layout, log)
    images, labels, data_description = _verification_data(images, labels, shape,
                                                          data_description, log)
    out = check_out_dir(out, overwrite, log=log)

    reference = export_source.reference
    ref_logits = reference_logits(reference, images)
    ref_latency = batch1_latency_ms(_keras_fn(reference), images[:1], latency_runs)
    release_memory()

    tmp = staging_dir(out)
    try:
        entries = [_write_and_verify(export_source, tmp, fmt, variant, options, ref_logits,
                                     images, labels, batch_sizes, latency_runs, log)
                   for fmt, variant in plan]
        manifest = _manifest(export_source, entries, images=images, labels=labels,
                             ref_logits=ref_logits, ref_latency=ref_latency,
                             data_description=data_description, batch_sizes=batch_sizes)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        publish(tmp, out)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(err):
            raise disk_full_error(out, _bytes_needed(reference, plan)) from None
        raise
    return manifest


# Bytes per parameter of each variant's file: float32 weights, float16, int8.
_BYTES_PER_PARAMETER = {"float32": 4, "float16": 2, "dynamic_int8": 1, "int8": 1}


def _bytes_needed(model, plan) -> int:
    """About the disk space the artifacts of ``plan`` take at the export's peak: their
    weights, plus the float32 SavedModel the TFLite converter reads while it converts."""
    params = model.count_params()
    per_param = sum(_BYTES_PER_PARAMETER.get(variant, 4) for _, variant in plan)
    if any(fmt == tflite_format.FORMAT for fmt, _ in plan):
        per_param += 4
    return int(params * per_param)


def _checked_plan(formats, variants, shape, opset, int8_io, calibration_images,
                  calibration_description, onnx_layout, log) -> tuple[list, WriterOptions]:
    """The (format, variant) pairs to write and the writers' options, every one checked."""
    # Checked even where no artifact uses them: a wrong argument is an error, not ignored.
    tflite_format.check_io_dtype(int8_io)
    if calibration_images is not None:
        calibration_images = image_array(calibration_images, shape, "calibration images")
    options = WriterOptions(opset=opset, int8_io=int8_io,
                            calibration_images=calibration_images,
                            calibration_description=calibration_description,
                            onnx_layout=onnx_layout, log=log)
    plan = _plan(formats, variants)
    for fmt, variant in plan:
        WRITERS[fmt].check(variant, options, shape)
    return plan, options


def _write_and_verify(source: ExportSource, tmp, fmt, variant, options, ref_logits, images, labels,
                      batch_sizes, latency_runs, log) -> dict:
    """One artifact written into ``tmp`` and run in its runtime: its manifest entry."""
    log(f"writing {fmt} {variant}")
    artifact = WRITERS[fmt].write_artifact(source, tmp, variant, options)
    log(f"verifying {fmt} {variant}: {artifact.path.relative_to(tmp)}")
    result = verify(artifact.path, ref_logits, images, labels, kind=fmt,
                    variant=variant, batch_sizes=batch_sizes, latency_runs=latency_runs)
    if fmt == tflite_format.FORMAT:
        _run_in_mediapipe(source, artifact, images, ref_logits, result, log)
    entry = _entry(artifact, result, tmp)
    if not result["passed"]:
        log(f"FAILED {fmt} {variant}: " + "; ".join(result["failures"]))
    # One artifact's converter and runtime at a time: what they left is freed before the next
    # starts: without this, the peaks of the formats add up.
    release_memory()
    return entry


def _run_in_mediapipe(source: ExportSource, artifact: Artifact, images, ref_logits, result,
                      log) -> None:
    """Classifies the verification images with MediaPipe's ImageClassifier from the file alone
    (where mediapipe is installed and the file has its metadata) into ``result["mediapipe"]``,
    its failures joining the artifact's."""
    reason = mediapipe_check.unavailable() or (
        None if artifact.info.get("metadata", {}).get("written") else "the file has no metadata")
    if reason:
        result["mediapipe"] = {"skipped": reason}
        return
    log(f"classifying with MediaPipe: {artifact.path.name}")
    rounded = mediapipe_check.pixels(images)[..., : source.shape[2]].astype(np.float32)
    if not np.array_equal(rounded, images):  # e.g. random images: Keras sees what MediaPipe sees
        ref_logits = reference_logits(source.reference, rounded)
    scores = mediapipe_check.classify(artifact.path, images, source.num_classes)
    check = mediapipe_rule(scores, ref_logits, artifact.variant, result.get("decisive_margin"))
    result["mediapipe"] = check
    result["failures"] += check["failures"]
    result["passed"] = not result["failures"]


def _manifest(source: ExportSource, entries, *, images, labels, ref_logits, ref_latency,
              data_description, batch_sizes) -> dict:
    rebuilt = source.rebuilt
    class_names = source.class_names
    return {
        "manifest_version": MANIFEST_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {
            **source.provenance,
            "model_name": source.model.name,
            "dtype_policies": sorted({getattr(l.dtype_policy, "name", "float32")
                                      for l in flatten_layers(source.model)}),
            "rebuilt_in_float32": rebuilt,
        },
        "input": {
            "name": INPUT_NAME,
            "shape": [None, *source.shape],
            "dtype": "float32",
            "layout": "NHWC",
            "range": "raw pixels 0..255 (normalization is inside the model)",
        },
        "outputs": list(OUTPUT_NAMES),
        "class_names": list(class_names) if class_names is not None else
        [str(i) for i in range(ref_logits.shape[1])],
        "normalization": source.normalization,
        "verification": {
            "reference": "float32 Keras model" + (" (rebuilt from mixed precision)"
                                                  if rebuilt else ""),
            "data": data_description,
            "n": int(len(images)),
            "labels": labels is not None,
            "batch_sizes": sorted(set(batch_sizes)),
            "reference_latency_ms_batch1_median": ref_latency,
            "reference_accuracy": (float(np.mean(np.argmax(ref_logits, 1) == labels))
                                   if labels is not None else None),
            "threads": os.cpu_count(),
        },
        "artifacts": entries,
        "passed": all(a["passed"] for a in entries),
        "versions": library_versions("onnx", "tf2onnx", "onnxruntime", "ai-edge-litert",
                                     "mediapipe"),
    }


# How the variant lists are named in errors.
_VARIANT_NAMES = {"tflite": "TFLite variant", "onnx": "ONNX variant"}


def _plan(formats, variants: dict) -> list[tuple[str, str]]:
    """(format, variant) of every artifact to write, in writing order; ``variants`` holds the
    chosen variants of the formats that have several."""
    formats = parse_list(formats, FORMATS, "format")
    plan = []
    for fmt in FORMATS:
        if fmt in formats:
            chosen = WRITERS[fmt].VARIANTS
            if fmt in variants:
                chosen = parse_list(variants[fmt], chosen, _VARIANT_NAMES[fmt])
            plan += [(fmt, variant) for variant in chosen]
    return plan


def _verification_data(images, labels, shape, description, log):
    """(images, labels or None, description): the given arrays checked, or random images."""
    if labels is not None and images is None:
        raise ExportError("labels were given without images")
    if images is None:
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, (RANDOM_VERIFY_IMAGES, *shape)).astype(np.float32)
        description = (
            f"{RANDOM_VERIFY_IMAGES} random uniform 0..255 images (no data set or inputs given;"
            " agreement on noise says little about quantized accuracy)"
        )
        log(f"note: verifying on {description}")
        return images, None, description
    images = image_array(images, shape, "verification images")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if len(labels) != len(images):
            raise ExportError(f"{len(labels)} labels for {len(images)} verification images")
    return images, labels, description or f"{len(images)} given images"


def _entry(artifact: Artifact, result: dict, root) -> dict:
    """The manifest's record of one verified artifact."""
    size, sha = describe_path(artifact.path)
    ops = result.pop("ops", None)
    return {
        "format": artifact.format,
        "variant": artifact.variant,
        "path": artifact.path.relative_to(root).as_posix(),
        "size_bytes": size,
        "sha256": sha,
        "input": result.pop("input"),
        "outputs": result.pop("outputs"),
        **artifact.info,
        **({"ops": ops} if ops is not None else {}),
        "verification": result,
        "passed": result["passed"],
    }


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
        name = (a["format"] if a["format"] != "tflite" and a["variant"] == "float32"
                else f"{a['format']} {a['variant']}")
        row = [
            name,
            a["path"],
            _fmt_size(a["size_bytes"]),
            f"{r['max_abs_diff']:.2e}",
            f"{r['tolerance']:.2e}" if "tolerance" in r else
            f"rel {r['relative_logit_error']:.3f}≤{r['max_relative_logit_error']}",
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
