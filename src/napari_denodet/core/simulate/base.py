"""What every simulator shares: the result type, densities and the SNR definitions."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SCENARIOS = ("vesicle", "receptor", "microtubule")
#: Every ``scenario`` accepted by :func:`simulate`.
ALL_SCENARIOS = (*SCENARIOS, "micrograph")
#: Particles per 512 x 512 frame, as in the PTC's low / mid / high densities.
DENSITIES = {"low": 100, "mid": 500, "high": 1000}
#: Fraction of a micrograph's area covered by particles, per density.
MICROGRAPH_COVERAGE = {"low": 0.08, "mid": 0.18, "high": 0.30}
#: Background level of fluorescence stacks, in photons per pixel.
BACKGROUND = 10.0
#: Defaults of :func:`simulate_timelapse`: scenario, frames, PTC signal-to-noise ratio
#: and frame size.
DEFAULT_SCENARIO = "vesicle"
DEFAULT_FRAMES = 100
DEFAULT_TIMELAPSE_SNR = 4.0
DEFAULT_TIMELAPSE_SHAPE = (512, 512)
#: Defaults of :func:`simulate_micrograph`: power signal-to-noise ratio and image size.
DEFAULT_MICROGRAPH_SNR = 0.1
DEFAULT_MICROGRAPH_SHAPE = (1024, 1024)
#: Default density of both simulators (a key of :data:`DENSITIES`).
DEFAULT_DENSITY = "mid"


@dataclass
class Simulation:
    """A simulated image or stack with everything needed to score a method on it.

    Attributes
    ----------
    noisy : numpy.ndarray
        What a microscope would record: ``(t, y, x)`` or ``(y, x)``, float32.
    clean : numpy.ndarray
        The same without noise, float32.
    truth : pandas.DataFrame
        Points table of every particle centre inside the image (``frame, y, x,
        track_id`` for stacks; ``y, x, radius`` for micrographs).
    params : dict
        The parameters drawn for this simulation (PSF width, amplitude, ...).
    """

    noisy: np.ndarray
    clean: np.ndarray
    truth: pd.DataFrame
    params: dict = field(default_factory=dict)


def peak_amplitude(snr: float, background: float = BACKGROUND) -> float:
    """Return the peak height above background that gives a PTC signal-to-noise ratio.

    Solves ``snr = (I - b) / sqrt(I)`` for the peak intensity ``I`` and returns
    ``I - b``.

    Parameters
    ----------
    snr : float
        Signal-to-noise ratio, > 0.
    background : float
        Background level ``b`` in photons.

    Returns
    -------
    float
        The amplitude ``I - b``.
    """
    if snr <= 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    root = (snr + np.sqrt(snr * snr + 4.0 * background)) / 2.0
    return float(root * root - background)


def _density(density: str | float, named: dict[str, float]) -> float:
    """Resolve a named density (low/mid/high) or take a number as it is."""
    if isinstance(density, str):
        if density not in named:
            raise ValueError(f"unknown density {density!r}; choose one of "
                             f"{', '.join(named)} or give a number")
        return float(named[density])
    return float(density)
