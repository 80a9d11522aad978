"""A run directory's record, RUN/config.json: what training.fit writes and what every program that
follows a run (training.evaluate, training.predict, export, export.predict) reads, through one
typed reader, so each finds the run's data, image size, classes and preprocessing the same way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex

from training.config import TrainConfig, flag
from training.preprocessing import Preprocessing
from training.recipe import RunError, RunFileMissing


CONFIG = "config.json"
# What training.fit always writes (write_record checks it); fit writes more (versions,
# strategy, sizes, ...), kept in `raw`. Readers take records with less (older runs, a
# config.json written by hand holding only class names) and use what is there.
REQUIRED = ("arch", "dataset", "input_shape", "num_classes", "options")
SUMMARY = ("arch", "dataset", "input_shape", "precision", "preprocessing")


class RunRecordError(ValueError):
    """A config.json that cannot be read as a run record; the message names the file."""


@dataclasses.dataclass(frozen=True)
class RunRecord:
    path: str
    arch: str | None
    dataset: str | None
    input_shape: tuple | None
    num_classes: int | None
    class_names: tuple | None
    preprocessing: dict | None
    options: dict
    raw: dict

    @classmethod
    def from_dict(cls, raw, path: str = CONFIG, complete: bool = False) -> "RunRecord":
        """`complete`: every REQUIRED key must be there (what fit writes)."""
        if not isinstance(raw, dict):
            raise RunRecordError(f"{path} is not a training.fit run record (not a JSON object)")
        missing = [k for k in REQUIRED if k not in raw]
        if complete and missing:
            raise RunRecordError(f"{path} is not a training.fit run record: no {missing}")
        try:
            shape = (tuple(int(v) for v in raw["input_shape"])
                     if raw.get("input_shape") is not None else None)
            num_classes = int(raw["num_classes"]) if raw.get("num_classes") is not None else None
        except (TypeError, ValueError):
            raise RunRecordError(f"{path}: input_shape {raw.get('input_shape')!r} / num_classes "
                                 f"{raw.get('num_classes')!r} are not integers") from None
        names = raw.get("class_names")
        if names is not None and (not isinstance(names, list) or not names or (
                num_classes is not None and len(names) != num_classes)):
            count = f"{num_classes} names" if num_classes is not None else "names"
            raise RunRecordError(f"{path}: class_names is not a non-empty list of {count}")
        options = raw.get("options", {})
        if not isinstance(options, dict):
            raise RunRecordError(f"{path}: options is not a JSON object")
        preprocessing = raw.get("preprocessing")
        return cls(path=path, arch=raw.get("arch"), dataset=raw.get("dataset"),
                   input_shape=shape, num_classes=num_classes,
                   class_names=tuple(str(n) for n in names) if names else None,
                   preprocessing=preprocessing if isinstance(preprocessing, dict) else None,
                   options=options, raw=raw)

    @classmethod
    def read(cls, path: str) -> "RunRecord":
        try:
            with open(path) as f:
                raw = json.load(f)
        except (OSError, ValueError) as e:
            raise RunRecordError(f"{path} cannot be read ({e})") from None
        return cls.from_dict(raw, path)

    @classmethod
    def beside(cls, model_path) -> "RunRecord | None":
        """The record in the folder of `model_path` (RUN/best.keras -> RUN/config.json), or
        None when there is none; a damaged one raises RunRecordError."""
        path = os.path.join(os.path.dirname(os.path.abspath(str(model_path))), CONFIG)
        return cls.read(path) if os.path.isfile(path) else None

    def data_options(self, data_dir: str | None = None) -> dict:
        """training.data.get_info/load/load_pipelines keyword arguments that find the data
        this run trained on: its data folder (or `data_dir`), source, validation fraction, and
        for image folders and synthetic data the image shape (and resize, class count)."""
        kwargs = {k: self.options[k] for k in ("data_dir", "source", "val_fraction")
                  if self.options.get(k) is not None}
        if data_dir is not None:
            kwargs["data_dir"] = data_dir
        if self.dataset in ("folder", "synthetic") and self.input_shape is not None:
            kwargs["image_shape"] = self.input_shape
        if self.dataset == "synthetic" and self.num_classes is not None:
            kwargs["num_classes"] = self.num_classes
        if self.dataset == "folder":
            kwargs["resize"] = (self.preprocessing or {}).get("resize", "auto")
        return kwargs

    def summary(self) -> dict:
        """The facts an export manifest repeats about the run."""
        return {k: self.raw[k] for k in SUMMARY if k in self.raw}


def write_record(run_dir: str, record: dict) -> str:
    """Writes RUN/config.json atomically after checking that it reads back as a RunRecord."""
    from training.rundir import atomic_write_json

    path = os.path.join(run_dir, CONFIG)
    RunRecord.from_dict(record, path, complete=True)
    atomic_write_json(path, record)
    return path


def preprocessing_for(model_path: str, input_shape=None) -> Preprocessing:
    """The preprocessing a run recorded in the config.json beside `model_path`; without one,
    the default ("auto") for the model's input shape (given, or read from the model)."""
    record = RunRecord.beside(model_path)
    if record is not None and record.preprocessing is not None:
        return Preprocessing.from_dict(record.preprocessing)
    if input_shape is None:
        from training.modelio import load_model

        input_shape = load_model(model_path).input_shape[1:]
    return Preprocessing.for_shape(input_shape)


# Options that may differ between a run and its --resume (everything else must match).
RESUMABLE_CHANGES = ("epochs", "resume", "run_dir", "verbose", "strategy", "cpu_replicas")


def recorded_options(cfg: TrainConfig) -> dict:
    """config.json's "options": the synthetic data set's own options only for a synthetic run."""
    options = cfg.to_dict()
    if cfg.dataset != "synthetic":
        del options["synthetic_shape"], options["synthetic_classes"]
    return options


def command_line(cfg: TrainConfig) -> str:
    """The `python -m training.fit` command that gives `cfg`, options at their defaults left
    out: the same for a console script, `python -m` or a call of run() from Python."""
    recorded = recorded_options(cfg)
    words = ["python", "-m", "training.fit"]
    for field in dataclasses.fields(cfg):
        value = recorded.get(field.name, field.default)
        if value == field.default:
            continue
        if isinstance(value, bool):
            words.append(flag(field.name) if value else "--no-" + flag(field.name)[2:])
        else:
            words += [flag(field.name), str(value)]
    return shlex.join(words)


def check_resume_config(run_dir: str, cfg: TrainConfig) -> None:
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise RunFileMissing(f"Cannot resume: {path} does not exist")
    try:
        with open(path) as f:
            saved = json.load(f)["options"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunError(f"Cannot resume: {path} is not a training.fit run record ({e})") from None
    now = recorded_options(cfg)
    # The cosine schedule is laid out over the run's total steps: changing --epochs would move
    # the learning rate under a resumed run, so there it must stay as it was.
    may_change = RESUMABLE_CHANGES if now.get("schedule") != "cosine" else tuple(
        k for k in RESUMABLE_CHANGES if k != "epochs")
    # A recipe's epochs are settled once the data is loaded (None until then): checked again.
    diffs = [f"--{k.replace('_', '-')}: saved {saved.get(k)!r}, now {now[k]!r}"
             for k in now if k not in may_change and now[k] is not None
             and saved.get(k) != now[k]]
    if diffs:
        raise RunError("--resume must repeat the original run's options (only --epochs may "
                       "change, and not with --schedule cosine); differences:\n  "
                       + "\n  ".join(diffs))
