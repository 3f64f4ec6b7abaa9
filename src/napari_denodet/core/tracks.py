"""Particles linked into tracks across frames, with an established linker.

Linking is the linear-assignment (LAP) framework of Jaqaman et al. (2008), the one
TrackMate's LAP trackers use, as implemented by ``laptrack`` (Fukai and Kawaguchi
2023): frame-to-frame links up to :attr:`LinkSettings.max_distance`, then gap closing
over up to :attr:`LinkSettings.gap_frames` missed frames; splitting and merging are
off by default (``laptrack`` offers them; particles that divide are rare here). No
linker is written here.

:func:`link` adds ``track_id`` to a points table; :func:`track_features` summarises
each track (length, mean speed, mean score and intensity), and :func:`tracks_longer`
keeps the tracks of at least N frames (short tracks are often noise). The files that
carry tracks to other tools (the ISBI 2012 particle tracking challenge XML, read and
written, so tracks round-trip) are in :mod:`napari_denodet.core.trackfiles`.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    max_distance : float
        Largest displacement (px) of a particle between linked detections, frame to
        frame and across a gap.
    gap_frames : int
        Most frames a particle may be missed and still be linked across (0: none).
    """

    max_distance: float = 5.0
    gap_frames: int = 2

    def __post_init__(self) -> None:
        if not np.isfinite(self.max_distance) or self.max_distance <= 0:
            raise InputError(None, f"the largest displacement must be > 0 px, got "
                                   f"{self.max_distance!r}")
        if int(self.gap_frames) != self.gap_frames or self.gap_frames < 0:
            raise InputError(None, f"the gap must be a whole number of frames >= 0, got "
                                   f"{self.gap_frames!r}")


def link(points: pd.DataFrame, settings: LinkSettings | None = None) -> pd.DataFrame:
    """Link the points of a time-lapse into tracks.

    Parameters
    ----------
    points : pandas.DataFrame
        A points table with ``frame``, ``y`` and ``x`` (other columns are kept).
    settings : LinkSettings, optional
        The largest displacement and gap (defaults otherwise).

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
    squared = float(settings.max_distance) ** 2
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
