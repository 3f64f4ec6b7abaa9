"""Errors that carry a message meant for the user, not a traceback."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


class DenodetError(Exception):
    """An error whose message is complete and fit to show a user as one line."""


class InputError(DenodetError):
    """A file or an argument that napari-denodet cannot use.

    Parameters
    ----------
    path : str or os.PathLike or None
        The offending file, named at the start of the message when given.
    reason : str
        What is wrong, in words a user can act on. Kept to one line: line breaks (in
        the messages of libraries it quotes) become spaces.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(self.reason if path is None else f"{self.path}: {self.reason}")


@contextlib.contextmanager
def about_file(path: str | os.PathLike) -> Iterator[None]:
    """Name ``path`` in any :class:`InputError` raised inside that names no file.

    Core functions that work on arrays (e.g. a frame with no finite pixel) cannot know
    the file the array came from; the caller that read it wraps the call in this.
    """
    try:
        yield
    except InputError as error:
        if error.path is not None:
            raise
        raise InputError(path, error.reason) from None
