"""Temporary files of atomic writes: their names, who is writing them, stale ones.

Every output is written under a temporary name beside its destination and moved into
place when complete (:func:`napari_denodet.core.io.atomic_write` and the frame
writers). The temporary name is ``.<name>.<random>.partial<suffix>``: hidden, and tied
to one destination's name. While a process writes one it holds an exclusive ``flock``
on it, which the kernel releases when the process ends however it ends (SIGKILL too).
A temporary file that matches one of our destinations' names and that no process holds
is left over from an interrupted run: :func:`remove_stale_partials` removes those, and
nothing else (not another destination's, not a live run's, not another user's).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: an open file cannot be removed there anyway
    fcntl = None

#: What every temporary name carries before the destination's suffix.
PARTIAL = ".partial"
#: A fresh, still empty temporary file may not be locked yet: leave it this long (s).
YOUNG = 5.0
#: Without file locks (Windows, file systems without flock), a temporary file
#: untouched this long (s) is stale.
UNLOCKED_STALE = 600.0

_held: dict[str, int] = {}  # temporary path -> descriptor holding its lock
_held_lock = threading.Lock()


def new_partial_file(path: Path) -> Path:
    """Create an empty temporary file beside ``path`` and hold its lock until :func:`release`.

    Parameters
    ----------
    path : pathlib.Path
        The destination.

    Returns
    -------
    pathlib.Path
        ``.<name>.<random>.partial<suffix>`` in the destination's folder, with the mode a
        plain ``open()`` would give it.
    """
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                suffix=PARTIAL + path.suffix)
    tmp = Path(name)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_current_umask())
        _hold(tmp, fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def new_partial_dir(path: Path) -> Path:
    """Create an empty temporary folder beside ``path`` (a Zarr destination), locked.

    Parameters
    ----------
    path : pathlib.Path
        The destination.

    Returns
    -------
    pathlib.Path
        ``.<name>.<random>.partial<suffix>``; call :func:`release` when it is moved or
        removed.
    """
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.",
                                suffix=PARTIAL + path.suffix))
    try:
        _hold(tmp, os.open(tmp, os.O_RDONLY))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _hold(tmp: Path, fd: int) -> None:
    if fcntl is None:  # keeping it open would stop it from being moved on Windows
        os.close(fd)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a file system without flock (some cluster mounts): age decides
        os.close(fd)
        return
    with _held_lock:
        _held[os.fspath(tmp)] = fd


def release(tmp: str | os.PathLike) -> None:
    """Let go of the lock on a temporary file or folder (after moving or removing it)."""
    with _held_lock:
        fd = _held.pop(os.fspath(tmp), None)
    if fd is not None:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def partial_pattern(name: str) -> re.Pattern:
    """Return the pattern of the temporary names of the destination called ``name``."""
    suffix = Path(name).suffix
    return re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]+{re.escape(PARTIAL + suffix)}")


def remove_stale_partials(destinations: Iterable[str | os.PathLike]) -> list[Path]:
    """Remove the temporary files that interrupted runs left beside these destinations.

    Only names of the form ``.<destination name>.<random>.partial<suffix>`` are looked
    at; of those, only files and folders that belong to this user, that no process
    holds (a live run, here or elsewhere, keeps its lock) and that are not a run's
    brand-new empty file are removed.

    Parameters
    ----------
    destinations : iterable of str or os.PathLike
        Output paths (files or ``.zarr`` folders).

    Returns
    -------
    list of pathlib.Path
        What was removed.
    """
    names: dict[Path, set[str]] = defaultdict(set)
    for destination in destinations:
        destination = Path(destination)
        names[destination.parent].add(destination.name)
    removed = []
    for folder, wanted in names.items():
        patterns = [partial_pattern(name) for name in wanted]
        try:
            entries = [e for e in os.scandir(folder)
                       if e.name.startswith(".") and PARTIAL in e.name]
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if any(p.fullmatch(entry.name) for p in patterns) and _remove_if_stale(entry.path):
                removed.append(Path(entry.path))
    return removed


def _remove_if_stale(path: str) -> bool:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    is_dir = stat.S_ISDIR(info.st_mode)
    if not (is_dir or stat.S_ISREG(info.st_mode)):
        return False  # a link or anything else is nobody's temporary file of ours
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return False  # another user's run
    age = time.time() - info.st_mtime
    empty = not os.listdir(path) if is_dir else info.st_size == 0
    if empty and age < YOUNG:
        return False  # just created: its writer may be about to lock it
    if fcntl is None:
        return age > UNLOCKED_STALE and _remove(path, is_dir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer holds it
        except OSError:  # no flock on this file system
            return age > UNLOCKED_STALE and _remove(path, is_dir)
        return _remove(path, is_dir)
    finally:
        os.close(fd)


def _remove(path: str, is_dir: bool) -> bool:
    try:
        if is_dir:
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except OSError:  # gone meanwhile, or not ours to remove
        return False
    return True
