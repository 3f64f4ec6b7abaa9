"""Fine-tuning a model on the user's own image from a few clicked particle centres.

This is the weakly supervised joint learning of the cryo-EM paper (WACV 2022, section
3) applied to our network. No clean image exists and only a handful of particles are
labelled, so:

- **Denoising** is blind-spot self-supervision (Noise2Void): a few pixels of each
  patch are replaced by a random neighbour and the denoising head is trained to
  predict their original noisy values from the surrounding context. With noise
  independent from pixel to pixel, the best such prediction is the clean value.
- **Detection** is positive-unlabelled learning on the heatmap. Pixels at the clicked
  centres are positives, pixels around deleted detections (or negative clicks) are
  negatives, and every other pixel is unlabelled: it may hold a particle nobody
  clicked, so it is not simply background. The class-balanced non-negative PU risk
  (Kiryo et al. 2017, the estimator behind Topaz's picker) estimates the background
  risk from the unlabelled pixels minus the expected share of particles in them, which
  needs the class prior: the number of particles per pixel, estimated from the parent
  model's detections (at least the clicks) or given by the user. The local
  Jensen-Shannon and DSNT terms of training keep the clicked peaks sharp and centred.
- **Consistency**: the heatmap of a flipped/rotated patch must be the flipped/rotated
  heatmap of the patch (the paper's consistency regularisation).

Patches are drawn around clicks (so that each step sees labels) and anywhere in the
images (so that the unlabelled risk sees the whole background), and augmented by flips
and 90-degree rotations. After training the score threshold is recalibrated from the
clicks alone (:func:`calibrate_threshold`).

A model whose card advises it (``"finetune": {"mode": "threshold"}``, the bundled
micrograph model's) is not trained by default: its threshold is recalibrated from the
clicked area (:func:`calibrate_from_area`), which the fine-tuning benchmark measured
better than training from ten clicks for it.

:func:`finetune` is a generator (STYLE.md): it yields :class:`FinetuneProgress` after
every step and returns a :class:`FinetunedModel`. Setting the ``stop`` event ends the
training at the next step and still returns a usable model; closing the generator
abandons it.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from napari_denodet.core.errors import InputError
from napari_denodet.core.localize import BlobScore, blob_response
from napari_denodet.core.losses import gaussian_heatmap, local_terms
from napari_denodet.core.metrics import GATE, match_points
from napari_denodet.core.models import Model
from napari_denodet.core.network import STRIDE, train_mode
from napari_denodet.core.normalize import non_finite_note, normalise_frame
from napari_denodet.core.points import FRAME, SCORE, X, Y, points_table
from napari_denodet.core.predict import DetectionResult, choose_device, detect, run

#: Fewest clicked centres fine-tuning accepts.
MIN_CLICKS = 2
#: Clicks needed before some are held out to check the model during fine-tuning.
MIN_CLICKS_FOR_CHECK = 12
#: Radius (px) around a negative point that is known background.
NEGATIVE_RADIUS = 2.0
#: Radius (px) around a click never taken as background in a completely clicked area.
CLICK_CLEARANCE = 3.0
#: Matching gate (px) between detections and clicks when calibrating.
CALIBRATION_GATE = GATE
#: Raising the threshold after fine-tuning keeps at least this share of the expected
#: particle count (chosen among 0.5 / 0.6 / 0.75 / 0.9 on the fine-tuning benchmark's
#: 10-click probes: 0.5 let memorised clicks on simulated micrographs at SNR 0.1 lift
#: the threshold to 0.89, F1 0.77 and 0.76 against 0.82 before fine-tuning; 0.75 cut
#: wide-PSF vesicles at SNR 2 to 0.71 in one region).
RAISE_KEEPS = 0.6
#: Highest threshold :func:`calibrate_threshold` sets.
HIGHEST_THRESHOLD = 0.9
#: What fine-tuning changes: ``"weights"`` trains the network and then recalibrates the
#: threshold; ``"threshold"`` keeps the parent's weights and only recalibrates its
#: threshold from the clicked area (:func:`calibrate_from_area`); ``"auto"`` takes the
#: starting model's card advice (``card["finetune"]["mode"]``), else ``"weights"``, and
#: ``"weights"`` too when the advice is ``"threshold"`` but the clicked area does not look
#: completely clicked (:func:`area_is_incomplete`).
MODES = ("auto", "weights", "threshold")
#: How the ``"weights"`` mode sets the trained network's threshold: ``"clicks"``
#: (:func:`calibrate_threshold`); ``"count"`` keeps as many detections on the clicked
#: frames as the parent made at its own threshold (:func:`threshold_for_count`): the
#: trained network's probabilities are no longer calibrated, but where the parent's
#: threshold already suited the data its operating point still does; ``"auto"`` takes
#: the starting model's card advice (``card["finetune"]["calibration"]``), else
#: ``"clicks"``.
CALIBRATIONS = ("auto", "clicks", "count")
#: The clicked area counts as not completely clicked when more than this many, and more
#: than this share of the clicks, of its candidates look like unclicked particles
#: (:func:`unclicked_in_area`, :func:`area_is_incomplete`).
INCOMPLETE_MIN, INCOMPLETE_SHARE = 2, 0.25


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything that defines a fine-tuning run (saved in the model card).

    Parameters
    ----------
    steps : int
        Most optimiser steps.
    time_budget : float, optional
        Stop after this many seconds of training even if ``steps`` are not done.
    batch_size, patch_size : int
        Patches per step and their edge in pixels (shrunk to fit small images).
    learning_rate : float
        Adam's learning rate.
    denoise_weight : float
        Weight of the blind-spot denoising loss (the paper's 1 - alpha relative to
        detection).
    consistency_weight : float
        Weight of the flip/rotation consistency term (the paper's lambda); 0 skips the
        second forward pass.
    consistency_patches : int, optional
        Patches of each batch whose flipped/rotated copy is run for the consistency
        term (None: all). Each copy costs a forward and backward pass: with all 8, a
        step took about twice as long, and on a slow machine the 45 s budget ended
        after 120-170 steps instead of 300, and F1 fell with the steps. With 2, the 300
        steps took 17-21 s instead of 26-41 s, and F1 from 10 clicks (mean of six
        regions) was the same: 0.849 / 0.928 / 0.801 against 0.848 / 0.926 / 0.800
        on wide-PSF vesicles at SNR 2 and 4 and the real micrograph.
    local_weight : float
        Weight of the local JS + Euclidean terms on the clicks.
    blind_spot_fraction : float
        Fraction of pixels masked per patch for the blind-spot loss.
    click_patch_fraction : float
        Fraction of patches centred near a click; the rest are drawn anywhere.
    particles_per_frame : float, optional
        Expected particles per frame (the PU class prior); estimated when None.
    complete_region : bool
        The user clicked every particle in the area the clicks cover (their convex hull
        grown by half their spacing, per frame): the rest of that area is known
        background, as crYOLO and Topaz users annotate whole micrographs or regions.
    train_encoder : bool
        Train the shared encoder too (measured better than decoders only on the real
        micrograph, F1 0.77 vs 0.70, and on simulated micrographs, 0.82 vs 0.77).
    freeze_norm : bool
        Keep the batch-norm statistics of the parent (layers in evaluation mode) rather
        than re-estimating them from the fine-tuning batches.
    pseudo_labels : float
        Share of the parent's detections (at its threshold, the highest scores first)
        taken as extra positives, so that training on a few clicks does not unlearn the
        particles the parent already finds (0 uses the clicks alone).
    average : float
        Decay of an exponential moving average of the weights kept during training
        and returned instead of the last step's weights (0 keeps the last step).
    check_every : int
        Steps between held-out checks (when enough clicks exist).
    mode : str
        One of :data:`MODES`. ``"threshold"`` trains nothing: it assumes every particle
        in the area the clicks cover is clicked (as the LoG baseline's tuning does),
        does not use the negatives, and takes about as long as one detection.
    blob_weight, blob_sigma : float
        In the ``"threshold"`` mode, the recalibrated model's scores break the peak
        probability's ties by the blob response of its denoised output
        (:class:`~napari_denodet.core.localize.BlobScore`, fitted on the clicked
        frames' candidates): the most a score moves, and the filter's width in px.
        A weight of 0 keeps the peak probability. 0.1 and 2 px were chosen on the
        fine-tuning benchmark's regions 1-12 (docs/models.md).
    calibration : str
        One of :data:`CALIBRATIONS`: how the ``"weights"`` mode sets the threshold
        after training.
    seed : int
        Seeds the patch sampling, masking and augmentation.
    """

    steps: int = 300
    time_budget: float | None = None
    batch_size: int = 8
    patch_size: int = 64
    learning_rate: float = 3e-4
    denoise_weight: float = 0.1
    consistency_weight: float = 0.1
    consistency_patches: int | None = 2
    local_weight: float = 0.3
    blind_spot_fraction: float = 1.0 / 64.0
    click_patch_fraction: float = 0.5
    particles_per_frame: float | None = None
    complete_region: bool = False
    train_encoder: bool = True
    freeze_norm: bool = True
    pseudo_labels: float = 0.5
    average: float = 0.98
    check_every: int = 50
    mode: str = "auto"
    blob_weight: float = 0.1
    blob_sigma: float = 2.0
    calibration: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.consistency_patches is not None and self.consistency_patches < 0:
            raise InputError(None, "the consistency patches must be >= 0")
        if self.steps < 1 or self.batch_size < 1 or self.patch_size < 16:
            raise InputError(None, "steps and batch size must be >= 1 and the patch size "
                                   ">= 16")
        if self.time_budget is not None and not self.time_budget > 0:
            raise InputError(None, f"the time budget must be > 0 s, got {self.time_budget}")
        if not 0 < self.blind_spot_fraction < 0.5:
            raise InputError(None, "the blind-spot fraction must be in (0, 0.5)")
        if not 0 <= self.pseudo_labels <= 1:
            raise InputError(None, f"the pseudo-label share must be in [0, 1], got "
                                   f"{self.pseudo_labels}")
        if self.mode not in MODES:
            raise InputError(None, f"the fine-tuning mode must be one of "
                                   f"{', '.join(MODES)}, got {self.mode!r}")
        if self.calibration not in CALIBRATIONS:
            raise InputError(None, f"the calibration must be one of "
                                   f"{', '.join(CALIBRATIONS)}, got {self.calibration!r}")
        if not 0 <= self.blob_weight <= 1 or not self.blob_sigma > 0:
            raise InputError(None, f"the blob weight must be in [0, 1] and its sigma > 0, "
                                   f"got {self.blob_weight} and {self.blob_sigma}")
        if not 0 <= self.average < 1:
            raise InputError(None, f"the weight average's decay must be in [0, 1), got "
                                   f"{self.average}")

    def to_dict(self) -> dict:
        """Return the settings as JSON-serialisable values."""
        return asdict(self)


@dataclass(frozen=True)
class FinetuneProgress:
    """One report of a fine-tuning run.

    Attributes
    ----------
    stage : str
        ``"train"`` after a step, ``"check"`` after a held-out check, ``"calibrate"``
        once when the threshold is set, after training or in the ``"threshold"`` mode
        (``metrics["message"]`` says what was set), ``"note"`` before either when the
        user should read ``metrics["message"]`` (the clicked area does not look
        completely clicked, :func:`area_is_incomplete`).
    step, total : int
        Steps done and the most steps.
    elapsed : float
        Seconds since training started.
    metrics : dict
        Losses of the step (``loss``, ``detection``, ``denoising``, ``consistency``), or
        the check's ``threshold`` and ``heldout_recall``.
    """

    stage: str
    step: int
    total: int
    elapsed: float
    metrics: dict


@dataclass
class FinetunedModel:
    """What :func:`finetune` returns.

    Attributes
    ----------
    model : Model
        The fine-tuned network with its new card (parent, clicks, settings, threshold).
    history : list of dict
        The losses of every step.
    steps_done : int
        Steps actually trained (fewer than asked when stopped or out of time).
    wall_time : float
        Seconds from start to return, calibration included.
    """

    model: Model
    history: list[dict] = field(default_factory=list)
    steps_done: int = 0
    wall_time: float = 0.0


# --------------------------------------------------------------------------- inputs


@dataclass
class _Frame:
    # One normalised frame with the clicks on it, in the frame's pixels.
    index: int
    image: np.ndarray
    positives: np.ndarray  # (K, 2) y, x
    negatives: np.ndarray  # (M, 2) y, x
    heldout: np.ndarray  # (J, 2) y, x, clicks kept out of training for the check
    region: np.ndarray  # (H, W) bool: the area clicked completely (empty if not claimed)
    pseudo: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # parent's sure ones


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
    # A boolean mask of held-out clicks: every fifth click (at random) once there are
    # enough of them, never fewer than MIN_CLICKS left for training.
    held = np.zeros(len(table), dtype=bool)
    if len(table) >= MIN_CLICKS_FOR_CHECK:
        held[rng.permutation(len(table))[: len(table) // 5]] = True
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


def _frames(image: Any, positives: pd.DataFrame, negatives: pd.DataFrame, invert: bool,
            held: np.ndarray, complete: bool = False) -> tuple[list[_Frame], int]:
    # The clicked frames, normalised, and how many of their pixels were NaN or inf.
    stack = np.ndim(image) == 3
    indices = sorted(set(positives[FRAME].astype(int))) if stack else [0]
    frames, non_finite = [], 0
    for index in indices:
        raw = np.asarray(image[index] if stack else image, dtype=np.float32)
        normalised, _, bad = normalise_frame(raw, invert, index if stack else None)
        non_finite += bad

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
        ))
    return frames, non_finite


# --------------------------------------------------------------------------- patches


def _patch_size(frames: list[_Frame], wanted: int) -> int:
    smallest = min(min(f.image.shape) for f in frames)
    size = min(wanted, smallest) // STRIDE * STRIDE
    if size < 16:
        raise InputError(None, f"the image is too small to fine-tune on ({smallest} px; "
                               "at least 16 px per side)")
    return size


def _draw_patch(frames: list[_Frame], size: int, near_click: bool,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if near_click:
        counts = np.array([len(f.positives) for f in frames], dtype=float)
        frame = frames[int(rng.choice(len(frames), p=counts / counts.sum()))]
        cy, cx = frame.positives[int(rng.integers(len(frame.positives)))]
        margin = min(8, size // 4)
        y0 = int(round(cy)) - int(rng.integers(margin, size - margin))
        x0 = int(round(cx)) - int(rng.integers(margin, size - margin))
    else:
        frame = frames[int(rng.integers(len(frames)))]
        y0 = int(rng.integers(0, frame.image.shape[0] - size + 1))
        x0 = int(rng.integers(0, frame.image.shape[1] - size + 1))
    h, w = frame.image.shape
    y0, x0 = min(max(y0, 0), h - size), min(max(x0, 0), w - size)
    patch = np.stack([frame.image[y0 : y0 + size, x0 : x0 + size],
                      frame.region[y0 : y0 + size, x0 : x0 + size]])

    def inside(points):
        shifted = points - (y0, x0)
        keep = np.all((shifted >= -0.5) & (shifted < size - 0.5), axis=1)
        return shifted[keep]

    return patch, inside(frame.positives), inside(frame.negatives), inside(frame.pseudo)


def _augment(patch: np.ndarray, pos: np.ndarray, neg: np.ndarray, k: int, flip: bool):
    # Rotate by k x 90 degrees, then maybe flip left-right; points follow.
    size = patch.shape[-1]

    def move(points):
        for _ in range(k):
            points = np.stack([size - 1 - points[:, 1], points[:, 0]], axis=1)
        if flip:
            points = np.stack([points[:, 0], size - 1 - points[:, 1]], axis=1)
        return points.reshape(-1, 2)

    out = np.rot90(patch, k, axes=(-2, -1))
    if flip:
        out = out[..., ::-1]
    return np.ascontiguousarray(out), move(pos), move(neg)


def _batch(frames, size, settings, rng):
    patches, positives, negatives = [], [], []
    n_click = int(round(settings.batch_size * settings.click_patch_fraction))
    n_click = min(max(n_click, 1), settings.batch_size)
    for i in range(settings.batch_size):
        patch, pos, neg, pseudo = _draw_patch(frames, size, i < n_click, rng)
        # Pseudo-labels are learnt as particles, like the clicks.
        patch, pos, neg = _augment(patch, np.concatenate([pos, pseudo]), neg,
                                   int(rng.integers(4)), rng.random() < 0.5)
        patches.append(patch)
        positives.append(np.column_stack([np.full(len(pos), i), pos]))
        negatives.append(np.column_stack([np.full(len(neg), i), neg]))
    stacked = np.stack(patches).astype(np.float32)
    noisy = torch.from_numpy(np.ascontiguousarray(stacked[:, :1]))
    region = torch.from_numpy(stacked[:, 1] > 0.5)

    def centres(parts):
        return torch.from_numpy(np.concatenate(parts).astype(np.float32)).reshape(-1, 3)

    return noisy, centres(positives), centres(negatives), region


def blind_spot_mask(noisy: Tensor, fraction: float,
                    generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Replace a random ``fraction`` of pixels by a random neighbour (Noise2Void).

    Parameters
    ----------
    noisy : Tensor
        ``(B, 1, H, W)`` batch.
    fraction : float
        Share of pixels to mask.
    generator : torch.Generator
        Source of the random choices.

    Returns
    -------
    masked : Tensor
        The batch with the masked pixels replaced by a pixel of their 5 x 5
        neighbourhood (never themselves).
    mask : Tensor
        ``(B, 1, H, W)`` bool, True where a pixel was replaced.
    """
    b, _, h, w = noisy.shape
    mask = torch.rand(noisy.shape, generator=generator) < fraction
    where = mask.nonzero(as_tuple=True)
    n = len(where[0])
    dy = torch.randint(-2, 3, (n,), generator=generator)
    dx = torch.randint(-2, 3, (n,), generator=generator)
    same = (dy == 0) & (dx == 0)
    dx[same] = torch.where(torch.rand(int(same.sum()), generator=generator) < 0.5, -1, 1)
    # A neighbour beyond the border is taken from the other side instead (never itself).
    sy, sx = where[2] + dy, where[3] + dx
    sy = torch.where((sy < 0) | (sy >= h), where[2] - dy, sy)
    sx = torch.where((sx < 0) | (sx >= w), where[3] - dx, sx)
    masked = noisy.clone()
    masked[where] = noisy[where[0], where[1], sy, sx]
    return masked, mask


# --------------------------------------------------------------------------- losses


def _disk_mask(points: Tensor, shape: tuple[int, int, int], radius: float) -> Tensor:
    # (B, H, W) bool: pixels within `radius` of any (batch, y, x) point.
    out = torch.zeros(shape, dtype=torch.bool)
    if len(points) == 0:
        return out
    r = int(math.ceil(radius))
    offsets = torch.arange(-r, r + 1)
    py = torch.round(points[:, 1]).long()[:, None, None] + offsets[None, :, None]
    px = torch.round(points[:, 2]).long()[:, None, None] + offsets[None, None, :]
    py, px = torch.broadcast_tensors(py, px)
    near = (py - points[:, 1, None, None]) ** 2 + (px - points[:, 2, None, None]) ** 2
    keep = (near <= radius * radius) & (py >= 0) & (py < shape[1]) & (px >= 0) & (px < shape[2])
    b = points[:, 0].long()[:, None, None].expand_as(py)
    out[b[keep], py[keep], px[keep]] = True
    return out


def positive_unlabelled_loss(logits: Tensor, positive: Tensor, negative: Tensor,
                             prior: float) -> Tensor:
    """Class-balanced non-negative PU risk of a heatmap.

    Parameters
    ----------
    logits : Tensor
        ``(B, H, W)`` heatmap logits.
    positive : Tensor
        ``(B, H, W)`` bool, labelled particle pixels.
    negative : Tensor
        ``(B, H, W)`` bool, known background pixels.
    prior : float
        Share of particle pixels among the unlabelled pixels.

    Returns
    -------
    Tensor
        Scalar: half the positive risk plus half the background risk, the latter
        estimated from unlabelled pixels with the positives' share removed, clipped at
        zero (non-negative PU), and from the known negatives where there are any.
    """
    unlabelled = ~(positive | negative)
    loss_as_positive = F.softplus(-logits)
    loss_as_negative = F.softplus(logits)
    zero = logits.sum() * 0.0
    if positive.any():
        risk_positive = loss_as_positive[positive].mean()
        risk_positive_as_negative = loss_as_negative[positive].mean()
    else:
        risk_positive = risk_positive_as_negative = zero
    prior = float(min(max(prior, 0.0), 0.5))
    risk_background = (loss_as_negative[unlabelled].mean()
                       - prior * risk_positive_as_negative) / (1.0 - prior)
    risk_background = risk_background.clamp(min=0.0)
    if negative.any():
        n_neg, n_unl = float(negative.sum()), float(unlabelled.sum())
        known = loss_as_negative[negative].mean()
        # Known negatives count as much as unlabelled pixels, and at least a tenth.
        share = max(n_neg / (n_neg + n_unl), 0.1)
        risk_background = (1 - share) * risk_background + share * known
    return 0.5 * risk_positive + 0.5 * risk_background


def _transform(x: Tensor, k: int, flip: bool) -> Tensor:
    x = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


# --------------------------------------------------------------------------- calibration


def _frame_coords(table: pd.DataFrame) -> np.ndarray:
    # (frame x 1e6, y, x): points on different frames lie far apart.
    frame = table[FRAME].to_numpy(np.float64) if FRAME in table.columns else 0.0
    return np.column_stack([np.broadcast_to(frame * 1e6, len(table)),
                            table[Y].to_numpy(np.float64), table[X].to_numpy(np.float64)])


def _matched(found: pd.DataFrame, clicks: pd.DataFrame, gate: float) -> int:
    # Clicks with a detection within `gate` px on the same frame (one-to-one).
    return len(match_points(_frame_coords(found), _frame_coords(clicks), gate=gate)[0])


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
      it. A network trained on the clicks can score them near 1 while it misses their
      unclicked neighbours: raised to 0.93-0.97, F1 fell to 0.75 on wide-PSF vesicles
      at SNR 4 (3 of 24 regions of the fine-tuning benchmark; mean 0.911 against 0.931
      capped, docs/models.md).

    (Lee and Liu's PU criterion ``recall^2 / detections`` was tried first and measured
    worse: the clicked particles were trained on, so their recall stays 1 up to high
    thresholds and it chose 0.925, F1 0.88 where Otsu's 0.51 gave 0.95, on wide-PSF
    vesicles with an earlier model.)

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
    count: users click where particles are, and particles cluster (on the fine-tuning
    benchmark by 1.5-1.8 times: 2600 expected against 1728 on the simulated
    micrographs). The detections' count corrected by the area does not (median 1751 and
    1691 against 1728; 460 against 467 on wide-PSF vesicles at SNR 2), and their mean
    was measured better on the micrographs (docs/models.md).

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


def resolve_mode(settings: FinetuneSettings, model: Model) -> str:
    """Return ``"weights"`` or ``"threshold"``: the settings' mode, or the card's advice."""
    if settings.mode != "auto":
        return settings.mode
    advice = (model.card.get("finetune") or {}).get("mode")
    return advice if advice in MODES[1:] else "weights"


def resolve_calibration(settings: FinetuneSettings, model: Model) -> str:
    """Return ``"clicks"`` or ``"count"``: the settings' calibration, or the card's advice."""
    if settings.calibration != "auto":
        return settings.calibration
    advice = (model.card.get("finetune") or {}).get("calibration")
    return advice if advice in CALIBRATIONS[1:] else "clicks"


def _detections(network, frames: list[_Frame], localisation: dict,
                device: torch.device) -> DetectionResult:
    # Detection on the (already normalised) training frames, frame = position in list.
    stack = np.stack([f.image for f in frames])
    return run(detect(stack, network, device=str(device), **localisation))


def _candidates(network, frames: list[_Frame], localisation: dict,
                device: torch.device) -> pd.DataFrame:
    return _detections(network, frames, localisation, device).points


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
    # particles nobody clicked are then learnt as background (measured: recall fell from
    # 0.75 to 0.45 with the parent's count of 49 particles a frame, 67 true).
    pixels = _pixels(frames)
    if settings.particles_per_frame is not None:
        return settings.particles_per_frame * len(frames) / pixels
    clicks = sum(len(f.positives) + len(f.heldout) for f in frames)
    parent = float(len(found))
    dense = sum(click_density(np.concatenate([f.positives, f.heldout]), f.image.shape)
                * f.image.size for f in frames)
    return max(parent, dense, clicks) / pixels


# --------------------------------------------------------------------------- training


def finetune(
    model: Model,
    image: Any,
    positives: pd.DataFrame | np.ndarray,
    negatives: pd.DataFrame | np.ndarray | None = None,
    settings: FinetuneSettings | None = None,
    stop: threading.Event | None = None,
    device: str = "auto",
) -> Generator[FinetuneProgress, None, FinetunedModel]:
    """Fine-tune ``model`` on ``image`` from clicked particle centres.

    Parameters
    ----------
    model : Model
        The starting model (never modified; a copy is trained).
    image : array_like
        ``(y, x)`` image or ``(t, y, x)`` stack in the model's input scale (binned if
        the model works on binned data). Only frames holding clicks are read.
    positives : pandas.DataFrame or array_like
        Clicked particle centres: a points table, or ``(N, 2)`` ``(y, x)`` /
        ``(N, 3)`` ``(frame, y, x)`` coordinates. At least :data:`MIN_CLICKS`.
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

    Yields
    ------
    FinetuneProgress
        After every step, and after every held-out check; in the ``"threshold"`` mode
        (``settings.mode``, or the model card's advice under ``"auto"``) once, after
        the threshold is recalibrated and without training. The threshold mode needs
        a completely clicked area: when the area does not look so
        (:func:`area_is_incomplete`), a ``"note"`` comes first, and ``"auto"`` trains
        the weights instead.

    Returns
    -------
    FinetunedModel
        The fine-tuned model with its card and the loss history.

    Raises
    ------
    InputError
        Fewer than two clicks, clicks outside the image, an image that is not 2D/3D or
        too small, or a clicked frame without a finite pixel (NaN and inf pixels are
        otherwise treated as background, and a ``"note"`` says how many).
    """
    settings = settings or FinetuneSettings()
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
    frames, non_finite = _frames(image, positives, negatives, model.invert, held,
                                 settings.complete_region)
    if non_finite:
        yield FinetuneProgress("note", 0, settings.steps, time.perf_counter() - started,
                               {"message": non_finite_note(non_finite)})
    size = _patch_size(frames, settings.patch_size)
    # Candidates are scored by their peak probability here: a parent's blob score was
    # fitted on other data (the threshold mode fits its own).
    localisation = {k: v for k, v in model.localisation.items() if k != "blob"}
    # The local loss terms keep the temperature the parent was trained with; the card's
    # localisation temperature is for inference only.
    loss_window = (localisation["radius"], model.training_temperature)

    parent_detections = _detections(model.network, frames, localisation, torch_device)
    parent_candidates = parent_detections.points
    parent_found = _parent_detections(model, parent_detections)
    prior_per_pixel = _estimate_prior(parent_found, frames, settings)
    mode = resolve_mode(settings, model)
    unclicked = None
    clicks = [np.concatenate([f.positives, f.heldout]) for f in frames]
    if mode == "threshold":
        # The threshold-only mode rests on a completely clicked area: check it.
        unclicked = unclicked_in_area(parent_candidates, clicks,
                                      [f.image.shape for f in frames])
        if area_is_incomplete(unclicked, sum(len(c) for c in clicks)):
            found = (f"{unclicked} confident detections in the clicked area are not "
                     "clicked, so it does not look completely clicked")
            if settings.mode == "auto":
                mode = "weights"
                message = f"{found}: training the network instead of only its threshold"
            else:
                message = (f"{found}; threshold only assumes every particle there is "
                           "clicked, so the threshold may come out too high")
            yield FinetuneProgress("note", 0, settings.steps if mode == "weights" else 0,
                                   time.perf_counter() - started,
                                   {"message": message, "unclicked": unclicked})
    if mode == "threshold":
        return (yield from _recalibrate(model, settings, frames, clicks, parent_detections,
                                        parent_found, positives, negatives,
                                        prior_per_pixel, started, unclicked))
    if settings.pseudo_labels > 0:
        _add_pseudo_labels(frames, parent_candidates, model.threshold, settings.pseudo_labels)
    network = copy.deepcopy(model.network).to(torch_device)
    train_mode(network, settings.freeze_norm)
    trained = [p for name, p in network.named_parameters()
               if settings.train_encoder or not name.startswith("enc")]
    optimiser = torch.optim.Adam(trained, lr=settings.learning_rate)
    averaged = [p.detach().clone() for p in trained] if settings.average > 0 else None
    heldout = _click_tables(frames, "heldout")
    history: list[dict] = []
    train_started = time.perf_counter()
    step = 0
    for step in range(1, settings.steps + 1):
        metrics = _step(network, optimiser, frames, size, settings, loss_window,
                        prior_per_pixel, rng, generator, torch_device)
        if averaged is not None:
            with torch.no_grad():
                for a, p in zip(averaged, trained, strict=True):
                    a.lerp_(p, 1.0 - settings.average)
        history.append({"step": step, **metrics})
        elapsed = time.perf_counter() - train_started
        yield FinetuneProgress("train", step, settings.steps, elapsed, metrics)
        out_of_time = settings.time_budget is not None and elapsed >= settings.time_budget
        if len(heldout) and (step % settings.check_every == 0 or step == settings.steps):
            # The check judges the weights that would be returned (the average, if any).
            with _swapped(trained, averaged):
                check = _check(network, frames, heldout, localisation, settings.freeze_norm,
                               prior_per_pixel, torch_device)
            history[-1].update(check)
            yield FinetuneProgress("check", step, settings.steps, elapsed, check)
        if out_of_time or (stop is not None and stop.is_set()):
            break
    if averaged is not None:
        with torch.no_grad():
            for p, a in zip(trained, averaged, strict=True):
                p.copy_(a)
    network.eval()
    candidates = _candidates(network, frames, localisation, torch_device)
    network.cpu()
    clicks = _click_tables(frames, "positives")
    from_clicks, _ = calibrate_threshold(candidates, pd.concat([clicks, heldout]),
                                         expected=prior_per_pixel * _pixels(frames))
    calibration = resolve_calibration(settings, model)
    # Keeping the parent's count needs detections of the parent and candidates now.
    keeping = (threshold_for_count(candidates, len(parent_found))
               if len(parent_found) and not candidates.empty else None)
    if keeping is None:
        calibration = "clicks"
    threshold = keeping if calibration == "count" else from_clicks
    yield FinetuneProgress("calibrate", step, settings.steps,
                           time.perf_counter() - train_started,
                           {"threshold": threshold, "calibration": calibration,
                            "message": _calibration_message(calibration, threshold,
                                                            len(parent_found))})
    card = finetune_card(model, replace(settings, mode=mode, calibration=calibration),
                         n_positives=len(positives),
                         n_negatives=len(negatives), steps_done=step, threshold=threshold,
                         prior=prior_per_pixel, frames=[f.index for f in frames],
                         wall_time=time.perf_counter() - started, unclicked=unclicked,
                         calibration={"threshold_from_clicks": from_clicks,
                                      "threshold_keeping_count": keeping,
                                      "parent_count": len(parent_found)})
    result = Model(network=network, card=card, source=f"fine-tuned from {model.source}")
    return FinetunedModel(model=result, history=history, steps_done=step,
                          wall_time=time.perf_counter() - started)


def _recalibrate(model, settings, frames, clicks, detections, found, positives, negatives,
                 prior, started,
                 unclicked) -> Generator[FinetuneProgress, None, FinetunedModel]:
    # The "threshold" mode: the parent's weights, the blob score fitted on the frames'
    # candidates and a threshold from the clicked area (or, without an area, the peak
    # probability and the rule used after training). ``clicks``: per frame, all clicks.
    candidates = scored = detections.points
    blob = None
    if settings.blob_weight > 0 and not candidates.empty:
        responses = _blob_responses(detections, settings.blob_sigma)
        blob = BlobScore.fit(responses, settings.blob_weight, settings.blob_sigma)
        scored = candidates.assign(score=blob.apply(candidates[SCORE], responses))
    threshold, facts = calibrate_from_area(scored, clicks, [f.image.shape for f in frames],
                                           detections=found)
    source = "the clicked area"
    if threshold is None:
        blob, source = None, "the clicks (they cover no area)"
        threshold, facts = calibrate_threshold(
            candidates, pd.concat([_click_tables(frames, "positives"),
                                   _click_tables(frames, "heldout")]),
            expected=prior * _pixels(frames))
    elapsed = time.perf_counter() - started
    message = (f"weights kept; threshold recalibrated from {source}: {threshold:.2f}"
               + (", ties broken by the denoised image" if blob is not None else ""))
    yield FinetuneProgress("calibrate", 0, 0, elapsed,
                           {"threshold": threshold, "blob_score": blob is not None,
                            "message": message, **facts})
    card = finetune_card(model, replace(settings, mode="threshold"),
                         n_positives=len(positives), n_negatives=len(negatives),
                         steps_done=0, threshold=threshold, prior=prior,
                         frames=[f.index for f in frames],
                         wall_time=time.perf_counter() - started, unclicked=unclicked,
                         blob=blob)
    network = copy.deepcopy(model.network).cpu().eval()
    result = Model(network=network, card=card, source=f"recalibrated from {model.source}")
    return FinetunedModel(model=result, history=[], steps_done=0,
                          wall_time=time.perf_counter() - started)


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


def _step(network, optimiser, frames, size, settings, loss_window, prior_per_pixel, rng,
          generator, device) -> dict:
    # The batch and its labels are made on the CPU (seeded), then moved to the device.
    noisy, positives, negatives, region = _batch(frames, size, settings, rng)
    masked, mask = blind_spot_mask(noisy, settings.blind_spot_fraction, generator)
    b = len(noisy)
    shape = (b, size, size)
    positive = gaussian_heatmap(positives, shape) >= 0.5
    # Known background: around false detections, and the completely clicked area away
    # from its clicks.
    negative = _disk_mask(negatives, shape, NEGATIVE_RADIUS) | (
        region & ~_disk_mask(positives, shape, CLICK_CLEARANCE))
    negative &= ~positive
    noisy, masked, mask, positive, negative, positives = (
        t.to(device) for t in (noisy, masked, mask, positive, negative, positives))
    k, flip = int(rng.integers(1, 4)), bool(rng.random() < 0.5)
    c = b if settings.consistency_patches is None else min(settings.consistency_patches, b)
    use_consistency = settings.consistency_weight > 0 and c > 0
    inputs = torch.cat([masked, _transform(masked[:c], k, flip)]) if use_consistency else masked
    denoised, logits = network(inputs)
    logits = logits[:, 0]

    # Blind-spot denoising: predict the masked pixels' noisy values from their context.
    denoising = F.mse_loss(denoised[:b][mask], noisy[mask])

    pixels = float(b * size * size)
    particle_pixels = prior_per_pixel * pixels * max(float(positive.sum()), 1.0) / max(
        len(positives), 1)
    unlabelled = pixels - float(positive.sum()) - float(negative.sum())
    prior = max(particle_pixels - float(positive.sum()), 0.0) / max(unlabelled, 1.0)
    pu = positive_unlabelled_loss(logits[:b], positive, negative, prior)
    js, euclid = local_terms(logits[:b], positives, *loss_window)
    detection = pu + settings.local_weight * (js + euclid)

    consistency = logits.sum() * 0.0
    if use_consistency:
        probs = torch.sigmoid(logits)
        consistency = F.mse_loss(probs[b:], _transform(probs[:c], k, flip))
    loss = (detection + settings.denoise_weight * denoising
            + settings.consistency_weight * consistency)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
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


def _pixels(frames: list[_Frame]) -> int:
    return sum(f.image.size for f in frames)


def _check(network, frames, heldout, localisation, freeze_norm, prior, device) -> dict:
    # Held-out clicks: recall at the threshold calibrated on the training clicks.
    network.eval()
    try:
        candidates = _candidates(network, frames, localisation, device)
    finally:
        train_mode(network, freeze_norm)
    threshold, _ = calibrate_threshold(candidates, _click_tables(frames, "positives"),
                                       expected=prior * _pixels(frames))
    kept = candidates[candidates[SCORE] >= threshold]
    matched = _matched(kept, heldout, CALIBRATION_GATE)
    return {"threshold": threshold, "heldout_recall": matched / len(heldout),
            "detections": int(len(kept))}


def finetune_card(parent: Model, settings: FinetuneSettings, *, n_positives: int,
                  n_negatives: int, steps_done: int, threshold: float, prior: float,
                  frames: Sequence[int], wall_time: float,
                  unclicked: int | None = None, blob: BlobScore | None = None,
                  calibration: dict | None = None) -> dict:
    """Build the card of a fine-tuned model from its parent's card.

    Parameters
    ----------
    parent : Model
        The model fine-tuning started from.
    settings : FinetuneSettings
        The run.
    n_positives, n_negatives : int
        Clicked centres and negatives used.
    steps_done : int
        Steps trained.
    threshold : float
        The recalibrated score threshold.
    prior : float
        Particles per pixel used as the PU class prior.
    frames : sequence of int
        Frames fine-tuned on.
    wall_time : float
        Seconds taken.
    unclicked : int, optional
        :func:`unclicked_in_area` of the clicks, when the threshold mode was advised or
        asked for (recorded as ``training.unclicked_in_area``).
    blob : BlobScore, optional
        The score's blob term (``localisation.blob``); without it scores are the peak
        probability, also when the parent had a blob term.
    calibration : dict, optional
        After training, the two thresholds :data:`CALIBRATIONS` offer and the parent's
        count (recorded as ``training.calibration``; ``training.settings.calibration``
        says which was used).

    Returns
    -------
    dict
        The card: the parent's, with ``parent``, ``training``, ``threshold`` and
        ``localisation.blob`` replaced.
    """
    card = copy.deepcopy(parent.card)
    name = parent.card.get("name") or "model"
    localisation = {k: v for k, v in (card.get("localisation") or {}).items() if k != "blob"}
    if blob is not None:
        localisation["blob"] = blob.to_dict()
    card.update({
        "localisation": localisation,
        "name": f"{name}-finetuned",
        "parent": {"name": parent.card.get("name"), "source": parent.source,
                   "threshold": parent.threshold},
        "threshold": float(threshold),
        "benchmark": None,
        "training": {
            "data": ("the parent's weights unchanged; threshold recalibrated from the "
                     "clicked area on the user's own image" if settings.mode == "threshold"
                     else "the user's own image, weakly supervised: blind-spot denoising, "
                     "positive-unlabelled detection from clicked centres"
                     + (f" and the parent's surest {settings.pseudo_labels:.0%} of "
                        "detections" if settings.pseudo_labels > 0 else "")
                     + ", flip/rotation consistency"),
            "mode": settings.mode,
            "clicks": int(n_positives),
            "negatives": int(n_negatives),
            "frames": [int(f) for f in frames],
            "steps": int(steps_done),
            "settings": settings.to_dict(),
            "prior_particles_per_pixel": float(prior),
            "wall_time_s": round(float(wall_time), 1),
            **({} if unclicked is None else {"unclicked_in_area": int(unclicked)}),
            **({} if calibration is None else {"calibration": calibration}),
            "parent_training": parent.card.get("training"),
        },
    })
    return card
