"""Scores that are probabilities, and a threshold chosen per image.

A network's raw peak score does not mean the same on every image: correlated camera
noise, a structured background or another PSF all move the scores that noise reaches.
So the probability that a candidate is a real particle is estimated on the image
itself, by a target–decoy comparison (as in proteomics' false-discovery estimates):

- the *target* candidates are those found in the image as the model sees it;
- the *decoy* candidates are those found in the same frames with the contrast flipped.
  A flipped frame has the same noise, background texture and edges, but no particle of
  the right polarity, so every decoy is a false detection. How many decoys reach a
  score estimates how many false detections among the targets reach it.

Pooling both sets, the share of targets among candidates of score ``s`` is
``r(s) = N(s) / (N(s) + D(s))`` (fitted monotone in ``s`` by isotonic regression), and
the probability that a target of score ``s`` is a particle is ``1 - D(s) / N(s)``,
that is ``(2 r - 1) / r``, clipped at 0. The default threshold then maximises the F1
these probabilities imply: expected true positives above ``t`` over the mean of the
count kept and the expected number of particles. No truth is needed.

On noise alone the targets still outnumber the decoys somewhere, by chance, and the
expected F1 would keep that surplus as particles. So a threshold is considered only
where the surplus of targets above it is significant (:func:`surplus_pvalues`, one-sided
at :data:`EVIDENCE_LEVEL`); where none is, nothing is kept
(``docs/benchmarks/empty.md``).

Where noise is not symmetric (low photon counts, hot pixels) decoys miss some false
detections. Where particles are many, decoys over-count them: the network scores a noise
bump among particles lower than the same bump in a decoy frame, which has none (1.5 times
as many decoys as false candidates at SNR 1 with hundreds of particles per frame; the
faint particles then get too low a probability and the threshold comes out high; see
docs/models-history.md, "Decoys in busy images"). The decoy calibration is measured in
``docs/benchmarks/default-threshold.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

#: Decoy frames of a stack at most (evenly spaced): enough decoys for a stable estimate,
#: at a bounded cost on long stacks.
DECOY_FRAMES = 8
#: Weight of the raw peak score in a probability: the fitted map is flat over stretches
#: of scores, and this tiny slope keeps the candidates in the network's order there, so
#: that a threshold can fall between any two of them (a clicked false detection can be
#: dropped without its equally probable neighbours). It moves no probability by more
#: than this.
TIE_BREAK = 1e-4
#: One-sided significance level of the targets' surplus over the decoys that a kept set
#: needs (:func:`surplus_pvalues`).
EVIDENCE_LEVEL = 0.01
#: Decoys whose highest scores give the exponential tail of the noise's scores.
TAIL_DECOYS = 50


def decoy_frames(n_frames: int, most: int = DECOY_FRAMES) -> list[int]:
    """Return the indices (0-based, within the processed frames) that get a decoy pass.

    Parameters
    ----------
    n_frames : int
        Frames processed.
    most : int
        Decoy frames at most.

    Returns
    -------
    list of int
        Evenly spaced, all frames when there are no more than ``most``.
    """
    if n_frames <= most:
        return list(range(n_frames))
    return sorted({int(round(i)) for i in np.linspace(0, n_frames - 1, most)})


@dataclass(frozen=True)
class Calibration:
    """Map from a raw peak score to the probability of a true particle, on one image.

    Attributes
    ----------
    knots : numpy.ndarray
        Raw scores at which ``probabilities`` are known (increasing).
    probabilities : numpy.ndarray
        Probability of a true particle at each knot (non-decreasing, in [0, 1]);
        linear in between, constant beyond the ends.
    decoys : int
        Decoy candidates it was fitted from (0 when there were none).

    A probability is the fitted map's value moved by at most :data:`TIE_BREAK` towards
    the raw score (in [0, 1]), so that it rises strictly with the raw score.
    """

    knots: np.ndarray
    probabilities: np.ndarray
    decoys: int

    def __call__(self, scores) -> np.ndarray:
        """Return the probability of a true particle for each raw score."""
        scores = np.asarray(scores, dtype=np.float64)
        fitted = (np.ones_like(scores) if len(self.knots) == 0
                  else np.interp(scores, self.knots, self.probabilities))
        return (1.0 - TIE_BREAK) * fitted + TIE_BREAK * np.clip(scores, 0.0, 1.0)


def fit_calibration(targets, decoys, decoy_weight: float = 1.0) -> Calibration:
    """Fit the probability of a true particle from target and decoy raw scores.

    Parameters
    ----------
    targets : array_like
        Raw scores of the candidates in the image (all frames processed).
    decoys : array_like
        Raw scores of the candidates in the contrast-flipped decoy frames.
    decoy_weight : float
        Target frames per decoy frame (decoys stand for this many false detections).

    Returns
    -------
    Calibration
        Without any decoy, every candidate gets probability 1 (nothing is known to be
        false); without any target, an empty map.
    """
    from scipy.optimize import isotonic_regression

    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    decoys = np.asarray(decoys, dtype=np.float64).reshape(-1)
    if len(targets) == 0 or len(decoys) == 0:
        return Calibration(np.zeros(0), np.zeros(0), len(decoys))
    scores = np.concatenate([targets, decoys])
    label = np.concatenate([np.ones(len(targets)), np.zeros(len(decoys))])
    weight = np.concatenate([np.ones(len(targets)), np.full(len(decoys), decoy_weight)])
    order = np.argsort(scores, kind="stable")
    scores, label, weight = scores[order], label[order], weight[order]
    # Ties share one value: fit on distinct scores with summed weights.
    knots, start = np.unique(scores, return_index=True)
    summed = np.add.reduceat(weight, start)
    share = np.add.reduceat(label * weight, start) / summed
    fitted = isotonic_regression(share, weights=summed, increasing=True).x
    with np.errstate(divide="ignore", invalid="ignore"):
        probability = np.where(fitted > 0, (2 * fitted - 1) / fitted, 0.0)
    probability = np.clip(probability, 0.0, 1.0)
    # Each fitted block is flat from its lowest to its highest score; the map is linear
    # only across the gap between two blocks (never across a block).
    edges = np.flatnonzero(np.diff(fitted)) + 1
    blocks = np.split(np.arange(len(knots)), edges)
    ends = np.array([[knots[b[0]], knots[b[-1]]] for b in blocks]).reshape(-1)
    values = np.repeat([probability[b[0]] for b in blocks], 2)
    keep = np.append(np.diff(ends) > 0, True)  # one knot where a block is one score
    return Calibration(ends[keep], values[keep], len(decoys))


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold that maximises the expected F1, and what it is expected to give.

    Attributes
    ----------
    threshold : float
        Probability threshold: candidates whose probability is at least this are kept.
    kept : int
        Candidates kept.
    expected_precision, expected_recall, expected_f1 : float
        As implied by the probabilities (no truth involved).
    expected_particles : float
        Sum of the probabilities of every candidate.
    supported : bool
        False when the threshold was chosen with a test of the candidates' surplus over
        the decoys and no threshold passed it: nothing stands out from the noise, and
        nothing is kept.
    """

    threshold: float
    kept: int
    expected_precision: float
    expected_recall: float
    expected_f1: float
    expected_particles: float
    supported: bool = True


def expected_scores(probabilities, threshold: float) -> ThresholdChoice:
    """Return the expected precision, recall and F1 of keeping candidates at ``threshold``.

    Parameters
    ----------
    probabilities : array_like
        Probability of a true particle of every candidate.
    threshold : float
        Keep candidates whose probability is at least this.

    Returns
    -------
    ThresholdChoice
    """
    p = np.asarray(probabilities, dtype=np.float64)
    total = float(p.sum())
    kept = p >= threshold
    n, tp = int(kept.sum()), float(p[kept].sum())
    precision = tp / n if n else 1.0
    recall = tp / total if total > 0 else 1.0
    f1 = 2 * tp / (n + total) if n + total > 0 else 1.0
    return ThresholdChoice(float(threshold), n, precision, recall, f1, total)


def surplus_pvalues(peak, decoys, weight: float = 1.0) -> np.ndarray:
    """Return, for each candidate, how likely its score's surplus over the decoys is by chance.

    Two tests, the smaller p-value kept:

    - *counts*: for a cut at a candidate's raw score, ``n`` targets and ``d`` decoys
      reach it. Were the image's candidates noise alone, targets and decoys would be
      alike, and each of the ``n + d`` would be a target with probability
      ``weight / (1 + weight)`` (the targets come from ``weight`` times as many frames):
      the p-value of ``n`` or more targets among them (one-sided binomial). It sees
      ranks only, so a handful of bright particles far above every decoy are no more
      than a handful of coin flips;
    - *tail*, beyond the highest decoy: the decoys' highest scores (logits) above
      their :data:`TAIL_DECOYS`-th highest follow an exponential tail, which gives the
      number of noise candidates expected above a score no decoy reached; the p-value
      of ``n`` or more targets where ``weight`` times that many are expected (Poisson).

    Parameters
    ----------
    peak : array_like
        Raw peak scores of the targets.
    decoys : array_like
        Raw peak scores of the decoys.
    weight : float
        Target frames per decoy frame.

    Returns
    -------
    numpy.ndarray
        One p-value per target, in their order.
    """
    from scipy.stats import binom, poisson

    peak = np.asarray(peak, dtype=np.float64).reshape(-1)
    decoys = np.sort(np.asarray(decoys, dtype=np.float64).reshape(-1))
    targets = np.sort(peak)
    n = len(targets) - np.searchsorted(targets, peak, "left")
    d = len(decoys) - np.searchsorted(decoys, peak, "left")
    counts = binom.sf(n - 1, n + d, weight / (1.0 + weight))
    k = min(TAIL_DECOYS, len(decoys) // 4)
    if k < 5:
        return counts
    tail = logit(decoys)
    base = tail[-k - 1]
    scale = max(float(np.mean(tail[-k:] - base)), 1e-6)
    # Beyond the highest decoy only: below it the decoys are counted, not modelled.
    excess = logit(peak) - base
    expected = k * np.exp(-np.clip(excess, 0.0, None) / scale)
    beyond = np.where(peak > decoys[-1], poisson.sf(n - 1, weight * expected), 1.0)
    return np.minimum(counts, beyond)


def logit(p, eps: float = 1e-9) -> np.ndarray:
    """Return ``log(p / (1 - p))`` of scores clipped to ``[eps, 1 - eps]``."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def choose_threshold(probabilities, floor: float = 0.05, pvalues=None,
                     level: float = EVIDENCE_LEVEL) -> ThresholdChoice:
    """Return the probability threshold that maximises the expected F1.

    Parameters
    ----------
    probabilities : array_like
        Probability of a true particle of every candidate.
    floor : float
        Lowest threshold considered (a candidate less likely than this is never kept).
    pvalues : array_like, optional
        For each candidate, the p-value of the targets' surplus over the decoys at its
        score (:func:`surplus_pvalues`). When given, a threshold is considered only where
        that surplus is significant at ``level``: on an image of noise alone the chance
        surplus of a few candidates would otherwise be kept as particles. Where no
        threshold qualifies, nothing is kept and the choice is marked not supported.
    level : float
        Significance level of the surplus.

    Returns
    -------
    ThresholdChoice
        Ties go to the higher threshold (fewer detections for the same expected F1).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(probabilities, kind="stable")[::-1]
    p = probabilities[order]
    total = float(p.sum())
    if len(p) == 0 or total <= 0:
        return expected_scores(p, 1.0)
    # Keeping the k most probable: expected TP = cumulative sum, F1 = 2 TP / (k + total).
    k = np.arange(1, len(p) + 1)
    f1 = 2 * np.cumsum(p) / (k + total)
    # Only cut between distinct probabilities (ties are kept or dropped together).
    allowed = np.append(p[1:] != p[:-1], True) & (p >= floor)
    if not allowed.any():
        return expected_scores(p, 1.0)
    if pvalues is not None:
        allowed &= np.asarray(pvalues, dtype=np.float64)[order] <= level
        if not allowed.any():
            return replace(expected_scores(p, 1.0), supported=False)
    best = int(np.flatnonzero(allowed)[np.argmax(f1[allowed])])
    return expected_scores(p, float(p[best]))


# ------------------------------------------------------------------------------ decoys


def decoy_frame(frame: np.ndarray) -> np.ndarray:
    """Return the frame with its contrast flipped about its background, noise kept alike.

    The plain flip ``2 m - I`` turns bright particles dark, but also turns the noise's
    skew round: camera noise at a few photons is skewed towards bright values (Poisson),
    so the plain flip holds fewer bright noise peaks than the frame, and the decoys
    would call too many candidates real. A flip after a square-root transform overshoots
    the other way at a few photons, the root of Poisson noise being itself skewed (see
    docs/architecture.md, Measured choices). So the flip is followed by a quantile map: each
    flipped residual ``-(I - m)`` goes to the residual value with the same rank among
    the frame's background residuals, ``T(v) = Q(1 - F(-v))`` with ``F`` and ``Q`` the
    empirical distribution and quantile function of ``I - m`` on background pixels (the
    5 x 5 mean below the median plus two MADs). Background noise in the decoy then has
    the frame's distribution exactly, skew included, and whatever is brighter than the
    noise in the frame is darker than the background in the decoy. Symmetric noise keeps
    the plain flip.

    Parameters
    ----------
    frame : numpy.ndarray
        A 2D frame, finite.

    Returns
    -------
    numpy.ndarray
        float32, same shape.
    """
    from scipy.ndimage import uniform_filter

    frame = np.asarray(frame, dtype=np.float64)
    middle = float(np.median(frame))
    residual = frame - middle
    local = uniform_filter(frame, 5, mode="reflect")
    centre = np.median(local)
    spread = np.median(np.abs(local - centre)) * 1.4826
    noise = residual[local <= centre + 2 * spread]
    if noise.size > 200_000:
        noise = noise[:: noise.size // 200_000]
    if noise.size < 100:
        return (middle - residual).astype(np.float32)
    noise = np.sort(noise)
    n = noise.size
    flipped = -residual
    # Empirical distribution of the noise at each flipped value. Whole-number frames tie
    # many pixels on one value: each takes its own rank within the tie, spread evenly
    # (golden-ratio steps over the pixels, no random state), so the decoy keeps the
    # noise's full spread (a shared mid-rank narrowed it: 22 % less variance at 2 photons).
    # -flipped is the residual; it is looked up in sorted order (three times faster than
    # in pixel order on a 512 x 512 frame, the same ranks).
    flat = residual.reshape(-1)
    order = np.argsort(flat)
    below, above = np.empty(flat.size, np.intp), np.empty(flat.size, np.intp)
    below[order] = np.searchsorted(noise, flat[order], "left")
    above[order] = np.searchsorted(noise, flat[order], "right")
    ties = (above - below).reshape(residual.shape)
    below = below.reshape(residual.shape)
    spread = (np.arange(1, flipped.size + 1) * 0.6180339887498949 % 1.0).reshape(
        flipped.shape)
    rank = (below + spread * ties) / n
    # T(v) = Q(1 - F(-v)), with Q the interpolated quantile function of the noise: at a
    # fractional position i + f of the sorted noise, noise[i] + f (noise[i + 1] -
    # noise[i]), the ends held (np.interp on 0..n-1, without its binary search).
    position = np.clip((1.0 - rank) * n - 0.5, 0.0, n - 1.0)
    low = np.minimum(position.astype(np.intp), n - 2)
    mapped = noise[low] + (position - low) * (noise[low + 1] - noise[low])
    return (middle + mapped).astype(np.float32)
