"""The run directory's file discipline: one writer at a time, atomic writes, and cleanup of
nothing but our own temporaries. Standard library only (used before TensorFlow loads)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re


LOCK_FILE = "fit.lock"
# Every temporary file this package writes is named like this (Keras needs the real suffix to
# stay last), so that cleanup can tell ours from a user's "data.tmp-backup".
TEMP_PREFIX = ".tmp-"
_OURS = re.compile(r"^\.tmp-\d+-.+$|^.+\.tmp-\d+$")  # the second: files of earlier versions


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked; the message names the path and what to do."""


def temp_path(path: str) -> str:
    return os.path.join(os.path.dirname(path),
                        f"{TEMP_PREFIX}{os.getpid()}-{os.path.basename(path)}")


def write_error(path: str, error: OSError) -> RunDirError:
    why = error.strerror or str(error)
    hint = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
            errno.EROFS: "choose a writable --run-dir", errno.EACCES: "choose a writable --run-dir",
            errno.EPERM: "choose a writable --run-dir"}.get(error.errno, "check the folder")
    return RunDirError(f"cannot write {path}: {why} ({hint}; --resume continues from the last "
                       "completed epoch)")


def remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes `path` whole or not at all; an OSError (disk full, read-only) leaves no temporary
    file and becomes a RunDirError naming `path`."""
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        remove_quietly(tmp)
        raise write_error(path, e) from e


def atomic_write_json(path: str, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def clean_temporaries(run_dir: str) -> list[str]:
    """Removes temporary files a killed run of ours left (only while holding the run's lock)."""
    removed = []
    for name in os.listdir(run_dir):
        path = os.path.join(run_dir, name)
        if _OURS.match(name) and os.path.isfile(path) and not os.path.islink(path):
            remove_quietly(path)
            removed.append(name)
    return removed


class RunLock:
    """An exclusive flock on RUN/fit.lock, which holds the owner's PID.

    The kernel drops a flock when its process dies, kill -9 included, so a lock file left by a
    dead run is simply taken over. The file is unlinked on release; a process that opened it
    just before is told by the inode check below and retries on the new file.
    """

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_FILE)
        self.fd = None

    def acquire(self) -> "RunLock":
        while True:
            try:
                os.makedirs(self.run_dir, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise write_error(self.path, e) from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunDirError(
                    f"{self.run_dir} is in use by another training.fit (PID {holder}, see "
                    f"{self.path}); wait for it to end, or choose another --run-dir") from None
            try:
                current = os.stat(self.path)
                mine = os.fstat(fd)
                if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            os.close(fd)
            raise write_error(self.path, e) from e
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        remove_quietly(self.path)
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
