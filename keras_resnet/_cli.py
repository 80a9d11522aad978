"""The command-line layer every CLI of this repository shares, made of three parts:

- ``keras_resnet._exits``: the exit contract (statuses, the one table of error classes,
  UsageError / DivergedError / FailedError for the CLIs' own errors);
- ``keras_resnet._argtypes``: the argument parser and argparse types;
- ``keras_resnet._tflog``: TensorFlow's own log output (``--log-level``) and the Keras backend.

Standard library only: the CLIs import this before parsing their arguments, and TensorFlow
must not be loaded before the log settings are made.
"""

from __future__ import annotations

import argparse

from keras_resnet._argtypes import (  # noqa: F401
    MAX_INT,
    ArgumentParser,
    add_log_level_argument,
    after_double_dash,
    at_least,
    bounded_int,
    int_in_range,
    non_negative_int,
    parse_shape,
    positive_env_int,
    positive_int,
)
from keras_resnet._exits import (  # noqa: F401
    EXIT_CODES,
    EXIT_STATUSES,
    INTERRUPTED,
    STORAGE_ERRNOS,
    USER_ERRNOS,
    DivergedError,
    FailedError,
    UsageError,
    exit_status,
    os_error_line,
    status_of,
)
from keras_resnet._tflog import (  # noqa: F401
    BACKEND_VAR,
    ENV_VAR,
    LEVELS,
    TF_LEVEL_VAR,
    configure,
    filter_log_lines,
    resolve,
    use_tensorflow,
)


def run(parser: argparse.ArgumentParser, action, argv=None, **how) -> int:
    """A CLI's main: parses ``argv``, applies ``--log-level``, then ``exit_status(action(args))``
    (``how``: its keyword arguments)."""
    args = parser.parse_args(argv)
    configure(args)
    return exit_status(lambda: action(args), **how)
