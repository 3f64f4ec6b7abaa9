"""The stages a long-running core generator reports: :class:`Stage`.

Every progress record the core yields (:class:`~napari_denodet.core.predict.DetectProgress`,
:class:`~napari_denodet.core.batch.BatchProgress`,
:class:`~napari_denodet.core.train.TrainProgress`,
:class:`~napari_denodet.core.finetune.FinetuneProgress`) has a ``stage``, one of these;
the command line and the widgets compare against them. A stage is also its string
(``Stage.TRAIN == "train"``), which is what it prints as.
"""

from __future__ import annotations

from enum import Enum


class Stage(str, Enum):
    """What a progress record reports."""

    #: A forward pass of detection.
    DETECT = "detect"
    #: A forward pass of the candidate models that ``--model auto`` compares first.
    CHOOSE = "choose"
    #: A file of a batch finished (or skipped, or failed).
    BATCH = "batch"
    #: A training step (training on simulations, or fine-tuning).
    TRAIN = "train"
    #: A validation during training on simulations.
    VALIDATE = "validate"
    #: A held-out check during fine-tuning.
    CHECK = "check"
    #: Fine-tuning set the threshold (``metrics["message"]`` says how).
    CALIBRATE = "calibrate"
    #: Fine-tuning's acceptance check on the held-out clicks: the adapted model kept or
    #: not (``metrics["message"]`` says which and why).
    ACCEPT = "accept"
    #: Something the user should read before fine-tuning goes on (``metrics["message"]``).
    NOTE = "note"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)
