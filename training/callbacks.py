"""Callbacks of a run: crash-safe checkpoints with resume state, NaN guard, epoch timing."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time

import keras

from keras_resnet._provenance import sha256_file
from training.checkpoints import BackgroundWriter, Snapshot, publish
from training.rundir import (RunDirError, atomic_write_bytes, atomic_write_json,  # noqa: F401
                             clean_temporaries, remove_quietly, temp_path, write_error)

STATE_FILE = "state.json"
LAST = "last.keras"
BEST = "best.keras"
LOG_CSV = "log.csv"


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# A diverged run can keep a finite loss (7e13 at --lr 1e6 on digits), so NaN/inf is not the
# only stop. The reference is ln(K), the cross-entropy of a uniform guess over K classes: a
# freshly initialised ResNet starts within a few times it, and a noisy or too-high learning rate
# gives spikes of tens of times it. 1000x (2303 for 10 classes) needs logits thousands apart
# pointing at wrong classes, which only weights that left every useful range produce. Keras
# logs the running mean of the epoch's loss at each batch, so a single bad batch already stays
# visible for a while; requiring several consecutive batches above the line adds margin, and
# the rule depends on nothing but the loss values, so a resumed run decides as an uninterrupted
# one would.
EXPLODED_LOSS_FACTOR = 1000.0
EXPLODED_LOSS_BATCHES = 3


class NanGuard(keras.callbacks.TerminateOnNaN):
    """Stops training when the loss becomes NaN/inf or explodes (see EXPLODED_LOSS_FACTOR), and
    remembers where, for the run's message."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.epoch = 0
        self.nan_at = None  # (epoch index, batch index, loss value)
        self.reason = None
        self.uniform_loss = math.log(max(num_classes, 2))
        self.threshold = EXPLODED_LOSS_FACTOR * max(self.uniform_loss, 1.0)
        self._above = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = _float((logs or {}).get("loss"))
        if loss is None or self.nan_at is not None:
            return
        if not math.isfinite(loss):
            self._stop(batch, loss, f"Loss became {loss}")
            return
        self._above = self._above + 1 if loss > self.threshold else 0
        if self._above >= EXPLODED_LOSS_BATCHES:
            self._stop(batch, loss, f"Loss exploded to {loss:.3g} (above {self.threshold:.0f} "
                       f"for {self._above} batches in a row; a uniform guess scores "
                       f"{self.uniform_loss:.3g})")

    def _stop(self, batch, loss, reason):
        self.nan_at = (self.epoch, batch, loss)
        self.reason = reason
        self.model.stop_training = True

    on_train_batch_end = on_batch_end


def log_csv_bytes(history: dict) -> bytes:
    """log.csv: the epoch, then the sorted metric names (learning_rate among them).

    Epochs count from 1, as the console's "Epoch 1/3", history.png and metrics.json's
    best_epoch do (Keras's CSVLogger counts from 0)."""
    keys = sorted(history)
    epochs = max((len(v) for v in history.values()), default=0)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for i in range(epochs):
        row = [history[k][i] if i < len(history[k]) else None for k in keys]
        writer.writerow([i + 1, *("" if v is None else repr(v) for v in row)])
    return out.getvalue().encode()


class RunCheckpoint(keras.callbacks.Callback):
    """Writes best.keras / last.keras atomically, log.csv, and a state file to resume from.

    Order per epoch: best.keras (if improved: the model's weights without the optimizer state),
    log.csv with every completed epoch's row (so a kill cannot lose a row that the checkpoint
    counts), then state.json holding the previous and the new entry, each with the sha256 of
    the last.keras it describes, then last.keras (with the optimizer state) is replaced. A kill
    -9 at any point leaves a last.keras that matches one of the two entries, so resume knows the
    epoch, history and best score that belong to the weights it loads, and rewrites log.csv from
    that history (dropping the row of an epoch it will train again).

    The files are written from a copy of the variables taken at the epoch's end, in a
    background thread (training.checkpoints), in that order; ``close()`` waits for them and
    must be called when training ends, however it ends (``on_train_end`` does it on success).
    """

    def __init__(self, run_dir: str, monitor: str = "val_accuracy", nan_guard: NanGuard = None,
                 initial_state: dict | None = None):
        super().__init__()
        self.run_dir = run_dir
        self.monitor = monitor
        self.nan_guard = nan_guard
        self.entry = initial_state or {"epoch": 0, "history": {}, "best": None,
                                       "best_epoch": None, "sha256": None}
        atomic_write_bytes(os.path.join(run_dir, LOG_CSV), log_csv_bytes(self.entry["history"]))
        self.writer = BackgroundWriter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.nan_guard is not None and self.nan_guard.nan_at is not None:
            return  # weights hold NaN: keep the last good checkpoint
        history = {k: list(v) for k, v in self.entry["history"].items()}
        for key, value in logs.items():
            history.setdefault(key, []).append(_float(value))
        best, best_epoch = self.entry["best"], self.entry["best_epoch"]
        score = _float(logs.get(self.monitor))
        # Ties go to the later epoch: under a decaying learning rate its weights have settled
        # further (with a small validation split, several epochs often tie at the top).
        improved = score is not None and math.isfinite(score) and (best is None or score >= best)
        if improved:
            best, best_epoch = score, epoch + 1
        previous = self.entry
        new = {"epoch": epoch + 1, "history": history, "best": best, "best_epoch": best_epoch,
               "best_sha256": None, "monitor": self.monitor, "sha256": None, "time": time.time()}
        snapshot = Snapshot(self.model)
        self.writer.submit(*self._epoch_writes(snapshot, improved, previous, new))
        self.entry = new

    def _epoch_writes(self, snapshot: Snapshot, improved: bool, previous: dict, new: dict):
        """(the epoch's writes in their order, the cleanup after them); the digests are filled
        into `new` as its files are written (`previous`'s are there: its writes finished before
        these start)."""
        last = os.path.join(self.run_dir, LAST)
        staged = []

        def best():
            new["best_sha256"] = (snapshot.write(os.path.join(self.run_dir, BEST),
                                                 weights_only=True)
                                  if improved else previous.get("best_sha256"))

        def log_csv():
            atomic_write_bytes(os.path.join(self.run_dir, LOG_CSV),
                               log_csv_bytes(new["history"]))

        def stage_last():
            tmp, new["sha256"] = snapshot.stage(last)
            staged.append(tmp)

        def state():
            atomic_write_json(os.path.join(self.run_dir, STATE_FILE),
                              {"entries": [previous, new]})

        def publish_last():
            publish(staged.pop(), last)

        def cleanup():
            for tmp in staged:
                remove_quietly(tmp)

        return [best, log_csv, stage_last, state, publish_last], cleanup

    def on_train_end(self, logs=None):
        self.writer.wait()

    def close(self, quiet: bool = False) -> None:
        """Waits for the checkpoint writes under way (see BackgroundWriter.close)."""
        self.writer.close(quiet)


RESTART = "start again without --resume (in a new --run-dir, or after moving this one away)"


def _read_entries(state_path: str) -> list:
    try:
        with open(state_path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise RunDirError(f"{state_path} cannot be read ({e}); --resume needs it: {RESTART}") \
            from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not (isinstance(entries, list) and entries and all(
            isinstance(e, dict) and isinstance(e.get("epoch"), int)
            and isinstance(e.get("history"), dict) for e in entries)):
        raise RunDirError(f"{state_path} holds no valid checkpoint entries (damaged or not "
                          f"written by training.fit); --resume needs them: {RESTART}")
    return entries


def intact_checkpoints(run_dir: str) -> dict:
    """{file name: epoch} of the checkpoints in `run_dir` whose sha256 state.json records."""
    try:
        entries = _read_entries(os.path.join(run_dir, STATE_FILE))
    except RunDirError:
        return {}
    found = {}
    for name, key, epoch_key in ((LAST, "sha256", "epoch"), (BEST, "best_sha256", "best_epoch")):
        path = os.path.join(run_dir, name)
        if not os.path.isfile(path):
            continue
        digest = sha256_file(path)
        for entry in reversed(entries):
            if entry.get(key) and entry.get(key) == digest:
                found[name] = entry.get(epoch_key)
                break
    return found


def read_resume_state(run_dir: str) -> dict:
    """The state entry whose checkpoint is the current last.keras (see RunCheckpoint)."""
    last = os.path.join(run_dir, LAST)
    state_path = os.path.join(run_dir, STATE_FILE)
    if not (os.path.isfile(last) and os.path.isfile(state_path)):
        raise RunDirError(
            f"Nothing to resume in {run_dir}: it has no {LAST} and {STATE_FILE} (the run died "
            "before its first epoch ended; start it again without --resume)"
        )
    entries = _read_entries(state_path)
    digest = sha256_file(last)
    for entry in reversed(entries):
        if entry.get("sha256") == digest:
            return entry
    recorded = ", ".join(str(e["epoch"]) for e in entries if e.get("sha256"))
    best = intact_checkpoints(run_dir).get(BEST)
    usable = (f"; {os.path.join(run_dir, BEST)} (epoch {best}) is intact for training.evaluate"
              if best else "")
    raise RunDirError(
        f"{last} matches no checkpoint recorded in {state_path} (epochs {recorded or 'none'}): "
        f"it was changed after training.fit wrote it; put the original back, or {RESTART}"
        + usable)


def current_learning_rate(model) -> float:
    """The optimizer's rate for its next step (a schedule evaluated at the step count)."""
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class EMA(keras.callbacks.SwapEMAWeights):
    """The optimizer's average of the weights in the model for validation, for best.keras and
    last.keras, and at the end of training; the live weights in it while it trains.

    last.keras is written with the average in the model and the live weights in the
    optimizer's average slots, so a resumed run starts in that state (`resumed`) and swaps
    back before its first step."""

    def __init__(self, resumed: bool = False):
        super().__init__(swap_on_epoch=True)
        self._ema_weights_in_model = resumed


class LearningRateLog(keras.callbacks.Callback):
    """Puts the learning rate into each epoch's logs. First in the callback list: the logs are
    one dict passed down the list, so the TensorBoard scalars, the history behind log.csv and
    history.png, and Keras's console line (its progress bar comes last) all show it."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = current_learning_rate(self.model)


class EpochTimer(keras.callbacks.Callback):
    """Seconds spent in the training part of each epoch (validation excluded), in its
    validation, and in the whole epoch: from its start to the next one's (validation and the
    checkpoint's hand-over included; the last epoch ends with training)."""

    def __init__(self):
        super().__init__()
        self.train_seconds = []
        self.validation_seconds = []
        self.epoch_seconds = []
        self._start = None
        self._epoch_start = None
        self._test_start = None

    def on_epoch_begin(self, epoch, logs=None):
        now = time.perf_counter()
        self._end_epoch(now)
        self._start = self._epoch_start = now

    def _end_epoch(self, now):
        if self._epoch_start is not None:
            self.epoch_seconds.append(now - self._epoch_start)
            self._epoch_start = None

    def _stop(self):
        if self._start is not None:
            self.train_seconds.append(time.perf_counter() - self._start)
            self._start = None

    def on_test_begin(self, logs=None):
        self._stop()
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        if self._test_start is not None:
            self.validation_seconds.append(time.perf_counter() - self._test_start)
            self._test_start = None

    def on_epoch_end(self, epoch, logs=None):
        self._stop()

    def on_train_end(self, logs=None):
        self._end_epoch(time.perf_counter())


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
        scalars.setdefault("learning_rate", current_learning_rate(self.model))
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
