"""The model ``auto`` stands for: chosen per image by the F1 each candidate expects.

On a time-lapse, the ``timelapse`` model (which reads the frames around each one) finds
dim particles that stay put far better than a single-frame model, and loses on fast
comets and, a little, at high SNR (docs/benchmarks/window.md). Which wins on an image is
not known in advance, but each model's scores are probabilities (a target-decoy
calibration on the image itself), so each model estimates its own F1 there without any
truth: ``auto`` runs every candidate on a few evenly spaced frames and keeps the one that
expects the highest F1. Single images and stacks too short for a window get the first
candidate.

Where the single-frame model wins (time does not help there), the question left is the
spots' shape: the comet model (``microtubule``) is then compared with it on the same
frames. Asked only then, not as a third candidate from the start: the more candidates, the
likelier one of them over-estimates its F1 by chance and wins wrongly (with all three at
once, a correlated-noise cell of comets at SNR 1 lost 0.23 to the comet model where the
window model was right; docs/models-history.md).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari_denodet.core.models import Model
    from napari_denodet.core.predict import DetectProgress

#: The model name that asks for a choice per image.
AUTO = "auto"
#: The bundled models ``auto`` chooses between; the first for single images.
AUTO_CANDIDATES = ("fluorescence", "timelapse")
#: Compared with the first candidate when it wins: the spots' shape.
AUTO_ALTERNATIVES = ("microtubule",)
#: Frames of a stack the candidates are compared on at most (evenly spaced).
SAMPLE_FRAMES = 8


@dataclass(frozen=True)
class ModelChoice:
    """The model chosen for an image, and the F1 each candidate expected there."""

    model: Model
    name: str
    expected_f1: dict[str, float] = field(default_factory=dict)

    def note(self) -> str:
        """One line for a user: which model, and why."""
        if not self.expected_f1:
            return f"model {self.name} (a single image or a short stack: no choice)"
        others = ", ".join(f"{name} {f1:.2f}" for name, f1 in self.expected_f1.items()
                           if name != self.name)
        return (f"model {self.name} chosen for this image (expected F1 "
                f"{self.expected_f1[self.name]:.2f}; {others})")


def looks_like_micrograph(path, ndim: int) -> bool:
    """Return whether ``auto`` got a single image from an MRC file.

    Most likely a cryo-EM micrograph, for which its ``fluorescence`` model is the wrong
    one: the CLI summary and the Detect widget say so.

    Parameters
    ----------
    path : str or os.PathLike or None
        The file the image was read from (None: not known).
    ndim : int
        The image's dimensions (2: a single image).
    """
    from pathlib import Path

    from napari_denodet.core.io import MRC_SUFFIXES

    return ndim == 2 and path is not None and Path(path).suffix.lower() in MRC_SUFFIXES


def _sample(image: Any, picked: list[int], window: int) -> np.ndarray:
    # The picked frames as a model reads them: a (k, y, x) stack, or each frame's
    # window given whole, (k, window, y, x), neighbours from the full stack. A frame
    # without a finite pixel is refused here, named by its place in the stack (the
    # engine would name its place in the sample).
    from napari_denodet.core.io import load_block
    from napari_denodet.core.normalize import finite_frame
    from napari_denodet.core.predict import window_indices

    def frame(j):
        block = load_block(image[j])
        finite_frame(block, j)
        return block

    last = int(np.shape(image)[0]) - 1
    if window == 1:
        return np.stack([frame(i) for i in picked])
    windows = []
    for i in picked:
        indices = window_indices(i, window, 0, last)
        windows.append(np.stack([frame(j) for j in indices]))
    return np.stack(windows)


def _choosing(steps: Generator) -> Generator:
    # A candidate's detection, its progress marked as the choice's.
    from dataclasses import replace

    from napari_denodet.core.progress import Stage

    result = None
    try:
        while True:
            try:
                progress = steps.send(result)
            except StopIteration as done:
                return done.value
            result = yield replace(progress, stage=Stage.CHOOSE)
    finally:
        steps.close()  # a cancelled choice stops the candidate's detection too


def choose_model(
    image: Any,
    candidates: Sequence[str] = AUTO_CANDIDATES,
    frames: Sequence[int] | None = None,
    alternatives: Sequence[str] = AUTO_ALTERNATIVES,
    **detect: Any,
) -> Generator[DetectProgress, None, ModelChoice]:
    """Choose, for ``image``, the candidate model that expects the highest F1.

    Parameters
    ----------
    image : array_like
        ``(y, x)`` image or ``(t, y, x)`` stack.
    candidates : sequence of str
        Bundled model names or ``.pt`` paths; ties go to the earlier one.
    frames : (int, int), optional
        ``(start, stop)`` range of a stack's frames the detection will cover: the
        comparison is made there.
    alternatives : sequence of str
        Compared, on the same frames, with the first candidate when it wins; the first
        candidate keeps ties.
    **detect
        Passed to each candidate's :meth:`~napari_denodet.core.models.Model.detect`
        (device, precision...).

    Yields
    ------
    DetectProgress
        The candidates' forward passes, with the stage ``Stage.CHOOSE``.

    Returns
    -------
    ModelChoice
        The chosen model and every candidate's expected F1 (empty when there was
        nothing to choose: a single image or fewer than 3 frames).
    """
    from napari_denodet.core.calibration import decoy_frames
    from napari_denodet.core.models import load_model

    models = {name: load_model(name) for name in candidates}
    first = next(iter(models))
    shape = np.shape(image)
    start, stop = (0, shape[0]) if frames is None or len(shape) != 3 else frames
    if len(shape) != 3 or stop - start < 3:
        return ModelChoice(models[first], first)
    picked = [start + i for i in decoy_frames(stop - start, SAMPLE_FRAMES)]
    expected: dict[str, float] = {}

    def compare(names: list[str]):
        # Each model not yet measured on the picked frames, then the one of ``names``
        # with the highest expected F1 (ties to the earlier one).
        for name in names:
            if name not in expected:
                if name not in models:
                    models[name] = load_model(name)
                model = models[name]
                found = yield from _choosing(
                    model.detect(_sample(image, picked, model.window), **detect))
                expected[name] = float(found.choice.expected_f1)
        return max(names, key=lambda name: (expected[name], -names.index(name)))

    best = yield from compare(list(models))
    if best == first and alternatives:
        best = yield from compare([first, *alternatives])
    return ModelChoice(models[best], best, expected)
