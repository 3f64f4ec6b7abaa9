"""Points files: CSV, RELION STAR and EMAN BOX, read and written atomically.

CSV holds every column of the one schema of :mod:`napari_denodet.core.points`; STAR
(``_rlnCoordinateX/Y``, ``_rlnAutopickFigureOfMerit``) and BOX (box corners and size)
hold the particles of one micrograph. Writes go through
:func:`napari_denodet.core.atomic.atomic_write`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from napari_denodet.core.atomic import atomic_write
from napari_denodet.core.errors import InputError
from napari_denodet.core.points import FRAME, SCORE, X, Y, points_table, validate_points_table

POINTS_SUFFIXES = (".csv", ".star", ".box")


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def write_points(
    path: str | os.PathLike,
    table: pd.DataFrame,
    overwrite: bool = False,
    box_size: int | None = None,
) -> Path:
    """Write a points table as CSV, STAR or BOX, chosen by the file suffix.

    Parameters
    ----------
    path : str or os.PathLike
        ``.csv`` (every column), ``.star`` (RELION coordinates and score) or ``.box``
        (EMAN boxes; needs ``box_size``).
    table : pandas.DataFrame
        A points table (see :mod:`napari_denodet.core.points`).
    overwrite : bool
        Replace an existing file.
    box_size : int, optional
        Box edge in pixels, for ``.box``: a positive whole number (a float is rounded).

    Returns
    -------
    pathlib.Path
        The destination.
    """
    path = Path(path)
    suffix = _suffix(path)
    table = validate_points_table(table)
    if suffix == ".csv":
        return atomic_write(path, lambda tmp: table.to_csv(tmp, index=False), overwrite)
    if suffix in (".star", ".box"):
        _require_single_image(path, table)
        if suffix == ".star":
            text = _star_text(table)
        else:
            text = _box_text(table, _box_size(path, box_size))
        return atomic_write(path, lambda tmp: tmp.write_text(text), overwrite)
    raise InputError(path, f"unsupported points file type '{suffix}' "
                           f"(use {', '.join(POINTS_SUFFIXES)})")


def read_points(path: str | os.PathLike) -> pd.DataFrame:
    """Read a points file written by napari-denodet (CSV), RELION (STAR) or EMAN (BOX).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    pandas.DataFrame
        A points table; STAR and BOX give ``y, x`` (and ``score`` where the STAR file has
        ``_rlnAutopickFigureOfMerit``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    suffix = _suffix(path)
    try:
        if suffix == ".csv":
            table = pd.read_csv(path)
        elif suffix == ".star":
            table = _read_star(path)
        elif suffix == ".box":
            table = _read_box(path)
        else:
            raise InputError(path, f"unsupported points file type '{suffix}' "
                                   f"(use {', '.join(POINTS_SUFFIXES)})")
    except InputError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            ValueError) as exc:
        raise InputError(path, f"cannot parse the file ({str(exc).strip() or 'empty'})") \
            from None
    return validate_points_table(table, source=path)


def _box_size(path: Path, box_size) -> int:
    # A box edge in whole pixels >= 1, from whatever the caller (a napari layer's
    # metadata, a script) gave.
    if box_size is None:
        raise InputError(path, "a .box file needs a box size in pixels (--box-size)")
    number = None
    if not isinstance(box_size, (bool, np.bool_)):
        with contextlib.suppress(TypeError, ValueError):
            number = float(box_size)
    if number is None or not np.isfinite(number) or round(number) < 1:
        raise InputError(path, f"a .box file needs a box size in pixels, a number >= 1 "
                               f"(got {box_size!r})")
    return int(round(number))


def _require_single_image(path: Path, table: pd.DataFrame) -> None:
    if FRAME in table.columns and table[FRAME].nunique() > 1:
        raise InputError(path, "STAR and BOX files hold the particles of one micrograph; "
                               "these points span several frames (write CSV instead)")


def _star_text(table: pd.DataFrame) -> str:
    from napari_denodet import __version__

    labels = ["_rlnCoordinateX", "_rlnCoordinateY"]
    columns = [table[X].to_numpy(), table[Y].to_numpy()]
    if SCORE in table.columns:
        labels.append("_rlnAutopickFigureOfMerit")
        columns.append(table[SCORE].to_numpy())
    lines = [f"# written by napari-denodet {__version__}; x = column, y = row, in pixels",
             "", "data_", "", "loop_"]
    lines += [f"{label} #{i}" for i, label in enumerate(labels, start=1)]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in zip(*columns, strict=True)]
    return "\n".join(lines) + "\n"


def _read_star(path: Path) -> pd.DataFrame:
    # The last table with coordinates: a loop_ (one row per particle), or a block of
    # "_label value" pairs (one particle).
    tables = [t for t in _star_tables(path, path.read_text())
              if "_rlnCoordinateX" in t[0] and "_rlnCoordinateY" in t[0]]
    if not tables:
        raise InputError(path, "no _rlnCoordinateX/_rlnCoordinateY loop in this STAR file")
    labels, rows = tables[-1]
    for number, row in rows:
        if len(row) != len(labels):
            raise InputError(path, f"line {number}: {len(row)} values for a table of "
                                   f"{len(labels)} columns")
    frame = pd.DataFrame([row for _, row in rows], columns=labels) if rows else \
        pd.DataFrame(columns=labels)
    table = {Y: frame["_rlnCoordinateY"].astype(float), X: frame["_rlnCoordinateX"].astype(float)}
    if "_rlnAutopickFigureOfMerit" in labels:
        table[SCORE] = frame["_rlnAutopickFigureOfMerit"].astype(float)
    return points_table(table[Y], table[X], score=table.get(SCORE))


def _star_tables(path: Path, text: str) -> list[tuple[list[str], list[tuple[int, list[str]]]]]:
    # Every table of a STAR file, in order: each loop_ (its labels, its rows with their
    # line numbers), and each data block's "_label value" pairs as a table of one row.
    tables: list[tuple[list[str], list[tuple[int, list[str]]]]] = []
    pairs: dict[str, str] = {}
    pairs_line = 0
    loop: tuple[list[str], list[tuple[int, list[str]]]] | None = None

    def close_pairs() -> None:
        nonlocal pairs, pairs_line
        if pairs:
            tables.append((list(pairs), [(pairs_line, list(pairs.values()))]))
        pairs, pairs_line = {}, 0

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("data_"):
            close_pairs()
            loop = None
        elif line.startswith("loop_"):
            loop = ([], [])
            tables.append(loop)
        elif line.startswith("_"):
            name, _, value = line.partition(" ")
            if loop is not None and not loop[1]:
                loop[0].append(name)  # a loop's label (and a comment such as "#1")
                continue
            loop = None  # a label after a loop's rows ends the loop
            if not value.strip():
                raise InputError(path, f"line {number}: {name} has no value")
            pairs.setdefault(name, value.split()[0])
            pairs_line = pairs_line or number
        elif loop is not None:
            loop[1].append((number, line.split()))
    close_pairs()
    return tables


def _box_text(table: pd.DataFrame, box_size: int) -> str:
    # EMAN boxes store the corner of a box_size square: centre minus half a box.
    # Integer pixels, as EMAN2, cryoSPARC and RELION importers expect.
    half = box_size / 2.0
    xs = np.rint(table[X].to_numpy() - half).astype(np.int64)
    ys = np.rint(table[Y].to_numpy() - half).astype(np.int64)
    return "".join(f"{x}\t{y}\t{box_size}\t{box_size}\n" for x, y in zip(xs, ys, strict=True))


def _read_box(path: Path) -> pd.DataFrame:
    values = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        if not raw.strip():
            continue
        parts = raw.split()
        if len(parts) < 4:
            raise InputError(path, f"line {number}: a box line needs x, y, width, height")
        try:
            values.append([float(p) for p in parts[:4]])
        except ValueError:
            raise InputError(path, f"line {number}: not numbers: {raw.strip()!r}") from None
    arr = np.asarray(values, dtype=np.float64).reshape(-1, 4)
    return points_table(arr[:, 1] + arr[:, 3] / 2.0, arr[:, 0] + arr[:, 2] / 2.0)
