"""Downloading a weight set, checking its hash and caching it with its converted copy.

The cache is ``$KERAS_HOME/models`` (default ``~/.keras/models``), as ``keras.utils.get_file``
uses. For each set it holds:

- the checkpoint as published (``resnet50-11ad3fa6.pth``, the same name torch.hub gives it),
  kept only once its sha256 starts with the set's hash (torch.hub's ``check_hash`` rule);
- its state_dict as ``<name>.keras_resnet.safetensors``, written after the first conversion and
  read on every later load, without torch and without hashing the checkpoint again.

Every file is written under a temporary name in the same folder and renamed into place when
complete (``os.replace``): a killed download or conversion never leaves a file that a later
load would take, and two processes loading the same set at once each rename a complete file
over the other's. A download is bounded in time and size (``keras_resnet.weights.transport``:
the published size of torchvision's sets; ``KERAS_RESNET_DOWNLOAD_TIMEOUT`` seconds of silence,
at most an hour).
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import time
import urllib.parse
import uuid
from pathlib import Path

from keras_resnet import _cli
from keras_resnet._provenance import sha256_file as sha256_of
from keras_resnet.weights.registry import (
    WeightSet,
    WeightsError,
    WeightsHashMismatch,
    WeightsUnavailable,
    get,
    keras_home,
)
from keras_resnet.weights.transport import TransferFailed, copy_url

URL_VAR = "KERAS_RESNET_WEIGHTS_URL"
TIMEOUT_VAR = "KERAS_RESNET_DOWNLOAD_TIMEOUT"
# Seconds a stalled connection may stay silent before the download fails (urllib's default is
# to wait forever).
DEFAULT_TIMEOUT = 60
MAX_TIMEOUT = 3600
CONVERTED_SUFFIX = ".keras_resnet.safetensors"
STALE_PART_S = 24 * 3600


def cache_dir() -> Path:
    """``$KERAS_HOME/models``, or ``~/.keras/models``: where Keras keeps downloaded weights.
    Read at every call, so a change of ``KERAS_HOME`` takes effect."""
    return keras_home() / "models"


def cache_path(ws: WeightSet) -> Path:
    """Where the checkpoint of ``ws`` is kept, and where it can be placed by hand."""
    return cache_dir() / ws.file_name


def converted_path(ws: WeightSet) -> Path:
    """Where the state_dict of ``ws`` is kept as .safetensors once converted."""
    return cache_dir() / (os.path.splitext(ws.file_name)[0] + CONVERTED_SUFFIX)


def download_url(ws: WeightSet) -> str:
    """The URL ``ws`` is downloaded from: torchvision's sets from ``$KERAS_RESNET_WEIGHTS_URL``
    when it is set (a mirror: ``https://mirror/models`` or a folder, ``/srv/models``, holding
    the files under torchvision's names), else their own URL."""
    base = os.environ.get(URL_VAR, "").strip()
    if not ws.builtin or not base:
        return ws.url
    if "://" not in base:  # a folder
        base = Path(base).expanduser().resolve().as_uri()
    return base.rstrip("/") + "/" + os.path.basename(urllib.parse.urlsplit(ws.url).path)


def _timeout() -> int:
    seconds = _cli.positive_env_int(TIMEOUT_VAR, "seconds", WeightsError, DEFAULT_TIMEOUT)
    if seconds > MAX_TIMEOUT:
        raise WeightsError(f"{TIMEOUT_VAR}={seconds} is more than {MAX_TIMEOUT} seconds (an "
                           "hour of silence from a server is a failure)")
    return seconds


def _temporary(final: Path) -> Path:
    # Hidden, unique per process and call, and with no suffix the cache looks up.
    return final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")


def _remove_stale_parts(final: Path) -> None:
    """Removes what killed downloads of ``final`` left (a process that is killed runs no
    clean-up); a part younger than a day may be another process's download in progress."""
    cutoff = time.time() - STALE_PART_S
    for part in final.parent.glob(f".{glob.escape(final.name)}.*.part"):
        with contextlib.suppress(OSError):
            if part.stat().st_mtime < cutoff:
                part.unlink()


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _writable_cache(ws: WeightSet) -> Path:
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WeightsUnavailable(f"cannot create the weights cache {folder} ({err.strerror}); "
                                 "set KERAS_HOME to a writable folder") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WeightsUnavailable(f"the weights cache {folder} is not writable; set KERAS_HOME "
                                 f"to a writable folder, or place {ws.file_name} there by hand")
    return folder


def _check_file(ws: WeightSet, path: Path, url: str, downloaded: bool) -> None:
    digest = sha256_of(path)
    if not digest.startswith(ws.sha256):
        what = f"downloaded from {url}" if downloaded else f"at {path}"
        after = ("; nothing was cached" if downloaded
                 else "; delete it or place the right file there")
        raise WeightsHashMismatch(f"refused {ws.qualified_name}: the file {what} has sha256 "
                                  f"{digest[:16]}..., expected {ws.sha256[:16]}... (damaged, "
                                  f"truncated or another file){after}")


def fetch(name, arch: str | None = None, *, progress: bool = True) -> Path:
    """The checkpoint of weight set ``name`` (see ``get``) in the cache: downloaded the first
    time, its sha256 checked against the set's hash before it is kept or used.

    A progress bar is written to stderr (``progress=False``: none). Raises WeightsError with
    one line naming the URL and the exact path where the file can be placed by hand when the
    download fails, and refuses a file whose hash differs (nothing is cached).
    """
    ws = get(name, arch)
    final = cache_path(ws)
    if final.is_file():
        _check_file(ws, final, download_url(ws), downloaded=False)
        return final
    if os.path.lexists(final):
        raise WeightsUnavailable(f"{final} is in the way of {ws.qualified_name}'s checkpoint "
                                 "and is not a file; move it away")
    _writable_cache(ws)
    _remove_stale_parts(final)
    url = download_url(ws)
    part = _temporary(final)
    try:
        _download(ws, url, part, progress)
        _check_file(ws, part, url, downloaded=True)
        os.replace(part, final)
    except BaseException:
        _remove(part)
        raise
    return final


def download_bound(ws: WeightSet) -> int:
    """The most bytes a download of ``ws`` may bring: the published size of torchvision's
    sets (their ``file_size_mb``, MiB to three decimals), else the weights limit of a model
    file (``KERAS_RESNET_MAX_WEIGHTS_BYTES``, default 2 GiB)."""
    if ws.file_size_mb is not None:
        return math.ceil(ws.file_size_mb * 2**20) + 2**16
    from keras_resnet.modelfile import DEFAULT_MAX_WEIGHTS_BYTES, MAX_WEIGHTS_VARIABLE

    return _cli.positive_env_int(MAX_WEIGHTS_VARIABLE, "bytes", WeightsError,
                                 DEFAULT_MAX_WEIGHTS_BYTES)


def _download(ws: WeightSet, url: str, part: Path, progress: bool) -> None:
    """``url`` to ``part``, its progress on stderr (stdout may be a CLI's --json output),
    failures as one WeightsUnavailable line naming the URL and where to place the file."""
    try:
        copy_url(url, part, bound=download_bound(ws), timeout=_timeout(), progress=progress)
    except TransferFailed as err:
        raise WeightsUnavailable(f"could not download {url} ({err}); download it yourself "
                                 f"and place it at {_final_of(part)}"
                                 + (f" (or set {URL_VAR} to a mirror)" if ws.builtin else "")
                                 ) from None
    except OSError as err:  # writing the part: a full or vanished cache
        raise WeightsUnavailable(f"could not write {part.parent} ({err.strerror}); set "
                                 "KERAS_HOME to a folder with room") from None


def _final_of(part: Path) -> Path:
    """The cache path a temporary name stands for (see _temporary)."""
    return part.with_name(part.name[1:].rsplit(".", 3)[0])


def _reason(err: BaseException) -> str:
    """Why reading a file failed, in a few words."""
    text = " ".join(str(err).split()) or type(err).__name__
    if not isinstance(err, OSError) or text == "timed out":
        text = f"{type(err).__name__}: {text}"
    return text if len(text) <= 200 else text[:197] + "..."


def state_dict(name, arch: str | None = None, *, progress: bool = True) -> dict:
    """The state_dict of weight set ``name`` as numpy arrays (torchvision's keys and layouts).

    Read from the converted copy in the cache when there is one; else the checkpoint is
    fetched (``fetch``), read by ``keras_resnet.convert``'s ``read_state_dict`` (by torch's
    ``weights_only`` rule: no pickle code runs) and its converted copy written for next time.
    """
    from keras_resnet.convert.formats import SAFETENSORS_SUFFIX, read_state_dict

    ws = get(name, arch)
    converted = converted_path(ws)
    sd = _read_converted(ws, converted)
    if sd is not None:
        return sd
    path = fetch(ws, progress=progress)
    try:
        sd, _ = read_state_dict(path)
    except ImportError:
        raise WeightsError(f"{ws.qualified_name}: reading its checkpoint {path} the first time "
                           f"needs PyTorch (pip install torch); later loads read the converted "
                           f"copy {converted} without it") from None
    except ValueError as err:
        raise WeightsError(f"{ws.qualified_name}: {' '.join(str(err).split())}") from None
    if not path.name.endswith(SAFETENSORS_SUFFIX):
        _write_converted(ws, sd, converted)
    return sd


def _read_converted(ws: WeightSet, path: Path):
    source = cache_path(ws)
    if source.name.endswith(".safetensors"):
        path = source  # the published file needs no conversion: it is checked on each read
        if not path.is_file():
            return None
        _check_file(ws, path, download_url(ws), downloaded=False)
    elif not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if path != source and not meta.get("sha256", "").startswith(ws.sha256):
                return None  # written for another file of the same name: convert again
            return {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # safetensors' own errors: a damaged file
        if path == source:
            raise WeightsError(f"{ws.qualified_name}: {path} is not a readable .safetensors "
                               f"file ({_reason(err)}); delete it to download it again"
                               ) from None
        return None  # the converted copy: convert again from the checkpoint


def _write_converted(ws: WeightSet, sd: dict, path: Path) -> None:
    import numpy as np
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    part = _temporary(path)
    # The checkpoint it came from was checked against this hash.
    metadata = {"format": "pt", "source": ws.url, "sha256": ws.sha256,
                "weights": ws.qualified_name}
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(part),
                  metadata=metadata)
        os.replace(part, path)
    except (OSError, SafetensorError):  # safetensors' own error for a write that fails
        _remove(part)  # a full disk: the next load converts again
    except BaseException:
        _remove(part)
        raise
