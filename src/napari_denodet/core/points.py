"""The one definition of how particle positions are stored.

Coordinates follow napari: axis order ``(t, y, x)`` for a time-lapse and ``(y, x)`` for
a single image, in pixels, with pixel centres on integers (the centre of the top-left
pixel is ``(0, 0)``). A points table is a :class:`pandas.DataFrame` whose columns are,
in this order, ``frame`` (absent for single images), ``y``, ``x``, ``score`` (absent
where there is none, e.g. a ground truth) and then any further features
(``intensity``, ``track_id``, ...). CSV files, napari Points layers and every function
that returns detections use this table.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from napari_denodet.core.errors import InputError

FRAME = "frame"
Y = "y"
X = "x"
SCORE = "score"
#: The leading columns of a points table, in order; ``frame`` and ``score`` are optional.
POINT_COLUMNS = (FRAME, Y, X, SCORE)
#: The largest frame number a table may hold (a frame index of a stack; larger numbers
#: would not survive the cast to 64-bit integers, or are typos).
MAX_FRAME = 2**31 - 1


def points_table(
    y,
    x,
    *,
    frame=None,
    score=None,
    **features,
) -> pd.DataFrame:
    """Build a points table in the canonical column order.

    Parameters
    ----------
    y, x : array_like
        Row and column of each point, in pixels (pixel centres on integers).
    frame : array_like of int, optional
        Frame index of each point, for time-lapses; omit for single images.
    score : array_like of float, optional
        Detection score of each point (higher is more confident).
    **features : array_like
        Further per-point columns, kept after the standard ones in the given order.

    Returns
    -------
    pandas.DataFrame
        One row per point.
    """
    columns: dict[str, np.ndarray] = {}
    if frame is not None:
        columns[FRAME] = np.asarray(frame, dtype=np.int64).reshape(-1)
    columns[Y] = np.asarray(y, dtype=np.float64).reshape(-1)
    columns[X] = np.asarray(x, dtype=np.float64).reshape(-1)
    if score is not None:
        columns[SCORE] = np.asarray(score, dtype=np.float64).reshape(-1)
    for name, values in features.items():
        columns[name] = np.asarray(values).reshape(-1)
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"points_table columns differ in length: {sorted(lengths)}")
    return pd.DataFrame(columns)


def empty_points_table(*, with_frame: bool, with_score: bool = True) -> pd.DataFrame:
    """Return a table with no rows and the standard columns."""
    return points_table(
        [],
        [],
        frame=[] if with_frame else None,
        score=[] if with_score else None,
    )


def coordinates(table: pd.DataFrame) -> np.ndarray:
    """Return the napari coordinates of a points table.

    Parameters
    ----------
    table : pandas.DataFrame
        A points table.

    Returns
    -------
    numpy.ndarray
        ``(N, 3)`` float array of ``(t, y, x)`` when the table has a ``frame`` column,
        else ``(N, 2)`` of ``(y, x)``.
    """
    axes = [FRAME, Y, X] if FRAME in table.columns else [Y, X]
    return table[axes].to_numpy(dtype=np.float64).reshape(-1, len(axes))


def table_from_coordinates(
    coords: np.ndarray, features: Mapping | pd.DataFrame | None = None
) -> pd.DataFrame:
    """Build a points table from napari coordinates and per-point features.

    Parameters
    ----------
    coords : numpy.ndarray
        ``(N, 2)`` as ``(y, x)`` or ``(N, 3)`` as ``(t, y, x)``; the time coordinate is
        rounded to the nearest frame.
    features : mapping or pandas.DataFrame, optional
        Per-point features. A ``frame`` feature is ignored in favour of the coordinate.

    Returns
    -------
    pandas.DataFrame
        A points table.
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        raise ValueError(f"coordinates must be (N, 2) or (N, 3), got shape {coords.shape}")
    extra = {} if features is None else {k: np.asarray(v) for k, v in dict(features).items()}
    extra.pop(FRAME, None)
    score = extra.pop(SCORE, None)
    for name in (Y, X):
        extra.pop(name, None)
    frame = np.rint(coords[:, 0]).astype(np.int64) if coords.shape[1] == 3 else None
    return points_table(coords[:, -2], coords[:, -1], frame=frame, score=score, **extra)


def validate_points_table(table: pd.DataFrame, source=None) -> pd.DataFrame:
    """Check a table read from somewhere and return it in canonical form.

    Parameters
    ----------
    table : pandas.DataFrame
        The table to check.
    source : str or os.PathLike, optional
        Where it came from, named in error messages.

    Returns
    -------
    pandas.DataFrame
        The same points with standard columns first and standard dtypes.

    Raises
    ------
    InputError
        When ``y`` or ``x`` is missing, a standard column is not numeric or finite, or
        a frame number is not a whole number in ``[0, MAX_FRAME]``.
    """
    missing = [c for c in (Y, X) if c not in table.columns]
    if missing:
        raise InputError(
            source,
            f"not a points table: missing column(s) {', '.join(missing)} "
            f"(expected {','.join(POINT_COLUMNS)}; frame and score are optional)",
        )
    standard = {}
    for name in POINT_COLUMNS:
        if name not in table.columns:
            continue
        values = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)):
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise InputError(source, f"column '{name}' has a missing or non-numeric value "
                                     f"in row {bad + 1}")
        if name == FRAME:
            if np.any(values != np.rint(values)) or np.any(values < 0):
                raise InputError(source, "column 'frame' must hold whole numbers >= 0")
            if np.any(values > MAX_FRAME):
                bad = int(np.flatnonzero(values > MAX_FRAME)[0])
                raise InputError(source, f"column 'frame' holds {table[name].iloc[bad]} in "
                                         f"row {bad + 1}, beyond the largest frame number "
                                         f"({MAX_FRAME:,})")
            standard[name] = values.astype(np.int64)
        else:
            standard[name] = values
    rest = {c: table[c].to_numpy() for c in table.columns if c not in POINT_COLUMNS}
    return points_table(
        standard[Y],
        standard[X],
        frame=standard.get(FRAME),
        score=standard.get(SCORE),
        **rest,
    )
