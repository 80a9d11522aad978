"""The exit contract of every CLI of this repository (standard library only).

Exit statuses (exit_status): 0 done; 2 the user's to fix, said in one line; 3 training
diverged; 1 a check that failed (one line) or a bug: any other exception, with its traceback,
so that a stray ValueError of ours never reads as the user's mistake. Which error class is
which is ONE table, EXIT_STATUSES; an OSError the user can fix (a missing path, a full disk)
is also 2.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback

INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command that Ctrl-C ended
# A full disk, a read-only or forbidden folder, a missing or mistyped path: the user's to fix,
# so a CLI names the path and the reason in one line instead of a traceback.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
USER_ERRNOS = STORAGE_ERRNOS | {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG,
                                errno.ELOOP}
_USER_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


class UsageError(Exception):
    """What the user can fix (an option, a file, a folder), raised by a CLI itself: exit 2 with
    the message as one line. Libraries raise their own ValueError/RuntimeError subclasses,
    which EXIT_STATUSES names."""


class DivergedError(Exception):
    """Training diverged (NaN/inf or exploding loss): exit 3 with one line naming what to do."""


class FailedError(Exception):
    """Something ran but did not finish as asked, and not through a bug (a check of a written
    file that failed, a lost worker): exit 1 with one line."""


ONE_LINE_FAILURE = 1
# Every error class a CLI answers with one line instead of a traceback, and its exit status:
# 2 the user's to fix, 3 diverged, 1 a failed check. Named by (defining module, class name) and
# resolved only in modules already imported, so that this module imports none of them (an
# exception of a module that was never imported cannot reach a CLI). A subclass takes its
# own entry, else its nearest listed base class's.
EXIT_STATUSES = {
    ("keras_resnet._exits", "UsageError"): 2,
    ("keras_resnet._exits", "DivergedError"): 3,
    ("keras_resnet._exits", "FailedError"): ONE_LINE_FAILURE,
    ("keras_resnet.modelfile", "ModelFileError"): 2,
    ("keras_resnet.weights", "WeightsError"): 2,
    ("keras_resnet.convert.cli", "ConvertError"): 2,
    ("keras_resnet.convert.cli", "CheckFailed"): ONE_LINE_FAILURE,
    ("training.data.errors", "DataError"): 2,
    ("training.data.errors", "DatasetError"): 2,
    ("training.distribute", "DistributeError"): 2,
    ("training.evaluate", "EvaluateError"): 2,
    ("training.evaluate", "ModelNotFound"): 2,
    ("training.fit", "RunExists"): 2,
    ("training.fit", "TrainingDiverged"): 3,
    ("training.fit", "WorkerLost"): ONE_LINE_FAILURE,
    ("training.predicting", "PredictError"): 2,
    ("training.predicting", "NonFiniteOutputs"): ONE_LINE_FAILURE,
    ("training.preprocessing", "ImageError"): 2,
    ("training.recipe", "RunError"): 2,
    ("training.recipe", "RunFileMissing"): 2,
    ("training.rundir", "RunDirError"): 2,
    ("training.runrecord", "RunRecordError"): 2,
    ("export.model_io", "ExportError"): 2,
    ("benchmarks.train.distributed", "RunFailed"): ONE_LINE_FAILURE,
}


def status_of(err: BaseException) -> int | None:
    """The exit status EXIT_STATUSES gives ``err``, or None when it names none of its classes."""
    listed = {}
    for (module, name), status in EXIT_STATUSES.items():
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            listed[cls] = status
    for cls in type(err).__mro__:
        if cls in listed:
            return listed[cls]
    return None


EXIT_CODES = """exit status:
  0  done
  2  bad input or usage (an option, a file), said in one line; nothing is run
  1  a failed check or an internal error"""


def exit_status(action, *, prefix: str = "error", path=None, storage_hint: str = "",
                one_line: bool = False) -> int:
    """Runs ``action()`` for a CLI and returns its exit status.

    ``action``'s own status (None: 0); the status EXIT_STATUSES gives an error class (2, 3, or
    1 for a failed check); 2 for an OSError the user can fix (see os_error_line; ``path`` when
    the error names none, ``storage_hint`` appended for a full or unwritable disk). Each of those
    is one line on stderr, ``"<prefix>: <message>"`` (``one_line``: a message of several lines
    joined with "; "). KeyboardInterrupt (Ctrl-C) is the line "interrupted" and 130. Anything else is a
    bug: 1 with its traceback.
    """
    try:
        status = action()
    except KeyboardInterrupt:
        # Ctrl-C is the user's choice, not a bug: no traceback, and the status a shell gives a
        # command ended by SIGINT.
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as err:
        return _answer(err, prefix, path, storage_hint, one_line)
    return 0 if status is None else status


def _answer(err: Exception, prefix: str, path, storage_hint: str, one_line: bool) -> int:
    status = status_of(err)
    if status is not None:
        return _say(prefix, err, one_line, status)
    if isinstance(err, OSError):
        line = os_error_line(err, path)
        if line is None:
            return _bug()
        hint = storage_hint if err.errno in STORAGE_ERRNOS else ""
        return _say(prefix, f"{line}{hint}", one_line, 2)
    return _bug()


def _say(prefix: str, message, one_line: bool, status: int) -> int:
    text = str(message)
    if one_line:
        text = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    print(f"{prefix}: {text}", file=sys.stderr)
    return status


def _bug() -> int:
    # Printed here rather than left to the interpreter so that main() called in-process
    # (tests, scripts) returns the same status the command gives.
    traceback.print_exc()
    sys.stderr.flush()
    return 1


def os_error_line(err: OSError, path=None) -> str | None:
    """``"<reason>: '<path>'"`` for an OSError in USER_ERRNOS (``path`` when the error names
    none), or None for the others, which are ours and keep their traceback."""
    if err.errno is None and isinstance(err, _USER_OS_ERRORS):
        return str(err)  # raised by our own code with its message
    if err.errno not in USER_ERRNOS:
        return None
    where = err.filename or path
    reason = err.strerror or os.strerror(err.errno)
    return f"{reason}: {str(where)!r}" if where else reason
