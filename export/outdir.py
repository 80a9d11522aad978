"""Where an export may be written, and how it gets there without losing anything.

An export is staged in ``.NAME.partial-PID-XXXXXXXX`` beside ``--out`` and renamed into place
once every artifact is written and checked. A previous export that ``--overwrite`` replaces is
first renamed to ``.NAME.old-PID-XXXXXXXX`` and deleted once the new one is in place; an export
killed between those two renames leaves ``--out`` missing and the old folder beside it, which
the next export renames back. A folder that is a mount point (a Docker volume) cannot be
renamed (EBUSY): the export is staged inside it and its entries are moved in, manifest.json
last, so that a partial folder inside it that holds a manifest is a finished export whose
move was cut short, which the next export completes.

Only folders of that naming pattern, for the same ``--out`` name and of no running process,
are ever removed; ``--overwrite`` removes only a folder holding a manifest.json of ours and
the artifacts it lists, nothing else.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import sys
from pathlib import Path

from export.model_io import ExportError

MANIFEST = "manifest.json"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)-[0-9a-f]{8}$")
_SHOWN = 3  # foreign entries named in a refusal
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# TensorFlow's C++ file writes (SavedModel variables, the TFLite converter's SavedModel) raise
# its own error class, ResourceExhaustedError, with the operating system's message in the text.
_DISK_FULL_TEXT = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))


def _mount_point(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and os.path.ismount(path)


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _same_or_inside(folder: Path, path: Path) -> bool:
    return folder == path or folder in path.parents


def _protected_reason(real: Path, model: Path | None) -> str | None:
    """Why ``real`` (a resolved --out) may never receive an export, or None."""
    if real == Path(real.anchor):
        return "is the filesystem root"
    try:
        home = _real(Path.home())
    except (RuntimeError, KeyError):
        home = None
    if home is not None and _same_or_inside(real, home):
        return "is your home folder" if real == home else f"holds your home folder {str(home)!r}"
    cwd = _real(Path.cwd())
    if _same_or_inside(real, cwd):
        return ("is the current directory" if real == cwd
                else f"holds the current directory {str(cwd)!r}")
    if model is not None and _same_or_inside(real, _real(model).parent):
        return (f"holds the model file {str(model)!r}: the export would replace the run's files "
                f"(choose e.g. {str(Path(model).parent / 'export')!r})")
    if real.is_dir() and not _mount_point(real):
        for child in real.iterdir():
            if _mount_point(child):
                return f"holds the mount point {str(child)!r}"
    return None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is not exporting into it yet
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _temporaries(place: Path, name: str):
    """(path, kind) of our staging/old folders for ``--out`` ``name`` in ``place`` that no
    running process owns."""
    try:
        entries = sorted(place.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if not match or match["name"] != name:
            continue
        if entry.is_symlink() or not entry.is_dir():
            continue
        if _pid_alive(int(match["pid"])):
            continue
        yield entry, match["kind"]


def _move_entries(source: Path, target: Path) -> None:
    """Renames every entry of ``source`` into ``target``, manifest.json last."""
    names = sorted(p.name for p in source.iterdir())
    names.sort(key=lambda n: n == MANIFEST)
    for name in names:
        if os.path.lexists(target / name):
            raise ExportError(
                f"cannot move {str(source / name)!r} into {str(target)!r}: "
                f"{str(target / name)!r} exists; move one of them away and export again"
            )
    for name in names:
        os.rename(source / name, target / name)
    source.rmdir()


def recover_interrupted(out: Path, log=print) -> None:
    """Undoes or completes what an export killed midway left around ``out``."""
    out = Path(out)
    for entry, kind in _temporaries(out.parent, out.name):
        if kind == "old" and not os.path.lexists(out):
            os.rename(entry, out)
            log(f"note: restored {str(out)!r} from {str(entry)!r}, left by an interrupted "
                "export")
        else:
            shutil.rmtree(entry)
            log(f"note: removed {str(entry)!r}, left by an interrupted export")
    if _mount_point(out):
        for entry, kind in _temporaries(out, out.name):
            finished = (entry / MANIFEST).is_file() and not (out / MANIFEST).exists()
            if kind == "partial" and finished:
                _move_entries(entry, out)
                log(f"note: finished moving the export staged in {str(entry)!r} into "
                    f"{str(out)!r}, which an interrupted export had begun")
            else:
                shutil.rmtree(entry)
                log(f"note: removed {str(entry)!r}, left by an interrupted export")


def _own_entries(out: Path) -> list[str] | None:
    """Foreign entries of a folder holding a previous export (anything but its manifest.json
    and the artifacts that lists), or None when it holds no manifest.json of ours."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    artifacts = manifest.get("artifacts") if isinstance(manifest, dict) else None
    if "manifest_version" not in manifest or not isinstance(artifacts, list):
        return None
    listed = set()
    for a in artifacts:
        path = a.get("path") if isinstance(a, dict) else None
        if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
            return None
        listed.add(path)
    parents = {"/".join(p.split("/")[:i]) for p in listed for i in range(1, p.count("/") + 1)}
    foreign = []
    for root, dirs, files in os.walk(out):
        for name in sorted(dirs + files):
            full = Path(root) / name
            rel = full.relative_to(out).as_posix()
            inside = any(rel.startswith(p + "/") for p in listed)
            ours = rel == MANIFEST or rel in listed or inside or (
                rel in parents and full.is_dir())
            if not ours or full.is_symlink() or _mount_point(full):
                foreign.append(rel)
        dirs[:] = [d for d in dirs if (Path(root) / d).relative_to(out).as_posix()
                   not in foreign]
    return foreign


def check_out_dir(out, overwrite: bool = False, model=None, log=print) -> Path:
    """Checks that an export may be written to ``out`` and returns its resolved path.

    Refuses (ExportError) the filesystem root, the home folder, the current directory, a
    folder holding any of those, the model file or a mount point, a file, a non-empty folder
    without ``overwrite``, and with it any folder but a previous export. Leftovers of an
    interrupted export to ``out`` are restored, completed or removed first (see the module).
    """
    given = str(out)
    out = Path(out)
    real = _real(out)
    if os.path.lexists(out) and not out.is_dir():
        raise ExportError(f"--out {given!r} exists and is not a folder; choose a folder")
    reason = _protected_reason(real, Path(model) if model is not None else None)
    if reason:
        raise ExportError(f"--out {given!r} {reason}; choose a new or empty folder for the "
                          "artifacts")
    if not real.parent.is_dir():
        # As mkdir -p: `--out artifacts/resnet50` in a fresh folder is what users type.
        ancestor = next(p for p in real.parents if p.is_dir())
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise ExportError(f"cannot create --out {given!r}: folder {str(ancestor)!r} is not "
                              "writable; choose another --out")
        try:
            real.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ExportError(f"cannot create the parent folders of --out {given!r} "
                              f"({e.strerror})") from None
    place = real if _mount_point(real) else real.parent
    if not os.access(place, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write to folder {str(place)!r} (permission denied or "
                          "read-only); choose another --out")
    recover_interrupted(real, log)
    if real.is_dir() and any(real.iterdir()):
        if not overwrite:
            raise ExportError(
                f"output folder {given!r} is not empty; pass --overwrite (overwrite=True) "
                "to replace a previous export there, or choose a new folder"
            )
        if _mount_point(real):
            raise ExportError(
                f"--out {given!r} is a mount point, which is written into in place and so "
                "cannot have a previous export replaced without a moment when neither is "
                "whole: empty it first, or export to a new folder inside it"
            )
        foreign = _own_entries(real)
        if foreign is None:
            raise ExportError(
                f"--out {given!r} is not empty and holds no manifest.json of a previous "
                "export; --overwrite replaces only a previous export: choose a new folder"
            )
        if foreign:
            shown = ", ".join(foreign[:_SHOWN]) + (", ..." if len(foreign) > _SHOWN else "")
            raise ExportError(
                f"--out {given!r} holds a previous export and {len(foreign)} entries it did "
                f"not write ({shown}); --overwrite deletes only an export's own files: move "
                "them away or choose a new folder"
            )
    return real


def _make_dir(place: Path, name: str, kind: str) -> Path:
    # Not tempfile.mkdtemp: its 0700 would be the published folder's mode; mkdir honours umask.
    while True:
        path = place / f".{name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def staging_dir(out: Path) -> Path:
    """A new folder in which to write the export to ``out`` (a resolved path)."""
    return _make_dir(out if _mount_point(out) else out.parent, out.name, "partial")


def publish(staged: Path, out: Path) -> None:
    """Puts the finished export in ``staged`` at ``out``, replacing a previous export there
    (already checked by check_out_dir)."""
    if _mount_point(out):
        _move_entries(staged, out)
        return
    old = None
    if out.exists() and any(out.iterdir()):
        if _own_entries(out) != []:
            raise ExportError(f"{str(out)!r} changed during the export and is no longer only "
                              "a previous export; nothing was replaced: export again")
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(out, old)
    try:
        os.rename(staged, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` says the disk (or the user's quota) is full, from Python or TensorFlow."""
    if isinstance(err, OSError):
        return err.errno in _DISK_FULL_ERRNOS
    tf = sys.modules.get("tensorflow")
    op_error = getattr(getattr(tf, "errors", None), "OpError", None)
    return (op_error is not None and isinstance(err, op_error)
            and any(text in str(err) for text in _DISK_FULL_TEXT))


def _megabytes(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


def disk_full_error(out: Path, needed_bytes: int | None) -> ExportError:
    """The one-line refusal for an export to ``out`` that ran out of disk space (its staging
    folder already removed, so the free space is what the export can have)."""
    place = out if _mount_point(out) else out.parent
    try:
        free = f", {_megabytes(shutil.disk_usage(place).free)} free there"
    except OSError:
        free = ""
    need = f" about {_megabytes(needed_bytes)}" if needed_bytes else " more space"
    return ExportError(
        f"no space left on the device holding {str(place)!r} for the export to {str(out)!r}: "
        f"it needs{need}{free}; nothing was written: free space or choose another --out")
