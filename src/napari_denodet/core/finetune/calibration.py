"""Choosing the score threshold of a fine-tuned or recalibrated model from the clicks.

After training, the threshold is recalibrated from the clicks alone
(:func:`calibrate_threshold`) or set to keep the parent's count of detections
(:func:`threshold_for_count`). The ``"threshold"`` mode keeps the parent's weights and
recalibrates from an area in which every particle is clicked (:func:`calibrate_from_area`);
:func:`unclicked_in_area` and :func:`area_is_incomplete` check that the area looks so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from napari_denodet.core.finetune.clicks import _half_spacing, _in_area, clicked_area
from napari_denodet.core.finetune.settings import (
    CALIBRATION_GATE,
    HIGHEST_THRESHOLD,
    INCOMPLETE_MIN,
    INCOMPLETE_SHARE,
    RAISE_KEEPS,
)
from napari_denodet.core.metrics import match_points
from napari_denodet.core.points import FRAME, SCORE, X, Y


def _frame_coords(table: pd.DataFrame) -> np.ndarray:
    # (frame x 1e6, y, x): points on different frames lie far apart.
    frame = table[FRAME].to_numpy(np.float64) if FRAME in table.columns else 0.0
    return np.column_stack([np.broadcast_to(frame * 1e6, len(table)),
                            table[Y].to_numpy(np.float64), table[X].to_numpy(np.float64)])


def _found(found: pd.DataFrame, clicks: pd.DataFrame, gate: float) -> np.ndarray:
    # Per click, whether a detection lies within `gate` px on the same frame (one-to-one).
    hit = np.zeros(len(clicks), dtype=bool)
    hit[match_points(_frame_coords(found), _frame_coords(clicks), gate=gate)[1]] = True
    return hit


def _matched(found: pd.DataFrame, clicks: pd.DataFrame, gate: float) -> int:
    # Clicks with a detection within `gate` px on the same frame (one-to-one).
    return int(_found(found, clicks, gate).sum())


def _click_scores(candidates: pd.DataFrame, positives: pd.DataFrame, gate: float) -> np.ndarray:
    # Per click, the best score among the candidates within `gate` px on its frame (0
    # where there is none).
    from scipy.spatial import cKDTree

    if candidates.empty:
        return np.zeros(len(positives))
    score = candidates[SCORE].to_numpy(np.float64)
    near = cKDTree(_frame_coords(candidates)).query_ball_point(_frame_coords(positives), gate)
    return np.array([score[n].max() if n else 0.0 for n in near])


def calibrate_threshold(candidates: pd.DataFrame, positives: pd.DataFrame,
                        gate: float = CALIBRATION_GATE, min_recall: float = 0.5,
                        expected: float | None = None) -> tuple[float, dict]:
    """Choose a score threshold from the candidates' scores and the clicks.

    Only some particles are labelled, so precision cannot be counted. After
    fine-tuning, candidate scores split into particles (high) and noise peaks (low).
    The threshold starts at Otsu's split of the candidate scores and then:

    - is raised to the score of the least confident clicked particle when every click
      keeps a detection above Otsu's split: the model is then sure of all the particles
      the user showed it, and the candidates between the split and that score are
      mostly noise. Raising stops where fewer than :data:`RAISE_KEEPS` of the
      ``expected`` particles would remain: a model that memorised the clicks scores
      them at its ceiling while missing their unclicked neighbours;
    - is lowered, if needed, until at least ``min_recall`` of the clicks keep a
      detection within ``gate`` px;
    - stays within [0.1, :data:`HIGHEST_THRESHOLD`], also when every click scores above
      it: a network trained on the clicks can score them near 1 while it misses their
      unclicked neighbours (see docs/models-history.md, Fine-tuning).

    (Lee and Liu's PU criterion ``recall^2 / detections`` was tried first and measured
    worse: the clicked particles were trained on, so their recall stays 1 up to high
    thresholds; see docs/models-history.md, Fine-tuning.)

    Parameters
    ----------
    candidates : pandas.DataFrame
        Points table with ``score`` (all candidates, above a low floor).
    positives : pandas.DataFrame
        Clicked centres, in the candidates' frames.
    gate : float
        Largest distance (px) between a click and its detection.
    min_recall : float
        Share of clicks the threshold must keep.
    expected : float, optional
        Expected number of particles in the candidates' frames; without it raising
        is not capped.

    Returns
    -------
    threshold : float
        The chosen score threshold.
    facts : dict
        ``otsu`` (the split of the scores), ``all_clicks`` (the highest threshold that
        keeps every click, or None) and ``click_recall`` at the threshold.
    """
    from skimage.filters import threshold_otsu

    scores = candidates[SCORE].to_numpy(np.float64)
    otsu = float(threshold_otsu(scores)) if len(np.unique(scores)) > 1 else 0.5
    threshold = float(np.clip(otsu, 0.1, HIGHEST_THRESHOLD))

    def recall(t):
        kept = candidates[candidates[SCORE] >= t]
        return _matched(kept, positives, gate) / len(positives) if len(positives) else 1.0

    all_clicks = None
    if len(positives):
        # The highest threshold at which every click still has a detection near it.
        all_clicks = float(_click_scores(candidates, positives, gate).min())
        if all_clicks >= threshold:
            ceiling = all_clicks
            if expected is not None and expected > 0:
                keep = int(np.ceil(RAISE_KEEPS * expected))
                ceiling = min(ceiling, threshold_for_count(candidates, keep))
            threshold = max(threshold, min(ceiling, HIGHEST_THRESHOLD))
    while threshold > 0.1 and recall(threshold) < min_recall:
        threshold = round(max(threshold - 0.025, 0.1), 3)
    return threshold, {"otsu": otsu, "all_clicks": all_clicks,
                       "click_recall": recall(threshold)}


def calibrate_from_area(candidates: pd.DataFrame, clicks: Sequence[np.ndarray],
                        shapes: Sequence[tuple[int, int]],
                        detections: pd.DataFrame | None = None) -> tuple[float | None, dict]:
    """Choose a threshold from an area in which every particle is clicked.

    For a model that was not trained on the clicks (the parent, in the ``"threshold"``
    mode of :func:`finetune`), the clicked area is honest evidence: two estimates of the
    threshold come from it, and the threshold is their mean.

    - *In the area*: the score of the ``k``-th surest candidate inside the clicked area,
      ``k`` the number of clicks (as many detections there as particles).
    - *Over the frames*: the score of the ``N``-th surest candidate of all frames, ``N``
      the particles the frames are expected to hold. With ``detections`` (the model's
      detections at its own threshold), ``N`` is their number scaled by how many
      particles the area holds per detection there: ``len(detections) * k / d``, ``d``
      the detections inside the area. Without them, or with none in the area, ``N`` is
      the clicks' density in their area times the frames' pixels.

    The first follows the clicked particles' own scores but rests on a few candidates;
    the second uses every candidate. The clicks' density over-estimates the particle
    count (users click where particles are, and particles cluster); the detections'
    count corrected by the area does not, and the mean of the two estimates measured
    better on the micrographs (see docs/models-history.md, After training: keep the
    parent's count).

    Parameters
    ----------
    candidates : pandas.DataFrame
        Points table (``frame`` = position in ``clicks``, ``y``, ``x``, ``score``).
    clicks : sequence of numpy.ndarray
        Per frame, the ``(K, 2)`` clicked ``(y, x)``.
    shapes : sequence of tuple of int
        Per frame, its ``(H, W)``.
    detections : pandas.DataFrame, optional
        The same model's detections at its own threshold, same frames.

    Returns
    -------
    threshold : float or None
        None when no frame has a clicked area (fewer than 3 clicks, or clicks on a line).
    facts : dict
        ``in_area`` and ``over_frames`` (the two estimates), ``expected`` (``N``) and
        ``expected_from`` (``"detections"`` or ``"density"``).
    """
    inside, n_clicks, area_pixels, detected = [], 0, 0, 0
    for i, (points, shape) in enumerate(zip(clicks, shapes, strict=True)):
        area = clicked_area(points, shape)
        if not area.any():
            continue
        mine = candidates[candidates[FRAME] == i]
        inside.append(mine[SCORE].to_numpy(np.float64)[
            _in_area(mine[[Y, X]].to_numpy(np.float64), area)])
        if detections is not None:
            found = detections[detections[FRAME] == i]
            detected += int(_in_area(found[[Y, X]].to_numpy(np.float64), area).sum())
        n_clicks += len(points)
        area_pixels += int(area.sum())
    if not n_clicks or candidates.empty:
        return None, {}
    in_area = np.sort(np.concatenate(inside))[::-1]
    ranked = np.sort(candidates[SCORE].to_numpy(np.float64))[::-1]
    # No candidate in the area: the particles there score below the floor.
    t_area = float(in_area[min(n_clicks, len(in_area)) - 1]) if len(in_area) else float(
        ranked[-1])
    if detected:
        expected, source = len(detections) * n_clicks / detected, "detections"
    else:
        expected = n_clicks / area_pixels * sum(int(np.prod(s)) for s in shapes)
        source = "density"
    t_frames = threshold_for_count(candidates, expected)
    return 0.5 * (t_area + t_frames), {"in_area": t_area, "over_frames": t_frames,
                                       "expected": expected, "expected_from": source}


def threshold_for_count(candidates: pd.DataFrame, count: float) -> float:
    """Return the score of the ``count``-th surest candidate (rounded, within 1..all).

    At that threshold the candidates give ``count`` detections (more where scores tie).
    """
    ranked = np.sort(candidates[SCORE].to_numpy(np.float64))[::-1]
    return float(ranked[int(np.clip(round(count), 1, len(ranked))) - 1])


def unclicked_in_area(candidates: pd.DataFrame, clicks: Sequence[np.ndarray],
                      shapes: Sequence[tuple[int, int]]) -> int:
    """Count the candidates of the clicked area that look like particles nobody clicked.

    Per frame: the candidates inside :func:`clicked_area`, farther from every click than
    half the clicks' spacing, that score at least as high as the median candidate
    matched to a click (the nearest one within that distance). In a completely clicked
    area these are false detections that outrank half the clicked particles: few. Where
    the clicks are scattered over a frame, the area is most of it and they are many.
    The parameters are those of :func:`calibrate_from_area`.

    Returns
    -------
    int
        The count over the frames (0 where a frame has no area or no matched click).
    """
    from scipy.spatial import cKDTree

    total = 0
    for i, (points, shape) in enumerate(zip(clicks, shapes, strict=True)):
        mine = candidates[candidates[FRAME] == i]
        area = clicked_area(points, shape)
        if mine.empty or not area.any():
            continue
        yx = mine[[Y, X]].to_numpy(np.float64)
        score = mine[SCORE].to_numpy(np.float64)
        gate = _half_spacing(points)
        distance, nearest = cKDTree(yx).query(points)
        matched = score[nearest[distance <= gate]]
        if not len(matched):
            continue
        to_click = cKDTree(points).query(yx)[0]
        total += int(np.sum(_in_area(yx, area) & (to_click > gate)
                            & (score >= np.median(matched))))
    return total


def area_is_incomplete(unclicked: int, n_clicks: int) -> bool:
    """Whether :func:`unclicked_in_area` says the clicked area was not completely clicked.

    More than :data:`INCOMPLETE_SHARE` of the clicks, and more than
    :data:`INCOMPLETE_MIN`. On the fine-tuning benchmark's 10-click regions, every
    particle clicked, the count was 0-2 (12 regions of each of its 5 cases); 10 clicks
    scattered over the image gave 18-832.
    """
    return unclicked > max(INCOMPLETE_MIN, INCOMPLETE_SHARE * n_clicks)
