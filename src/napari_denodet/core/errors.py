"""Errors that carry a message meant for the user, not a traceback."""

from __future__ import annotations

import os


class DenodetError(Exception):
    """An error whose message is complete and fit to show a user as one line."""


class InputError(DenodetError):
    """A file or an argument that napari-denodet cannot use.

    Parameters
    ----------
    path : str or os.PathLike or None
        The offending file, named at the start of the message when given.
    reason : str
        What is wrong, in words a user can act on.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        super().__init__(reason if path is None else f"{self.path}: {reason}")
