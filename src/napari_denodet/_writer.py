"""npe2 writer: a Points layer to CSV (every feature a column), STAR or BOX."""

from __future__ import annotations

from napari_denodet.core.errors import InputError
from napari_denodet.core.io import write_points
from napari_denodet.core.points import table_from_coordinates


def write_points_layer(path: str, data, attributes: dict) -> list[str]:
    """Write a Points layer's coordinates and features.

    napari's save dialog has already asked before replacing a file, so an existing file
    is replaced (atomically). A ``.box`` file takes its box size from the layer's
    ``metadata["box_size"]``, else from its point size.
    """
    import numpy as np

    table = table_from_coordinates(np.asarray(data), attributes.get("features"))
    box_size = None
    if path.lower().endswith(".box"):
        box_size = attributes.get("metadata", {}).get("box_size")
        if box_size is None:
            size = np.asarray(attributes.get("size", 0.0), dtype=float)
            box_size = int(round(float(size.mean()))) if size.size else 0
        if not box_size:
            raise InputError(path, "set a box size: layer.metadata['box_size'] = pixels")
    write_points(path, table, overwrite=True, box_size=box_size)
    return [path]
