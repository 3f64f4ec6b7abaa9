"""Detection with a model, from the user's image to particles at full resolution.

:meth:`napari_denodet.core.models.Model.detect` runs :func:`detect_with_model`: the one
place where the steps around the engine (:func:`napari_denodet.core.predict.detect`)
happen, for the CLI, the widgets and batches alike:

1. bin the image (micrographs), lazily;
2. run the engine on every frame, keeping every candidate above the engine floor;
3. run it again on decoy frames (:mod:`napari_denodet.core.calibration`: a few frames
   with their contrast flipped) and turn raw peak scores into probabilities;
4. for a micrograph model, choose the particles' polarity (dark or bright) as the one
   with more particles than its own decoy;
5. choose the threshold that maximises the expected F1 (unless one is given, or the
   model is a fine-tuned one whose threshold was fitted to the user's clicks);
6. map coordinates back to full-resolution pixels, and measure how many detections of
   a time-lapse are found again in the next frame.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from napari_denodet.core.calibration import (
    Calibration,
    ThresholdChoice,
    choose_threshold,
    decoy_frame,
    decoy_frames,
    expected_scores,
    fit_calibration,
    surplus_pvalues,
)
from napari_denodet.core.points import FRAME, SCORE, X, Y

if TYPE_CHECKING:
    from napari_denodet.core.models import Model
    from napari_denodet.core.predict import DetectProgress

#: Raw peak score of each candidate, kept beside its probability (``score``).
PEAK = "peak"
#: Particle polarities: ``auto`` lets a micrograph model choose per image.
POLARITIES = ("auto", "dark", "bright")
#: Distance (px) within which a detection counts as found again in the next frame.
RECURRENCE_GATE = 1.5
#: Below this share of detections found again in the next frame, a time-lapse's
#: detections are mostly noise (or particles move faster than the gate).
RECURRENCE_WARNING = 0.5


@dataclass
class Detections:
    """What :meth:`Model.detect <napari_denodet.core.models.Model.detect>` returns.

    Attributes
    ----------
    candidates : pandas.DataFrame
        Every candidate (points table in full-resolution pixels): ``score`` is the
        probability of a true particle, ``peak`` the network's raw peak score, then
        ``intensity``.
    threshold : float
        Probability threshold in force (chosen per image unless given).
    choice : ThresholdChoice
        Count kept and the expected precision, recall and F1 at ``threshold``.
    denoised : array_like
        Denoised frames in the input's intensity scale (binned when ``binning > 1``).
    binning : int
        The bin factor used.
    polarity : str
        ``"dark"`` or ``"bright"``: the particles' polarity used.
    first_frame : int
        Index in the input of ``denoised[0]``.
    non_finite : int
        NaN or infinite pixels treated as background.
    recurrence : float or None
        For a time-lapse: the share of kept detections (frames but the last) found
        again in the next frame within :data:`RECURRENCE_GATE` px; None otherwise.
    threshold_rule : str
        ``"expected F1"``, ``"given"`` or ``"fine-tuned"``: how ``threshold`` was set.
    recurrence_confident : float or None
        The same share for the most probable quarter of the kept detections: when
        those recur much more often than all of them, the rest is mostly noise; when
        they do not recur either, the particles simply move faster than the gate.
    model_note : str or None
        Which model detected, when it was chosen for the image (model ``auto``, see
        :mod:`napari_denodet.core.choice`); shown by :meth:`summary`.
    """

    candidates: pd.DataFrame
    threshold: float
    choice: ThresholdChoice
    denoised: Any
    binning: int
    polarity: str
    first_frame: int
    non_finite: int
    recurrence: float | None
    threshold_rule: str
    recurrence_confident: float | None = None
    model_note: str | None = None

    @property
    def points(self) -> pd.DataFrame:
        """The candidates kept at :attr:`threshold`."""
        kept = self.candidates[self.candidates[SCORE] >= self.threshold]
        return kept.reset_index(drop=True)

    def summary(self) -> str:
        """One line for a user: expected precision and recall, and the recurrence."""
        c = self.choice
        rule = {"expected F1": "threshold chosen for this image",
                "given": "threshold given", "fine-tuned": "the fine-tuned threshold"}
        if not c.supported:
            text = ("no particle stands out from the noise: the candidates score no "
                    "higher than in the contrast-flipped frames, so none is kept (give a "
                    "threshold to see the likeliest)")
        else:
            text = (f"expected precision {c.expected_precision:.0%}, recall "
                    f"{c.expected_recall:.0%} ({rule[self.threshold_rule]})")
        if self.recurrence is not None:
            text += f"; {self.recurrence:.0%} found again in the next frame"
        if self.model_note:
            text += f"; {self.model_note}"
        return text

    def warning(self) -> str | None:
        """Return a plain-words warning when the time-lapse self-check fails, else None."""
        if self.recurrence is None or self.recurrence >= RECURRENCE_WARNING:
            return None
        confident = self.recurrence_confident
        if confident is None or confident < max(RECURRENCE_WARNING, 2 * self.recurrence):
            return None  # even the surest detections move on: fast particles, not noise
        return (f"only {self.recurrence:.0%} of the detections are found again in the "
                f"next frame, against {confident:.0%} of the surest quarter: most of the "
                "others may be noise. Raise the score threshold, or click a few particles "
                "and fine-tune")


def recurrence(points: pd.DataFrame, gate: float = RECURRENCE_GATE) -> float | None:
    """Share of detections found again in the next frame within ``gate`` px.

    Parameters
    ----------
    points : pandas.DataFrame
        A points table with a ``frame`` column.
    gate : float
        Largest distance in pixels.

    Returns
    -------
    float or None
        Over the detections of every frame but the last one that holds any; None for a
        single image or fewer than two frames with detections.
    """
    from scipy.spatial import cKDTree

    if FRAME not in points.columns or points.empty:
        return None
    frames = np.sort(points[FRAME].unique())
    if len(frames) < 2:
        return None
    by_frame = {f: g[[Y, X]].to_numpy(np.float64) for f, g in points.groupby(FRAME)}
    found = total = 0
    for frame in frames[:-1]:
        here = by_frame[frame]
        total += len(here)
        later = by_frame.get(frame + 1)
        if later is not None and len(later):
            distance, _ = cKDTree(later).query(here, distance_upper_bound=gate)
            found += int(np.isfinite(distance).sum())
    return found / total if total else None


class _DecoyFrames:
    # The chosen frames of a (binned) image with their contrast flipped, read lazily:
    # slices like a (k, y, x) stack for the engine; for a network that reads a window
    # of frames, like (k, window, y, x) windows given whole (each frame among its
    # flipped neighbours), as do windows given whole in the image itself.

    def __init__(self, image, indices: Sequence[int], stack: bool, window: int = 1) -> None:
        self.image, self.indices, self.stack = image, list(indices), stack
        shape = np.shape(image)
        self.window = window if stack and len(shape) == 3 else 1
        if len(shape) == 4:
            self.shape = (len(self.indices), *shape[1:])
        elif self.window > 1:
            self.shape = (len(self.indices), self.window, *shape[-2:])
        else:
            self.shape = (len(self.indices), *shape[-2:])
        self.ndim = len(self.shape)
        # A window model's neighbouring decoy frames share frames: each is flipped once
        # per read, and those of the previous read are kept for the next one.
        self._flipped: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        from napari_denodet.core.io import load_block
        from napari_denodet.core.normalize import finite_frame, looks_integral
        from napari_denodet.core.predict import window_indices

        def flipped(frame):
            integral = looks_integral(frame)
            decoy = decoy_frame(finite_frame(frame)[0])
            # A camera's whole numbers stay whole, so the decoy is normalised as the
            # frame is (a dithered median and MAD), not by a scale of its own kind.
            return np.rint(decoy) if integral else decoy

        frames, kept = [], {}
        for index in self.indices[key]:
            if self.window > 1:
                around = window_indices(index, self.window, 0, len(self.image) - 1)
                for j in around:
                    if j not in kept:
                        kept[j] = (self._flipped[j] if j in self._flipped
                                   else flipped(load_block(self.image[j])))
                frames.append(np.stack([kept[j] for j in around]))
                continue
            frame = load_block(self.image[index] if self.stack or self.ndim == 4
                               else self.image)
            frames.append(np.stack([flipped(f) for f in frame]) if frame.ndim == 3
                          else flipped(frame))
        self._flipped = kept
        return np.stack(frames)


def _polarity(model: Model, polarity: str | None) -> str:
    if polarity in (None, "auto"):
        return "dark" if model.invert else "bright"
    if polarity not in POLARITIES:
        from napari_denodet.core.errors import InputError

        raise InputError(None, f"polarity must be one of {', '.join(POLARITIES)}, "
                               f"not {polarity!r}")
    return polarity


def detect_with_model(
    model: Model,
    image: Any,
    *,
    threshold: float | None = None,
    binning: int = 1,
    polarity: str | None = None,
    frames: Sequence[int] | None = None,
    out: Any = None,
    **engine: Any,
) -> Generator[DetectProgress, None, Detections]:
    """Detect particles in ``image`` with ``model``; see :meth:`Model.detect`."""
    from napari_denodet.core.errors import InputError
    from napari_denodet.core.predict import DEFAULT_FLOOR, detect
    from napari_denodet.core.resample import bin_lazily, unbin_points

    try:
        binned = bin_lazily(image, binning)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise InputError(None, f"threshold must be between 0 and 1, got {threshold!r}")
    chosen = _polarity(model, polarity)
    auto_polarity = polarity == "auto" or (polarity is None and model.scenario == "micrograph")
    settings = {**model.localisation, **engine, "floor": DEFAULT_FLOOR}
    result = yield from detect(binned, model.network, invert=chosen == "dark", frames=frames,
                               out=out, **settings)
    stack = np.ndim(binned) == 3
    targets, rule = result.points, "given" if threshold is not None else "expected F1"
    decoy, weight = yield from _decoy_pass(model, binned, result, chosen, auto_polarity,
                                           dict(settings, frames=frames))
    decoys = decoy.points
    if auto_polarity and _other_polarity_wins(targets[SCORE], decoys[SCORE]):
        chosen = "bright" if chosen == "dark" else "dark"
        targets, decoys = decoys, targets
        result.denoised = decoy.denoised if out is None else result.denoised
    calibration = fit_calibration(targets[SCORE], decoys[SCORE], weight)
    if model.card.fitted_threshold and threshold is None:
        # A fine-tuned model's threshold was fitted to the user's clicks on its raw
        # scores: the same detections are kept, their scores still probabilities.
        threshold, rule = float(calibration(model.threshold)), "fine-tuned"
    candidates = _with_probability(targets, calibration)
    probability = candidates[SCORE].to_numpy()
    if threshold is None:
        # Kept only where the targets outnumber the decoys beyond chance: noise alone
        # gets no particles.
        evidence = (surplus_pvalues(targets[SCORE], decoys[SCORE], weight) if len(decoys)
                    else None)
        choice = choose_threshold(probability, pvalues=evidence)
    else:
        choice = expected_scores(probability, threshold)
    candidates = unbin_points(candidates, binning)
    kept = candidates[candidates[SCORE] >= choice.threshold]
    surest = kept[kept[SCORE] >= kept[SCORE].quantile(0.75)] if len(kept) else kept
    return Detections(candidates=candidates, threshold=choice.threshold, choice=choice,
                      denoised=result.denoised, binning=binning, polarity=chosen,
                      first_frame=result.first_frame, non_finite=result.non_finite,
                      recurrence=recurrence(kept) if stack else None,
                      threshold_rule=rule,
                      recurrence_confident=recurrence(surest) if stack else None)


def _decoy_pass(model: Model, binned, result, chosen: str, auto_polarity: bool,
                settings: dict):
    # The engine on decoy frames; returns its result and the frames each decoy frame
    # stands for.
    from napari_denodet.core.predict import detect, network_window

    frames = settings.pop("frames")
    if model.invert or auto_polarity:
        # Micrographs: noise is close to additive, so the plain flip is the decoy, and
        # it equals the other polarity's detections (used to choose the polarity).
        decoy = yield from detect(binned, model.network, invert=chosen != "dark",
                                  frames=frames, **settings)
        return decoy, 1.0
    picked = decoy_frames(len(result.scales))
    stack = np.ndim(binned) == 3
    # A network that reads neighbouring frames sees each decoy frame among its flipped
    # neighbours, as it sees a frame among its own.
    view = _DecoyFrames(binned, [result.first_frame + i for i in picked], stack,
                        network_window(model.network))
    decoy = yield from detect(view, model.network, invert=False, **settings)
    return decoy, len(result.scales) / len(picked)


def _other_polarity_wins(mine, theirs, share: float = 0.05) -> bool:
    # The polarity of the particles holds most of the surest candidates of both: at low
    # scores the wrong one can have more (halos and rings around real particles).
    mine, theirs = np.asarray(mine), np.asarray(theirs)
    top = max(10, int(share * (len(mine) + len(theirs))))
    pooled = np.concatenate([mine, theirs])
    if len(pooled) == 0:
        return False
    cut = np.sort(pooled)[::-1][min(top, len(pooled)) - 1]
    return int((theirs >= cut).sum()) > int((mine >= cut).sum())


def _with_probability(points: pd.DataFrame, calibration: Calibration) -> pd.DataFrame:
    # score <- probability of a true particle; the raw peak score follows it.
    out = points.copy()
    peak = out[SCORE].to_numpy(np.float64)
    out[SCORE] = calibration(peak)
    out.insert(out.columns.get_loc(SCORE) + 1, PEAK, peak)
    return out
