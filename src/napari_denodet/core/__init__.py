"""The napari-free core of napari-denodet.

Everything here runs in a plain script, a notebook or on a dask worker: it never
imports napari, Qt, magicgui or vispy (a test enforces it). Submodules are imported
on demand, so ``import napari_denodet.core`` stays cheap and pulls in no torch.
"""

from napari_denodet.core.errors import DenodetError, InputError
from napari_denodet.core.points import POINT_COLUMNS, points_table

__all__ = ["POINT_COLUMNS", "DenodetError", "InputError", "points_table"]
