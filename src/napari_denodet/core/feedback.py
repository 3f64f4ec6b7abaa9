"""Instant feedback: probabilities and threshold refitted to the user's clicks.

After a detection every candidate has a probability, estimated on the image by the
target-decoy comparison (:mod:`napari_denodet.core.calibration`), and the threshold
that maximises the expected F1. The user then clicks particle centres ("this is a
particle") and false detections ("not a particle"). :func:`refit_threshold` refits both
to the clicks in milliseconds, without running the network, so that the detections on
screen change as the user clicks:

- each *particle* click labels the candidate nearest to it within the gate a particle;
- each *not a particle* click labels every candidate within the gate false;
- where a frame's particle clicks cover a completely clicked area (at least three
  clicks; the user says so, or the image's own probabilities find no more likely
  particles unclicked in the area than
  :func:`~napari_denodet.core.finetune.area_is_incomplete` allows), the candidates in
  that area away from every click are labelled false too, as Topaz and the fine-tuning
  mode ``"threshold"`` assume. Clicks on a few obvious particles scattered over a frame
  leave likely particles unclicked in their area, so they label nothing there.

The probabilities are then refitted as a logistic function of the network's raw peak
score (Platt scaling), from the labelled candidates (weight 1 each) and from every
candidate's image-estimated probability as a soft label (:data:`PRIOR_WEIGHT` clicks'
worth in all): a few clicks move the estimate, they do not replace it. The threshold is
again the one that maximises the expected F1 over all candidates, brought, where the
clicks can tell thresholds apart, to the nearest one that puts right as many labelled
candidates as any threshold can: the clicks decide where they speak, the image's
estimate only between thresholds they cannot separate. (An expected F1 alone leaned on
an image estimate that under-counts: on simulated micrographs at SNR 0.05 it kept
490-970 detections where the best threshold keeps about 1,800, and dropped clicked
particles; docs/models-history.md, "Instant feedback: the clicks bound the threshold".)
The refit is kept only when it does better on the labelled candidates than the
probabilities and threshold in force, and it needs both kinds of label: particles alone
say nothing of the noise. A threshold in force that was itself fitted to clicks (a
fine-tuned model's) has used them already, so a refit replaces it only on clear
evidence: it must put right more labelled candidates than it puts wrong, by a one-sided
sign test at :data:`SIGN_TEST_LEVEL` (five of five, for instance). A gain of one or two candidates
out of a dozen is what chance gives, and taking it halved the detections of fine-tuned
micrograph models and lost up to 0.2 F1 on the particles no one clicked
(docs/models-history.md, "Clicks on a fine-tuned model"). A clicked candidate's
probability is the user's word: 1 for a particle, 0 for a false one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from napari_denodet.core.calibration import logit
from napari_denodet.core.detection import PEAK
from napari_denodet.core.metrics import GATE
from napari_denodet.core.points import FRAME, SCORE, X, Y

#: The two kinds of click, as a points table's ``label`` column holds them.
PARTICLE, NOT_PARTICLE = "particle", "not a particle"
LABELS = (PARTICLE, NOT_PARTICLE)
#: The column of a clicks table that says which kind each click is.
LABEL = "label"
#: Weights, in clicks, that the image's own probabilities may get when the clicks
#: recalibrate them; :func:`prior_weight` picks one by leave-one-out on the clicks.
PRIOR_WEIGHTS = (1.0, 3.0, 10.0, 30.0)
#: Candidates (evenly spaced in score) that stand for all of them in the prior.
PRIOR_SAMPLE = 1000
#: Labelled candidates (evenly spaced in score, per kind) the leave-one-out scores.
LOO_SAMPLE = 20
#: Level of the sign test a refit must pass to replace a threshold fitted to clicks.
SIGN_TEST_LEVEL = 0.05


@dataclass(frozen=True)
class Refit:
    """What :func:`refit_threshold` chose, and the evidence it rested on.

    Attributes
    ----------
    threshold : float
        The new probability threshold (on :attr:`scores`).
    kept : int
        Candidates kept at it.
    particles, particles_kept : int
        Particle clicks with a candidate near them, and those kept.
    false, false_kept : int
        Candidates labelled false (by clicks or by a completely clicked area), and those
        still kept.
    from_area : int
        Of the false ones, those labelled by a completely clicked area.
    scores : numpy.ndarray
        The candidates' refitted probabilities, in their order.
    kept_fitted : bool
        A threshold fitted to clicks was kept: the refit did better on the clicks, but
        not clearly (the sign test).
    """

    threshold: float
    kept: int
    particles: int
    particles_kept: int
    false: int
    false_kept: int
    from_area: int
    scores: np.ndarray
    kept_fitted: bool = False

    def summary(self) -> str:
        """One line for a user: the threshold, the count and what the clicks say of it."""
        text = f"threshold {self.threshold:.3f}: {self.kept} detections"
        if self.particles:
            text += f"; {self.particles_kept} of {self.particles} clicked particles kept"
        if self.false:
            area = f", {self.from_area} from the clicked area" if self.from_area else ""
            text += f"; {self.false - self.false_kept} of {self.false} false ones dropped{area}"
        if self.kept_fitted:
            text += ("; the fine-tuned threshold is kept (the clicks do not clearly favour "
                     "another)")
        return text


def split_clicks(clicks: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a clicks table by its ``label`` column into particles and false detections.

    A table without ``label`` holds particles only. Labels other than :data:`LABELS`
    raise ``ValueError``.
    """
    if LABEL not in clicks.columns:
        return clicks.reset_index(drop=True), clicks.iloc[:0].reset_index(drop=True)
    label = clicks[LABEL].astype(str)
    unknown = sorted(set(label) - set(LABELS))
    if unknown:
        raise ValueError(f"click labels must be {PARTICLE!r} or {NOT_PARTICLE!r}, "
                         f"not {', '.join(map(repr, unknown))}")
    return (clicks[label == PARTICLE].drop(columns=LABEL).reset_index(drop=True),
            clicks[label == NOT_PARTICLE].drop(columns=LABEL).reset_index(drop=True))


def _by_frame(table: pd.DataFrame) -> dict[int, pd.DataFrame]:
    if FRAME not in table.columns:
        return {0: table}
    return {int(f): g for f, g in table.groupby(table[FRAME].round().astype(int))}


def _labelled(candidates: pd.DataFrame, particles: pd.DataFrame, false: pd.DataFrame,
              shape: tuple[int, int] | None, gate: float, complete: bool | None):
    # Positions (in ``candidates``) of the candidates labelled particle, labelled false,
    # and labelled false by a click itself (not by a completely clicked area).
    from scipy.spatial import cKDTree

    candidates = candidates.reset_index(drop=True)
    probability = candidates[SCORE].to_numpy(np.float64)
    said_yes, said_no, by_area = [], [], []
    mine_by_frame, clicked, wrong = (_by_frame(candidates), _by_frame(particles),
                                     _by_frame(false))
    for frame in sorted(set(clicked) | set(wrong)):
        mine = mine_by_frame.get(frame)
        if mine is None or mine.empty:
            continue
        index = mine.index.to_numpy()
        score = probability[index]
        yx = mine[[Y, X]].to_numpy(np.float64)
        tree = cKDTree(yx)
        points = (clicked[frame][[Y, X]].to_numpy(np.float64) if frame in clicked
                  else np.zeros((0, 2)))
        if len(points):
            distance, nearest = tree.query(points, distance_upper_bound=gate)
            hit = np.unique(nearest[np.isfinite(distance)])
            said_yes.extend(index[hit])
        flagged = np.zeros(len(mine), dtype=bool)
        if frame in wrong:
            for near in tree.query_ball_point(wrong[frame][[Y, X]].to_numpy(np.float64), gate):
                flagged[near] = True
            flagged[np.isin(index, said_yes)] = False  # a particle click wins
            said_no.extend(index[flagged])
        if shape is not None and len(points) >= 3 and complete is not False:
            inside = _unclicked_in_area(yx, points, shape, gate) & ~flagged
            if complete or _looks_complete(inside, score, len(points)):
                by_area.extend(index[inside])
    said_yes, said_no = np.asarray(said_yes, np.int64), np.asarray(said_no, np.int64)
    return said_yes, np.concatenate([said_no, np.asarray(by_area, np.int64)]), said_no


def _unclicked_in_area(yx: np.ndarray, points: np.ndarray, shape: tuple[int, int],
                       gate: float) -> np.ndarray:
    # Which candidates (``yx``) lie in the clicks' area, farther than ``gate`` from each.
    from scipy.spatial import cKDTree

    from napari_denodet.core.finetune.clicks import _in_area, clicked_area

    if len(points) < 3 or not len(yx):
        return np.zeros(len(yx), dtype=bool)
    return _in_area(yx, clicked_area(points, shape)) & (cKDTree(points).query(yx)[0] > gate)


def _looks_complete(unclicked: np.ndarray, probability: np.ndarray, n_clicks: int) -> bool:
    # The image's own probabilities find no more likely particles among the unclicked
    # candidates of the area than `area_is_incomplete` allows.
    from napari_denodet.core.finetune.calibration import area_is_incomplete

    return not area_is_incomplete(int((unclicked & (probability >= 0.5)).sum()), n_clicks)


def area_looks_complete(candidates: pd.DataFrame, points: np.ndarray,
                        shape: tuple[int, int], gate: float = GATE) -> bool:
    """Whether one frame's particle clicks look like a completely clicked area.

    Parameters
    ----------
    candidates : pandas.DataFrame
        The frame's candidates, ``score`` a probability (a detection's candidates).
    points : numpy.ndarray
        ``(N, 2)`` clicked ``(y, x)`` on the frame (fewer than 3 cover no area).
    shape : (int, int)
        The frame's ``(H, W)``.
    gate : float
        Candidates nearer a click than this are that click's.

    Returns
    -------
    bool
        False without an area; else whether the candidates of the area away from the
        clicks hold no more likely particles (probability at least 0.5) than
        :func:`~napari_denodet.core.finetune.area_is_incomplete` allows.
    """
    if len(points) < 3:
        return False
    yx = candidates[[Y, X]].to_numpy(np.float64)
    inside = _unclicked_in_area(yx, points, shape, gate)
    return _looks_complete(inside, candidates[SCORE].to_numpy(np.float64), len(points))


def _spread(index: np.ndarray, z: np.ndarray, most: int) -> np.ndarray:
    # At most `most` of `index`, evenly spaced in the order of their scores `z`.
    if len(index) <= most:
        return index
    ordered = index[np.argsort(z[index], kind="stable")]
    return ordered[np.linspace(0, len(ordered) - 1, most).round().astype(int)]


def _logit(p: np.ndarray) -> np.ndarray:
    return logit(p, eps=1e-6)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(z)


def _prior_sample(peak: np.ndarray, probability: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    # At most PRIOR_SAMPLE candidates, evenly spaced in score order: the same fit at a
    # bounded cost on long stacks. Drawn once per refit, not once per fit.
    if len(peak) <= PRIOR_SAMPLE:
        return peak, probability
    order = np.argsort(peak, kind="stable")
    keep = order[np.linspace(0, len(peak) - 1, PRIOR_SAMPLE).round().astype(int)]
    return peak[keep], probability[keep]


def _platt(peak: np.ndarray, probability: np.ndarray, yes: np.ndarray, no: np.ndarray,
           prior: float) -> tuple[float, float]:
    # (a, b) of sigmoid(a + b logit(peak)) by Newton's method: the labelled candidates at
    # weight 1 each, every candidate's probability (of :func:`_prior_sample`) as a soft
    # label at ``prior`` in all.
    z = np.concatenate([_logit(peak), _logit(yes), _logit(no)])
    y = np.concatenate([probability, np.ones(len(yes)), np.zeros(len(no))])
    w = np.concatenate([np.full(len(peak), prior / max(len(peak), 1)),
                        np.ones(len(yes) + len(no))])
    features = np.column_stack([np.ones_like(z), z])
    coef = np.zeros(2)
    for _ in range(100):
        fitted = _sigmoid(features @ coef)
        gradient = features.T @ (w * (y - fitted))
        hessian = (features * (w * fitted * (1 - fitted))[:, None]).T @ features
        step = np.linalg.solve(hessian + 1e-6 * np.eye(2), gradient)
        coef = coef + step
        if np.abs(step).max() < 1e-9:
            break
    return float(coef[0]), float(coef[1])


def _labelled_f1(scores: np.ndarray, threshold: float, yes: np.ndarray,
                 no: np.ndarray) -> float:
    # F1 on the labelled candidates: particles kept, false ones kept, particles dropped.
    tp = int((scores[yes] >= threshold).sum())
    fp = int((scores[no] >= threshold).sum())
    return 2 * tp / (2 * tp + fp + len(yes) - tp) if len(yes) + fp else 1.0


def _agreeing(probability: np.ndarray, yes: np.ndarray, no: np.ndarray,
              chosen: float) -> float:
    # The threshold nearest ``chosen`` among those that put the most labelled candidates
    # right (the highest F1 on them): the clicks decide where they can tell thresholds
    # apart, the image's expected F1 only between thresholds they cannot.
    values = np.unique(np.concatenate([probability[yes], probability[no]]))[::-1]
    if not len(values):
        return chosen
    f1 = np.array([_labelled_f1(probability, v, yes, no) for v in values])
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    # Keeping the labelled candidates down to values[j] (and not the next one): any
    # threshold in (values[j + 1], values[j]].
    below = np.append(values[1:], -np.inf)
    if any(below[j] < chosen <= values[j] for j in best):
        return chosen
    j = min(best, key=lambda j: min(abs(chosen - values[j]), abs(chosen - below[j])))
    if chosen > values[j]:
        return float(values[j])
    # Just above values[j + 1]: the lowest candidate probability that keeps it out.
    return float(probability[probability > below[j]].min())


def _clearly_better(kept: np.ndarray, kept_before: np.ndarray, yes: np.ndarray,
                    no: np.ndarray) -> bool:
    # One-sided sign test over the labelled candidates whose fate changes: those put
    # right (a particle now kept, a false one now dropped) against those put wrong.
    from scipy.stats import binomtest

    right = int((kept[yes] & ~kept_before[yes]).sum() + (~kept[no] & kept_before[no]).sum())
    wrong = int((~kept[yes] & kept_before[yes]).sum() + (kept[no] & ~kept_before[no]).sum())
    if right <= wrong:
        return False
    return binomtest(right, right + wrong, 0.5, alternative="greater").pvalue \
        <= SIGN_TEST_LEVEL


def prior_weight(peak: np.ndarray, probability: np.ndarray, yes: np.ndarray,
                 no: np.ndarray, weights=PRIOR_WEIGHTS) -> float:
    """Choose how much the image's own probabilities count against the clicks.

    Each of ``weights`` is scored by leave-one-out on the labelled candidates (at most
    :data:`LOO_SAMPLE` of each kind, spread over their scores): the log-likelihood of
    each label under the fit made without it. Where the image's
    estimate agrees with the clicks a heavy weight loses nothing and keeps the fit
    steady; where it is wrong (a decoy estimate that over-counts), the clicks win.
    Ties go to the heavier weight. ``peak`` and ``probability`` are the candidates that
    stand for the prior (:func:`refit_threshold` passes at most :data:`PRIOR_SAMPLE`);
    ``yes`` and ``no`` the raw scores of the labelled ones.
    """
    z = np.concatenate([yes, no])
    label = np.concatenate([np.ones(len(yes)), np.zeros(len(no))])
    left_out = np.concatenate([_spread(np.flatnonzero(label == k), z, LOO_SAMPLE)
                               for k in (1, 0)])
    best, best_score = weights[-1], -np.inf
    for weight in sorted(weights, reverse=True):
        total = 0.0
        for i in left_out:
            rest = np.delete(np.arange(len(z)), i)
            a, b = _platt(peak, probability, z[rest][label[rest] == 1],
                          z[rest][label[rest] == 0], weight)
            p = float(np.clip(_sigmoid(a + b * _logit(z[i:i + 1]))[0], 1e-6, 1 - 1e-6))
            total += np.log(p) if label[i] else np.log1p(-p)
        if total > best_score + 1e-9:
            best, best_score = weight, total
    return float(best)


def refit_threshold(candidates: pd.DataFrame, particles: pd.DataFrame,
                    false: pd.DataFrame | None = None, *, start: float,
                    shape: tuple[int, int] | None = None, gate: float = GATE,
                    complete: bool | None = None, fitted: bool = False) -> Refit:
    """Refit the score threshold to the user's clicks (see the module's description).

    Parameters
    ----------
    candidates : pandas.DataFrame
        Every candidate of a detection
        (:attr:`Detections.candidates <napari_denodet.core.detection.Detections.candidates>`:
        ``score`` the probability, ``peak`` the raw score; ``frame`` for a stack), in
        the same pixels as the clicks.
    particles, false : pandas.DataFrame
        Clicked particle centres and clicked false detections (points tables).
    start : float
        The threshold in force: kept, with the probabilities, when no candidate is
        labelled.
    shape : (int, int), optional
        A frame's ``(H, W)``; without it no area is taken as completely clicked.
    gate : float
        Largest distance (px) between a click and its candidate.
    complete : bool, optional
        Whether every particle in the area of a frame's particle clicks is clicked:
        True (the user says so), False (never assume it), or None: assumed where the
        image's own probabilities find no more likely particles (probability at least
        0.5) unclicked there than :func:`~napari_denodet.core.finetune.area_is_incomplete`
        allows.
    fitted : bool
        Whether ``start`` was itself fitted to clicks (a fine-tuned model's threshold,
        :attr:`Detections.threshold_rule` ``"fine-tuned"``): a refit must then pass the
        sign test (see the module's description).

    Returns
    -------
    Refit
    """
    from napari_denodet.core.calibration import choose_threshold

    false = particles.iloc[:0] if false is None else false
    scores = candidates[SCORE].to_numpy(np.float64)
    peak = candidates[PEAK].to_numpy(np.float64)
    yes, no, said_no = _labelled(candidates, particles, false, shape, gate, complete)
    if len(yes) + len(no) == 0:
        return Refit(threshold=float(start), kept=int((scores >= start).sum()), particles=0,
                     particles_kept=0, false=0, false_kept=0, from_area=0, scores=scores)
    refitted, threshold, kept_fitted = scores.copy(), float(start), False
    if len(yes) and len(no):  # a refit needs both kinds: particles alone say nothing of noise
        prior = _prior_sample(peak, scores)
        weight = prior_weight(*prior, peak[yes], peak[no])
        a, b = _platt(*prior, peak[yes], peak[no], weight)
        probability = _sigmoid(a + b * _logit(peak))
        chosen = _agreeing(probability, yes, no, choose_threshold(probability).threshold)
        # Kept only when better on the clicks than what is in force.
        better = _labelled_f1(probability, chosen, yes, no) > _labelled_f1(scores, start,
                                                                           yes, no)
        if better and fitted:
            better = _clearly_better(probability >= chosen, scores >= start, yes, no)
            kept_fitted = not better
        if better:
            refitted, threshold = probability, chosen
    refitted[yes], refitted[said_no] = 1.0, 0.0
    return Refit(threshold=threshold, kept=int((refitted >= threshold).sum()),
                 particles=len(yes), particles_kept=int((refitted[yes] >= threshold).sum()),
                 false=len(no), false_kept=int((refitted[no] >= threshold).sum()),
                 from_area=len(no) - len(said_no), scores=refitted, kept_fitted=kept_fitted)
