"""The clicks: read, checked, split for the held-out check and laid on their frames.

Also the area the clicks cover (:func:`clicked_area`: in a completely clicked region
the rest of it is known background, and the ``"threshold"`` mode calibrates from it),
the clicks' density there (:func:`click_density`), the parent's surest detections taken
as extra positives, and the PU class prior estimated from both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from napari_denodet.core.errors import InputError
from napari_denodet.core.finetune.settings import (
    CALIBRATION_GATE,
    HELD_OUT_SHARE,
    MIN_CLICKS,
    MIN_CLICKS_FOR_CHECK,
    FinetuneSettings,
)
from napari_denodet.core.normalize import finite_frame, normalise_frame
from napari_denodet.core.points import FRAME, SCORE, X, Y, points_table
from napari_denodet.core.predict import window_indices


@dataclass
class _Frame:
    # One normalised frame with the clicks on it, in the frame's pixels; for a model
    # that reads a window of frames, ``image`` and ``raw`` hold the window around it.
    index: int
    image: np.ndarray
    positives: np.ndarray  # (K, 2) y, x
    negatives: np.ndarray  # (M, 2) y, x
    heldout: np.ndarray  # (J, 2) y, x, clicks kept out of training for the check
    region: np.ndarray  # (H, W) bool: the area clicked completely (empty if not claimed)
    pseudo: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # parent's sure ones
    # The frame as the engine takes it (finite, particles bright: negated if inverted), so
    # detections on it are normalised once, as in detect; None: detect on ``image``.
    raw: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the frame."""
        return self.image.shape[-2:]

    @property
    def pixels(self) -> int:
        """Pixels of the frame (one frame, not its window)."""
        return int(np.prod(self.shape))


def _as_table(points: pd.DataFrame | np.ndarray | None, stack: bool, what: str) -> pd.DataFrame:
    if points is None:
        return points_table([], [], frame=[] if stack else None)
    if isinstance(points, pd.DataFrame):
        table = points
    else:
        array = np.asarray(points, dtype=np.float64).reshape(-1, 3 if stack else 2)
        table = (points_table(array[:, 1], array[:, 2], frame=array[:, 0].round())
                 if stack else points_table(array[:, 0], array[:, 1]))
    missing = [c for c in ((FRAME, Y, X) if stack else (Y, X)) if c not in table.columns]
    if missing:
        raise InputError(None, f"the {what} lack column(s) {', '.join(missing)} "
                               f"{'for a (t, y, x) stack' if stack else ''}".rstrip())
    return table


def _check_clicks(table: pd.DataFrame, shape: tuple[int, ...], stack: bool) -> None:
    if len(table) < MIN_CLICKS:
        raise InputError(None, f"fine-tuning needs at least {MIN_CLICKS} clicked particle "
                               f"centres, got {len(table)}: click more particles")
    height, width = shape[-2:]
    inside = ((table[Y] >= -0.5) & (table[Y] < height - 0.5)
              & (table[X] >= -0.5) & (table[X] < width - 0.5))
    if stack:
        inside &= (table[FRAME] >= 0) & (table[FRAME] < shape[0])
    if not inside.all():
        raise InputError(None, f"{int((~inside).sum())} clicked point(s) lie outside the "
                               f"{'x'.join(map(str, shape))} image")


def _split_heldout(table: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    # A boolean mask of held-out clicks: HELD_OUT_SHARE of them (at random) once there
    # are enough, never fewer than MIN_CLICKS left for training.
    held = np.zeros(len(table), dtype=bool)
    if len(table) >= MIN_CLICKS_FOR_CHECK:
        n = min(int(round(HELD_OUT_SHARE * len(table))), len(table) - MIN_CLICKS)
        held[rng.permutation(len(table))[:n]] = True
    return held


def _half_spacing(points: np.ndarray) -> float:
    # Half the mean distance from each click to its nearest clicked neighbour.
    from scipy.spatial import cKDTree

    return float(np.mean(cKDTree(points).query(points, k=2)[0][:, 1])) / 2.0


def _in_area(yx: np.ndarray, area: np.ndarray) -> np.ndarray:
    # Which (y, x) points fall on a True pixel of ``area`` (rounded, clipped to it).
    yy = np.clip(np.round(yx[:, 0]).astype(int), 0, area.shape[0] - 1)
    xx = np.clip(np.round(yx[:, 1]).astype(int), 0, area.shape[1] - 1)
    return area[yy, xx]


def clicked_area(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Return the area the clicks cover: their convex hull grown by half their spacing.

    Parameters
    ----------
    points : numpy.ndarray
        ``(N, 2)`` clicked ``(y, x)`` on one frame.
    shape : tuple of int
        ``(H, W)`` of the frame.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool; all False for fewer than 3 clicks or clicks on a line.
    """
    from scipy.ndimage import distance_transform_edt
    from scipy.spatial import Delaunay, QhullError

    area = np.zeros(shape, dtype=bool)
    if len(points) < 3:
        return area
    grow = _half_spacing(points)
    lo = np.maximum(np.floor(points.min(axis=0) - grow - 1), 0).astype(int)
    hi = np.minimum(np.ceil(points.max(axis=0) + grow + 2), shape).astype(int)
    try:
        hull = Delaunay(points)
    except QhullError:
        return area
    yy, xx = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]]
    inside = hull.find_simplex(np.column_stack([yy.ravel(), xx.ravel()])) >= 0
    inside = inside.reshape(yy.shape)
    area[lo[0]:hi[0], lo[1]:hi[1]] = distance_transform_edt(~inside) <= grow
    return area


def clicks_polarity(image: Any, positives: pd.DataFrame, sigma: float = 2.0) -> str:
    """Return ``"bright"`` or ``"dark"``: the particles' polarity, read from the clicks.

    On each clicked frame (smoothed by a Gaussian of ``sigma`` px against the noise),
    the values at the clicks are compared with the frame's median: particles brighter
    than their frame are bright. The majority of the clicks decides (ties: dark, as
    micrographs usually are).
    """
    from scipy.ndimage import gaussian_filter

    stack = np.ndim(image) == 3
    votes = 0
    indices = sorted(set(positives[FRAME].astype(int))) if stack else [0]
    for index in indices:
        frame, _ = finite_frame(np.asarray(image[index] if stack else image, np.float32))
        smooth = gaussian_filter(frame, sigma)
        rows = positives[positives[FRAME] == index] if stack else positives
        yy = np.clip(np.rint(rows[Y].to_numpy()).astype(int), 0, frame.shape[0] - 1)
        xx = np.clip(np.rint(rows[X].to_numpy()).astype(int), 0, frame.shape[1] - 1)
        votes += int(np.sign(smooth[yy, xx] - np.median(smooth)).sum())
    return "bright" if votes > 0 else "dark"


def _frames(image: Any, positives: pd.DataFrame, negatives: pd.DataFrame, invert: bool,
            held: np.ndarray, complete: bool = False,
            window: int = 1) -> tuple[list[_Frame], int]:
    # The clicked frames (each in its window of frames, for a model that reads one),
    # normalised, and how many of their pixels were NaN or inf.
    stack = np.ndim(image) == 3
    indices = sorted(set(positives[FRAME].astype(int))) if stack else [0]
    frames, non_finite = [], 0
    last = np.shape(image)[0] - 1 if stack else 0
    for index in indices:
        raw = np.asarray(image[index] if stack else image, dtype=np.float32)
        engine, bad = finite_frame(raw, index if stack else None)
        normalised, _, _ = normalise_frame(engine, invert)
        non_finite += bad
        if window > 1:
            # The engine's window: neighbours, the frame itself where they are missing.
            around = window_indices(index, window, 0, last)
            read = [engine if j == index or not stack else finite_frame(
                np.asarray(image[j], dtype=np.float32), j)[0] for j in around]
            engine = np.stack(read)
            normalised = np.stack([normalise_frame(f, invert)[0] for f in read])

        def on_frame(table, index=index):
            rows = table[table[FRAME] == index] if stack else table
            return rows[[Y, X]].to_numpy(np.float64)

        trained = on_frame(positives[~held])
        frames.append(_Frame(
            index=index,
            image=normalised,
            positives=trained,
            negatives=on_frame(negatives),
            heldout=on_frame(positives[held]),
            region=(clicked_area(trained, raw.shape) if complete
                    else np.zeros(raw.shape, dtype=bool)),
            raw=-engine if invert else engine,
        ))
    return frames, non_finite


def _add_pseudo_labels(frames: list[_Frame], candidates: pd.DataFrame, threshold: float,
                       share: float) -> None:
    # The parent's most confident detections, away from every click and negative.
    found = candidates[candidates[SCORE] >= threshold].sort_values(SCORE, ascending=False)
    found = found.iloc[: int(round(share * len(found)))]
    for i, frame in enumerate(frames):
        mine = found[found[FRAME] == i][[Y, X]].to_numpy(np.float64)
        known = np.concatenate([frame.positives, frame.heldout, frame.negatives])
        if len(mine) and len(known):
            from scipy.spatial.distance import cdist

            mine = mine[cdist(mine, known).min(axis=1) > CALIBRATION_GATE]
        frame.pseudo = mine


def _click_tables(frames: list[_Frame], attribute: str) -> pd.DataFrame:
    parts = [(i, getattr(f, attribute)) for i, f in enumerate(frames)]
    ys = np.concatenate([p[:, 0] for _, p in parts]) if parts else np.zeros(0)
    xs = np.concatenate([p[:, 1] for _, p in parts]) if parts else np.zeros(0)
    fr = np.concatenate([np.full(len(p), i) for i, p in parts]) if parts else np.zeros(0)
    return points_table(ys, xs, frame=fr)


def _pixels(frames: list[_Frame]) -> int:
    return sum(f.pixels for f in frames)


def click_density(points: np.ndarray, shape: tuple[int, int]) -> float:
    """Return particles per pixel in the area the clicks cover, taken as completely clicked.

    Parameters
    ----------
    points : numpy.ndarray
        ``(N, 2)`` clicked ``(y, x)`` on one frame.
    shape : tuple of int
        ``(H, W)`` of the frame.

    Returns
    -------
    float
        ``N`` over the pixels of :func:`clicked_area`; 0 when that area is empty (fewer
        than 3 clicks, or clicks on a line).
    """
    area = int(clicked_area(points, shape).sum())
    return len(points) / area if area else 0.0


def _estimate_prior(found: pd.DataFrame, frames: list[_Frame],
                    settings: FinetuneSettings) -> float:
    # Particles per pixel: the user's figure; else the larger of the parent's detections
    # at its threshold and the density of the clicks. Under-estimating hurts most: the
    # particles nobody clicked are then learnt as background (docs/models-history.md,
    # Fine-tuning).
    pixels = _pixels(frames)
    if settings.particles_per_frame is not None:
        return settings.particles_per_frame * len(frames) / pixels
    clicks = sum(len(f.positives) + len(f.heldout) for f in frames)
    parent = float(len(found))
    dense = sum(click_density(np.concatenate([f.positives, f.heldout]), f.shape)
                * f.pixels for f in frames)
    return max(parent, dense, clicks) / pixels
