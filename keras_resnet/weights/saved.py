"""The weight sets that ``register(..., save=True)`` keeps for every process: a JSON list of
register's arguments in ``$KERAS_HOME/keras_resnet/weights.json``.

Read once per process and again only when the file's stamp (inode, size, modification time)
changes; changed under an exclusive lock across processes (a ``.lock`` file beside it, which
stays), written under a temporary name and renamed: two processes registering at once each
keep the other's sets, and a reader never sees half a file.

Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

from keras_resnet.weights.errors import WeightsError

_cache: dict = {"key": None, "value": None}
_cache_lock = threading.Lock()


def keras_home() -> Path:
    """``$KERAS_HOME``, or ``~/.keras`` (read at every call, as Keras reads it at import)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home).expanduser()


def saved_path() -> Path:
    """Where ``register(..., save=True)`` keeps the user's sets for later processes."""
    return keras_home() / "keras_resnet" / "weights.json"


def _stamp(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise WeightsError(f"cannot read the saved weight sets {path} ({err.strerror}); fix or "
                           "delete it") from None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def read(parse, fresh: bool = False):
    """``parse(path, rows)`` of the saved file's rows (``[]`` when there is none), kept until
    the file's stamp changes; ``fresh``: read the file whatever its stamp."""
    path = saved_path()
    key = (str(path), _stamp(path))
    with _cache_lock:
        if not fresh and _cache["key"] == key:
            return _cache["value"]
    value = parse(path, [] if key[1] is None else _rows(path))
    with _cache_lock:
        _cache.update(key=key, value=value)
    return value


def _rows(path: Path) -> list:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise WeightsError(f"cannot read the saved weight sets {path} ({err}); fix or delete "
                           "it") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise WeightsError(f"{path} is not a JSON list of weight sets (objects); fix or delete "
                           "it")
    return rows


@contextlib.contextmanager
def locked():
    """Holds the cross-process lock of ``saved_path()``: read, change and write are one step."""
    path = saved_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_name(path.name + ".lock"), "a+b")
    except OSError as err:
        raise WeightsError(f"cannot write the saved weight sets in {path.parent} "
                           f"({err.strerror}); set KERAS_HOME to a writable folder") from None
    with handle:
        try:
            import fcntl
        except ImportError:  # Windows
            import msvcrt

            _lock_windows(handle, msvcrt)
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _lock_windows(handle, msvcrt) -> None:
    handle.seek(0)
    while True:  # LK_LOCK itself gives up after 10 s of waiting
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
            return
        except OSError:
            continue


def write(rows: list[dict]) -> None:
    """Replaces the saved file with ``rows`` (call it holding ``locked()``)."""
    path = saved_path()
    part = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        with open(part, "w", encoding="utf-8") as file:
            file.write(json.dumps(rows, indent=1) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(part, path)
    except OSError as err:
        raise WeightsError(f"cannot write the saved weight sets {path} ({err.strerror}); set "
                           "KERAS_HOME to a writable folder") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
