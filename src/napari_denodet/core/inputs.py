"""What a batch runs on: files, folders, globs and list files turned into images."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from napari_denodet.core.errors import InputError
from napari_denodet.core.io import IMAGE_SUFFIXES, is_zarr

#: Suffixes of list files: one input path (or glob) per line.
LIST_SUFFIXES = (".txt", ".list")


def _image_files(folder: Path) -> list[Path]:
    found = [p for p in folder.iterdir()
             if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
             and (p.is_file() or is_zarr(p))]
    return sorted(found)


def _list_file_entries(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the list of inputs ({exc})") from None
    entries = [line.strip() for line in lines]
    # Relative entries are relative to the list file, wherever the command runs.
    return [e if os.path.isabs(e) else str(path.parent / e)
            for e in entries if e and not e.startswith("#")]


def expand_inputs(items: Iterable[str | os.PathLike],
                  _lists: tuple[Path, ...] = ()) -> list[Path]:
    """Turn files, folders, globs and list files into the list of images to process.

    Parameters
    ----------
    items : iterable of str or os.PathLike
        Each is an image file (or ``.zarr`` folder), a folder (its image files, not
        recursively, hidden ones left out), a glob pattern (``**`` recurses), or a list
        file (``.txt``/``.list``: one path or glob per line, ``#`` comments, relative
        paths taken from the list file's folder). A missing file is kept: it fails as
        that file, not as the batch.

    Returns
    -------
    list of pathlib.Path
        In the order given, each file once.

    Raises
    ------
    InputError
        When a folder, glob or list file yields no image.
    """
    paths: list[Path] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir() and not is_zarr(path):
            found = _image_files(path)
            what = f"no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder"
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            if path.resolve() in _lists:
                raise InputError(path, "the list of inputs includes itself (directly or "
                                       "through another list)")
            found = expand_inputs(_list_file_entries(path), (*_lists, path.resolve()))
            what = "the list of inputs is empty"
        elif not path.exists() and any(c in text for c in "*?["):
            found = [Path(p) for p in sorted(glob.glob(text, recursive=True))
                     if Path(p).is_file() or is_zarr(p)]
            what = "no files match this pattern"
        else:
            found, what = [path], ""
        if not found:
            raise InputError(path, what)
        paths.extend(found)
    return list(dict.fromkeys(paths))


