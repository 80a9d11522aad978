"""TensorFlow's own log output and the Keras backend of our CLIs (standard library only: the
CLIs import this before parsing their arguments, and TensorFlow must not be loaded before the
settings below are made, since its C++ logging reads them at load time).

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

import contextlib
import os
import re
import sys
import tempfile
import warnings

from keras_resnet import _imports

LEVELS = ("quiet", "info", "debug")
ENV_VAR = "KERAS_RESNET_LOG"
TF_LEVEL_VAR = "TF_CPP_MIN_LOG_LEVEL"
BACKEND_VAR = "KERAS_BACKEND"
# "LEVEL:N", set by configure() and inherited by the processes a CLI starts (e.g.
# benchmarks.model.bench's spawned workers): our level, and the C++ log level below which the lines
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
