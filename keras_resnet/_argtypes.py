"""What every CLI's argument parser shares: the parser class (one-line usage errors) and the
argparse types of counts, sizes and shapes (standard library only)."""

from __future__ import annotations

import argparse
import os

from keras_resnet._tflog import ENV_VAR, LEVELS, TF_LEVEL_VAR

# Counts and sizes above this are refused while parsing: TensorFlow holds many of them as
# int32, and none of our options has a use for more.
MAX_INT = 2**31 - 1


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
