"""A realistic image formation for fluorescence stacks: camera, background, particles.

The PTC-like simulator (:func:`~napari_denodet.core.simulate.simulate_timelapse`) on
its own draws one narrow world: white Poisson noise on a nearly flat background of 10
photons, one PSF range. Real stacks differ in every one of these, and a network
trained on the narrow world scores their noise as particles. A :class:`Formation` is
one draw from a wide world, applied by ``simulate_timelapse(..., formation=...)``:

* **camera** (:class:`Camera`): photo-electrons (Poisson, or with the EMCCD's excess
  noise that doubles their variance), Gaussian read noise, per-pixel offset and
  read-noise maps (sCMOS), hot pixels, noise correlated between neighbouring pixels (as
  in many cameras and processed exports), gain and offset to ADU, integer ADU;
* **background**: from flat to strongly structured (cell bodies, ridges of
  autofluorescence, out-of-focus haze; scales of 5-100 px and a variation up to about
  the background level itself), drifting and bleaching over time, dim to bright (5 to
  2,000 photons);
* **particles**: PSF width 0.7-3.5 px, mild elongation, heterogeneous intensities,
  clusters with near neighbours (comets keep the microtubule scenario's shape).

:func:`draw_formation` draws one from the ranges in :data:`RANGES`; each effect is off
in part of the draws, so the narrow world stays a typical draw too. A formation records
every value it holds (:meth:`Formation.to_dict`), and training draws it from a seed of
its own, so any training patch can be made again from its seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage, special

#: The ranges :func:`draw_formation` draws from, and how often each effect is on.
RANGES = {
    "background_photons": (5.0, 2000.0),      # log-uniform
    "gain_adu_per_electron": (0.1, 4.0),      # log-uniform
    "offset_adu": (90.0, 1000.0),
    "read_noise_electrons": (0.0, 5.0),
    "emccd_share": 0.2,
    "scmos_share": 0.3,
    "offset_spread_adu": (0.5, 3.0),
    "read_spread": (0.2, 0.6),                # lognormal sigma of the read-noise map
    "hot_pixel_share": 0.3,
    "hot_fraction": (1e-4, 1e-3),
    "hot_level_electrons": (20.0, 500.0),
    "correlated_share": 0.5,
    "correlation_px": (0.0, 0.8),
    "structure_share": 0.6,
    "structure_strength": (0.0, 1.0),         # peak-to-peak, in units of the background
    "structure_scale_px": (5.0, 100.0),       # log-uniform
    "drift_share": 0.5,
    "bleach": (0.0, 0.3),
    "psf_sigma_px": (0.7, 3.5),               # log-uniform
    "elongated_share": 0.3,
    "elongation": (1.0, 1.4),
    "intensity_spread": (0.0, 0.6),           # lognormal sigma
    "cluster_share": 0.4,
    "cluster_fraction": (0.1, 0.5),
    "cluster_spread_psf": (1.5, 4.0),         # in PSF widths
}


def correlate_noise(noisy: np.ndarray, clean: np.ndarray,
                    widths: tuple[float, float]) -> np.ndarray:
    """Correlate the noise of a simulated stack between neighbouring pixels.

    The noise ``noisy - clean`` of each frame is smoothed by a Gaussian of ``widths``
    ``(y, x)`` px and scaled back to its own standard deviation, so every pixel keeps its
    noise level (and the PTC SNR its meaning) while neighbouring pixels share part of it.
    Neighbours along an axis then correlate by about ``2w / (1 + 2w^2)`` with
    ``w = exp(-1 / (2 width^2))``; widths 0.6 / 0.45 px match the real telomere
    time-lapse along y and x (see docs/models-history.md, Correlated camera noise).

    Parameters
    ----------
    noisy, clean : numpy.ndarray
        ``(frames, y, x)`` stacks of the same shape.
    widths : tuple of float
        Gaussian widths (px) along y and x; each >= 0.

    Returns
    -------
    numpy.ndarray
        float32 stack, ``clean`` plus the correlated noise.
    """
    if len(widths) != 2 or min(widths) < 0:
        raise ValueError(f"noise widths must be two numbers >= 0, got {widths!r}")
    out = np.empty(np.shape(noisy), dtype=np.float32)
    for t, (frame, truth) in enumerate(zip(noisy, clean, strict=True)):
        noise = np.asarray(frame, np.float64) - truth
        smooth = ndimage.gaussian_filter(noise, tuple(float(w) for w in widths),
                                         mode="reflect", truncate=3.0)
        spread = smooth.std()
        out[t] = truth + (smooth * (noise.std() / spread) if spread > 0 else noise)
    return out


@dataclass(frozen=True)
class Camera:
    """How photons become the numbers in a file.

    Parameters
    ----------
    gain : float
        ADU per photo-electron.
    offset : float
        ADU added to every pixel (the camera's bias).
    read_noise : float
        Gaussian read noise in electrons (its median over pixels for an sCMOS map).
    emccd : bool
        Electron multiplication: each pixel's electrons are a Gamma draw of the Poisson
        count, so the shot noise variance doubles (excess noise factor 2).
    offset_spread : float
        Standard deviation (ADU) of a fixed per-pixel offset map (sCMOS); 0 for none.
    read_spread : float
        Lognormal sigma of a fixed per-pixel read-noise map (sCMOS); 0 for none.
    hot_fraction : float
        Share of pixels that are hot (a fixed excess signal in every frame).
    hot_level : float
        Excess of a hot pixel, in electrons (each drawn between a quarter and all of it).
    correlation : (float, float)
        Gaussian widths (px, y and x) that correlate the noise between neighbours.
    quantise : bool
        Round to whole ADU and clip at 0, as a camera's analogue-to-digital converter.
    """

    gain: float = 1.0
    offset: float = 0.0
    read_noise: float = 0.0
    emccd: bool = False
    offset_spread: float = 0.0
    read_spread: float = 0.0
    hot_fraction: float = 0.0
    hot_level: float = 0.0
    correlation: tuple[float, float] = (0.0, 0.0)
    quantise: bool = True

    def __post_init__(self) -> None:
        if not self.gain > 0 or min(self.read_noise, self.offset_spread, self.read_spread,
                                    self.hot_fraction, self.hot_level, *self.correlation) < 0:
            raise ValueError("camera gain must be > 0 and its noise terms >= 0")
        if self.hot_fraction > 0.1:
            raise ValueError(f"hot_fraction must be at most 0.1, got {self.hot_fraction}")

    def clean(self, photons: np.ndarray) -> np.ndarray:
        """Return what a noise-free camera records: ``gain x photons + offset`` (ADU)."""
        return (np.float32(self.gain) * np.asarray(photons, np.float32)
                + np.float32(self.offset))

    def expose(self, photons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Record a ``(t, y, x)`` stack of expected photons; returns float32 ADU.

        The fixed-pattern maps (offsets, read noise, hot pixels) are drawn once and hold
        for every frame, as on a real sensor.
        """
        photons = np.asarray(photons, np.float64)
        shape = photons.shape[-2:]
        electrons = rng.poisson(photons).astype(np.float64)
        if self.emccd:
            counts = electrons
            electrons = np.zeros_like(counts)
            hit = counts > 0
            electrons[hit] = rng.gamma(counts[hit])
        read = np.full(shape, self.read_noise)
        if self.read_spread > 0:
            read = read * rng.lognormal(0.0, self.read_spread, shape)
        if self.read_noise > 0:
            electrons = electrons + rng.standard_normal(photons.shape) * read
        if max(self.correlation) > 0:
            electrons = correlate_noise(electrons, photons, self.correlation)
        if self.hot_fraction > 0:
            hot = rng.random(shape) < self.hot_fraction
            electrons = electrons + hot * self.hot_level * rng.uniform(0.25, 1.0, shape)
        adu = self.gain * electrons + self.offset
        if self.offset_spread > 0:
            adu = adu + rng.normal(0.0, self.offset_spread, shape)
        if self.quantise:
            adu = np.clip(np.rint(adu), 0, None)
        return adu.astype(np.float32)


@dataclass(frozen=True)
class Formation:
    """One draw of the image formation: camera, background and particle appearance.

    Parameters
    ----------
    camera : Camera
        The recording.
    background : float
        Mean background in photons per pixel.
    structure_strength : float
        Peak-to-peak variation of the background structure, in units of the background
        (0: flat apart from the PTC simulator's own slow gradient).
    structure_scale : float
        Spatial scale (px) of the structure.
    drift : bool
        The structure changes from the first frame to the last.
    bleach : float
        Share of the background lost from the first frame to the last.
    psf_sigma : float
        PSF width (px) of a particle of the nominal shape.
    elongation : float
        Ratio of the long to the short PSF axis (1: round); comets keep their own.
    intensity_spread : float
        Lognormal sigma of the particles' brightness.
    cluster_fraction : float
        Share of the particles born beside another one.
    cluster_spread : float
        Distance scale (px) of a clustered particle from its neighbour.
    """

    camera: Camera = field(default_factory=Camera)
    background: float = 10.0
    structure_strength: float = 0.0
    structure_scale: float = 20.0
    drift: bool = False
    bleach: float = 0.0
    psf_sigma: float = 1.25
    elongation: float = 1.0
    intensity_spread: float = 0.0
    cluster_fraction: float = 0.0
    cluster_spread: float = 3.0

    def __post_init__(self) -> None:
        if not self.background > 0 or not self.psf_sigma > 0 or self.elongation < 1:
            raise ValueError("background and psf_sigma must be > 0 and elongation >= 1")
        if not 0 <= self.bleach < 1 or not 0 <= self.cluster_fraction <= 1:
            raise ValueError("bleach must be in [0, 1) and cluster_fraction in [0, 1]")
        if self.structure_strength < 0 or not self.structure_scale > 0:
            raise ValueError("structure_strength must be >= 0 and structure_scale > 0")

    def to_dict(self) -> dict:
        """Every value of the draw, as JSON-ready numbers."""
        d = asdict(self)
        d["camera"]["correlation"] = [float(w) for w in self.camera.correlation]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Formation:
        """Rebuild a formation from :meth:`to_dict`."""
        camera = dict(d.get("camera") or {})
        camera["correlation"] = tuple(camera.get("correlation", (0.0, 0.0)))
        return cls(**{**d, "camera": Camera(**camera)})

    def background_field(self, frames: int, shape: tuple[int, int],
                         rng: np.random.Generator) -> np.ndarray:
        """Return the ``(frames, y, x)`` multiplicative background structure, mean ~1."""
        bleach = 1.0 - self.bleach * np.linspace(0.0, 1.0, frames)
        if self.structure_strength <= 0:
            return np.broadcast_to(bleach[:, None, None], (frames, *shape)).astype(np.float32)
        start = structure(shape, self.structure_scale, rng)
        end = structure(shape, self.structure_scale, rng) if self.drift else start
        ramp = np.linspace(0.0, 1.0, frames)[:, None, None]
        mixed = (1.0 - ramp) * start + ramp * end
        out = 1.0 + self.structure_strength * (mixed - mixed.mean(axis=(1, 2), keepdims=True))
        return (np.clip(out, 0.05, None) * bleach[:, None, None]).astype(np.float32)


def structure(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Return a background structure in [0, 1] at ``scale`` px: cells, ridges and haze.

    A random mix of three textures: smooth cell bodies (a soft threshold of smoothed
    noise), ridges (the absolute value of smoothed noise, like filaments of
    autofluorescence) and haze (smoothed noise at three times the scale).
    """
    def smooth(sigma):
        field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
        return field / (field.std() + 1e-12)

    weights = rng.dirichlet(np.ones(3))
    cells = special.expit(3.0 * (smooth(scale) - rng.uniform(-0.5, 1.0)))
    ridges = np.exp(-np.abs(smooth(scale / 2.0)) * 2.0)
    haze = smooth(3.0 * scale)
    field = sum(w * (f - f.min()) / (np.ptp(f) + 1e-12)
                for w, f in zip(weights, (cells, ridges, haze), strict=True))
    field -= field.min()
    return (field / (field.max() + 1e-12)).astype(np.float32)


def draw_formation(rng: np.random.Generator | int | None = None) -> Formation:
    """Draw one image formation from :data:`RANGES`.

    Parameters
    ----------
    rng : numpy.random.Generator or int or None
        The source of the draw, or a seed for one.

    Returns
    -------
    Formation
        The draw; :meth:`Formation.to_dict` records it.
    """
    rng = np.random.default_rng(rng)
    r = RANGES

    def uniform(key):
        return float(rng.uniform(*r[key]))

    def log_uniform(key):
        low, high = r[key]
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))

    def chance(key):
        return bool(rng.random() < r[key])

    scmos, hot, correlated = chance("scmos_share"), chance("hot_pixel_share"), \
        chance("correlated_share")
    camera = Camera(
        gain=log_uniform("gain_adu_per_electron"),
        offset=uniform("offset_adu"),
        read_noise=uniform("read_noise_electrons"),
        emccd=chance("emccd_share"),
        offset_spread=uniform("offset_spread_adu") if scmos else 0.0,
        read_spread=uniform("read_spread") if scmos else 0.0,
        hot_fraction=uniform("hot_fraction") if hot else 0.0,
        hot_level=uniform("hot_level_electrons") if hot else 0.0,
        correlation=(tuple(float(w) for w in rng.uniform(*r["correlation_px"], 2))
                     if correlated else (0.0, 0.0)),
    )
    structured, clustered, elongated = chance("structure_share"), chance("cluster_share"), \
        chance("elongated_share")
    psf = log_uniform("psf_sigma_px")
    # Structure finer than about two PSF widths would look like particles to anyone.
    scale = max(log_uniform("structure_scale_px"), 2.5 * psf)
    return Formation(
        camera=camera,
        background=log_uniform("background_photons"),
        structure_strength=uniform("structure_strength") if structured else 0.0,
        structure_scale=scale,
        drift=chance("drift_share"),
        bleach=uniform("bleach"),
        psf_sigma=psf,
        elongation=uniform("elongation") if elongated else 1.0,
        intensity_spread=uniform("intensity_spread"),
        cluster_fraction=uniform("cluster_fraction") if clustered else 0.0,
        cluster_spread=uniform("cluster_spread_psf") * psf,
    )
