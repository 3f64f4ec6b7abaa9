"""Per-frame robust normalisation: what the network sees, and the way back.

Each frame is shifted by its background level (the median) and divided by its noise
scale (the median absolute deviation, scaled to a Gaussian sigma). Percentile
normalisation was measured to hurt sparse frames — the high percentiles move with the
number of particles — while median and MAD hardly depend on the particles at all.
Dark particles (cryo-EM) are turned bright by ``invert`` so one detector shape fits.

Integer-valued frames (most cameras write whole ADU) are measured with a fixed dither of
one ADU added: a camera whose noise is one or two ADU gives a median and a MAD stuck on
whole numbers, off by up to a third of the noise scale (see docs/architecture.md,
Measured choices), and the network would then see noise larger or smaller than it was
trained on. The dither makes both estimates continuous again; its own
variance, 1/12, is taken off the scale.

Pixels that are NaN or infinite (masked borders after registration, a broken camera
pixel) are checked on every pixel, never on a sample, and treated as background: the
network sees the frame's background level there, so nothing non-finite reaches it or
its outputs. :func:`normalise_frame` reports how many there were; a frame with no finite
pixel at all is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_denodet.core.errors import InputError

#: MAD of a Gaussian is 0.6745 sigma.
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class FrameScale:
    """Background level and noise scale of one frame, to map intensities both ways."""

    background: float
    scale: float
    invert: bool = False

    def forward(self, frame: np.ndarray) -> np.ndarray:
        """Return the frame in normalised float32 units."""
        out = (np.asarray(frame, dtype=np.float32) - np.float32(self.background)) / np.float32(
            self.scale)
        return -out if self.invert else out

    def inverse(self, normalised: np.ndarray) -> np.ndarray:
        """Map normalised values (e.g. the denoised output) back to the input's range."""
        out = -normalised if self.invert else normalised
        return out * np.float32(self.scale) + np.float32(self.background)


def frame_scale(frame: np.ndarray, invert: bool = False, sample: int = 65536) -> FrameScale:
    """Measure the background level and noise scale of a 2D frame.

    Parameters
    ----------
    frame : numpy.ndarray
        A 2D image in any numeric dtype.
    invert : bool
        Whether particles are darker than the background.
    sample : int
        Pixels used for the estimate at most (a regular subsample of larger frames).

    Returns
    -------
    FrameScale
        Median background and MAD-based noise scale (never zero).
    """
    values = _sample(frame, sample)
    integral = bool(np.all(values == np.rint(values)))
    if integral:
        values = values + _dither(values.size)
    background = float(np.median(values))
    mad = float(np.median(np.abs(values - background))) * _MAD_TO_SIGMA
    if integral:
        # The dither's own variance (1/12) comes off again, within bounds.
        mad = float(np.sqrt(max(mad * mad - 1.0 / 12.0, 0.25 * mad * mad)))
    if not mad > 0:
        # Flat frames: fall back to the std.
        mad = float(values.std())
    return FrameScale(background=background, scale=mad if mad > 0 else 1.0, invert=invert)


def _sample(frame, sample: int) -> np.ndarray:
    # A regular subsample of at most ``sample`` pixels, as float64.
    values = np.asarray(frame).reshape(-1)
    if values.size > sample:
        values = values[:: values.size // sample]
    return values.astype(np.float64)


def looks_integral(frame, sample: int = 65536) -> bool:
    """Tell whether a frame holds whole numbers only (as :func:`frame_scale` samples it).

    Such frames are measured with a dither; an image derived from one (a decoy) should be
    rounded to whole numbers again so that it is measured the same way.
    """
    values = _sample(frame, sample)
    return bool(np.all(values == np.rint(values)))


def _dither(size: int) -> np.ndarray:
    # A fixed, evenly spread sequence on [-0.5, 0.5) (golden-ratio steps): no random state.
    return (np.arange(1, size + 1) * 0.6180339887498949) % 1.0 - 0.5


def normalise_frame(
    frame: np.ndarray, invert: bool = False, index: int | None = None
) -> tuple[np.ndarray, FrameScale, int]:
    """Normalise one frame for the network, treating non-finite pixels as background.

    Parameters
    ----------
    frame : numpy.ndarray
        A 2D image in any real numeric dtype.
    invert : bool
        Whether particles are darker than the background.
    index : int, optional
        The frame's index in its stack, named in the error message.

    Returns
    -------
    normalised : numpy.ndarray
        float32, finite everywhere.
    scale : FrameScale
        Measured on the finite pixels.
    non_finite : int
        How many pixels were NaN or infinite (each set to the background level).

    Raises
    ------
    InputError
        When no pixel of the frame is finite.
    """
    frame = np.asarray(frame)
    frame, non_finite = finite_frame(frame, index)
    scale = frame_scale(frame, invert)
    return scale.forward(frame), scale, non_finite


def finite_frame(frame: np.ndarray, index: int | None = None) -> tuple[np.ndarray, int]:
    """Return the frame with NaN and infinite pixels set to its background, and how many.

    The background is the median of the finite pixels, in the frame's own intensities
    and dtype (:func:`normalise_frame` and anything that needs the frame as read, such
    as decoys and fine-tuning's detections, fill it the same way).

    Raises
    ------
    InputError
        When no pixel is finite (``index`` names the frame in the message).
    """
    frame = np.asarray(frame)
    if frame.dtype.kind != "f":
        return frame, 0
    finite = np.isfinite(frame)
    non_finite = int(frame.size - np.count_nonzero(finite))
    if non_finite == frame.size:
        where = "the image" if index is None else f"frame {index}"
        raise InputError(None, f"{where} holds no finite pixel (all NaN or inf)")
    if non_finite:
        frame = np.where(finite, frame, np.median(frame[finite])).astype(frame.dtype)
    return frame, non_finite


def non_finite_note(pixels: int) -> str:
    """Say, in words for the user, that ``pixels`` NaN/inf pixels were treated as background."""
    return (f"{pixels} pixel{'s' if pixels != 1 else ''} NaN or infinite, treated as "
            "background")
