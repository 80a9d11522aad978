"""A run's checkpoint files written off the training thread.

At the end of an epoch the training thread copies the model's variables (and the optimizer's) to
host memory, which takes a fraction of writing them, and hands the epoch's files to one
background thread. That thread writes them in the order the resume guarantees rely on (see
training.callbacks.RunCheckpoint): best.keras, log.csv, last.keras under a temporary name and
its sha256, state.json, then last.keras renamed into place. One epoch's files are finished
before the next epoch's begin, and the run waits for the writer before it ends, so a kill -9
leaves what it left when the writes blocked training: the same files at the same points.
"""

from __future__ import annotations

import concurrent.futures
import os

from keras_resnet import _keras_compat
from keras_resnet._provenance import sha256_file
from training.rundir import remove_quietly, temp_path, write_error

# The variables of the optimizer live under this path of a .keras weights file; best.keras
# leaves them out: only resuming needs them, and they are twice the model's weights with Adam.
OPTIMIZER_PATH = "optimizer"


class Snapshot:
    """The model's state at an epoch boundary, in host memory: what last.keras holds, and what
    best.keras holds (the model alone: no optimizer state, no compile settings)."""

    def __init__(self, model):
        self.config, self.entries = _keras_compat.model_state(model)

    def write(self, path: str, weights_only: bool = False) -> str:
        """Writes the .keras file `path` whole or not at all; returns its sha256."""
        tmp, digest = self.stage(path, weights_only)
        try:
            publish(tmp, path)
        finally:
            remove_quietly(tmp)
        return digest

    def stage(self, path: str, weights_only: bool = False) -> tuple[str, str]:
        """(temporary file beside `path`, its sha256): the file written but not yet in place,
        so that a record can name its digest before it appears (``publish``)."""
        tmp = temp_path(path)  # Keras wants the .keras suffix, kept by the temporary name
        config, entries = self.config, self.entries
        if weights_only:
            config = {k: v for k, v in config.items() if k != "compile_config"}
            entries = [e for e in entries if e[0] != OPTIMIZER_PATH
                       and not e[0].startswith(OPTIMIZER_PATH + "/")]
        try:
            with open(tmp, "wb") as f:
                _keras_compat.write_keras_archive(f, config, entries)
                f.flush()
                os.fsync(f.fileno())
            return tmp, sha256_file(tmp)
        except OSError as e:
            remove_quietly(tmp)
            raise write_error(path, e) from e


def publish(tmp: str, path: str) -> None:
    try:
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(path, e) from e


def run_steps(steps, cleanup=None) -> None:
    """Runs one epoch's writes in order, then `cleanup` whatever happened (what a test stops
    part-way, as a kill would)."""
    try:
        for step in steps:
            step()
    finally:
        if cleanup is not None:
            cleanup()


class BackgroundWriter:
    """One thread that runs the epochs' writes one after the other. A write's error (a full
    disk: training.rundir.RunDirError) is raised in the training thread at its next call of
    submit, wait or close."""

    def __init__(self):
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending = None

    def submit(self, steps, cleanup=None) -> None:
        self.wait()
        self._pending = self._pool.submit(run_steps, list(steps), cleanup)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self, quiet: bool = False) -> None:
        """Waits for the writes under way; `quiet`: their error is not raised (the run is
        already stopping on another)."""
        try:
            self.wait()
        except Exception:
            if not quiet:
                raise
        finally:
            self._pool.shutdown(wait=True)
