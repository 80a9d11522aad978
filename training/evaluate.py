"""`python -m training.evaluate --model RUN/best.keras`: evaluate a saved model, write a report.

The dataset (and synthetic shape) default to those in the config.json next to the model.
Writes metrics.json and confusion_matrix.png into --out (default: RUN/eval-<model>-<dataset>/,
so the training run's own report is never overwritten).
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_resnet import _cli
from keras_resnet._cli import positive_int

EXIT_CODES = """exit status: 0 evaluated and reported; 2 bad input or usage (an option, the model
file, the data: the one-line message says which and what to do); 1 an internal error (a bug:
please report the traceback)."""


class EvaluateError(_cli.UsageError, ValueError):
    """A model, dataset or run record that cannot be evaluated together; the message says what
    to pass instead."""


class ModelNotFound(_cli.UsageError, FileNotFoundError):
    """--model names no file."""


def build_parser() -> argparse.ArgumentParser:
    from training.data import DATASETS, SOURCES

    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
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


def evaluate(model_path: str, dataset: str | None = None, split: str = "test",
             data_dir: str | None = None, source: str = "auto", batch_size: int = 256,
             out: str | None = None) -> dict:
    from training import data as datasets
    from training import report
    from training.console import log
    from training.modelio import load_model
    from training.runrecord import RunRecord, RunRecordError

    if not os.path.isfile(model_path):
        raise ModelNotFound(f"no model file {model_path}")
    try:
        record = RunRecord.beside(model_path)
    except RunRecordError as e:
        raise EvaluateError(f"{e}; pass --dataset to evaluate without it") from None
    dataset = dataset or (record.dataset if record else None)
    if dataset is None:
        raise EvaluateError(f"--dataset is needed: no config.json next to {model_path}")
    if dataset not in datasets.DATASETS:
        raise EvaluateError(f"--dataset {dataset!r} is not one of {sorted(datasets.DATASETS)}")
    # The run's own data options apply only when evaluating on the run's own dataset.
    own = record.data_options(data_dir) if record and record.dataset == dataset else {}
    if dataset == "folder" and "image_shape" not in own:
        raise EvaluateError(f"--dataset folder needs the config.json that training.fit wrote "
                         f"next to {model_path} (it holds the image size)")
    if source != "auto" or "source" not in own:
        own["source"] = source
    own.setdefault("data_dir", data_dir)
    val_fraction = own.pop("val_fraction", 0.1)
    data_dir, source = own.pop("data_dir"), own.pop("source")
    synthetic = own
    info = datasets.get_info(dataset, data_dir=data_dir, **synthetic)
    model = load_model(model_path)
    expected = tuple(model.input_shape[1:])
    if expected != tuple(info.image_size) or model.output_shape[-1] != info.num_classes:
        raise EvaluateError(
            f"{model_path} takes {expected} and predicts {model.output_shape[-1]} classes; "
            f"{dataset} has {info.image_size} images and {info.num_classes} classes")
    ds = datasets.load(dataset, split, batch_size=batch_size, data_dir=data_dir, source=source,
                       val_fraction=val_fraction, **synthetic)
    metrics = report.evaluate_model(model, ds, info)
    metrics.update(model=os.path.abspath(model_path), split=split)
    stem = os.path.splitext(os.path.basename(model_path))[0]
    out = out or os.path.join(os.path.dirname(os.path.abspath(model_path)),
                              f"eval-{stem}-{dataset}")
    files = report.write_report(out, metrics, info, title=f"{stem} on {dataset} ({split})")
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
