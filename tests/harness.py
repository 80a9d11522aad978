"""One way to run our CLIs inside the test process: their ``main(argv)`` with pytest's capsys.

A subprocess costs a Python + TensorFlow start-up (seconds); tests start one only where the
process itself is what they check (start-up imports, signals, the launcher, README's commands).
"""

from __future__ import annotations

from typing import Callable, NamedTuple


class CliResult(NamedTuple):
    code: int
    out: str
    err: str


def run_cli(main: Callable[[list[str]], int], capsys, *argv) -> CliResult:
    """``main`` called with ``argv`` as strings; argparse's SystemExit becomes the exit code."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def one_line(err: str, prefix: str = "") -> str:
    """The single line of a CLI's error output (no traceback), which starts with ``prefix``."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    return lines[0]


def argv(options: dict, **more) -> list[str]:
    """``{"batch_size": 8, "resume": True}`` -> ``["--batch-size", "8", "--resume"]``;
    False leaves the flag out."""
    out = []
    for key, value in {**options, **more}.items():
        flag = f"--{key.replace('_', '-')}"
        if value is not False:
            out += [flag] if value is True else [flag, str(value)]
    return out
