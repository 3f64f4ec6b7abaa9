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
    h, w = image.shape[-2] // factor, image.shape[-1] // factor
    if h < 1 or w < 1:
        raise ValueError(f"cannot bin a {image.shape[-2]} x {image.shape[-1]} image by "
                         f"{factor}")
    crop = np.asarray(image[..., : h * factor, : w * factor], dtype=np.float32)
    blocks = crop.reshape(*crop.shape[:-2], h, factor, w, factor)
    return blocks.mean(axis=(-3, -1), dtype=np.float64).astype(np.float32)


def unbin_points(table: pd.DataFrame, factor: int) -> pd.DataFrame:
    """Map a points table from binned to full-resolution pixel coordinates."""
    if factor == 1:
        return table
    out = table.copy()
    offset = (factor - 1) / 2.0
    out[Y] = table[Y] * factor + offset
    out[X] = table[X] * factor + offset
    return out
