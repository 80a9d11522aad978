"""``python -m export --model RUN/best.keras --formats saved_model,tflite,onnx --out artifacts/``

Exit status: see EXIT_CODES (printed by --help).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import numpy as np

from keras_resnet import _cli
from keras_resnet._cli import positive_int

from export.checks import DEFAULT_OPSET, image_array, parse_list
from export.model_io import ExportError, load_model
from export.onnx_format import LAYOUTS as ONNX_LAYOUTS, VARIANTS as ONNX_VARIANTS
from export.outdir import check_out_dir
from export.pipeline import FORMATS, export_all, format_table
from export.source import ExportSource
from export.tflite_format import DEFAULT_CALIBRATION_SIZE, IO_DTYPES, VARIANTS
from training.weightsets import add_arguments

DEFAULT_VARIANTS = ",".join(VARIANTS)
from export.verification import DEFAULT_BATCH_SIZES

EVAL_SPLITS = ("test", "val")

EXIT_CODES = """exit status:
  0  every artifact written, verified and published with manifest.json in --out
  1  written and published, but an artifact failed its check (see the table and
     manifest.json), or an internal error
  2  bad input or usage: an option, the model or a data file, an --out that may not be
     written (see --out), or a disk that filled up; nothing was written"""


def build_parser() -> argparse.ArgumentParser:
    p = _cli.ArgumentParser(
        prog="python -m export",
        description="Export a trained keras_resnet model to SavedModel / TFLite / ONNX, run "
        "every artifact in its own runtime, compare it with the Keras model, and write "
        "manifest.json.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p, "the trained .keras file (e.g. RUN/best.keras)",
                  "the manifest records the set, its categories and its evaluation transform "
                  "(export.predict applies it)")
    p.add_argument("--out", required=True,
                   help="output folder; must be absent, empty, or with --overwrite a previous "
                   "export. Never the folder holding --model or one above it, the current "
                   "directory, your home folder or the filesystem root. A mount point (e.g. a "
                   "Docker volume) is written into in place")
    p.add_argument("--formats", default=",".join(FORMATS),
                   help=f"comma-separated subset of {','.join(FORMATS)} (default: all)")
    p.add_argument("--tflite-variants", default=DEFAULT_VARIANTS,
                   help=f"comma-separated subset of {','.join(VARIANTS)} (default: all; "
                   "without calibration data the default leaves int8 out, with a note)")
    p.add_argument("--onnx-variants", default="float32",
                   help=f"comma-separated subset of {','.join(ONNX_VARIANTS)} (default float32; "
                   "int8: static QDQ quantization calibrated like TFLite int8)")
    p.add_argument("--onnx-layout", choices=ONNX_LAYOUTS, default="nhwc",
                   help="input layout of the ONNX files (default nhwc, as every artifact; "
                   "nchw for pipelines that already hold NCHW tensors)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--int8-io", choices=IO_DTYPES, default="uint8",
                   help="I/O type of the full-integer int8 TFLite file (default uint8: raw "
                   "pixels, as MediaPipe feeds a quantized model; float32: as other artifacts)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous export in --out (a folder holding the manifest.json "
                   "and artifacts of python -m export, nothing else)")
    p.add_argument("--dataset", default=None,
                   help="data set (training.data) for calibration and verification; "
                   "default: the one named in config.json beside the model")
    p.add_argument("--data-dir", default=None,
                   help="where the data set's files are (default: the run's --data-dir from "
                   "config.json)")
    p.add_argument("--no-dataset", action="store_true",
                   help="do not read the data set (verification then uses --inputs or random "
                   "images, and int8 needs --calibration)")
    p.add_argument("--inputs", default=None,
                   help="verification images, .npy (N,H,W,C) raw pixels 0..255")
    p.add_argument("--labels", default=None, help="labels of --inputs, .npy (N,) ints")
    p.add_argument("--calibration", default=None,
                   help="int8 calibration images, .npy (N,H,W,C) raw pixels from the training set")
    p.add_argument("--num-verify", type=positive_int, default=256,
                   help="evaluation images used for verification (default 256)")
    p.add_argument("--num-calibration", type=positive_int, default=DEFAULT_CALIBRATION_SIZE,
                   help=f"training images for int8 calibration (default {DEFAULT_CALIBRATION_SIZE})")
    p.add_argument("--batch-size", type=positive_int, default=max(DEFAULT_BATCH_SIZES),
                   help="the larger verification batch size (batch 1 is always run; default 8)")
    p.add_argument("--latency-runs", type=positive_int, default=20,
                   help="timed batch-1 runs per artifact for the latency median (default 20)")
    _cli.add_log_level_argument(p)
    return p


def _load_npy(path, what):
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{what} file {str(path)!r} does not exist")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:  # truncated, not .npy, pickled objects: numpy raises many types
        raise ExportError(f"could not read {what} file {str(path)!r} as .npy: {err}")


def _npy_images(path, what, shape) -> np.ndarray:
    """Raw-pixel images (N, H, W, C) from ``path``, or an error naming the file and the shape
    the model takes."""
    return image_array(_load_npy(path, what), shape, f"{what} file {str(path)!r}")


def _npy_labels(path, count: int, classes: int) -> np.ndarray:
    arr = _load_npy(path, "--labels")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    expected = f"{count} integer labels in 0..{classes - 1}, one per --inputs image"
    integral = arr.dtype.kind in "iu" or (
        arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))
    if arr.ndim != 1 or not integral:
        raise ExportError(f"--labels file {str(path)!r} holds a {arr.dtype} array of shape "
                          f"{arr.shape}; expected {expected}")
    if len(arr) != count or (len(arr) and (arr.min() < 0 or arr.max() >= classes)):
        found = f"{len(arr)} labels" + (f" in {int(arr.min())}..{int(arr.max())}" if len(arr)
                                        else "")
        raise ExportError(f"--labels file {str(path)!r} holds {found}; expected {expected}")
    return arr.astype(np.int64)


def _dataset_module():
    try:
        from training import data as datasets
    except ImportError as err:
        raise ExportError(
            f"calibration/verification data needs training.data, which could not be "
            f"imported ({err}); pass --inputs/--calibration FILE.npy or --no-dataset"
        )
    return datasets


def run_record(model_path):
    """training.fit's record of the run beside the model (RUN/config.json), or None."""
    try:
        from training.runrecord import RunRecord, RunRecordError
    except ImportError:
        return None
    try:
        return RunRecord.beside(model_path)
    except RunRecordError as err:
        raise ExportError(str(err)) from None


def dataset_arrays(name: str, split: str, n: int, shuffle: bool = False, load_kwargs=None):
    """Up to ``n`` (images, labels) from ``training.data.load(name, split=...)``, never
    augmented; ``shuffle`` (seeded) draws calibration images from across the split;
    ``load_kwargs`` (RunRecord.data_options) say where the run's data lives."""
    datasets = _dataset_module()
    if name not in datasets.DATASETS:
        raise ExportError(f"Unknown dataset {name!r}; expected one of {sorted(datasets.DATASETS)}")
    params = inspect.signature(datasets.load).parameters
    kwargs = {"split": split, "batch_size": min(n, 64)}
    kwargs.update({k: v for k, v in (load_kwargs or {}).items() if k in params})
    for key, value in (("augment", False), ("shuffle", shuffle), ("seed", 0)):
        if key in params:
            kwargs[key] = value
    try:
        ds = datasets.load(name, **kwargs)
    except ValueError:
        raise
    except Exception as err:  # e.g. DatasetError: offline and no archive
        raise ExportError(f"could not load dataset {name!r} split {split!r}: {err}")
    images, labels, count = [], [], 0
    for batch in ds:
        x, y = batch[0], batch[1]
        images.append(np.asarray(x, dtype=np.float32))
        labels.append(np.asarray(y).reshape(-1))
        count += len(images[-1])
        if count >= n:
            break
    if not images:
        raise ExportError(f"dataset {name!r} split {split!r} yielded no examples")
    return np.concatenate(images)[:n], np.concatenate(labels)[:n].astype(np.int64)


def _eval_arrays(name, n, load_kwargs=None):
    errors = []
    for split in EVAL_SPLITS:
        try:
            x, y = dataset_arrays(name, split, n, load_kwargs=load_kwargs)
            return x, y, split
        except ExportError:
            raise
        except Exception as err:  # unknown split name: try the next
            errors.append(f"{split}: {err}")
    raise ExportError(f"dataset {name!r} has no evaluation split ({'; '.join(errors)})")


def run(args) -> int:
    out = Path(args.out)
    # Cheap checks first: fail before loading TensorFlow models or data.
    formats, variants = _checked_options(args)
    onnx_variants = parse_list(args.onnx_variants, ONNX_VARIANTS, "ONNX variant")
    export_source, record = _export_source(args, out)
    shape = export_source.shape
    dataset, load_kwargs = _data_source(args, record)
    need_int8 = (("tflite" in formats and "int8" in variants)
                 or ("onnx" in formats and "int8" in onnx_variants))
    images, labels, data_desc = _verification_data(args, export_source, dataset, load_kwargs)
    calibration, calib_desc = _calibration_data(args, shape, dataset, load_kwargs, need_int8,
                                                have_inputs=images is not None)
    if calibration is None and need_int8 and args.tflite_variants == DEFAULT_VARIANTS:
        # Asked for nothing in particular: give every artifact that needs no data.
        variants = [v for v in variants if v != "int8"]
        _log("note: TFLite int8 skipped: full-integer int8 needs calibration images from the "
             "training set (--calibration FILE.npy or a --dataset); the other artifacts need "
             "none")

    manifest = export_all(
        export_source,
        out,
        formats=formats,
        tflite_variants=variants,
        onnx_variants=onnx_variants,
        onnx_layout=args.onnx_layout,
        images=images,
        labels=labels,
        calibration_images=calibration,
        opset=args.opset,
        int8_io=args.int8_io,
        overwrite=args.overwrite,
        batch_sizes=(1, args.batch_size),
        latency_runs=args.latency_runs,
        data_description=data_desc,
        calibration_description=calib_desc,
        log=_log,
    )
    return _report(manifest, out)


def _export_source(args, out: Path) -> tuple[ExportSource, object]:
    """(the export's source, its run record or None) of --model FILE or --weights NAME, once
    --out was found writable."""
    model, record, provenance = _model(args, out)
    # The model's own names first: a .keras copied away from its run has no config.json.
    class_names = getattr(model, "class_names", None) or (record and record.class_names)
    return ExportSource(model, class_names, provenance), record


def _model(args, out: Path):
    """(model, its run record or None, the manifest's source) of --model FILE or --weights NAME,
    once --out was found writable."""
    if args.weights:
        from training import weightsets

        weight_set = weightsets.resolve(args.weights, args.arch)
        check_out_dir(out, args.overwrite, log=_log)
        model = weightsets.pretrained_model(weight_set)
        return model, None, weightsets.manifest_source(weight_set, model)
    if args.arch:
        raise ExportError(f"--arch is for --weights NAME; --model {args.model} holds its own "
                          "architecture")
    model_path = Path(args.model)
    check_out_dir(out, args.overwrite, model=model_path, log=_log)
    record = run_record(model_path) if model_path.exists() else None
    model = load_model(model_path)
    return model, record, _source(model_path, model, record)


def _checked_options(args) -> tuple[list[str], list[str]]:
    """(formats, TFLite variants), after the checks that need no model or data."""
    formats = parse_list(args.formats, FORMATS, "format")
    variants = parse_list(args.tflite_variants, VARIANTS, "TFLite variant")
    if args.labels and not args.inputs:
        raise ExportError("--labels needs --inputs")
    for flag, path in (("--inputs", args.inputs), ("--labels", args.labels),
                       ("--calibration", args.calibration)):
        if path and not Path(path).is_file():
            raise ExportError(f"{flag} file {path!r} does not exist")
    return formats, variants


def _data_source(args, record):
    """(data set name or None, training.data.load keyword arguments that find its files)."""
    dataset = None if args.no_dataset else (args.dataset or (record and record.dataset))
    # The run's own data options apply only when exporting on the run's own dataset.
    if record is not None and dataset == record.dataset:
        return dataset, record.data_options(args.data_dir)
    return dataset, {} if args.data_dir is None else {"data_dir": args.data_dir}


def _verification_data(args, export_source: ExportSource, dataset, load_kwargs):
    """(images, labels, description) to verify on: --inputs, else the data set's evaluation
    split, else (None, None, None)."""
    if args.inputs:
        images = _npy_images(args.inputs, "--inputs", export_source.shape)
        labels = (_npy_labels(args.labels, len(images), export_source.num_classes)
                  if args.labels else None)
        return images, labels, f"{len(images)} images from {args.inputs}"
    if dataset:
        images, labels, split = _eval_arrays(dataset, args.num_verify, load_kwargs)
        return images, labels, f"{len(images)} images of {dataset!r} split {split!r}"
    return None, None, None


def _calibration_data(args, shape, dataset, load_kwargs, need_int8: bool, have_inputs: bool):
    """(int8 calibration images, description): --calibration, else the data set's training
    split when int8 is asked for, else (None, None)."""
    if args.calibration:
        calibration = _npy_images(args.calibration, "--calibration", shape)
        return calibration[: args.num_calibration], f"{args.calibration}"
    if need_int8 and dataset:
        calibration, _ = dataset_arrays(dataset, "train", args.num_calibration, shuffle=True,
                                        load_kwargs=load_kwargs)
        return calibration[: args.num_calibration], f"{dataset!r} split 'train'"
    if need_int8 and have_inputs:
        raise ExportError(
            "full-integer int8 needs calibration images from the training set: pass "
            "--calibration FILE.npy (the --inputs are verification data), --dataset NAME, or "
            "leave int8 out with --tflite-variants float32,float16,dynamic_int8 (and "
            "--onnx-variants float32)"
        )
    return None, None


def _source(model_path: Path, model, record) -> dict:
    """The manifest's account of where the model came from."""
    source = {"model_file": str(model_path),
              "run_config": record.summary() if record is not None else {}}
    from keras_resnet.builder import model_config

    try:
        source["model_config"] = model_config(model)
    except ValueError:  # a Keras model that keras_resnet did not build: nothing to tell
        pass
    return source


def _report(manifest, out: Path) -> int:
    print(format_table(manifest))
    print(f"manifest: {out / 'manifest.json'}")
    if not manifest["passed"]:
        failed = [f"{a['format']} {a['variant']}" for a in manifest["artifacts"] if not a["passed"]]
        print(f"export: verification FAILED for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    from export.model_io import return_large_blocks_on_free

    return_large_blocks_on_free()  # before TensorFlow allocates; see its docstring
    args = build_parser().parse_args(argv)
    _cli.configure(args)
    return _cli.exit_status(
        lambda: run(args), prefix="export: error", one_line=True, path=args.out,
        storage_hint="; nothing was published: free space or choose another --out")
