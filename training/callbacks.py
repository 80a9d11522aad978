"""Callbacks of a run: crash-safe checkpoints with resume state, NaN guard, epoch timing."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time

import keras

STATE_FILE = "state.json"
LAST = "last.keras"
BEST = "best.keras"


def atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_save_model(model: keras.Model, path: str) -> str:
    """Saves `model` to `path` via a temporary file + os.replace; returns the file's sha256."""
    tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    model.save(tmp)  # Keras wants the .keras suffix, kept by the temporary name
    digest = sha256_file(tmp)
    os.replace(tmp, path)
    return digest


def sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


class NanGuard(keras.callbacks.TerminateOnNaN):
    """TerminateOnNaN that remembers where the loss went non-finite, for the run's message."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.nan_at = None  # (epoch index, batch index, loss value)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = _float((logs or {}).get("loss"))
        if loss is not None and not math.isfinite(loss) and self.nan_at is None:
            self.nan_at = (self.epoch, batch, loss)
            self.model.stop_training = True

    on_train_batch_end = on_batch_end


class RunCheckpoint(keras.callbacks.Callback):
    """Writes best.keras / last.keras atomically and a state file to resume from.

    Order per epoch: best.keras (if improved), then state.json holding the previous and the new
    entry, each with the sha256 of the last.keras it describes, then last.keras is replaced.
    A kill -9 at any point leaves a last.keras that matches one of the two entries, so resume
    knows the epoch, history and best score that belong to the weights it loads.
    """

    def __init__(self, run_dir: str, monitor: str = "val_accuracy", nan_guard: NanGuard = None,
                 initial_state: dict | None = None):
        super().__init__()
        self.run_dir = run_dir
        self.monitor = monitor
        self.nan_guard = nan_guard
        self.entry = initial_state or {"epoch": 0, "history": {}, "best": None,
                                       "best_epoch": None, "sha256": None}

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.nan_guard is not None and self.nan_guard.nan_at is not None:
            return  # weights hold NaN: keep the last good checkpoint
        history = {k: list(v) for k, v in self.entry["history"].items()}
        for key, value in logs.items():
            history.setdefault(key, []).append(_float(value))
        best, best_epoch = self.entry["best"], self.entry["best_epoch"]
        score = _float(logs.get(self.monitor))
        if score is not None and math.isfinite(score) and (best is None or score > best):
            best, best_epoch = score, epoch + 1
            atomic_save_model(self.model, os.path.join(self.run_dir, BEST))
        last = os.path.join(self.run_dir, LAST)
        tmp = os.path.join(self.run_dir, f".tmp-{os.getpid()}-{LAST}")
        self.model.save(tmp)
        new = {"epoch": epoch + 1, "history": history, "best": best, "best_epoch": best_epoch,
               "monitor": self.monitor, "sha256": sha256_file(tmp), "time": time.time()}
        atomic_write_json(os.path.join(self.run_dir, STATE_FILE),
                          {"entries": [self.entry, new]})
        os.replace(tmp, last)
        self.entry = new


def read_resume_state(run_dir: str) -> dict:
    """The state entry whose checkpoint is the current last.keras (see RunCheckpoint)."""
    last = os.path.join(run_dir, LAST)
    state_path = os.path.join(run_dir, STATE_FILE)
    if not (os.path.isfile(last) and os.path.isfile(state_path)):
        raise FileNotFoundError(
            f"Nothing to resume in {run_dir}: it has no {LAST} and {STATE_FILE} (the run died "
            "before its first epoch ended; start it again without --resume)"
        )
    with open(state_path) as f:
        entries = json.load(f)["entries"]
    digest = sha256_file(last)
    for entry in reversed(entries):
        if entry.get("sha256") == digest:
            return entry
    raise RuntimeError(f"{last} matches no entry of {state_path}; the run directory is damaged")


def clean_temporaries(run_dir: str) -> None:
    for name in os.listdir(run_dir):
        if name.startswith(".tmp-") or ".tmp-" in name:
            os.remove(os.path.join(run_dir, name))


class EpochTimer(keras.callbacks.Callback):
    """Seconds spent in the training part of each epoch (validation excluded)."""

    def __init__(self):
        super().__init__()
        self.train_seconds = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def _stop(self):
        if self._start is not None:
            self.train_seconds.append(time.perf_counter() - self._start)
            self._start = None

    def on_test_begin(self, logs=None):
        self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._stop()


class ScalarTensorBoard(keras.callbacks.Callback):
    """Per-epoch TensorBoard scalars (train/ and validation/ event files, Keras's tag names).

    keras.callbacks.TensorBoard needs the `tensorboard` package for tf.summary.scalar, and
    tensorflow 2.21 does not install it; this writes the same scalar events with TF core's
    tf.summary.write, so the logs exist without it (`pip install tensorboard` to view them).
    """

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writers = {}

    def _writer(self, kind: str):
        import tensorflow as tf

        if kind not in self._writers:
            self._writers[kind] = tf.summary.create_file_writer(os.path.join(self.log_dir, kind))
        return self._writers[kind]

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        meta = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        scalars = dict(logs or {})
        try:
            scalars["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))
        except Exception:  # noqa: BLE001 - a learning rate that cannot be read is not logged
            pass
        for key, value in scalars.items():
            value = _float(value)
            if value is None:
                continue
            kind, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self._writer(kind).as_default():
                tf.summary.write(f"epoch_{name}", tf.constant(value, tf.float32), step=epoch,
                                 metadata=meta)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
