"""Synthetic particle data with noise-free images and ground truth.

Two kinds of data, both seeded and fast:

* :func:`simulate_timelapse` — 2D+t fluorescence stacks in the spirit of the ISBI 2012
  Particle Tracking Challenge (PTC): ``vesicle`` (isotropic spots, Brownian motion),
  ``receptor`` (isotropic spots switching between Brownian and directed motion) and
  ``microtubule`` (elongated plus-end comets moving fast along their long axis).
  Particles are born and die, and drift in and out of the field of view.
* :func:`simulate_micrograph` — an imitation of a binned cryo-EM micrograph: larger
  particles (radius 5–15 px) with internal texture, dark on a brighter ice background
  with thickness gradients and an optional carbon edge, and additive Gaussian noise at
  a very low SNR.

Signal-to-noise ratios follow each field's own definition:

* time-lapse (PTC): ``SNR = (I_peak - I_bg) / sqrt(I_peak)``, the particle's peak
  intensity above the background over the Poisson noise at the peak. The background is
  ``BACKGROUND`` photons, and the noisy image is a Poisson draw of the clean image.
* micrograph (cryo-EM): ``SNR = mean(s**2) / sigma**2`` over the pixels a particle
  covers, a power ratio of the particle signal ``s`` to the Gaussian noise.

Every stack draws its own point-spread width, intensity spread, background shape and
motion parameters from ranges (``randomise=True``), so that a network trained on many
seeds does not learn one microscope.
"""

from __future__ import annotations

from napari_denodet.core.simulate.base import (
    ALL_SCENARIOS,
    BACKGROUND,
    DEFAULT_DENSITY,
    DEFAULT_FRAMES,
    DEFAULT_MICROGRAPH_SHAPE,
    DEFAULT_MICROGRAPH_SNR,
    DEFAULT_SCENARIO,
    DEFAULT_TIMELAPSE_SHAPE,
    DEFAULT_TIMELAPSE_SNR,
    DENSITIES,
    MICROGRAPH_COVERAGE,
    SCENARIOS,
    Simulation,
    peak_amplitude,
)
from napari_denodet.core.simulate.formation import (
    Camera,
    Formation,
    correlate_noise,
    draw_formation,
)
from napari_denodet.core.simulate.micrograph import simulate_micrograph
from napari_denodet.core.simulate.timelapse import simulate_timelapse

__all__ = [
    "ALL_SCENARIOS", "BACKGROUND", "DEFAULT_DENSITY", "DEFAULT_FRAMES",
    "DEFAULT_MICROGRAPH_SHAPE", "DEFAULT_MICROGRAPH_SNR", "DEFAULT_SCENARIO",
    "DEFAULT_TIMELAPSE_SHAPE", "DEFAULT_TIMELAPSE_SNR", "DENSITIES", "MICROGRAPH_COVERAGE",
    "SCENARIOS", "Camera", "Formation", "Simulation", "correlate_noise", "draw_formation",
    "peak_amplitude", "simulate",
    "simulate_micrograph", "simulate_timelapse",
]


def simulate(scenario: str, **kwargs) -> Simulation:
    """Dispatch to :func:`simulate_timelapse` or :func:`simulate_micrograph`.

    Parameters
    ----------
    scenario : str
        One of :data:`ALL_SCENARIOS`.
    **kwargs
        Passed on; ``frames`` is ignored for micrographs.

    Returns
    -------
    Simulation
        The simulated data.
    """
    if scenario == "micrograph":
        kwargs.pop("frames", None)
        return simulate_micrograph(**kwargs)
    return simulate_timelapse(scenario, **kwargs)
