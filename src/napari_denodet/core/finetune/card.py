"""The card of a fine-tuned or recalibrated model: its parent's, with what was done."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from napari_denodet.core.finetune.settings import FinetuneSettings
from napari_denodet.core.localize import BlobScore
from napari_denodet.core.models import Model


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
