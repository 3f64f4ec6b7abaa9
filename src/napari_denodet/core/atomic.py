"""Atomic file writes: a temporary file beside the destination, then a rename.

Every file napari-denodet writes goes through :func:`atomic_write` (or, for frames
streamed to disk, the same temporary-file helpers): a destination appears only when
complete, an existing one is never replaced unless asked to, and a failed write leaves
the folder as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from napari_denodet.core.errors import InputError
from napari_denodet.core.partial import new_partial_file, release


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
        When the destination exists and ``overwrite`` is False, its folder is missing,
        or writing fails (a full disk, a read-only folder): the message names the
        destination, never the temporary file, and the destination is left as it was.
    """
    path = Path(path)
    tmp = _temporary_file(path, overwrite)
    try:
        with writing_to(path):
            write(tmp)
            _move_into_place(tmp, path, overwrite)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        release(tmp)
    return path


@contextlib.contextmanager
def writing_to(path: str | os.PathLike) -> Iterator[None]:
    """Turn an :class:`OSError` raised while writing ``path`` into an :class:`InputError`.

    The error names ``path``, the destination the user chose, not the hidden temporary
    file the system call failed on: ``out/noisy.tif: cannot write (No space left on
    device)``.
    """
    try:
        yield
    except OSError as exc:
        raise InputError(path, f"cannot write ({exc.strerror or exc})") from None


@contextlib.contextmanager
def all_or_nothing(
    folder: str | os.PathLike, names: Sequence[str], overwrite: bool = False
) -> Iterator[dict[str, Path]]:
    """Write several files into ``folder`` so that either all of them appear or none.

    Yields a temporary path for each name, in a hidden folder inside ``folder``; write
    each file there. When the block ends normally, the files are moved under their
    names; when it fails (a full disk, an error, an interruption), they are removed and
    ``folder`` is left as it was. Errors about a temporary path name the destination.

    Parameters
    ----------
    folder : str or os.PathLike
        An existing folder.
    names : sequence of str
        The file names, all of which the block must write.
    overwrite : bool
        Replace existing files (only once all are written). Without it, existing files
        are refused before anything is written.

    Yields
    ------
    dict of str to pathlib.Path
        Where to write each file.
    """
    folder = Path(folder)
    targets = {name: folder / name for name in names}
    for target in targets.values():
        _check_destination(target, overwrite)
    with writing_to(folder):
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=".partial."))
    try:
        try:
            with writing_to(folder):
                yield {name: staging / name for name in names}
        except InputError as error:
            if error.path is not None and Path(error.path).parent == staging:
                raise InputError(folder / Path(error.path).name, error.reason) from None
            raise
        unwritten = [name for name in names if not (staging / name).is_file()]
        if unwritten:
            raise RuntimeError(f"all_or_nothing: {', '.join(unwritten)} not written")
        for name, target in targets.items():
            with writing_to(target):
                _move_into_place(staging / name, target, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check, before long work, that ``path`` can be written later.

    Parameters
    ----------
    path : str or os.PathLike
        A file to be written with :func:`atomic_write`.
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    pathlib.Path
        The path.

    Raises
    ------
    InputError
        When its folder is missing or cannot be written to (a temporary file is created
        there and removed), or the file exists and ``overwrite`` is False.
    """
    path = Path(path)
    tmp = _temporary_file(path, overwrite)
    tmp.unlink()
    release(tmp)
    return path


def _check_destination(path: Path, overwrite: bool) -> None:
    if not path.parent.is_dir():
        raise InputError(path, f"folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise InputError(path, "already exists; choose another name or allow overwriting "
                               "(--overwrite)")


def _temporary_file(path: Path, overwrite: bool) -> Path:
    # An empty temporary file beside the destination (same file system: renames are
    # atomic), after checking that the destination may be written; locked while this
    # process writes it (core/partial.py), so a rerun can tell it from a stale one.
    _check_destination(path, overwrite)
    with writing_to(path):
        return new_partial_file(path)


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
