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

:func:`finetune` is a generator (the project's pattern for long work), run by
:meth:`Model.finetune <napari_denodet.core.models.Model.finetune>`: it bins the image
and clicks when asked, yields :class:`FinetuneProgress` after every step and returns a
:class:`FinetunedModel` whose card (:func:`finetune_card`) records the binning.
Setting the ``stop`` event ends the training at the next step and still returns a usable
model; closing the generator abandons it.

The package follows the run's seams:

- :mod:`~napari_denodet.core.finetune.settings`: :class:`FinetuneSettings` (and the
  command line that repeats a run, :meth:`FinetuneSettings.command`),
  :class:`FinetuneFiles`, :class:`FinetuneProgress`, :class:`FinetunedModel`, the
  constants and the ``"auto"`` choices (:func:`resolve_mode`, :func:`resolve_calibration`);
- :mod:`~napari_denodet.core.finetune.clicks`: the clicks on their frames, the held-out
  split, the clicked area (:func:`clicked_area`, :func:`click_density`), the
  pseudo-labels and the class prior;
- :mod:`~napari_denodet.core.finetune.patches`: patches, their augmentation and batches;
- :mod:`~napari_denodet.core.finetune.calibration`: the score threshold
  (:func:`calibrate_threshold`, :func:`calibrate_from_area`, :func:`threshold_for_count`,
  :func:`unclicked_in_area`, :func:`area_is_incomplete`);
- :mod:`~napari_denodet.core.finetune.card`: the fine-tuned model's card
  (:func:`finetune_card`): the parent's, with the run, the threshold, the binning and,
  for a command-line run, the command that repeats it;
- :mod:`~napari_denodet.core.finetune.run`: :func:`finetune` itself, its steps and
  held-out checks.

The two losses (:func:`~napari_denodet.core.losses.blind_spot_mask`,
:func:`~napari_denodet.core.losses.positive_unlabelled_loss`) live in
:mod:`napari_denodet.core.losses` and are re-exported here.
"""

from napari_denodet.core.finetune.calibration import (
    area_is_incomplete,
    calibrate_from_area,
    calibrate_threshold,
    threshold_for_count,
    unclicked_in_area,
)
from napari_denodet.core.finetune.card import finetune_card
from napari_denodet.core.finetune.clicks import click_density, clicked_area, clicks_polarity
from napari_denodet.core.finetune.run import finetune
from napari_denodet.core.finetune.settings import (
    CALIBRATION_GATE,
    CALIBRATIONS,
    CLICK_CLEARANCE,
    HIGHEST_THRESHOLD,
    INCOMPLETE_MIN,
    INCOMPLETE_SHARE,
    MIN_CLICKS,
    MIN_CLICKS_FOR_CHECK,
    MODES,
    NEGATIVE_RADIUS,
    RAISE_KEEPS,
    FinetunedModel,
    FinetuneFiles,
    FinetuneProgress,
    FinetuneSettings,
    resolve_calibration,
    resolve_mode,
)
from napari_denodet.core.losses import blind_spot_mask, positive_unlabelled_loss

__all__ = [
    "CALIBRATIONS",
    "CALIBRATION_GATE",
    "CLICK_CLEARANCE",
    "HIGHEST_THRESHOLD",
    "INCOMPLETE_MIN",
    "INCOMPLETE_SHARE",
    "MIN_CLICKS",
    "MIN_CLICKS_FOR_CHECK",
    "MODES",
    "NEGATIVE_RADIUS",
    "RAISE_KEEPS",
    "FinetuneFiles",
    "FinetuneProgress",
    "FinetuneSettings",
    "FinetunedModel",
    "area_is_incomplete",
    "blind_spot_mask",
    "calibrate_from_area",
    "calibrate_threshold",
    "click_density",
    "clicked_area",
    "clicks_polarity",
    "finetune",
    "finetune_card",
    "positive_unlabelled_loss",
    "resolve_calibration",
    "resolve_mode",
    "threshold_for_count",
    "unclicked_in_area",
]
