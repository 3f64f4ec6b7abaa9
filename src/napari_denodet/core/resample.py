"""Binning of large images and the mapping of coordinates back to full resolution.

Binned pixel ``i`` averages full-resolution pixels ``i*n .. i*n + n - 1``, so its centre
lies at ``i*n + (n - 1)/2`` in full-resolution pixel coordinates (pixel centres on
integers, as everywhere in napari-denodet).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_denodet.core.points import X, Y


def bin_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor x factor`` blocks of the last two axes (the remainder is cropped).

    Parameters
    ----------
    image : numpy.ndarray
        ``(y, x)`` or ``(t, y, x)``.
    factor : int
        Bin size; 1 returns the input unchanged.

    Returns
    -------
    numpy.ndarray
        float32 binned image (the input itself when ``factor`` is 1).
    """
    if factor == 1:
        return image
    h, w = binned_shape(image.shape, factor)[-2:]
    crop = np.asarray(image[..., : h * factor, : w * factor], dtype=np.float32)
    blocks = crop.reshape(*crop.shape[:-2], h, factor, w, factor)
    return blocks.mean(axis=(-3, -1), dtype=np.float64).astype(np.float32)


def binned_shape(shape: tuple[int, ...], factor: int) -> tuple[int, ...]:
    """Return the shape of ``shape`` binned by ``factor`` (the remainder is cropped).

    Raises
    ------
    ValueError
        When a side is smaller than ``factor``.
    """
    h, w = shape[-2] // factor, shape[-1] // factor
    if h < 1 or w < 1:
        raise ValueError(f"cannot bin a {shape[-2]} x {shape[-1]} image by {factor}")
    return (*tuple(shape[:-2]), h, w)


def unbin_points(table: pd.DataFrame, factor: int) -> pd.DataFrame:
    """Map a points table from binned to full-resolution pixel coordinates."""
    if factor == 1:
        return table
    out = table.copy()
    offset = (factor - 1) / 2.0
    out[Y] = table[Y] * factor + offset
    out[X] = table[X] * factor + offset
    return out


class BinnedStack:
    """A ``(t, y, x)`` stack binned frame by frame as it is sliced, never all at once.

    Slicing frames (``binned[a:b]``, ``binned[i]``) reads those frames of the source
    (:func:`napari_denodet.core.io.load_block`) and bins them, so a memory-mapped or
    dask-backed stack streams through :func:`napari_denodet.core.predict.detect` with
    binning as it does without.

    Parameters
    ----------
    stack : array_like
        ``(t, y, x)``, anything that slices like a numpy array.
    factor : int
        Bin size.
    """

    def __init__(self, stack, factor: int) -> None:
        self.stack = stack
        self.factor = int(factor)
        self.shape = binned_shape(tuple(stack.shape), factor)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        from napari_denodet.core.io import load_block

        if not isinstance(key, (slice, int, np.integer)):
            raise IndexError(f"BinnedStack slices frames only, not [{key!r}]")
        return bin_image(load_block(self.stack[key]), self.factor)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        binned = self[:]
        return binned if dtype is None else binned.astype(dtype)


def bin_lazily(image, factor: int):
    """Bin an image now, or a stack frame by frame as it is read.

    Parameters
    ----------
    image : array_like
        ``(y, x)`` or ``(t, y, x)``; memory maps and dask arrays are read lazily.
    factor : int
        Bin size; 1 returns the input unchanged.

    Returns
    -------
    array_like
        The input itself (``factor`` 1), a binned float32 image (2D), or a
        :class:`BinnedStack` (3D).
    """
    from napari_denodet.core.io import load_block

    if factor == 1:
        return image
    if len(image.shape) == 3:
        return BinnedStack(image, factor)
    return bin_image(load_block(image), factor)


def bin_points(table: pd.DataFrame, factor: int) -> pd.DataFrame:
    """Map a points table from full-resolution to binned pixel coordinates."""
    if factor == 1:
        return table
    out = table.copy()
    offset = (factor - 1) / 2.0
    out[Y] = (table[Y] - offset) / factor
    out[X] = (table[X] - offset) / factor
    return out
