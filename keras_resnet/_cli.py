"""What every CLI of this repository shares: its exit statuses, TensorFlow's own log output, and
the TensorFlow backend of Keras (use_tensorflow: KERAS_BACKEND is overridden, with a note).

Exit statuses (run/exit_status): 0 done; 2 the user's to fix (a UsageError, or an OSError
such as a missing path or a full disk), said in one line; 3 training diverged (DivergedError);
1 a check that failed (FailedError, one line) or a bug: any other exception, with its
traceback, so that a stray ValueError of ours never reads as the user's mistake.

Standard library only: the CLIs import this before parsing their arguments, and TensorFlow
must not be loaded before the settings below are made (its C++ logging reads them at load time).

Levels (``--log-level``, or the ``KERAS_RESNET_LOG`` environment variable):

- ``quiet`` (default): no TensorFlow C++ log lines (``TF_CPP_MIN_LOG_LEVEL=3``; this also hides
  the ``E0000 ... failed call to cuInit`` line printed while probing for GPUs on a CPU-only
  machine), no absl-logging warnings, no Python warnings raised while TensorFlow/Keras import.
  The lines TensorFlow 2.21 writes while its libraries load ("oneDNN custom operations are
  on", "Could not find cuda drivers", "This TensorFlow binary is optimized to use ...") come
  from absl's C++ logging before ``absl::InitializeLog()``, which no variable or flag silences
  (abseil/abseil-cpp#1718): they are filtered out of stderr while TensorFlow loads, and
  everything else written then is passed on (all of it if the import fails).
- ``info``: TensorFlow's own defaults (``TF_CPP_MIN_LOG_LEVEL=0``): every line it prints.
- ``debug``: ``info`` plus absl logging at DEBUG and every Python warning (DeprecationWarning
  included). TensorFlow's verbose C++ logging is not switched on (``TF_CPP_MAX_VLOG_LEVEL=1``
  writes about 200,000 lines for one tiny epoch); set that variable yourself, it is passed on.

Without ``--log-level`` or ``KERAS_RESNET_LOG``, a ``TF_CPP_MIN_LOG_LEVEL`` already set in the
environment is kept (0 shows everything, as ``info``; 1/2 hide TensorFlow's INFO/WARNING lines,
also those written while it loads). The resolved settings are exported to the environment, so
worker processes that a CLI starts behave the same. Messages of our own code are never touched.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import sys
import tempfile
import traceback
import warnings

from keras_resnet import _imports

LEVELS = ("quiet", "info", "debug")
ENV_VAR = "KERAS_RESNET_LOG"
TF_LEVEL_VAR = "TF_CPP_MIN_LOG_LEVEL"
BACKEND_VAR = "KERAS_BACKEND"
# "LEVEL:N", set by configure() and inherited by the processes a CLI starts (e.g.
# benchmarks.bench's spawned workers): our level, and the C++ log level below which the lines
# written while TensorFlow loads are dropped.
_STATE_VAR = "_KERAS_RESNET_LOG_STATE"
# Modules whose first import loads TensorFlow (each sets up the same filter; nested ones no-op).
_TF_MODULES = ("tensorflow", "keras", "tf2onnx", "tensorflow_datasets")
# absl C++ log line: severity letter, MMDD, time (before InitializeLog: 00:00:<epoch s>),
# thread id, file:line].
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+ +\d+ [^ \]]+:\d+\] ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
# Lines that continue the previous log message (cpu_feature_guard.cc's second line; indented).
_CONTINUATIONS = ("To enable the following instructions", " ", "\t")
_PRE_INIT_NOTE = "WARNING: All log messages before absl::InitializeLog() is called"

_loading = {"depth": 0}
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command that Ctrl-C ended
# Counts and sizes above this are refused while parsing: TensorFlow holds many of them as
# int32, and none of our options has a use for more.
MAX_INT = 2**31 - 1

# A full disk, a read-only or forbidden folder, a missing or mistyped path: the user's to fix,
# so a CLI names the path and the reason in one line instead of a traceback.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
USER_ERRNOS = STORAGE_ERRNOS | {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG,
                                errno.ELOOP}
_USER_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def run(parser: argparse.ArgumentParser, action, argv=None, **how) -> int:
    """A CLI's main: parses ``argv``, applies ``--log-level``, then ``exit_status(action(args))``
    (``how``: its keyword arguments)."""
    args = parser.parse_args(argv)
    configure(args)
    return exit_status(lambda: action(args), **how)


def exit_status(action, *, prefix: str = "error", path=None, storage_hint: str = "",
                one_line: bool = False) -> int:
    """Runs ``action()`` for a CLI and returns its exit status.

    ``action``'s own status (None: 0); 2 for a UsageError or an OSError the user can fix (see
    os_error_line; ``path`` when the error names none, ``storage_hint`` appended for a full or
    unwritable disk); 3 for DivergedError; 1 for FailedError. Each of those is one line on
    stderr, ``"<prefix>: <message>"`` (``one_line``: a message of several lines joined with
    "; "). KeyboardInterrupt (Ctrl-C) is the line "interrupted" and 130. Anything else is a
    bug: 1 with its traceback.
    """
    try:
        status = action()
    except UsageError as err:
        return _say(prefix, err, one_line, 2)
    except DivergedError as err:
        return _say(prefix, err, one_line, 3)
    except FailedError as err:
        return _say(prefix, err, one_line, 1)
    except KeyboardInterrupt:
        # Ctrl-C is the user's choice, not a bug: no traceback, and the status a shell gives a
        # command ended by SIGINT.
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except OSError as err:
        line = os_error_line(err, path)
        if line is None:
            return _bug()
        hint = storage_hint if err.errno in STORAGE_ERRNOS else ""
        return _say(prefix, f"{line}{hint}", one_line, 2)
    except Exception as err:
        library = _library_status(err)
        if library is None:
            return _bug()
        return _say(prefix, err, one_line, library)
    return 0 if status is None else status


# Library errors that do not derive from this module's classes, by (module, class): the exit
# status each means. Looked up in sys.modules, so this module imports none of them (an error
# was raised, so its module is loaded).
LIBRARY_ERRORS = (
    ("keras_resnet.weights.errors", "WeightsError", 2),
    ("keras_resnet.convert.cli", "ConvertError", 2),
    ("keras_resnet.convert.cli", "CheckFailed", 1),
)


def _library_status(err: BaseException) -> int | None:
    for module, name, status in LIBRARY_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(err, cls):
            return status
    return None


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


class ArgumentParser(argparse.ArgumentParser):
    """Every CLI's parser: a usage error is ``<prog>: error: <message>`` and ``see <prog>
    --help``, exit 2. argparse's own prints the whole usage first (dozens of lines for our
    CLIs), above the one line that says what was wrong."""

    def error(self, message):
        message = "; ".join(line.strip() for line in str(message).splitlines() if line.strip())
        self.exit(2, f"{self.prog}: error: {message}\nsee {self.prog} --help\n")


def after_double_dash(args) -> list[str]:
    """The options given after ``--`` to a CLI that passes them on (argparse.REMAINDER keeps
    the ``--``)."""
    args = list(args)
    return args[1:] if args[:1] == ["--"] else args


def positive_env_int(name: str, unit: str, error, default=None, environ=None):
    """The positive whole number in environment variable `name` (underscores allowed), or
    `default` when it is unset; any other value raises `error` with one line naming it."""
    text = (os.environ if environ is None else environ).get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        default_text = "" if default is None else f" (the default is {default})"
        raise error(f"{name}={text!r} is not a positive whole number of {unit}{default_text}")
    return value


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    """Adds ``--log-level`` (documented in the CLI's --help)."""
    # SUPPRESS: no "(default: None)" from ArgumentDefaultsHelpFormatter; absent unless given.
    parser.add_argument(
        "--log-level", choices=LEVELS, default=argparse.SUPPRESS,
        help="TensorFlow's own log output: 'quiet' hides its C++ log lines, absl warnings and "
        "import-time warnings; 'info' shows them as TensorFlow prints them; 'debug' also "
        f"absl DEBUG logging and all Python warnings (default: ${ENV_VAR} if set, else quiet, "
        f"keeping a {TF_LEVEL_VAR} set in the environment). Our own messages always show.",
    )


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (counts, sizes, widths), refused while parsing."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def at_least(low: int):
    """argparse type: an integer >= ``low``."""
    return lambda text: _int_at_least(text, low)


def int_in_range(low: int, high: int):
    """argparse type: an integer in ``low..high``, for options whose larger values could only
    exhaust memory (a model width, a class count)."""
    def parse(text: str) -> int:
        value = _int_at_least(text, low)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return parse


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(
            f"must be {'positive' if low == 1 else f'at least {low}'}, got {value}")
    return bounded_int(text)


def bounded_int(text: str) -> int:
    """argparse type: an integer of at most MAX_INT."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value > MAX_INT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_INT}, got {value}")
    return value


def parse_shape(text: str) -> tuple[int, int, int]:
    """argparse type for ``--input-shape H,W,C``: three positive integers."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(
            f"needs 3 values H,W,C such as 224,224,3; got {text!r}")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be H,W,C integers such as 224,224,3; got {text!r}") from None
    if min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"height, width and channels must be positive; got {text!r}")
    return shape


class UsageError(Exception):
    """What the user can fix (an option, a file, a folder): exit 2 with the message as one line.

    Every user-facing error class derives from it, so that anything else reaching a CLI's main
    is ours and shows its traceback."""


class DivergedError(Exception):
    """Training diverged (NaN/inf or exploding loss): exit 3 with one line naming what to do."""


class FailedError(Exception):
    """Something ran but did not finish as asked, and not through a bug (a check of a written
    file that failed, a lost worker): exit 1 with one line."""


EXIT_CODES = """exit status:
  0  done
  2  bad input or usage (an option, a file), said in one line; nothing is run
  1  a failed check or an internal error"""


def resolve(level: str | None = None, environ=None) -> tuple[str, dict[str, str]]:
    """(level, environment settings) for ``--log-level`` ``level`` (None: not given)."""
    environ = os.environ if environ is None else environ
    if level is None and environ.get(ENV_VAR):
        level = environ[ENV_VAR].strip().lower()
        if level not in LEVELS:
            raise ValueError(f"{ENV_VAR}={environ[ENV_VAR]!r}; expected one of {list(LEVELS)}")
    if level is None:
        user_level = environ.get(TF_LEVEL_VAR, "").strip()
        if user_level.isdigit():  # the user's own choice of TensorFlow's level: keep it
            level = "info" if user_level == "0" else "quiet"
            return level, {_STATE_VAR: f"{level}:{user_level}"}
        settings = {}
    elif level in LEVELS:
        settings = {ENV_VAR: level}  # CLIs this one starts make the same choice
    else:
        raise ValueError(f"Unknown log level {level!r}; expected one of {list(LEVELS)}")
    level = level or "quiet"
    tf_level = "3" if level == "quiet" else "0"
    return level, {**settings, TF_LEVEL_VAR: tf_level, _STATE_VAR: f"{level}:{tf_level}"}


def configure(level=None) -> str:
    """Applies ``--log-level`` before TensorFlow is loaded; returns the level in force.

    ``level``: a level name, None, or the parsed arguments (their ``log_level`` if given).
    Called by each CLI right after parsing its arguments. Changes nothing when TensorFlow is
    already loaded (e.g. a CLI's main() called from Python): its logging is set by then.
    """
    if level is not None and not isinstance(level, str):
        level = getattr(level, "log_level", None)
    try:
        level, settings = resolve(level)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    use_tensorflow()
    if "tensorflow" in sys.modules:
        return level
    os.environ.update(settings)
    if level == "debug":
        warnings.simplefilter("default")  # DeprecationWarning etc. too, once per place
    _install_import_filter()
    return level


def use_tensorflow() -> None:
    """Makes Keras load its TensorFlow backend whatever ``KERAS_BACKEND`` (or keras.json)
    says, and says so in one line when the variable named another: the CLIs are built on
    tf.data and tf.distribute, so another backend would fail mid-run. Exported, so the
    processes a CLI starts agree. Changes nothing once Keras is loaded (a main() called from
    Python keeps the caller's backend). The keras_resnet library itself runs on every backend.
    """
    if "keras" in sys.modules:
        return
    requested = os.environ.get(BACKEND_VAR, "").strip()
    if requested and requested.lower() != "tensorflow":
        print(f"note: {BACKEND_VAR}={requested} ignored: this command runs on TensorFlow "
              "(tf.data, tf.distribute); the keras_resnet library itself runs on any backend",
              file=sys.stderr)
    os.environ[BACKEND_VAR] = "tensorflow"


def _state() -> tuple[str, int] | None:
    level, _, min_level = os.environ.get(_STATE_VAR, "").partition(":")
    if level not in LEVELS or not min_level.isdigit():
        return None
    return level, int(min_level)


def _install_import_filter() -> None:
    if _state() is None:
        return
    for name in _TF_MODULES:
        _imports.around_import(name, _quiet_load)


def _quiet_load(load) -> None:
    """Loads the module with stderr captured, dropping TensorFlow's load-time log lines below
    the C++ level in force; at 'quiet' with Python warnings ignored and absl logging at ERROR."""
    state = _state()
    if _loading["depth"] or state is None:
        return load()
    level, min_level = state
    _loading["depth"] += 1
    try:
        with _captured_stderr(min_level), warnings.catch_warnings():
            if level == "quiet":
                warnings.simplefilter("ignore")
            load()
    finally:
        _loading["depth"] -= 1
    _set_absl_verbosity(level)


def _set_absl_verbosity(level: str) -> None:
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None and level != "info":
        absl_logging.set_verbosity(absl_logging.ERROR if level == "quiet" else absl_logging.DEBUG)


@contextlib.contextmanager
def _captured_stderr(min_level: int):
    """Points file descriptor 2 at a temporary file; afterwards writes what was captured to the
    real stderr, less the absl log lines below ``min_level`` (everything if the body raised)."""
    if min_level <= 0:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2: nothing to filter
        yield
        return
    failed = True
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = text if failed else filter_log_lines(text, min_level)
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def filter_log_lines(text: str, min_level: int) -> str:
    """``text`` without absl C++ log lines of severity below ``min_level`` (0 I, 1 W, 2 E,
    3 F), their continuation lines, and absl's note that logging is not initialized yet."""
    kept, dropping = [], False
    for line in text.splitlines(keepends=True):
        match = _ABSL_LINE.match(line)
        if match:
            dropping = _SEVERITY[match.group(1)] < min_level
        elif line.startswith(_PRE_INIT_NOTE) and min_level >= 1:
            continue
        elif not (dropping and line.startswith(_CONTINUATIONS)):
            dropping = False  # anything else is not TensorFlow's: keep it
        if not dropping:
            kept.append(line)
    return "".join(kept)


# A worker process started by a CLI (e.g. multiprocessing "spawn") inherits the settings but
# not the import hooks: set them up again when the marker says a CLI asked for them.
if _STATE_VAR in os.environ and "tensorflow" not in sys.modules:
    _install_import_filter()
