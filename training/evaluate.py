"""`python -m training.evaluate --model RUN/best.keras`: evaluate a saved model, write a report.

The dataset (and synthetic shape) default to those in the config.json next to the model.
Writes metrics.json and confusion_matrix.png into --out (default: RUN/eval-<model>-<dataset>/);
an --out holding files it did not write (a training run directory, another report) is refused.
Classes are matched by name when the model has names (its own, else the run's config.json):
the data may hold a subset of the model's classes, but no other class.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from keras_resnet import _cli
from keras_resnet._cli import positive_int

EXIT_CODES = """exit status: 0 evaluated and reported; 2 bad input or usage (an option, the model
file, the data: the one-line message says which and what to do); 1 an internal error (a bug:
please report the traceback)."""


class EvaluateError(ValueError):
    """A model, dataset or run record that cannot be evaluated together; the message says what
    to pass instead."""


class ModelNotFound(FileNotFoundError):
    """--model names no file."""


# metrics.json of a report this program wrote says so: only such a report may be replaced.
WRITTEN_BY = "training.evaluate"
REPORT_FILES = ("metrics.json", "confusion_matrix.png")
# What training.fit writes into a run directory besides its report and checkpoints (a folder
# holding a model alone is not a run, and nothing in it would be replaced).
RUN_FILES = ("config.json", "state.json", "fit.lock", "log.csv", "split.json", "history.png")


def check_out(out: str, default: str) -> None:
    """Refuses an --out where the report would replace files this program did not write: a
    training run directory, or a report of another program."""
    if not os.path.lexists(out):
        return
    advice = f"choose another --out, e.g. the default {default}"
    if not os.path.isdir(out):
        raise EvaluateError(f"--out {out} is a file, not a folder: {advice}")
    names = set(os.listdir(out))
    run_files = sorted(names.intersection(RUN_FILES))
    if run_files:
        raise EvaluateError(f"--out {out} is a training run directory (it holds "
                            f"{', '.join(run_files)}), whose report must stay: {advice}")
    report_files = [name for name in REPORT_FILES if name in names]
    if report_files and not _our_report(out):
        raise EvaluateError(f"--out {out} holds {' and '.join(report_files)} not written by "
                            f"{WRITTEN_BY}: {advice}")


def _our_report(out: str) -> bool:
    import json

    try:
        with open(os.path.join(out, "metrics.json")) as f:
            return json.load(f).get("written_by") == WRITTEN_BY
    except (OSError, ValueError, AttributeError):
        return False


def _names(names) -> str:
    names = list(names)
    shown = ", ".join(names[:20])
    return f"[{shown}{f', ... ({len(names)} in all)' if len(names) > 20 else ''}]"


def label_map(model_names, data_names, model_path: str, dataset: str):
    """The model's index of each of the dataset's classes, matched by name; the dataset may
    hold a subset of the model's classes, but no class the model does not know."""
    index = {name: i for i, name in enumerate(model_names)}
    unknown = [name for name in data_names if name not in index]
    if unknown:
        raise EvaluateError(
            f"{dataset} has classes the model does not know: {_names(unknown)}; {model_path} "
            f"predicts {_names(model_names)}, the data holds {_names(data_names)} (evaluate "
            "on data whose class names are the model's, or a subset of them)")
    return [index[name] for name in data_names]


def build_parser() -> argparse.ArgumentParser:
    from training.data import DATASETS, SOURCES

    p = _cli.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                epilog=EXIT_CODES,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="a .keras file saved by training.fit")
    p.add_argument("--dataset", choices=sorted(DATASETS), default=None,
                   help="dataset to evaluate on (default: the one in the model's config.json)")
    p.add_argument("--split", choices=["test", "val"], default="test", help="split to evaluate")
    p.add_argument("--data-dir", default=None, help="as for training.fit")
    p.add_argument("--source", choices=list(SOURCES), default="auto", help="as for training.fit")
    p.add_argument("--batch-size", type=positive_int, default=256, help="evaluation batch size")
    p.add_argument("--out", default=None, help="report folder")
    _cli.add_log_level_argument(p)
    return p


def _data_of(model_path: str, dataset: str | None, data_dir: str | None, source: str):
    """(the run record beside the model, dataset, data_dir, source, val_fraction, the other
    training.data options): the run's own options apply when evaluating on its dataset."""
    from training.data import DATASETS
    from training.runrecord import RunRecord, RunRecordError

    try:
        record = RunRecord.beside(model_path)
    except RunRecordError as e:
        raise EvaluateError(f"{e}; pass --dataset to evaluate without it") from None
    dataset = dataset or (record.dataset if record else None)
    if dataset is None:
        raise EvaluateError(f"--dataset is needed: no config.json next to {model_path}")
    if dataset not in DATASETS:
        raise EvaluateError(f"--dataset {dataset!r} is not one of {sorted(DATASETS)}")
    own = record.data_options(data_dir) if record and record.dataset == dataset else {}
    if dataset == "folder" and "image_shape" not in own:
        raise EvaluateError(f"--dataset folder needs the config.json that training.fit wrote "
                            f"next to {model_path} (it holds the image size)")
    if source != "auto" or "source" not in own:
        own["source"] = source
    own.setdefault("data_dir", data_dir)
    val_fraction = own.pop("val_fraction", 0.1)
    return record, dataset, own.pop("data_dir"), own.pop("source"), val_fraction, own


def evaluate(model_path: str, dataset: str | None = None, split: str = "test",
             data_dir: str | None = None, source: str = "auto", batch_size: int = 256,
             out: str | None = None) -> dict:
    from training import data as datasets
    from training import report
    from training.console import log
    from training.modelio import load_model

    if not os.path.isfile(model_path):
        raise ModelNotFound(f"no model file {model_path}")
    record, dataset, data_dir, source, val_fraction, synthetic = _data_of(
        model_path, dataset, data_dir, source)
    stem = os.path.splitext(os.path.basename(model_path))[0]
    default_out = os.path.join(os.path.dirname(os.path.abspath(model_path)),
                               f"eval-{stem}-{dataset}")
    out = out or default_out
    check_out(out, default_out)
    info = datasets.get_info(dataset, data_dir=data_dir, **synthetic)
    model = load_model(model_path)
    expected = tuple(model.input_shape[1:])
    model_names = getattr(model, "class_names", None) or (record.class_names if record else None)
    if model_names is not None and len(model_names) != model.output_shape[-1]:
        model_names = None  # a record that does not describe this model: match by position
    if expected != tuple(info.image_size) or (
            model_names is None and model.output_shape[-1] != info.num_classes):
        raise EvaluateError(
            f"{model_path} takes {expected} and predicts {model.output_shape[-1]} classes; "
            f"{dataset} has {info.image_size} images and {info.num_classes} classes")
    labels = None
    if model_names is not None and tuple(model_names) != tuple(info.class_names):
        labels = label_map(list(model_names), list(info.class_names), model_path, dataset)
    ds = datasets.load(dataset, split, batch_size=batch_size, data_dir=data_dir, source=source,
                       val_fraction=val_fraction, **synthetic)
    metrics = report.evaluate_model(model, ds, info, class_names=model_names,
                                    label_map=labels)
    metrics.update(model=os.path.abspath(model_path), split=split, written_by=WRITTEN_BY)
    report_info = info if labels is None else dataclasses.replace(
        info, class_names=tuple(model_names), num_classes=len(model_names))
    files = report.write_report(out, metrics, report_info,
                                title=f"{stem} on {dataset} ({split})")
    for line in report.summary_lines(metrics):
        log(line)
    log("report: " + ", ".join(files.values()))
    return metrics


def main(argv=None) -> int:
    return _cli.run(build_parser(), _evaluate_args, argv)


def _evaluate_args(args) -> None:
    evaluate(args.model, args.dataset, args.split, args.data_dir, args.source, args.batch_size,
             args.out)


if __name__ == "__main__":
    sys.exit(main())
