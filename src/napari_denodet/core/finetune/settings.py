"""What defines a fine-tuning run, what it reports and returns, and its constants.

The settings are recorded in the fine-tuned model's card (``training.settings``), and
:meth:`FinetuneSettings.command` writes the command line that repeats a run.
:func:`resolve_mode` and :func:`resolve_calibration` turn their ``"auto"`` choices into
the starting model's card advice.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from napari_denodet.core.errors import InputError
from napari_denodet.core.metrics import GATE
from napari_denodet.core.models import Model
from napari_denodet.core.progress import Stage

#: Fewest clicked centres fine-tuning accepts.
MIN_CLICKS = 2
#: Clicks needed before some are held out for the acceptance check (and the checks during
#: training); :data:`HELD_OUT_SHARE` of them are, so 10 clicks train on 7 and check on 3.
MIN_CLICKS_FOR_CHECK = 6
HELD_OUT_SHARE = 0.3
#: Default seconds of a whole fine-tuning run (preparation, training, calibration and the
#: acceptance check) on the machine it runs on.
DEFAULT_TIME_BUDGET = 60.0
#: Radius (px) around a negative point that is known background.
NEGATIVE_RADIUS = 2.0
#: Radius (px) around a click never taken as background in a completely clicked area.
CLICK_CLEARANCE = 3.0
#: Matching gate (px) between detections and clicks when calibrating.
CALIBRATION_GATE = GATE
#: Raising the threshold after fine-tuning keeps at least this share of the expected
#: particle count: a model that memorised the clicks would otherwise keep too few
#: particles (chosen on the fine-tuning benchmark's 10-click probes; see
#: docs/models-history.md, Threshold raised to the clicks).
RAISE_KEEPS = 0.6
#: Highest threshold :func:`calibrate_threshold` sets.
HIGHEST_THRESHOLD = 0.9
#: What fine-tuning changes: ``"weights"`` trains the network and then recalibrates the
#: threshold; ``"threshold"`` keeps the parent's weights and only recalibrates its
#: threshold from the clicked area (:func:`calibrate_from_area`); ``"auto"`` takes the
#: starting model's card advice (``card.finetune["mode"]``), else ``"weights"``, and
#: ``"weights"`` too when the advice is ``"threshold"`` but the clicked area does not look
#: completely clicked (:func:`area_is_incomplete`).
MODES = ("auto", "weights", "threshold")
#: How the ``"weights"`` mode sets the trained network's threshold: ``"clicks"``
#: (:func:`calibrate_threshold`); ``"count"`` keeps as many detections on the clicked
#: frames as the parent made at its own threshold (:func:`threshold_for_count`): the
#: trained network's probabilities are no longer calibrated, but where the parent's
#: threshold already suited the data its operating point still does; ``"auto"`` takes
#: the starting model's card advice (``card.finetune["calibration"]``), else
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
        Seconds for the whole run: training stops early enough for the calibration and
        the acceptance check to end within it, even if ``steps`` are not done (None:
        the steps decide).
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
        term (None: all). Each copy costs a forward and backward pass; 2 of 8 gave the
        same F1 in about half the time (see docs/models-history.md, Fine-tuning).
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
        Train the shared encoder too (measured better than decoders only on
        micrographs; see docs/models-history.md, Fine-tuning).
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
        fine-tuning benchmark's regions 1-12 (see docs/models-history.md, Threshold only:
        ties broken by the denoised image).
    calibration : str
        One of :data:`CALIBRATIONS`: how the ``"weights"`` mode sets the threshold
        after training.
    polarity : {"dark", "bright"}, optional
        The particles' polarity on the user's image; by default the model's, and for
        micrograph models read from the clicks (:func:`clicks_polarity`). The
        fine-tuned model's card records it (``invert``).
    seed : int
        Seeds the patch sampling, masking and augmentation.
    """

    steps: int = 300
    time_budget: float | None = DEFAULT_TIME_BUDGET
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
    polarity: str | None = None
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
        if self.polarity not in (None, "dark", "bright"):
            raise InputError(None, f"the polarity must be dark or bright, got "
                                   f"{self.polarity!r}")
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

    def command(self, image: str | os.PathLike, points: str | os.PathLike,
                model: str | os.PathLike, out: str | os.PathLike, *,
                negatives: str | os.PathLike | None = None, binning: int = 1) -> str:
        """Return the ``napari-denodet finetune`` command line that repeats this run.

        Call it on the settings a run used (its mode and calibration resolved, as
        :func:`~napari_denodet.core.finetune.finetune` records them): ``"auto"`` could
        choose otherwise with another starting card. Only the command line's options
        are written; the other settings keep their defaults there.

        Parameters
        ----------
        image, points : str or os.PathLike
            The image and the clicked centres, as given.
        model : str or os.PathLike
            The starting model's bundled name or path, as given.
        out : str or os.PathLike
            The model file written (the command names it without its folder).
        negatives : str or os.PathLike, optional
            The known false detections, as given.
        binning : int
            The ``--bin`` used.

        Returns
        -------
        str
            The command, quoted for a POSIX shell.
        """
        import shlex

        return shlex.join([
            "napari-denodet", "finetune", os.fspath(image), "--points", os.fspath(points),
            *(["--negatives", os.fspath(negatives)] if negatives else []),
            "--model", os.fspath(model), "--steps", str(self.steps), "--bin", str(binning),
            "--seed", str(self.seed), "--pseudo-labels", f"{self.pseudo_labels:g}",
            "--mode", self.mode,
            *(["--calibration", self.calibration] if self.mode == "weights" else []),
            "--out", os.path.basename(os.fspath(out)),
            *(["--complete-region"] if self.complete_region else []),
            "--time-budget", f"{self.time_budget or 0:g}",
            *(["--polarity", self.polarity] if self.polarity else []),
            *(["--particles-per-frame", f"{self.particles_per_frame:g}"]
              if self.particles_per_frame else [])])


@dataclass(frozen=True)
class FinetuneFiles:
    """The files a command-line fine-tuning read and writes, as the user gave them.

    With them, the fine-tuned card records the command that repeats the run
    (``training.command``, :meth:`FinetuneSettings.command`).

    Attributes
    ----------
    image, points : str or os.PathLike
        The image and the clicked centres.
    model : str or os.PathLike
        The starting model's bundled name or path.
    out : str or os.PathLike
        The model file written.
    negatives : str or os.PathLike, optional
        The known false detections.
    """

    image: str | os.PathLike
    points: str | os.PathLike
    model: str | os.PathLike
    out: str | os.PathLike
    negatives: str | os.PathLike | None = None


@dataclass(frozen=True)
class FinetuneProgress:
    """One report of a fine-tuning run.

    Attributes
    ----------
    stage : Stage
        ``Stage.TRAIN`` after a step, ``Stage.CHECK`` after a held-out check,
        ``Stage.CALIBRATE`` once when the threshold is set, after training or in the
        ``"threshold"`` mode (``metrics["message"]`` says what was set), ``Stage.ACCEPT``
        once after training and calibration when clicks were held out (the acceptance
        check: ``metrics`` holds ``f1_before``, ``f1_after``, ``accepted`` and the
        ``message``), ``Stage.NOTE``
        before either when the user should read ``metrics["message"]`` (NaN pixels, or
        a clicked area that does not look completely clicked,
        :func:`area_is_incomplete`).
    step, total : int
        Steps done and the most steps.
    elapsed : float
        Seconds since the run started.
    metrics : dict
        Losses of the step (``loss``, ``detection``, ``denoising``, ``consistency``), or
        the check's ``threshold`` and ``heldout_recall``.
    """

    stage: Stage
    step: int
    total: int
    elapsed: float
    metrics: dict
    budget: float | None = None  # the run's time budget (s), when it has one


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
    accepted : bool or None
        Whether the trained weights passed the acceptance check on the held-out clicks
        (None: no weights trained, or too few clicks to hold any out). When False,
        ``model`` holds the starting model's weights and detects as it does.
    heldout : dict or None
        The acceptance check: ``f1_before`` and ``f1_after`` on the held-out clicks,
        ``margin`` (one standard error of their difference: the gain needed),
        ``clicks`` held out, ``complete_area`` (whether precision was counted).
    message : str
        One line for the user on what was kept and why.
    adapted : Model or None
        The model with the trained weights, whether or not it was kept (None when no
        weights were trained): to save or compare it anyway.
    """

    model: Model
    history: list[dict] = field(default_factory=list)
    steps_done: int = 0
    wall_time: float = 0.0
    accepted: bool | None = None
    heldout: dict | None = None
    message: str = ""
    adapted: Model | None = None


def resolve_mode(settings: FinetuneSettings, model: Model) -> str:
    """Return ``"weights"`` or ``"threshold"``: the settings' mode, or the card's advice."""
    if settings.mode != "auto":
        return settings.mode
    advice = (model.card.finetune or {}).get("mode")
    return advice if advice in MODES[1:] else "weights"


def resolve_calibration(settings: FinetuneSettings, model: Model) -> str:
    """Return ``"clicks"`` or ``"count"``: the settings' calibration, or the card's advice."""
    if settings.calibration != "auto":
        return settings.calibration
    advice = (model.card.finetune or {}).get("calibration")
    return advice if advice in CALIBRATIONS[1:] else "clicks"
