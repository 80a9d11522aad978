"""Copying a URL (http, https, file) to a local file, bounded in time and size, with a progress
line on stderr.

urllib's timeout bounds each read, not the transfer: a server that sends a byte every few
seconds, or a file:// URL naming a pipe, would never end, and an endless body (or
file:///dev/zero) would fill the disk. Here a transfer also fails when it runs past an overall
deadline, falls below a minimum average rate once it has run for the stall timeout, or brings
more bytes than its bound; file:// takes regular files only. Standard library only.
"""

from __future__ import annotations

import math
import os
import shutil
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CHUNK = 1 << 20
# Below this average (bytes per second), once a transfer has run for the stall timeout, it
# is a drip that would take hours: it fails with the figures.
MIN_RATE = 16 * 1024
# Transfers far slower than a working link still finish within the deadline: the stall
# timeout plus the bound at the minimum rate, capped.
MAX_DEADLINE_S = 6 * 3600


class TransferFailed(Exception):
    """Why a transfer failed, in a few words (the caller names the URL and what to do)."""


def deadline_s(timeout: float, bound: int) -> float:
    """The most seconds a transfer of at most ``bound`` bytes may take."""
    return min(MAX_DEADLINE_S, timeout + bound / MIN_RATE)


def copy_url(url: str, out: Path, *, bound: int, timeout: float, progress: bool) -> int:
    """Writes the body of ``url`` to ``out``; returns its size. Raises TransferFailed (one
    line, the reason) when it cannot be had within ``timeout`` per read, the overall deadline,
    the minimum rate, or ``bound`` bytes."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        _check_regular(urllib.request.url2pathname(parts.path))
    try:
        response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (scheme checked)
    except urllib.error.HTTPError as err:
        raise TransferFailed(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise TransferFailed(_words(err.reason)) from None
    except (OSError, ValueError) as err:
        raise TransferFailed(_words(err)) from None
    with response:
        length = _content_length(response)
        if length is not None and length > bound:
            raise TransferFailed(f"it is {length} bytes, more than the {bound} expected")
        meter = _Progress(url, length, progress)
        try:
            total = _copy(response, out, bound, timeout, meter)
        finally:
            meter.close()
    if length is not None and total != length:
        raise TransferFailed(f"the connection closed after {total} of {length} bytes")
    return total


def _copy(response, out: Path, bound: int, timeout: float, meter) -> int:
    start = time.monotonic()
    deadline = start + deadline_s(timeout, bound)
    total = 0
    with open(out, "wb") as file:
        while True:
            try:
                chunk = response.read1(CHUNK) if hasattr(response, "read1") else \
                    response.read(CHUNK)
            except (OSError, ValueError) as err:  # timeouts, resets, IncompleteRead
                raise TransferFailed(_words(err)) from None
            if not chunk:
                return total
            total += len(chunk)
            if total > bound:
                raise TransferFailed(f"it brought more than the {bound} bytes expected")
            file.write(chunk)
            meter.update(total)
            now = time.monotonic()
            if now > deadline:
                raise TransferFailed(f"it did not finish within {deadline - start:.0f} s "
                                     f"({total} bytes came)")
            if now - start > timeout and total / (now - start) < MIN_RATE:
                raise TransferFailed(f"it came at {total / (now - start):.0f} bytes/s, below "
                                     f"{MIN_RATE} bytes/s")


def _check_regular(path: str) -> None:
    """file:// takes a regular file only: a pipe or a device (/dev/zero) would never end."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise TransferFailed(_words(err)) from None
    if not stat.S_ISREG(mode):
        raise TransferFailed(f"{path} is not a regular file")


def _content_length(response) -> int | None:
    text = response.headers.get("Content-Length") if response.headers else None
    if text is None or not text.strip().isdigit():
        return None
    return int(text)


def _words(err) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, BaseException) and (not isinstance(err, OSError) or text == "timed out"):
        text = f"{type(err).__name__}: {text}"
    return text if len(text) <= 200 else text[:197] + "..."


class _Progress:
    """One line on stderr: redrawn in place on a terminal; else a line at the start and one at
    each quarter, with no carriage returns or escape codes (a log file reads them as junk)."""

    def __init__(self, url: str, length: int | None, enabled: bool):
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.length = length
        self.shown = -1
        self.drawn = False
        self.name = os.path.basename(urllib.parse.urlsplit(url).path) or url
        if enabled:
            size = f" ({_mb(length)})" if length else ""
            print(f"downloading {url}{size}", file=sys.stderr, flush=True)

    def update(self, total: int) -> None:
        if not self.enabled:
            return
        if self.tty:
            width = shutil.get_terminal_size((80, 20)).columns - 1
            of = f" of {_mb(self.length)}" if self.length else ""
            sys.stderr.write(f"\r{f'{self.name}: {_mb(total)}{of}'[:width]}")
            sys.stderr.flush()
            self.drawn = True
        elif self.length:
            quarter = math.floor(4 * total / self.length)
            if quarter > self.shown and quarter < 4:
                if quarter > 0:
                    print(f"{self.name}: {_mb(total)} of {_mb(self.length)}", file=sys.stderr,
                          flush=True)
                self.shown = quarter

    def close(self) -> None:
        if self.drawn:  # the next line (a message, an error) starts on a line of its own
            sys.stderr.write("\n")
            sys.stderr.flush()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
