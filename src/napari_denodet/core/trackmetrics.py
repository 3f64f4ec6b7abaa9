"""The particle tracking challenge's measures: alpha, beta and the Jaccard indices.

Written from the definitions of Chenouard et al., "Objective comparison of particle
tracking methods", Nature Methods 11 (2014), online methods (no maintained Python
implementation of them exists; the challenge's own is a Java/Icy plugin):

- the distance between two tracks sums, over the frames where either has a point,
  ``min(|p - q|, eps)`` where both have one and ``eps`` where only one has;
- every true track is paired with one estimated track or with none (a dummy track with
  no point), the pairing that minimises the summed distance (Hungarian algorithm);
- ``alpha = 1 - d(X, Y) / d(X, 0)``: 1 when every true point is found at its place,
  0 when nothing is; ``d(X, 0)`` is ``eps`` times the true points;
- ``beta = (d(X, 0) - d(X, Y)) / (d(X, 0) + d(Y', 0))``: alpha penalised by the
  estimated tracks paired with no true one (``Y'``, ``eps`` per point);
- the Jaccard index of tracks ``TP / (TP + FN + FP)``: paired tracks, true tracks
  paired with none, estimated tracks paired with none;
- the Jaccard index of detections: the points of paired tracks closer than ``eps`` in
  the same frame, against the true and estimated points left over.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from napari_denodet.core.points import FRAME, X, Y
from napari_denodet.core.tracks import TRACK_ID

#: The challenge's gate (px): farther points count as missed.
EPSILON = 5.0


@dataclass(frozen=True)
class TrackingScores:
    """The challenge's measures for one set of estimated tracks against the truth."""

    alpha: float
    beta: float
    jaccard_tracks: float
    jaccard_detections: float
    true_tracks: int
    estimated_tracks: int

    def as_dict(self) -> dict:
        """Return the scores as a plain dict."""
        return asdict(self)


def _tracks(table: pd.DataFrame) -> list[dict[int, np.ndarray]]:
    # Per track (in order of id), frame -> (y, x).
    out = []
    for _, group in table.groupby(TRACK_ID, sort=True):
        frames = group[FRAME].round().astype(int).to_numpy()
        points = group[[Y, X]].to_numpy(np.float64)
        out.append(dict(zip(frames.tolist(), points, strict=True)))
    return out


def _distance(a: dict, b: dict, eps: float) -> tuple[float, int]:
    # The challenge's track distance, and the frames where both are closer than eps.
    both = a.keys() & b.keys()
    close = 0
    total = eps * (len(a) + len(b) - 2 * len(both))
    for frame in both:
        d = float(np.hypot(*(a[frame] - b[frame])))
        total += min(d, eps)
        close += d < eps
    return total, close


def _candidates(truth: list[dict], estimate: list[dict], eps: float) -> set[tuple[int, int]]:
    # Pairs with at least one frame closer than eps: only these can beat no pairing.
    from scipy.spatial import cKDTree

    by_frame: dict[int, list] = {}
    for which, tracks in ((0, truth), (1, estimate)):
        for i, track in enumerate(tracks):
            for frame, point in track.items():
                by_frame.setdefault(frame, [[], []])[which].append((i, point))
    pairs = set()
    for here_truth, here_estimate in by_frame.values():
        if not here_truth or not here_estimate:
            continue
        tree = cKDTree(np.array([p for _, p in here_estimate]))
        for (i, _), near in zip(here_truth, tree.query_ball_point(
                np.array([p for _, p in here_truth]), eps), strict=True):
            pairs.update((i, here_estimate[j][0]) for j in near)
    return pairs


def score_tracks(truth: pd.DataFrame, estimate: pd.DataFrame,
                 eps: float = EPSILON) -> TrackingScores:
    """Score estimated tracks against true ones with the challenge's measures.

    Parameters
    ----------
    truth, estimate : pandas.DataFrame
        Tracks tables: ``track_id``, ``frame``, ``y``, ``x`` (one point per track and
        frame).
    eps : float
        The gate in pixels (the challenge's 5 px).

    Returns
    -------
    TrackingScores
    """
    from scipy.optimize import linear_sum_assignment

    true_tracks, estimated = _tracks(truth), _tracks(estimate)
    n, m = len(true_tracks), len(estimated)
    alone = np.array([eps * len(t) for t in true_tracks])
    big = float(alone.sum() + eps * sum(len(e) for e in estimated) + 1.0)
    cost = np.full((n, m + n), big)
    cost[np.arange(n), m + np.arange(n)] = alone
    # Tracks never closer than eps cost at least as much as no pairing: an upper bound.
    cost[:, :m] = alone[:, None] + eps * np.array([len(e) for e in estimated])[None, :]
    close = {}
    for i, j in _candidates(true_tracks, estimated, eps):
        cost[i, j], close[i, j] = _distance(true_tracks[i], estimated[j], eps)
    rows, cols = linear_sum_assignment(cost) if n else (np.zeros(0, int), np.zeros(0, int))
    paired = [(i, j) for i, j in zip(rows, cols, strict=True)
              if j < m and cost[i, j] < alone[i]]
    d_pairs = sum(cost[i, j] for i, j in paired)
    d_unpaired_true = sum(alone[i] for i in set(range(n)) - {i for i, _ in paired})
    d_xy = d_pairs + d_unpaired_true
    d_x0 = float(alone.sum())
    spare = set(range(m)) - {j for _, j in paired}
    d_spare = eps * sum(len(estimated[j]) for j in spare)
    tp_points = sum(close.get(pair, 0) for pair in paired)
    n_true_points = sum(len(t) for t in true_tracks)
    n_est_points = sum(len(e) for e in estimated)
    alpha = 1.0 - d_xy / d_x0 if d_x0 else 1.0
    beta = (d_x0 - d_xy) / (d_x0 + d_spare) if d_x0 + d_spare else 1.0
    tracks_union = n + m - len(paired)
    points_union = n_true_points + n_est_points - tp_points
    return TrackingScores(
        alpha=float(alpha), beta=float(beta),
        jaccard_tracks=len(paired) / tracks_union if tracks_union else 1.0,
        jaccard_detections=tp_points / points_union if points_union else 1.0,
        true_tracks=n, estimated_tracks=m)
