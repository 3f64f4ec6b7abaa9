"""Particles linked into tracks across frames, with an established linker.

Linking is the linear-assignment (LAP) framework of Jaqaman et al. (2008), the one
TrackMate's LAP trackers use, as implemented by ``laptrack`` (Fukai and Kawaguchi
2023): frame-to-frame links up to :attr:`LinkSettings.max_distance`, then gap closing
over up to :attr:`LinkSettings.gap_frames` missed frames; splitting and merging are
off by default (``laptrack`` offers them; particles that divide are rare here). No
linker is written here.

The largest displacement is read from the points themselves unless the user gives one
(:func:`estimate_max_distance`): how much more often a detection has a neighbour
within ``d`` in the next frame than in an unrelated frame tells how far particles move.
A fixed step fits one kind of motion: 5 px cut fast comets' tracks into pieces, and
is loose for still, crowded particles.

:func:`link` adds ``track_id`` to a points table; :func:`track_features` summarises
each track (length, mean speed, mean score and intensity), and :func:`tracks_longer`
keeps the tracks of at least N frames (short tracks are often noise). The files that
carry tracks to other tools (the ISBI 2012 particle tracking challenge XML, read and
written, so tracks round-trip) are in :mod:`napari_denodet.core.trackfiles`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from napari_denodet.core.errors import InputError
from napari_denodet.core.points import FRAME, X, Y

#: The column of a points table that names each point's track.
TRACK_ID = "track_id"


@dataclass(frozen=True)
class LinkSettings:
    """How points are linked.

    Parameters
    ----------
    max_distance : float or None
        Largest displacement (px) of a particle between linked detections, frame to
        frame and across a gap; None: estimated from the points
        (:func:`estimate_max_distance`).
    gap_frames : int
        Most frames a particle may be missed and still be linked across (0: none).
    """

    max_distance: float | None = None
    gap_frames: int = 2

    def __post_init__(self) -> None:
        if self.max_distance is not None and not (np.isfinite(self.max_distance)
                                                  and self.max_distance > 0):
            raise InputError(None, f"the largest displacement must be > 0 px, got "
                                   f"{self.max_distance!r}")
        if int(self.gap_frames) != self.gap_frames or self.gap_frames < 0:
            raise InputError(None, f"the gap must be a whole number of frames >= 0, got "
                                   f"{self.gap_frames!r}")

    def for_points(self, points: pd.DataFrame) -> LinkSettings:
        """Return these settings with the largest displacement estimated if it is None."""
        if self.max_distance is not None:
            return self
        return replace(self, max_distance=estimate_max_distance(points))


#: Largest displacement (px) when the points cannot tell (too few in consecutive
#: frames, or nothing recurs from one frame to the next).
FALLBACK_MAX_DISTANCE = 5.0
#: The estimate is this many times the distance at which the excess of next-frame
#: neighbours over chance peaks (see :func:`estimate_max_distance`).
REACH = 1.25
#: Distances tried (px).
_DISTANCES = np.arange(0.5, 50.01, 0.25)


def estimate_max_distance(points: pd.DataFrame, *, most_pairs: int = 100) -> float:
    """Estimate the largest displacement of the particles between two frames.

    For every detection of a frame, the distance to the nearest detection of the next
    frame is compared with the distance to the nearest one of the next frame turned
    half a turn about the points' centre (same density, no relation to the particles).
    The excess ``E(d)``, the share of detections with a next-frame neighbour within
    ``d`` minus the same share by chance, rises while ``d`` takes in the particles'
    own displacements and falls once chance neighbours come in faster. A nearest
    neighbour rule would stop where ``E`` peaks; the LAP linker assigns links jointly,
    so it can reach a little further: the estimate is :data:`REACH` times the distance
    at which ``E`` peaks (measured in docs/benchmarks/tracking.md).

    Parameters
    ----------
    points : pandas.DataFrame
        Points with ``frame``, ``y`` and ``x``.
    most_pairs : int
        Pairs of consecutive frames used at most (evenly spaced).

    Returns
    -------
    float
        px; :data:`FALLBACK_MAX_DISTANCE` when fewer than 20 detections have a next
        frame or when detections recur no more than chance (below 5 % excess).
    """
    from scipy.spatial import cKDTree

    if FRAME not in points.columns or len(points) == 0:
        return FALLBACK_MAX_DISTANCE
    frame = points[FRAME].round().to_numpy(np.int64)
    yx = points[[Y, X]].to_numpy(np.float64)
    centre = yx.min(axis=0) + yx.max(axis=0)
    by_frame = {int(f): yx[frame == f] for f in np.unique(frame)}
    starts = [f for f in by_frame if f + 1 in by_frame]
    if len(starts) > most_pairs:
        starts = [starts[int(i)] for i in np.linspace(0, len(starts) - 1, most_pairs)]
    near = np.zeros(len(_DISTANCES))
    chance = np.zeros(len(_DISTANCES))
    counted = 0
    for f in starts:
        here, there = by_frame[f], by_frame[f + 1]
        for table, reference in ((near, there), (chance, centre - there)):
            distances = np.sort(cKDTree(reference).query(here)[0])
            table += np.searchsorted(distances, _DISTANCES, side="right")
        counted += len(here)
    if counted < 20:
        return FALLBACK_MAX_DISTANCE
    excess = (near - chance) / counted
    peak = int(np.argmax(excess))
    if excess[peak] < 0.05:
        return FALLBACK_MAX_DISTANCE
    return float(REACH * _DISTANCES[peak])


def link(points: pd.DataFrame, settings: LinkSettings | None = None) -> pd.DataFrame:
    """Link the points of a time-lapse into tracks.

    Parameters
    ----------
    points : pandas.DataFrame
        A points table with ``frame``, ``y`` and ``x`` (other columns are kept).
    settings : LinkSettings, optional
        The largest displacement and gap (defaults otherwise: the displacement
        estimated from the points, :meth:`LinkSettings.for_points`).

    Returns
    -------
    pandas.DataFrame
        The same rows in the same order with a ``track_id`` column (0, 1, ...; a point
        linked to nothing is a track of its own), sorted ids by first frame.

    Raises
    ------
    InputError
        A table without ``frame`` (a single image has no tracks).
    """
    from laptrack import LapTrack

    settings = settings or LinkSettings()
    if FRAME not in points.columns:
        raise InputError(None, "tracks need a time-lapse: the points have no frame column")
    out = points.reset_index(drop=True).copy()
    if out.empty:
        out[TRACK_ID] = np.zeros(0, np.int64)
        return out
    squared = float(settings.for_points(out).max_distance) ** 2
    # laptrack counts a gap by the frames between the two ends (one missed frame: 2).
    tracker = LapTrack(cutoff=squared, gap_closing_cutoff=squared if settings.gap_frames
                       else False, gap_closing_max_frame_count=int(settings.gap_frames) + 1,
                       splitting_cutoff=False, merging_cutoff=False)
    table = pd.DataFrame({FRAME: out[FRAME].round().astype(np.int64),
                          Y: out[Y].astype(np.float64), X: out[X].astype(np.float64),
                          "row": np.arange(len(out))})
    table[FRAME] -= int(table[FRAME].min())  # laptrack counts frames from 0
    linked, _, _ = tracker.predict_dataframe(table, [Y, X], frame_col=FRAME,
                                             only_coordinate_cols=False)
    # laptrack returns the rows sorted by frame: back to the input's order.
    raw = linked.set_index("row").loc[np.arange(len(out)), "track_id"].to_numpy()
    # Renumber by first appearance (frame, then row): stable ids for the same input.
    order = np.lexsort((np.arange(len(raw)), table[FRAME].to_numpy()))
    mapping: dict[int, int] = {}
    for i in order:
        mapping.setdefault(int(raw[i]), len(mapping))
    out[TRACK_ID] = np.array([mapping[int(t)] for t in raw], dtype=np.int64)
    return out


def track_features(tracks: pd.DataFrame) -> pd.DataFrame:
    """Summarise each track of a linked points table.

    Returns
    -------
    pandas.DataFrame
        Per track: ``track_id``, ``length`` (frames spanned), ``detections``,
        ``mean_speed`` (px per frame over its links), and ``mean_score`` and
        ``mean_intensity`` where the table has ``score`` and ``intensity``.
    """
    rows = []
    for track_id, group in tracks.sort_values([TRACK_ID, FRAME]).groupby(TRACK_ID):
        frames = group[FRAME].to_numpy(np.float64)
        steps = np.hypot(np.diff(group[Y].to_numpy()), np.diff(group[X].to_numpy()))
        spans = np.diff(frames)
        row = {TRACK_ID: int(track_id), "length": int(frames[-1] - frames[0] + 1),
               "detections": len(group),
               "mean_speed": float(steps.sum() / spans.sum()) if spans.sum() else 0.0}
        for column in ("score", "intensity"):
            if column in group:
                row[f"mean_{column}"] = float(group[column].mean())
        rows.append(row)
    columns = [TRACK_ID, "length", "detections", "mean_speed"]
    return pd.DataFrame(rows, columns=None if rows else columns)


def tracks_longer(tracks: pd.DataFrame, frames: int) -> pd.DataFrame:
    """Return the points of the tracks that span at least ``frames`` frames."""
    if tracks.empty:
        return tracks
    span = tracks.groupby(TRACK_ID)[FRAME].agg(lambda f: f.max() - f.min() + 1)
    return tracks[tracks[TRACK_ID].map(span) >= frames].reset_index(drop=True)
