"""Atomic file writes: a temporary file beside the destination, then a rename.

Every file napari-denodet writes goes through :func:`atomic_write` (or, for frames
streamed to disk, the same temporary-file helpers): a destination appears only when
complete, an existing one is never replaced unless asked to, and a failed write leaves
the folder as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from napari_denodet.core.errors import InputError


def atomic_write(
    path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False
) -> Path:
    """Write a file through a temporary file in the same folder, then move it in place.

    Parameters
    ----------
    path : str or os.PathLike
        The destination.
    write : callable
        Called with the temporary path; writes the whole file there.
    overwrite : bool
        Replace an existing file. Without it an existing file is never touched.

    Returns
    -------
    pathlib.Path
        The destination.

    Raises
    ------
    InputError
        When the destination exists and ``overwrite`` is False, or its folder is missing.
    """
    path = Path(path)
    tmp = _temporary_file(path, overwrite)
    try:
        write(tmp)
        _move_into_place(tmp, path, overwrite)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def _check_destination(path: Path, overwrite: bool) -> None:
    if not path.parent.is_dir():
        raise InputError(path, f"folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise InputError(path, "already exists; choose another name or allow overwriting "
                               "(--overwrite)")


def _temporary_file(path: Path, overwrite: bool) -> Path:
    # An empty temporary file beside the destination (same file system: renames are
    # atomic), after checking that the destination may be written.
    _check_destination(path, overwrite)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                    suffix=".partial" + path.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); give it the mode a plain open() would.
    os.chmod(tmp, 0o666 & ~_current_umask())
    return tmp


def _move_into_place(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    # A hard link fails if the name was taken meanwhile: no silent clobbering.
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise InputError(path, "already exists; choose another name or allow "
                               "overwriting (--overwrite)") from None
    except OSError:  # file systems without hard links
        if path.exists():
            raise InputError(path, "already exists") from None
        os.replace(tmp, path)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
