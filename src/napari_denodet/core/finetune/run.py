"""The fine-tuning run: :func:`finetune`, its steps, held-out checks and calibration.

Both modes start alike (``_prepare``): the clicks are checked and laid on their
normalised frames, the random streams seeded, and the parent detects on those frames.
The ``"weights"`` mode then trains a copy of the network step by step (``_train``,
``_step``) and recalibrates its threshold (``_calibrate_trained``); the ``"threshold"``
mode keeps the parent's weights and recalibrates its threshold from the clicked area
(``_recalibrate``). The package's docstring says what is learnt and why.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from napari_denodet.core.device import choose_device
from napari_denodet.core.errors import InputError
from napari_denodet.core.feedback import area_looks_complete
from napari_denodet.core.finetune.calibration import (
    _found,
    _matched,
    area_is_incomplete,
    calibrate_from_area,
    calibrate_threshold,
    threshold_for_count,
    unclicked_in_area,
)
from napari_denodet.core.finetune.card import finetune_card
from napari_denodet.core.finetune.clicks import (
    _add_pseudo_labels,
    _as_table,
    _check_clicks,
    _click_tables,
    _estimate_prior,
    _Frame,
    _frames,
    _pixels,
    _split_heldout,
    clicks_polarity,
)
from napari_denodet.core.finetune.patches import _batch, _disk_mask, _patch_size, _transform
from napari_denodet.core.finetune.settings import (
    CALIBRATION_GATE,
    CLICK_CLEARANCE,
    MIN_CLICKS_FOR_CHECK,
    NEGATIVE_RADIUS,
    FinetunedModel,
    FinetuneFiles,
    FinetuneProgress,
    FinetuneSettings,
    resolve_calibration,
    resolve_mode,
)
from napari_denodet.core.localize import BlobScore, blob_response
from napari_denodet.core.losses import (
    blind_spot_mask,
    gaussian_heatmap,
    local_terms,
    positive_unlabelled_loss,
)
from napari_denodet.core.models import Model
from napari_denodet.core.network import train_mode
from napari_denodet.core.normalize import non_finite_note
from napari_denodet.core.points import FRAME, SCORE, X, Y
from napari_denodet.core.predict import DetectionResult, detect, run
from napari_denodet.core.progress import Stage


@dataclass
class _Job:
    # What both modes need, prepared once from the user's input by `_prepare`.
    model: Model
    settings: FinetuneSettings
    positives: pd.DataFrame  # every click, as given
    negatives: pd.DataFrame
    frames: list[_Frame]
    size: int  # patch edge (px)
    localisation: dict  # the parent's, without its blob term
    loss_window: tuple[int, float]  # (radius, temperature) of the local loss terms
    rng: np.random.Generator  # held-out split, patches, augmentation
    generator: torch.Generator  # blind-spot masks
    device: torch.device
    started: float  # time.perf_counter() at the start
    parent: DetectionResult  # the parent's detections on the frames (peak probability)
    parent_found: pd.DataFrame  # those at its threshold, scored as its card scores them
    prior: float  # particles per pixel
    mode: str  # "weights" or "threshold"
    binning: int = 1  # of the image and clicks, recorded in the card
    name: str | None = None  # of the new model
    files: FinetuneFiles | None = None  # of a command-line run, for the card's command
    unclicked: int | None = None  # `unclicked_in_area`, when the threshold mode is asked
    pass_seconds: float = 0.0  # one detection pass over the frames (the parent's)
    invert: bool = False  # the particles are dark on the user's image


@dataclass
class _Run:
    # The training of the "weights" mode: what each step and held-out check needs.
    job: _Job
    network: torch.nn.Module
    optimiser: torch.optim.Optimizer
    trained: list[Tensor]  # the parameters trained
    averaged: list[Tensor] | None  # their moving average, when one is kept
    heldout: pd.DataFrame  # clicks kept out of training for the check
    history: list[dict] = field(default_factory=list)
    steps_done: int = 0
    started: float = 0.0  # time.perf_counter() when the steps began


def finetune(
    model: Model,
    image: Any,
    positives: pd.DataFrame | np.ndarray,
    negatives: pd.DataFrame | np.ndarray | None = None,
    settings: FinetuneSettings | None = None,
    stop: threading.Event | None = None,
    device: str = "auto",
    *,
    binning: int = 1,
    name: str | None = None,
    files: FinetuneFiles | None = None,
) -> Generator[FinetuneProgress, None, FinetunedModel]:
    """Fine-tune ``model`` on ``image`` from clicked particle centres.

    :meth:`Model.finetune <napari_denodet.core.models.Model.finetune>` runs this.

    Parameters
    ----------
    model : Model
        The starting model (never modified; a copy is trained).
    image : array_like
        ``(y, x)`` image or ``(t, y, x)`` stack at full resolution (binned here by
        ``binning``). Only frames holding clicks are read.
    positives : pandas.DataFrame or array_like
        Clicked particle centres in the image's pixels: a points table, or ``(N, 2)``
        ``(y, x)`` / ``(N, 3)`` ``(frame, y, x)`` coordinates. At least
        :data:`MIN_CLICKS`.
    negatives : pandas.DataFrame or array_like, optional
        Known false detections (deleted or negative clicks), same forms.
    settings : FinetuneSettings, optional
        The run (defaults otherwise).
    stop : threading.Event, optional
        When set, training ends after the current step and the model trained so far is
        calibrated and returned.
    device : str
        Where to train: ``"auto"`` (CUDA, then MPS, then CPU) or a device name
        (:func:`napari_denodet.core.predict.choose_device`).
    binning : int
        Average ``binning x binning`` pixels of the image first, and map the clicks to
        the binned pixels (micrographs). The card records it (``training.binning``).
    name : str, optional
        The new model's name in its card (default: the parent's with ``-finetuned``).
    files : FinetuneFiles, optional
        The files of a command-line run: the card records the command that repeats it
        (``training.command``, :meth:`FinetuneSettings.command`).

    Yields
    ------
    FinetuneProgress
        After every step, and after every held-out check; in the ``"threshold"`` mode
        (``settings.mode``, or the model card's advice under ``"auto"``) once, after
        the threshold is recalibrated and without training. The threshold mode needs
        a completely clicked area: when the area does not look so
        (:func:`area_is_incomplete`), a ``Stage.NOTE`` comes first, and ``"auto"`` trains
        the weights instead.

    Returns
    -------
    FinetunedModel
        The fine-tuned model with its card and the loss history.

    Raises
    ------
    InputError
        Fewer than two clicks, clicks outside the image, an image that is not 2D/3D or
        too small (for the binning), or a clicked frame without a finite pixel (NaN and
        inf pixels are otherwise treated as background, and a ``Stage.NOTE`` says how many).
    """
    settings = settings or FinetuneSettings()
    image, positives, negatives = _binned(image, positives, negatives, binning)
    job = yield from _prepare(model, image, positives, negatives, settings, device)
    job.binning, job.name, job.files = int(binning), name, files
    yield from _check_area(job)
    if job.mode == "threshold":
        return (yield from _recalibrate(job))
    training = yield from _train(job, stop)
    adapted = yield from _calibrate_trained(training)
    return (yield from _accept(training, adapted))


def _binned(image: Any, positives: Any, negatives: Any, binning: int) -> tuple[Any, Any, Any]:
    # The image binned (a stack frame by frame, as it is read) and the clicks mapped to
    # its pixels.
    from napari_denodet.core.resample import bin_lazily, bin_points

    if isinstance(binning, bool) or not isinstance(binning, (int, np.integer)) or binning < 1:
        raise InputError(None, f"the binning must be an integer >= 1, got {binning!r}")
    if binning == 1:
        return image, positives, negatives
    stack = len(np.shape(image)) == 3
    try:
        image = bin_lazily(image, int(binning))
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    positives = bin_points(_as_table(positives, stack, "clicked points"), int(binning))
    if negatives is not None:
        negatives = bin_points(_as_table(negatives, stack, "negative points"), int(binning))
    return image, positives, negatives


def _prepare(model: Model, image: Any, positives: Any, negatives: Any,
             settings: FinetuneSettings, device: str) -> Generator[FinetuneProgress, None, _Job]:
    # The clicks checked and laid on their normalised frames, the random streams seeded
    # (the held-out split draws first), the parent's detections and the class prior.
    torch_device = choose_device(device)
    started = time.perf_counter()
    shape = tuple(int(n) for n in np.shape(image))
    if len(shape) not in (2, 3):
        raise InputError(None, f"expected a (y, x) image or a (t, y, x) stack, got shape {shape}")
    stack = len(shape) == 3
    positives = _as_table(positives, stack, "clicked points")
    negatives = _as_table(negatives, stack, "negative points")
    _check_clicks(positives, shape, stack)
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    held = _split_heldout(positives, rng)
    invert = (settings.polarity == "dark" if settings.polarity is not None
              else clicks_polarity(image, positives) == "dark"
              if model.scenario == "micrograph" else model.invert)
    frames, non_finite = _frames(image, positives, negatives, invert, held,
                                 settings.complete_region, window=model.window)
    if non_finite:
        yield FinetuneProgress(Stage.NOTE, 0, settings.steps, time.perf_counter() - started,
                               {"message": non_finite_note(non_finite)})
    size = _patch_size(frames, settings.patch_size)
    # Candidates are scored by their peak probability here: a parent's blob score was
    # fitted on other data (the threshold mode fits its own).
    localisation = {k: v for k, v in model.localisation.items() if k != "blob"}
    # The local loss terms keep the temperature the parent was trained with; the card's
    # localisation temperature is for inference only.
    loss_window = (localisation["radius"], model.training_temperature)
    passed = time.perf_counter()
    parent = _detections(model.network, frames, localisation, torch_device)
    pass_seconds = time.perf_counter() - passed
    parent_found = _parent_detections(model, parent)
    return _Job(model=model, settings=settings, positives=positives, negatives=negatives,
                frames=frames, size=size, localisation=localisation,
                loss_window=loss_window, rng=rng, generator=generator, device=torch_device,
                started=started, parent=parent, parent_found=parent_found,
                prior=_estimate_prior(parent_found, frames, settings),
                mode=resolve_mode(settings, model), pass_seconds=pass_seconds, invert=invert)


def _clicks_per_frame(frames: list[_Frame]) -> list[np.ndarray]:
    # Per frame, every click (trained on and held out).
    return [np.concatenate([f.positives, f.heldout]) for f in frames]


def _check_area(job: _Job) -> Generator[FinetuneProgress, None, None]:
    # The threshold-only mode rests on a completely clicked area: check it. When it does
    # not look so, a note; under "auto" the weights are trained instead.
    if job.mode != "threshold":
        return
    settings, clicks = job.settings, _clicks_per_frame(job.frames)
    job.unclicked = unclicked_in_area(job.parent.points, clicks,
                                      [f.shape for f in job.frames])
    if not area_is_incomplete(job.unclicked, sum(len(c) for c in clicks)):
        return
    found = (f"{job.unclicked} confident detections in the clicked area are not "
             "clicked, so it does not look completely clicked")
    if settings.mode == "auto":
        job.mode = "weights"
        message = f"{found}: training the network instead of only its threshold"
    else:
        message = (f"{found}; threshold only assumes every particle there is "
                   "clicked, so the threshold may come out too high")
    yield FinetuneProgress(Stage.NOTE, 0, settings.steps if job.mode == "weights" else 0,
                           time.perf_counter() - job.started,
                           {"message": message, "unclicked": job.unclicked})


def _train(job: _Job, stop: threading.Event | None) -> Generator[FinetuneProgress, None, _Run]:
    # The "weights" mode's steps and held-out checks. The network ends with the weights
    # to return (the average, if kept), in evaluation mode.
    settings = job.settings
    if settings.pseudo_labels > 0:
        _add_pseudo_labels(job.frames, job.parent.points, job.model.threshold,
                           settings.pseudo_labels)
    network = copy.deepcopy(job.model.network).to(job.device)
    train_mode(network, settings.freeze_norm)
    trained = [p for name, p in network.named_parameters()
               if settings.train_encoder or not name.startswith("enc")]
    optimiser = torch.optim.Adam(trained, lr=settings.learning_rate)
    averaged = [p.detach().clone() for p in trained] if settings.average > 0 else None
    training = _Run(job=job, network=network, optimiser=optimiser, trained=trained,
                    averaged=averaged, heldout=_click_tables(job.frames, "heldout"))
    training.started = time.perf_counter()
    # What follows training (calibration, the acceptance check: about five detection
    # passes over the frames) must fit in the budget too.
    deadline = (None if settings.time_budget is None else
                job.started + settings.time_budget - (5 * job.pass_seconds + 1.0))
    for step in range(1, settings.steps + 1):
        metrics = _step(training)
        if averaged is not None:
            with torch.no_grad():
                for a, p in zip(averaged, trained, strict=True):
                    a.lerp_(p, 1.0 - settings.average)
        training.steps_done = step
        training.history.append({"step": step, **metrics})
        now = time.perf_counter()
        elapsed = now - job.started
        yield FinetuneProgress(Stage.TRAIN, step, settings.steps, elapsed, metrics,
                               settings.time_budget)
        out_of_time = deadline is not None and now >= deadline
        if len(training.heldout) and (step % settings.check_every == 0
                                      or step == settings.steps):
            # The check judges the weights that would be returned (the average, if any).
            with _swapped(trained, averaged):
                check = _check(training)
            training.history[-1].update(check)
            yield FinetuneProgress(Stage.CHECK, step, settings.steps, elapsed, check,
                                   settings.time_budget)
        if out_of_time or (stop is not None and stop.is_set()):
            break
    if averaged is not None:
        with torch.no_grad():
            for p, a in zip(trained, averaged, strict=True):
                p.copy_(a)
    network.eval()
    return training


def _calibrate_trained(training: _Run) -> Generator[FinetuneProgress, None, FinetunedModel]:
    # The trained network's threshold (from the clicks, or keeping the parent's count of
    # detections), its card, and the result.
    job, network = training.job, training.network
    settings, frames, parent_found = job.settings, job.frames, job.parent_found
    candidates = _candidates(network, frames, job.localisation, job.device)
    network.cpu()
    clicks = _click_tables(frames, "positives")
    from_clicks, _ = calibrate_threshold(candidates, pd.concat([clicks, training.heldout]),
                                         expected=job.prior * _pixels(frames))
    calibration = resolve_calibration(settings, job.model)
    # Keeping the parent's count needs detections of the parent and candidates now.
    keeping = (threshold_for_count(candidates, len(parent_found))
               if len(parent_found) and not candidates.empty else None)
    if keeping is None:
        calibration = "clicks"
    threshold = keeping if calibration == "count" else from_clicks
    step = training.steps_done
    yield FinetuneProgress(Stage.CALIBRATE, step, settings.steps,
                           time.perf_counter() - job.started,
                           {"threshold": threshold, "calibration": calibration,
                            "message": _calibration_message(calibration, threshold,
                                                            len(parent_found))})
    card = finetune_card(job.model, replace(settings, mode=job.mode, calibration=calibration),
                         n_positives=len(job.positives),
                         n_negatives=len(job.negatives), steps_done=step, threshold=threshold,
                         prior=job.prior, frames=[f.index for f in frames],
                         wall_time=time.perf_counter() - job.started, unclicked=job.unclicked,
                         calibration={"threshold_from_clicks": from_clicks,
                                      "threshold_keeping_count": keeping,
                                      "parent_count": len(parent_found)},
                         binning=job.binning, name=job.name, files=job.files,
                         invert=job.invert)
    result = Model(network=network, card=card, source=f"fine-tuned from {job.model.source}")
    return FinetunedModel(model=result, history=training.history, steps_done=step,
                          wall_time=time.perf_counter() - job.started)


def _accept(training: _Run, adapted: FinetunedModel
            ) -> Generator[FinetuneProgress, None, FinetunedModel]:
    # The acceptance check: the starting model as the user saw it (its probabilities and
    # per-image threshold) and the adapted one (its fitted threshold), on the clicks no
    # step trained on. The adapted model is kept only when it does better there by more
    # than the comparison can resolve (_gain_margin).
    job = training.job
    heldout = training.heldout
    if heldout.empty:
        return replace(adapted, adapted=adapted.model,
                       message=f"{adapted.steps_done} steps; too few clicks to "
                                        f"hold some out and check the result "
                                        f"(at least {MIN_CLICKS_FOR_CHECK})")
    stack = np.stack([f.image if f.raw is None else f.raw for f in job.frames])
    # The frames are the clicked ones as read, particles bright (dark ones flipped).
    before = run(job.model.detect(stack, binning=1, polarity="bright",
                                  device=str(job.device)))
    after = run(adapted.model.detect(stack, binning=1, polarity="bright",
                                     device=str(job.device)))
    clicks = _clicks_per_frame(job.frames)
    shapes = [f.shape for f in job.frames]
    complete = job.settings.complete_region or all(
        area_looks_complete(before.candidates[before.candidates[FRAME] == i], points, shape)
        for i, (points, shape) in enumerate(zip(clicks, shapes, strict=True)))
    first = _heldout_measure(before, heldout, clicks, shapes, complete)
    then = _heldout_measure(after, heldout, clicks, shapes, complete)
    f1_before, f1_after = first.f1, then.f1
    margin = _gain_margin(first, then)
    accepted = f1_after - f1_before > margin
    facts = {"f1_before": f1_before, "f1_after": f1_after, "margin": margin,
             "clicks": len(heldout), "complete_area": bool(complete)}
    measure = f"F1 on the {len(heldout)} clicks held out"
    if accepted:
        message = (f"adapted model kept: {measure} {f1_before:.2f} before, "
                   f"{f1_after:.2f} after ({adapted.steps_done} steps)")
        result = adapted
    else:
        message = (f"previous model kept: the adapted one was not measurably better on the "
                   f"clicks it did not train on ({measure} {f1_before:.2f} before, "
                   f"{f1_after:.2f} after; a gain must exceed {margin:.2f}, the check's "
                   "uncertainty)")
        result = replace(adapted, model=_kept_parent(job, adapted))
    elapsed = time.perf_counter() - job.started
    yield FinetuneProgress(Stage.ACCEPT, adapted.steps_done, job.settings.steps, elapsed,
                           {**facts, "accepted": accepted, "message": message},
                           job.settings.time_budget)
    return replace(result, accepted=accepted, heldout=facts, message=message,
                   wall_time=elapsed, adapted=adapted.model)


def _kept_parent(job: _Job, adapted: FinetunedModel) -> Model:
    # The starting model's weights under the adapted model's card, marked as not
    # accepted: it detects as the starting model does (a threshold chosen per image).
    card = adapted.model.card
    training = {**card.to_dict()["training"], "accepted": False}
    # The parent's threshold and localisation (a blob term of its own included): the
    # adapted card's drop it.
    card = card.updated(job.model.source, training=training, threshold=job.model.threshold,
                        localisation=job.model.card.localisation.to_dict())
    network = copy.deepcopy(job.model.network).cpu().eval()
    return Model(network=network, card=card, source=f"kept from {job.model.source}")


@dataclass(frozen=True)
class _Held:
    # One model on the acceptance check: which held-out clicks it found, its precision
    # (and that estimate's variance) and their F1.
    found: np.ndarray  # bool per held-out click
    precision: float
    precision_variance: float

    @property
    def recall(self) -> float:
        return float(np.mean(self.found))

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def _heldout_measure(found, heldout: pd.DataFrame, clicks: list[np.ndarray],
                     shapes: list[tuple[int, int]], complete: bool) -> _Held:
    # The held-out clicks' recall and a precision no step trained on: that of the
    # detections in a completely clicked area (those matching a click: a binomial count),
    # else the detections' calibrated probabilities (whose sum of p(1 - p) is the variance
    # of the number of true ones among them).
    from napari_denodet.core.finetune.clicks import _in_area, clicked_area
    from napari_denodet.core.points import points_table

    kept = found.points
    hit = _found(kept, heldout, CALIBRATION_GATE)
    if complete:
        inside = matched = 0
        for i, (points, shape) in enumerate(zip(clicks, shapes, strict=True)):
            mine = kept[kept[FRAME] == i]
            area = clicked_area(points, shape)
            mine = mine[_in_area(mine[[Y, X]].to_numpy(np.float64), area)]
            inside += len(mine)
            matched += _matched(mine, points_table(points[:, 0], points[:, 1],
                                                   frame=np.full(len(points), i)),
                                CALIBRATION_GATE)
        precision = matched / inside if inside else 1.0
        variance = precision * (1 - precision) / inside if inside else 0.0
        return _Held(hit, precision, variance)
    p = kept[SCORE].to_numpy(np.float64) if len(kept) else np.zeros(0)
    precision = found.choice.expected_precision
    variance = float(np.sum(p * (1 - p))) / len(p) ** 2 if len(p) else 0.0
    return _Held(hit, precision, variance)


def _gain_margin(before: _Held, after: _Held) -> float:
    # One standard error of the held-out F1's change (the one-standard-error rule: the
    # simpler model, here the one the user had, stands unless the other beats it by more
    # than the check can resolve). The recall's change is paired over the same clicks:
    # its variance is that of the discordant clicks (McNemar's), with half a click when
    # none is (no discordant click among three is no proof that the recall did not
    # change). The precisions are taken as independent. Both carried to the F1 to first
    # order.
    n = len(before.found)
    discordant = int(np.sum(before.found != after.found))
    recall_variance = max(discordant, 0.5) / n ** 2
    (dp0, dr0), (dp1, dr1) = _f1_slopes(before), _f1_slopes(after)
    variance = (((dr0 + dr1) / 2) ** 2 * recall_variance
                + dp0 ** 2 * before.precision_variance + dp1 ** 2 * after.precision_variance)
    return float(np.sqrt(variance))


def _f1_slopes(held: _Held) -> tuple[float, float]:
    # d F1 / d precision and d F1 / d recall.
    p, r = held.precision, held.recall
    if p + r == 0:
        return 1.0, 1.0
    return 2 * r * r / (p + r) ** 2, 2 * p * p / (p + r) ** 2


def _recalibrate(job: _Job) -> Generator[FinetuneProgress, None, FinetunedModel]:
    # The "threshold" mode: the parent's weights, the blob score fitted on the frames'
    # candidates and a threshold from the clicked area (or, without an area, the peak
    # probability and the rule used after training).
    model, settings, frames = job.model, job.settings, job.frames
    candidates = scored = job.parent.points
    blob = None
    if settings.blob_weight > 0 and not candidates.empty:
        responses = _blob_responses(job.parent, settings.blob_sigma)
        blob = BlobScore.fit(responses, settings.blob_weight, settings.blob_sigma)
        scored = candidates.assign(score=blob.apply(candidates[SCORE], responses))
    threshold, facts = calibrate_from_area(scored, _clicks_per_frame(frames),
                                           [f.shape for f in frames],
                                           detections=job.parent_found)
    source = "the clicked area"
    if threshold is None:
        blob, source = None, "the clicks (they cover no area)"
        threshold, facts = calibrate_threshold(
            candidates, pd.concat([_click_tables(frames, "positives"),
                                   _click_tables(frames, "heldout")]),
            expected=job.prior * _pixels(frames))
    elapsed = time.perf_counter() - job.started
    message = (f"weights kept; threshold recalibrated from {source}: {threshold:.2f}"
               + (", ties broken by the denoised image" if blob is not None else ""))
    yield FinetuneProgress(Stage.CALIBRATE, 0, 0, elapsed,
                           {"threshold": threshold, "blob_score": blob is not None,
                            "message": message, **facts})
    card = finetune_card(model, replace(settings, mode="threshold"),
                         n_positives=len(job.positives), n_negatives=len(job.negatives),
                         steps_done=0, threshold=threshold, prior=job.prior,
                         frames=[f.index for f in frames],
                         wall_time=time.perf_counter() - job.started, unclicked=job.unclicked,
                         blob=blob, binning=job.binning, name=job.name, files=job.files,
                         invert=job.invert)
    network = copy.deepcopy(model.network).cpu().eval()
    result = Model(network=network, card=card, source=f"recalibrated from {model.source}")
    return FinetunedModel(model=result, history=[], steps_done=0,
                          wall_time=time.perf_counter() - job.started)


def _detections(network, frames: list[_Frame], localisation: dict,
                device: torch.device) -> DetectionResult:
    # Detection on the clicked frames, frame = position in list: on the frames as read
    # (normalised once by the engine, as detect does: whole-number frames are measured
    # with a dither, which normalising the normalised frames again would not repeat).
    stack = np.stack([f.image if f.raw is None else f.raw for f in frames])
    return run(detect(stack, network, device=str(device), **localisation))


def _candidates(network, frames: list[_Frame], localisation: dict,
                device: torch.device) -> pd.DataFrame:
    return _detections(network, frames, localisation, device).points


def _parent_detections(model: Model, detections: DetectionResult) -> pd.DataFrame:
    # The parent's detections at its own threshold, scored as its card scores them (a
    # parent's blob term too: fine-tuning's candidates carry the peak probability).
    points = detections.points
    if points.empty:
        return points
    blob = model.localisation.get("blob")
    score = points[SCORE].to_numpy(np.float64)
    if blob:
        term = BlobScore(**blob)
        score = term.apply(score, _blob_responses(detections, term.sigma))
    return points[score >= model.threshold]


def _blob_responses(detections: DetectionResult, sigma: float) -> np.ndarray:
    # The blob response (sigma px) of the denoised output at each point of a detection
    # run, its denoised frames normalised back as the network gave them.
    denoised = np.asarray(detections.denoised)
    denoised = denoised if denoised.ndim == 3 else denoised[None]
    normalised = np.stack([s.forward(d) for s, d in zip(detections.scales, denoised,
                                                         strict=True)])
    points = detections.points
    frame = (points[FRAME].to_numpy(np.int64) - detections.first_frame
             if FRAME in points else np.zeros(len(points), np.int64))
    return blob_response(normalised, frame, points[Y].to_numpy(np.float64),
                         points[X].to_numpy(np.float64), sigma)


def _step(training: _Run) -> dict:
    # One optimiser step. The batch and its labels are made on the CPU (seeded), then
    # moved to the device. The random draws keep their order: the batch (rng), the
    # blind-spot mask (generator), then the consistency transform (rng).
    job, settings, size = training.job, training.job.settings, training.job.size
    noisy, positives, negatives, region = _batch(job.frames, size, settings, job.rng)
    masked, mask = blind_spot_mask(noisy, settings.blind_spot_fraction, job.generator)
    b = len(noisy)
    shape = (b, size, size)
    positive = gaussian_heatmap(positives, shape) >= 0.5
    # Known background: around false detections, and the completely clicked area away
    # from its clicks.
    negative = _disk_mask(negatives, shape, NEGATIVE_RADIUS) | (
        region & ~_disk_mask(positives, shape, CLICK_CLEARANCE))
    negative &= ~positive
    noisy, masked, mask, positive, negative, positives = (
        t.to(job.device) for t in (noisy, masked, mask, positive, negative, positives))
    k, flip = int(job.rng.integers(1, 4)), bool(job.rng.random() < 0.5)
    c = b if settings.consistency_patches is None else min(settings.consistency_patches, b)
    use_consistency = settings.consistency_weight > 0 and c > 0
    inputs = torch.cat([masked, _transform(masked[:c], k, flip)]) if use_consistency else masked
    denoised, logits = training.network(inputs)
    logits = logits[:, 0]

    # Blind-spot denoising: predict the masked pixels' noisy values from their context.
    # (A window's centre frame is the one denoised; the mask covers every frame.)
    centre = noisy.shape[1] // 2
    denoising = F.mse_loss(denoised[:b][mask], noisy[:, centre : centre + 1][mask])

    pixels = float(b * size * size)
    particle_pixels = job.prior * pixels * max(float(positive.sum()), 1.0) / max(
        len(positives), 1)
    unlabelled = pixels - float(positive.sum()) - float(negative.sum())
    prior = max(particle_pixels - float(positive.sum()), 0.0) / max(unlabelled, 1.0)
    pu = positive_unlabelled_loss(logits[:b], positive, negative, prior)
    js, euclid = local_terms(logits[:b], positives, *job.loss_window)
    detection = pu + settings.local_weight * (js + euclid)

    consistency = logits.sum() * 0.0
    if use_consistency:
        probs = torch.sigmoid(logits)
        consistency = F.mse_loss(probs[b:], _transform(probs[:c], k, flip))
    loss = (detection + settings.denoise_weight * denoising
            + settings.consistency_weight * consistency)
    training.optimiser.zero_grad(set_to_none=True)
    loss.backward()
    training.optimiser.step()
    return {"loss": loss.item(), "detection": detection.item(), "pu": pu.item(),
            "js": js.item(), "euclid": euclid.item(), "denoising": denoising.item(),
            "consistency": consistency.item(), "prior": prior}


@contextlib.contextmanager
def _swapped(parameters: list[Tensor], values: list[Tensor] | None):
    # Give `parameters` the `values` for the duration of the block (no-op without values).
    if values is None:
        yield
        return
    kept = [p.detach().clone() for p in parameters]
    with torch.no_grad():
        for p, v in zip(parameters, values, strict=True):
            p.copy_(v)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, k in zip(parameters, kept, strict=True):
                p.copy_(k)


def _calibration_message(calibration: str, threshold: float, parent_count: int) -> str:
    # One line for the faces: how the threshold after training was set.
    if calibration == "count":
        return (f"threshold {threshold:.2f}: as many detections on the clicked frames as "
                f"the starting model made ({parent_count})")
    return f"threshold {threshold:.2f}, recalibrated from the clicks"


def _check(training: _Run) -> dict:
    # Held-out clicks: recall at the threshold calibrated on the training clicks.
    job, network, heldout = training.job, training.network, training.heldout
    network.eval()
    try:
        candidates = _candidates(network, job.frames, job.localisation, job.device)
    finally:
        train_mode(network, job.settings.freeze_norm)
    threshold, _ = calibrate_threshold(candidates, _click_tables(job.frames, "positives"),
                                       expected=job.prior * _pixels(job.frames))
    kept = candidates[candidates[SCORE] >= threshold]
    matched = _matched(kept, heldout, CALIBRATION_GATE)
    return {"threshold": threshold, "heldout_recall": matched / len(heldout),
            "detections": int(len(kept))}
