"""npe2 reader: images (TIFF, MRC, PNG/JPEG, Zarr/OME-Zarr) and our points CSV.

Images open lazily where the file allows (memory-mapped TIFF and MRC, Zarr as a dask
array), so a stack larger than memory opens at once and napari reads only the frames it
shows. napari offers this reader only CSV files named as napari-denodet names its
points files (``*points*.csv``, ``*particles*.csv``, ``*truth*.csv``: the manifest's
patterns), and of those it claims only the ones whose header has ``y`` and ``x``
columns; anything else is declined (``None``) so that napari can try other readers. A file this
reader claims but cannot read becomes an error notification naming the file.
"""

from __future__ import annotations

import csv
from pathlib import Path

from napari_denodet.core.errors import InputError
from napari_denodet.core.io import IMAGE_SUFFIXES, is_zarr, read_image, read_points
from napari_denodet.core.points import X, Y, coordinates

#: Style of Points layers opened from files (and of detection results).
POINTS_STYLE = {"size": 6, "face_color": "transparent", "border_color": "yellow"}


def _looks_like_points(path: Path) -> bool:
    try:
        # utf-8-sig: a spreadsheet's "Save as CSV (UTF-8)" starts the file with a BOM,
        # which would otherwise stick to the first column's name.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError):
        return False
    names = {h.strip() for h in header}
    return Y in names and X in names


def _claims(path: str) -> bool:
    p = Path(path)
    suffix = p.suffix.lower()
    if p.is_dir():
        return is_zarr(p)
    if suffix in IMAGE_SUFFIXES:
        return True
    return suffix == ".csv" and p.is_file() and _looks_like_points(p)


def get_reader(path: str | list[str]):
    """Return :func:`read_layers` when every path is a file this plugin reads, else None."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(_claims(p) for p in paths):
        return None
    return read_layers


def layer_from_file(path: str | Path) -> tuple:
    """Read one file as napari layer data (an Image or a Points layer)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        table = read_points(path)
        features = table.drop(columns=[c for c in ("frame", Y, X) if c in table.columns])
        return (coordinates(table), {"name": path.stem, "features": features, **POINTS_STYLE},
                "points")
    return (read_image(path), {"name": path.stem}, "image")


def read_layers(path: str | list[str]) -> list[tuple]:
    """Read the files napari asked for; each bad one becomes an error notification."""
    from napari.utils.notifications import show_error

    layers = []
    for p in [path] if isinstance(path, str) else list(path):
        try:
            layers.append(layer_from_file(p))
        except InputError as exc:
            show_error(str(exc))
    # [(None,)] tells napari "nothing to show" without a second error of its own.
    return layers or [(None,)]
