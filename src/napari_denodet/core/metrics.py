"""Detection and denoising scores: gated Hungarian matching, F1, RMSE, PSNR.

A predicted particle and a reference particle can match only when they are at most
``gate`` pixels apart (5 px by default, as in the Particle Tracking Challenge and the
DENODET paper). Within each frame the matching is the one-to-one assignment that first
maximises the number of matched pairs and then minimises their total distance.

Only the pairs within the gate are ever built (a k-d tree, sparse distances), and they
are counted before they are built: a frame whose points are so dense that the pairs
would not fit (:data:`MAX_GATED_PAIRS`) is refused with an
:class:`~napari_denodet.core.errors.InputError` instead of exhausting memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import (
    connected_components,
    maximum_bipartite_matching,
    min_weight_full_bipartite_matching,
)
from scipy.spatial import cKDTree

from napari_denodet.core.errors import InputError
from napari_denodet.core.points import FRAME, SCORE, X, Y

#: Default matching distance in pixels.
GATE = 5.0
#: Most pairs within the gate in one frame (about 24 bytes each, several copies): in a
#: real frame each particle has a few neighbours within the gate, not thousands.
MAX_GATED_PAIRS = 2**24
#: Groups of candidate pairs up to this many cells are solved as dense cost matrices;
#: larger ones as sparse graphs.
MAX_DENSE_CELLS = 2**22


@dataclass(frozen=True)
class DetectionScores:
    """Counts and scores of a detection result against a reference.

    Attributes
    ----------
    tp, fp, fn : int
        True positives (matched pairs), false positives (unmatched predictions) and
        false negatives (unmatched reference points).
    rmse : float
        Root-mean-square distance of the matched pairs in pixels; NaN without matches.
    """

    tp: int
    fp: int
    fn: int
    rmse: float

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 1 when nothing was predicted."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """TP / (TP + FN); 1 when there is nothing to find."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        """2TP / (2TP + FP + FN); 1 when both sides are empty."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else 1.0

    def as_dict(self) -> dict:
        """Return counts and scores as plain numbers (for JSON)."""
        out = asdict(self)
        out.update(precision=self.precision, recall=self.recall, f1=self.f1)
        return out


def match_points(
    predicted: np.ndarray, reference: np.ndarray, gate: float = GATE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match two point sets one-to-one under a distance gate.

    Parameters
    ----------
    predicted : numpy.ndarray
        ``(N, D)`` coordinates.
    reference : numpy.ndarray
        ``(M, D)`` coordinates.
    gate : float
        Largest distance at which two points may match (inclusive).

    Returns
    -------
    pred_index, ref_index : numpy.ndarray
        Indices of the matched pairs.
    distance : numpy.ndarray
        Distance of each matched pair.
    """
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))
    if len(predicted) == 0 or len(reference) == 0:
        return empty
    predicted = np.asarray(predicted, dtype=np.float64).reshape(len(predicted), -1)
    reference = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    n = len(predicted)
    pairs = _gated_pairs(predicted, reference, gate)
    rows, cols, dist = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"]
    if len(rows) == 0:
        return empty
    # Solve each connected group of candidate pairs on its own: small dense problems
    # instead of one N x M matrix for a frame with thousands of particles.
    adjacency = coo_matrix((np.ones(len(rows)), (rows, n + cols)),
                           shape=(n + len(reference),) * 2)
    _, labels = connected_components(adjacency, directed=False)
    group = labels[rows]
    out_p, out_r, out_d = [], [], []
    order = np.argsort(group, kind="stable")
    boundaries = np.flatnonzero(np.diff(group[order])) + 1
    for idx in np.split(order, boundaries):
        gp, p_inv = np.unique(rows[idx], return_inverse=True)
        gr, r_inv = np.unique(cols[idx], return_inverse=True)
        if len(gp) == 1 or len(gr) == 1:
            best = np.argmin(dist[idx])
            out_p.append(gp[p_inv[best]:p_inv[best] + 1])
            out_r.append(gr[r_inv[best]:r_inv[best] + 1])
            out_d.append(dist[idx][best:best + 1])
            continue
        if len(gp) * len(gr) > MAX_DENSE_CELLS:
            pi, ri, d = _sparse_assignment(p_inv, r_inv, dist[idx], len(gp), len(gr), gate)
            out_p.append(gp[pi])
            out_r.append(gr[ri])
            out_d.append(d)
            continue
        # Forbidden pairs cost more than any feasible assignment, so the solver first
        # maximises the number of gated matches, then minimises their total distance.
        big = gate * (min(len(gp), len(gr)) + 1) * 2.0 + 1.0
        cost = np.full((len(gp), len(gr)), big)
        cost[p_inv, r_inv] = dist[idx]
        ri, ci = linear_sum_assignment(cost)
        ok = cost[ri, ci] < big
        out_p.append(gp[ri[ok]])
        out_r.append(gr[ci[ok]])
        out_d.append(cost[ri[ok], ci[ok]])
    return (np.concatenate(out_p).astype(np.int64), np.concatenate(out_r).astype(np.int64),
            np.concatenate(out_d))


def _gated_pairs(predicted: np.ndarray, reference: np.ndarray, gate: float) -> np.ndarray:
    # The pairs within the gate, as a record array (i, j, v), counted first: the count
    # costs no memory, the pairs about 24 bytes each.
    tree_p, tree_r = cKDTree(predicted), cKDTree(reference)
    if len(predicted) * len(reference) > MAX_GATED_PAIRS:
        count = int(tree_p.count_neighbors(tree_r, gate))
        if count > MAX_GATED_PAIRS:
            raise InputError(None, f"{len(predicted)} predicted and {len(reference)} "
                                   f"reference points in one frame make {count:,} pairs "
                                   f"within the {gate:g} px gate (at most "
                                   f"{MAX_GATED_PAIRS:,}): far too dense to match; check "
                                   "the coordinates' units, or use a smaller --gate")
    return tree_p.sparse_distance_matrix(tree_r, gate, output_type="ndarray")


def _sparse_assignment(
    p: np.ndarray, r: np.ndarray, d: np.ndarray, n_p: int, n_r: int, gate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # The assignment of a large group without a dense n_p x n_r matrix: a perfect
    # matching of minimum weight in a graph that always has one. Left: the predictions,
    # then one stand-in per reference; right: the references, then one stand-in per
    # prediction. A prediction may stay unmatched (its own stand-in, cost `big`), as may
    # a reference; the stand-ins of a matched pair take the mirrored edge. Every perfect
    # matching has n_p + n_r edges, so adding 1 to every weight (no zero weights, which a
    # sparse matrix would drop) changes nothing. Its cost is sum(d) + 2k +
    # big (n_p + n_r - 2k) for k pairs: with big > gate * min(n_p, n_r) + 1 the matching
    # first maximises k, then minimises the distances, as the dense path does.
    big = gate * (min(n_p, n_r) + 1) * 2.0 + 2.0
    own_p, own_r = np.arange(n_p), np.arange(n_r)
    rows = np.concatenate([p, own_p, n_p + own_r, n_p + r])
    cols = np.concatenate([r, n_r + own_p, own_r, n_r + p])
    weights = np.concatenate([d + 1.0, np.full(n_p + n_r, big), np.ones(len(p))])
    graph = csr_matrix((weights, (rows, cols)), shape=(n_p + n_r,) * 2)
    left, right = min_weight_full_bipartite_matching(graph)
    real = (left < n_p) & (right < n_r)
    left, right = left[real].astype(np.int64), right[real].astype(np.int64)
    return left, right, np.asarray(graph[left, right]).ravel() - 1.0


def _frames(table: pd.DataFrame) -> np.ndarray:
    if FRAME in table.columns:
        return table[FRAME].to_numpy(dtype=np.int64)
    return np.zeros(len(table), dtype=np.int64)


def score_detections(
    predicted: pd.DataFrame, reference: pd.DataFrame, gate: float = GATE
) -> DetectionScores:
    """Score predicted points against reference points, frame by frame.

    Parameters
    ----------
    predicted, reference : pandas.DataFrame
        Points tables. Either both or neither should have a ``frame`` column; a table
        without one is treated as frame 0.
    gate : float
        Matching distance in pixels.

    Returns
    -------
    DetectionScores
        TP/FP/FN summed over frames and RMSE over all matched pairs.
    """
    pf, rf = _frames(predicted), _frames(reference)
    pxy = predicted[[Y, X]].to_numpy(dtype=np.float64)
    rxy = reference[[Y, X]].to_numpy(dtype=np.float64)
    tp = 0
    squared = []
    stack = FRAME in predicted.columns or FRAME in reference.columns
    for frame in np.union1d(pf, rf):
        p_sel, r_sel = pxy[pf == frame], rxy[rf == frame]
        try:
            _, _, d = match_points(p_sel, r_sel, gate)
        except InputError as error:
            if not stack:
                raise
            raise InputError(error.path, f"frame {frame}: {error.reason}") from None
        tp += len(d)
        squared.append(d * d)
    sq = np.concatenate(squared) if squared else np.empty(0)
    rmse = float(np.sqrt(sq.mean())) if len(sq) else float("nan")
    return DetectionScores(tp=tp, fp=len(pxy) - tp, fn=len(rxy) - tp, rmse=rmse)


def f1_by_threshold(
    predicted: pd.DataFrame, reference: pd.DataFrame, thresholds, gate: float = GATE
) -> np.ndarray:
    """F1 of the predictions scoring at or above each threshold, for many thresholds.

    Gives what ``score_detections(predicted[predicted.score >= t], reference, gate).f1``
    gives for each ``t``, much faster: the F1 depends only on how many pairs match, and
    the matching of :func:`match_points` first maximises that number, so each threshold
    needs only a maximum bipartite matching (Hopcroft-Karp) of the gated pairs of the
    predictions kept, not the distance-minimising assignment.

    Parameters
    ----------
    predicted : pandas.DataFrame
        Points table with a ``score`` column.
    reference : pandas.DataFrame
        Points table of the true positions.
    thresholds : array-like
        Score levels.
    gate : float
        Matching distance in pixels.

    Returns
    -------
    numpy.ndarray
        One F1 per threshold.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64).ravel()
    pf, rf = _frames(predicted), _frames(reference)
    pxy = predicted[[Y, X]].to_numpy(dtype=np.float64)
    rxy = reference[[Y, X]].to_numpy(dtype=np.float64)
    score = predicted[SCORE].to_numpy(dtype=np.float64)
    rows, cols = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for frame in np.intersect1d(pf, rf):
        p_index, r_index = np.flatnonzero(pf == frame), np.flatnonzero(rf == frame)
        pairs = _gated_pairs(pxy[p_index], rxy[r_index], gate)
        rows.append(p_index[pairs["i"].astype(np.int64)])
        cols.append(r_index[pairs["j"].astype(np.int64)])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    # Only predictions with a reference within the gate can match.
    linked, rows = np.unique(rows, return_inverse=True)
    linked_score = score[linked]
    out = np.empty(len(thresholds))
    for i, t in enumerate(thresholds):
        keep = linked_score[rows] >= t
        tp = 0
        if keep.any():
            graph = csr_matrix((np.ones(int(keep.sum()), np.int8), (rows[keep], cols[keep])),
                               shape=(len(linked), len(rxy)))
            tp = int(np.count_nonzero(
                maximum_bipartite_matching(graph, perm_type="column") >= 0))
        denominator = int(np.count_nonzero(score >= t)) + len(rxy)
        out[i] = 2 * tp / denominator if denominator else 1.0
    return out


def psnr(reference: np.ndarray, estimate: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio of an estimate against a clean reference, in dB.

    For a stack, the PSNR of each frame is computed with that frame's range and the
    mean over frames is returned (frames of a time-lapse differ in range).

    Parameters
    ----------
    reference : numpy.ndarray
        The noise-free image or ``(t, y, x)`` stack.
    estimate : numpy.ndarray
        The denoised (or noisy) image of the same shape.
    data_range : float, optional
        Range of the reference; by default ``max - min`` of each frame.

    Returns
    -------
    float
        PSNR in dB (``inf`` for a perfect estimate).
    """
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if reference.shape != estimate.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {estimate.shape}")
    if reference.ndim == 3:
        return float(np.mean([psnr(r, e, data_range) for r, e in
                              zip(reference, estimate, strict=True)]))
    rng = float(reference.max() - reference.min()) if data_range is None else data_range
    mse = float(np.mean((reference - estimate) ** 2))
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(rng * rng / mse))
