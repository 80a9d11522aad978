"""One verifier for every artifact: load it fresh from disk, run it, compare with Keras.

Pass criteria
-------------
* float32 artifacts (SavedModel, ONNX, TFLite float32) must reproduce the float32 Keras
  logits to float32 round-off: ``max|Δlogit| <= FLOAT_ATOL + FLOAT_RTOL * max|logit|``, at
  batch 1 and at the larger batch size.
* float16 and int8 artifacts cannot meet that; they are judged by

  - their relative logit error ``‖out - ref‖ / ‖ref‖`` (Frobenius norms over every image), which
    a wrong scale, noise or a broken calibration inflates whatever the model's margins;
  - top-1 agreement with Keras on the *decisive* images only: those whose Keras top-1 margin
    exceeds twice the artifact's measured error (the 90th percentile over the images of
    ``max|Δlogit|``). An error of that size cannot flip an image with a larger margin, so a
    correct conversion agrees there, while on near-tied logits (an untrained model, noise
    inputs) it may flip any number of images without anything being wrong;
  - when labels are known, the accuracy they lose:

  ============  ===================  ===============  ==================
  variant       max relative error   min agreement    max accuracy drop
  ============  ===================  ===============  ==================
  float16       0.01                 0.99             0.01
  dynamic_int8  0.25                 0.95             0.02
  int8          0.25                 0.95             0.02
  ============  ===================  ===============  ==================

  (int8: the full-integer TFLite file and the statically quantized ONNX file alike.)

* A TFLite file may hold TFLite builtin ops only (``ai_edge_litert`` runs nothing else), and the
  full-integer int8 variant computes in int8 only: no op but QUANTIZE/DEQUANTIZE touches a float
  tensor.

  Why these figures: float16 weights perturb logits by ~1e-3 relative, so only near-tied
  examples may flip; post-training int8 quantization of ResNets typically costs well under one
  point of top-1 accuracy (per-channel weights, calibrated activations). Measured relative
  errors: float16 under 5e-4, int8 and dynamic_int8 0.3-1.5% (trained and untrained
  ResNet-18s); the bounds leave an order of magnitude for deeper models, while a scale off by
  a quarter or noise a quarter the size of the logits fails. The thresholds leave
  room for the sampling noise of a verification set of a few hundred images (the binomial
  standard error of a 98% agreement at n=200 is 1 point) while a broken conversion or bad
  calibration, which drops agreement towards chance, fails clearly.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np

from export.model_io import ExportError, release_memory
from export.source import INPUT_NAME, SIGNATURE, ExportSource

FLOAT_ATOL = 1e-4
FLOAT_RTOL = 1e-5
MIN_AGREEMENT = {"float16": 0.99, "dynamic_int8": 0.95, "int8": 0.95}
MAX_RELATIVE_ERROR = {"float16": 0.01, "dynamic_int8": 0.25, "int8": 0.25}
# The artifact's measured error: a high percentile of the per-image max|Δlogit| rather than the
# maximum, so that one image it breaks does not widen the margin that makes images decisive.
ERROR_PERCENTILE = 90
MAX_ACCURACY_DROP = {"float16": 0.01, "dynamic_int8": 0.02, "int8": 0.02}
DEFAULT_BATCH_SIZES = (1, 8)
# Examples run one at a time for the batch-1 comparison (all of them would be slow on a CPU).
BATCH1_EXAMPLES = 8
# Batch size of the Keras reference run. Small, because TensorFlow's oneDNN CPU allocator keeps
# the largest working set it ever had for the rest of the process, a floor under every later
# conversion that grows with this batch while the logits stay identical (batch 1 takes another
# oneDNN path and differs in the last bits); benchmarks.deploy.memory shows the export's peak.
REFERENCE_BATCH_SIZE = 2


def artifact_kind(path) -> str:
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "saved_model"
        raise ExportError(f"{str(path)!r} is a folder without saved_model.pb")
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix == ".tflite":
        return "tflite"
    raise ExportError(f"cannot tell the format of {str(path)!r} (.onnx, .tflite or SavedModel)")


class _SavedModelRunner:
    def __init__(self, path):
        import tensorflow as tf

        self._tf = tf
        # Keep the loaded object referenced while its functions run.
        self._loaded = tf.saved_model.load(str(path))
        self._fn = self._loaded.signatures[SIGNATURE]
        spec = self._fn.structured_input_signature[1][INPUT_NAME]
        self.input = {"name": INPUT_NAME, "shape": list(spec.shape), "dtype": spec.dtype.name}
        self.outputs = sorted(self._fn.structured_outputs)
        self.precision = "float32"

    def __call__(self, images):
        return self._fn(**{INPUT_NAME: self._tf.constant(images)})["logits"].numpy()


class _OnnxRunner:
    """Takes NHWC images like every runner; a file whose metadata says its input is NCHW
    (``python -m export --onnx-layout nchw``) gets them transposed."""

    def __init__(self, path):
        import onnxruntime as ort

        from export.onnx_format import LAYOUT_KEY

        self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inp = self._session.get_inputs()[0]
        shape = [d if isinstance(d, int) else None for d in inp.shape]
        meta = self._session.get_modelmeta().custom_metadata_map
        self._nchw = meta.get(LAYOUT_KEY) == "NCHW"
        self.input = {"name": inp.name, "shape": shape, "dtype": "float32",
                      "layout": "NCHW" if self._nchw else "NHWC",
                      "dynamic_dims": [d for d in inp.shape if not isinstance(d, int)]}
        self.outputs = [o.name for o in self._session.get_outputs()]
        # What export.onnx_format.quantize writes: QDQ pairs around int8 tensors.
        self.precision = ("int8" if any(n.op_type == "DequantizeLinear" for n in
                                        _onnx_nodes(path)) else "float32")

    def __call__(self, images):
        if self._nchw:
            images = np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)))
        return self._session.run(["logits"], {self.input["name"]: images})[0]


def _onnx_nodes(path):
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.node


class _TfliteRunner:
    def __init__(self, path):
        from export.tflite_format import interpreter, op_report

        self._interp = interpreter(path, num_threads=os.cpu_count())
        self._runner = self._interp.get_signature_runner(SIGNATURE)
        inp = self._runner.get_input_details()[INPUT_NAME]
        self._in_dtype = np.dtype(inp["dtype"])
        self._in_q = inp["quantization"]
        self._out = self._runner.get_output_details()
        self.input = {
            "name": INPUT_NAME,
            "shape": [None if d < 0 else int(d) for d in inp["shape_signature"]],
            "dtype": self._in_dtype.name,
        }
        if self._in_dtype.kind != "f":
            scale, zero = self._in_q
            self.input["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
        self.outputs = sorted(self._out)
        self.ops = op_report(path)
        dtypes = {np.dtype(t["dtype"]).name for t in self._interp.get_tensor_details()}
        if "int8" in dtypes:
            self.precision = "dynamic_int8" if self.ops["float_compute_ops"] else "int8"
        else:
            self.precision = "float16" if "float16" in dtypes else "float32"

    def __call__(self, images):
        x = images
        if x.shape[-1] == 1 and self.input["shape"][-1] == 3:
            # A grey model's TFLite file takes RGB (for MediaPipe) and converts it back.
            x = np.repeat(x, 3, axis=-1)
        if self._in_dtype.kind != "f":
            scale, zero = self._in_q
            info = np.iinfo(self._in_dtype)
            x = np.clip(np.round(images / scale + zero), info.min, info.max).astype(self._in_dtype)
        logits = self._runner(**{INPUT_NAME: x})["logits"]
        if np.dtype(logits.dtype).kind != "f":
            scale, zero = self._out["logits"]["quantization"]
            logits = (logits.astype(np.float32) - zero) * scale
        return np.asarray(logits, dtype=np.float32)


def load_runner(path, kind: str | None = None):
    """A callable ``images (N,H,W,C) float32 -> logits (N, classes)`` for an artifact."""
    kind = kind or artifact_kind(path)
    if not Path(path).exists():
        raise ExportError(f"artifact {str(path)!r} does not exist")
    runners = {"saved_model": _SavedModelRunner, "onnx": _OnnxRunner, "tflite": _TfliteRunner}
    if kind not in runners:
        raise ExportError(f"Unknown artifact kind {kind!r}; expected one of {sorted(runners)}")
    return runners[kind](path)


def reference_logits(model, images, batch_size: int = REFERENCE_BATCH_SIZE) -> np.ndarray:
    """The Keras model's float32 logits, ``batch_size`` images at a time (eager)."""
    out = [
        np.asarray(model(images[i : i + batch_size], training=False), dtype=np.float32)
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out)


def _run_batched(runner, images, batch_size):
    return np.concatenate(
        [runner(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )


def batch1_latency_ms(fn, image, runs: int = 20, warmup: int = 2) -> float | None:
    if runs <= 0:
        return None
    for _ in range(warmup):
        fn(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(image)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def verify(
    artifact,
    reference,
    images,
    labels=None,
    kind: str | None = None,
    variant: str | None = None,
    batch_sizes=DEFAULT_BATCH_SIZES,
    latency_runs: int = 20,
) -> dict:
    """Runs ``artifact`` from disk on ``images`` and compares it with ``reference``.

    Args:
        artifact: a SavedModel version folder, ``.onnx`` or ``.tflite`` file.
        reference: the export's ExportSource or float32 Keras model, or its logits on
            ``images`` (N, classes).
        images: (N, H, W, C) float32 raw pixels.
        labels: optional (N,) int labels; adds accuracy and the accuracy-drop check.
        variant: "float32", "float16", "dynamic_int8" or "int8"; inferred from the tensor
            types when None (a TFLite file with int8 tensors is "int8" when only int8 ops
            compute, else "dynamic_int8").
        batch_sizes: the artifact is run one example at a time (batch 1) and in batches of
            each larger size here; all results must pass.

    Returns a dict of figures with ``passed`` and ``failures`` (one sentence each, with the
    numbers), the artifact's ``input`` and ``outputs`` and, for TFLite, its ``ops``
    (``export.op_report``).
    """
    images, ref, labels = _checked_inputs(images, reference, labels)
    runner = load_runner(artifact, kind)
    variant = variant or runner.precision
    outputs = _run(runner, images, batch_sizes)
    for b, out in outputs.items():
        if out.shape != ref[: len(out)].shape:
            raise ExportError(f"{artifact}: output shape {out.shape} at batch {b}, expected "
                              f"{ref[: len(out)].shape}")
    result = {"variant": variant, "n": int(len(images)), **_figures(outputs, ref, labels)}
    if variant != "float32":
        result.update(_quantized_figures(outputs[max(outputs)], ref))
    ops = getattr(runner, "ops", None)
    if ops is not None:
        result["ops"] = ops
    failures = []
    for rule in (_logit_rule, _batch1_rule, _accuracy_rule, _op_rule):
        failures += rule(result, variant)
    result["latency_ms_batch1_median"] = batch1_latency_ms(runner, images[:1], latency_runs)
    result["latency_runs"] = latency_runs
    result["passed"] = not failures
    result["failures"] = failures
    result["input"] = runner.input
    result["outputs"] = runner.outputs
    del runner
    release_memory()  # the artifact's runtime (interpreter, session, loaded SavedModel)
    return result


def _checked_inputs(images, reference, labels):
    """(images, reference logits, labels) as arrays, or an ExportError saying what is wrong."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ExportError(f"verification images must be (N, H, W, C), got {images.shape}")
    if isinstance(reference, np.ndarray):
        ref = np.asarray(reference, dtype=np.float32)
    elif isinstance(reference, ExportSource):
        ref = reference_logits(reference.reference, images)
    else:
        ref = reference_logits(reference, images)
    if ref.shape[0] != len(images):
        raise ExportError(f"{len(ref)} reference rows for {len(images)} images")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(images):
            raise ExportError(f"{len(labels)} labels for {len(images)} images")
    return images, ref, labels


def _run(runner, images, batch_sizes) -> dict:
    """{batch size: logits}: batch 1 over the first BATCH1_EXAMPLES images one at a time,
    every larger size over all images (batch 1 too when it is the only size: the figures
    judge the largest size's run over all images)."""
    outputs = {}
    sizes = sorted(set(batch_sizes))
    for b in sizes:
        if b == 1 and len(sizes) > 1:
            n1 = min(len(images), BATCH1_EXAMPLES)
            outputs[1] = np.concatenate([runner(images[i : i + 1]) for i in range(n1)])
        else:
            outputs[b] = _run_batched(runner, images, b)
    return outputs


def _figures(outputs, ref, labels) -> dict:
    """What the rules judge: differences from Keras at each batch size, top-1 agreement and
    accuracy of the largest batch size's run, batch 1 against batched."""
    largest = max(outputs)
    logits = outputs[largest]
    diffs = {
        b: float(np.max(np.abs(out - ref[: len(out)]))) if np.all(np.isfinite(out))
        else float("inf")
        for b, out in sorted(outputs.items())
    }
    max_logit = float(np.max(np.abs(ref)))
    figures = {
        "batch_sizes": sorted(outputs),
        "max_abs_logit": max_logit,
        "max_abs_diff": max(diffs.values()),
        "max_abs_diff_by_batch": {str(b): d for b, d in diffs.items()},
        "top1_agreement": float(np.mean(np.argmax(logits, 1) == np.argmax(ref, 1))),
    }
    if 1 in outputs and largest != 1:
        n1 = len(outputs[1])
        figures["batch1_vs_batched_max_diff"] = float(np.max(np.abs(outputs[1] - logits[:n1])))
    if labels is not None:
        ref_acc = float(np.mean(np.argmax(ref, 1) == labels))
        acc = float(np.mean(np.argmax(logits, 1) == labels))
        figures.update(accuracy=acc, reference_accuracy=ref_acc, accuracy_drop=ref_acc - acc)
    return figures


def _decisive(ref, margin: float) -> np.ndarray:
    """Which images' Keras top-1 margin (top-1 minus top-2 logit) exceeds ``margin``; none for a
    model of one output, which has no ranking to agree on."""
    if ref.shape[1] < 2:
        return np.zeros(len(ref), dtype=bool)
    top2 = np.sort(ref, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) > margin


def _quantized_figures(logits, ref) -> dict:
    """Relative logit error and top-1 agreement on the decisive images (see the module)."""
    if not np.all(np.isfinite(logits)):
        return {"relative_logit_error": float("inf"), "decisive_margin": float("inf"),
                "decisive_images": 0, "top1_agreement_decisive": None}
    ref = ref[: len(logits)]
    scale = float(np.linalg.norm(ref))
    error = float(np.linalg.norm(logits - ref))
    relative = error / scale if scale > 0 else (0.0 if error == 0 else float("inf"))
    per_image = np.max(np.abs(logits - ref), axis=1)
    threshold = 2 * float(np.percentile(per_image, ERROR_PERCENTILE))
    decisive = _decisive(ref, threshold)
    agree = np.argmax(logits, 1) == np.argmax(ref, 1)
    return {
        "relative_logit_error": relative,
        "decisive_margin": threshold,
        "decisive_images": int(decisive.sum()),
        "top1_agreement_decisive": float(np.mean(agree[decisive])) if decisive.any() else None,
    }


def _logit_rule(result, variant) -> list[str]:
    """float32: every batch size within round-off of Keras; otherwise top-1 agreement."""
    if variant == "float32":
        result["check"] = "max|Δlogit| <= 1e-4 + 1e-5*max|logit|"
        tolerance = result["tolerance"] = _tolerance(result)
        return [
            f"batch {b}: max|Δlogit| {d:.3g} > tolerance {tolerance:.3g} "
            f"(max|logit| {result['max_abs_logit']:.3g})"
            for b, d in result["max_abs_diff_by_batch"].items() if not d <= tolerance
        ]
    labels = "accuracy" in result
    result["check"] = ("relative logit error, top-1 agreement where the Keras margin exceeds "
                       f"2x the {ERROR_PERCENTILE}th-percentile max|Δlogit|"
                       + (", accuracy drop" if labels else ""))
    need = result["min_agreement"] = MIN_AGREEMENT.get(variant, MIN_AGREEMENT["int8"])
    bound = result["max_relative_logit_error"] = MAX_RELATIVE_ERROR.get(
        variant, MAX_RELATIVE_ERROR["int8"])
    # Judged on the run over every image: the batch-1 run covers only BATCH1_EXAMPLES, where
    # one near-tie flip would already read as 0.875 agreement.
    largest = max(result["batch_sizes"])
    failures = []
    relative = result["relative_logit_error"]
    if not relative <= bound:
        failures.append(f"batch {largest}: relative logit error {relative:.4f} > {bound} "
                        f"(‖Δlogits‖/‖logits‖ over {result['n']} images)")
    agree = result["top1_agreement_decisive"]
    if agree is not None and agree < need:
        failures.append(
            f"batch {largest}: top-1 agreement {agree:.4f} < {need} on the "
            f"{result['decisive_images']} of {result['n']} images whose Keras top-1 margin "
            f"exceeds {result['decisive_margin']:.3g} (2x the artifact's measured error)")
    return failures


def mediapipe_rule(scores, ref, variant: str, decisive_margin: float | None = None) -> dict:
    """MediaPipe's ImageClassifier against Keras: ``scores`` (N, classes) of its probabilities
    head, ``ref`` the Keras logits of the same (uint8) images. float32 must give Keras's top-1
    on every image; float16 on every image whose Keras margin exceeds ``decisive_margin`` (the
    artifact's, from ``verify``: a near tie within its rounding may go either way), the
    quantized variants by their top-1 agreement rule on those images."""
    ref = np.asarray(ref)
    agree = np.argmax(scores, 1) == np.argmax(ref, 1)
    result = {"n": int(len(agree)), "top1_agreement": float(np.mean(agree))}
    if variant == "float32":
        result["check"] = "top-1 equal to Keras on every image"
        failures = ([] if agree.all() else
                    [f"MediaPipe: top-1 differs from Keras on {int((~agree).sum())} of "
                     f"{len(agree)} images"])
        return {**result, "passed": not failures, "failures": failures}
    need = result["min_agreement"] = (1.0 if variant == "float16" else
                                      MIN_AGREEMENT.get(variant, MIN_AGREEMENT["int8"]))
    decisive = _decisive(ref, decisive_margin or 0.0)
    result["check"] = (f"top-1 agreement >= {need} where the Keras margin exceeds "
                       f"{decisive_margin or 0.0:.3g} (the artifact's decisive images)")
    result["decisive_images"] = int(decisive.sum())
    agreement = float(np.mean(agree[decisive])) if decisive.any() else None
    result["top1_agreement_decisive"] = agreement
    failures = ([] if agreement is None or agreement >= need else
                [f"MediaPipe: top-1 agreement {agreement:.4f} < {need} on the "
                 f"{int(decisive.sum())} decisive images"])
    return {**result, "passed": not failures, "failures": failures}


def _tolerance(result) -> float:
    return FLOAT_ATOL + FLOAT_RTOL * result["max_abs_logit"]


def _batch1_rule(result, variant) -> list[str]:
    """The artifact's batch-1 path must give what its batched path gives: to round-off for
    float32, and no further apart than the artifact is from Keras for float16/int8."""
    if "batch1_vs_batched_max_diff" not in result:
        return []
    largest = max(result["batch_sizes"])
    tolerance = _tolerance(result)
    bound = tolerance if variant == "float32" else max(
        tolerance, result["max_abs_diff_by_batch"][str(largest)])
    d1 = result["batch1_vs_batched_max_diff"]
    return [] if d1 <= bound else [f"batch 1 vs batch {largest}: max|Δlogit| {d1:.3g} > "
                                   f"{bound:.3g}"]


def _accuracy_rule(result, variant) -> list[str]:
    """float16/int8 with labels: the accuracy lost against Keras is bounded."""
    if variant == "float32" or "accuracy" not in result:
        return []
    max_drop = result["max_accuracy_drop"] = MAX_ACCURACY_DROP.get(variant,
                                                                   MAX_ACCURACY_DROP["int8"])
    acc, ref_acc = result["accuracy"], result["reference_accuracy"]
    if ref_acc - acc > max_drop:
        return [f"accuracy {acc:.4f} vs Keras {ref_acc:.4f}: drop {ref_acc - acc:.4f} > "
                f"{max_drop}"]
    return []


def _op_rule(result, variant) -> list[str]:
    """TFLite: builtin ops only; the full-integer int8 variant computes in int8 only."""
    ops = result.get("ops")
    if ops is None:
        return []
    failures = []
    if ops["non_builtin"]:
        failures.append(f"non-builtin ops {ops['non_builtin']}")
    if variant == "int8" and ops["float_compute_ops"]:
        failures.append(f"float computation in the int8 model: {ops['float_compute_ops']}")
    return failures
