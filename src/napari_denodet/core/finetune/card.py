"""The card of a fine-tuned or recalibrated model: its parent's, with what was done."""

from __future__ import annotations

from collections.abc import Sequence

from napari_denodet.core.card import ModelCard
from napari_denodet.core.finetune.settings import FinetuneFiles, FinetuneSettings
from napari_denodet.core.localize import BlobScore
from napari_denodet.core.models import Model


def finetune_card(parent: Model, settings: FinetuneSettings, *, n_positives: int,
                  n_negatives: int, steps_done: int, threshold: float, prior: float,
                  frames: Sequence[int], wall_time: float,
                  unclicked: int | None = None, blob: BlobScore | None = None,
                  calibration: dict | None = None, binning: int = 1,
                  name: str | None = None, files: FinetuneFiles | None = None,
                  invert: bool | None = None) -> ModelCard:
    """Build the card of a fine-tuned model from its parent's card.

    Parameters
    ----------
    parent : Model
        The model fine-tuning started from.
    settings : FinetuneSettings
        The run, with the mode and calibration it used (not ``"auto"``).
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
    binning : int
        The bin factor of the image and clicks (``training.binning``; detection with
        the model bins by it by default).
    name : str, optional
        The new model's name (default: the parent's with ``-finetuned``).
    files : FinetuneFiles, optional
        The files of a command-line run: ``training.command`` then repeats it
        (:meth:`FinetuneSettings.command`).
    invert : bool, optional
        Whether the particles were dark on the user's image (``invert``; default the
        parent's).

    Returns
    -------
    ModelCard
        The parent's card with ``name``, ``parent``, ``training``, ``threshold``,
        ``benchmark`` and ``localisation.blob`` replaced.
    """
    card = parent.card
    localisation = {k: v for k, v in card.localisation.to_dict().items() if k != "blob"}
    if blob is not None:
        localisation["blob"] = blob.to_dict()
    command = None if files is None else settings.command(
        files.image, files.points, files.model, files.out, negatives=files.negatives,
        binning=binning)
    return card.updated(
        parent.source,
        invert=card.invert if invert is None else bool(invert),
        localisation=localisation,
        name=name or f"{card.name or 'model'}-finetuned",
        parent={"name": card.name, "source": parent.source, "threshold": parent.threshold},
        threshold=float(threshold),
        benchmark=None,
        training={
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
            "parent_training": card.training,
            "binning": int(binning),
            **({} if command is None else {"command": command}),
        })
