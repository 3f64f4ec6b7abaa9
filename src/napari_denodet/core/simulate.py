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

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage

from napari_denodet.core.points import points_table

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


def _density(density: str | float, named: dict[str, float]) -> float:
    """Resolve a named density (low/mid/high) or take a number as it is."""
    if isinstance(density, str):
        if density not in named:
            raise ValueError(f"unknown density {density!r}; choose one of "
                             f"{', '.join(named)} or give a number")
        return float(named[density])
    return float(density)


# --------------------------------------------------------------------------- time-lapse


def simulate_timelapse(
    scenario: str = DEFAULT_SCENARIO,
    snr: float = DEFAULT_TIMELAPSE_SNR,
    density: str | float = DEFAULT_DENSITY,
    frames: int = DEFAULT_FRAMES,
    shape: tuple[int, int] = DEFAULT_TIMELAPSE_SHAPE,
    seed: int | None = 0,
    randomise: bool = True,
    background: float = BACKGROUND,
    psf_scale: float = 1.0,
    texture: float = 0.0,
    noise_correlation: tuple[float, float] = (0.0, 0.0),
) -> Simulation:
    """Simulate a 2D+t fluorescence particle stack.

    Parameters
    ----------
    scenario : {'vesicle', 'receptor', 'microtubule'}
        Particle appearance and motion.
    snr : float
        PTC signal-to-noise ratio of a particle of nominal intensity.
    density : {'low', 'mid', 'high'} or float
        Particles per 512 x 512 frame (see :data:`DENSITIES`), scaled to ``shape``.
    frames : int
        Number of time points.
    shape : tuple of int
        Frame size ``(y, x)``.
    seed : int or None
        Seed of the random generator; the same seed gives the same stack.
    randomise : bool
        Draw PSF width, intensity spread, background shape and motion from ranges;
        when False, use the middle of each range.
    background : float
        Mean background in photons.
    psf_scale : float
        Multiplies the drawn PSF width (2 gives spots twice as wide as the bundled
        models were trained on: a domain shift).
    texture : float
        Height of a static structured background (cell-like blobs and ridges at 6 and
        20 px scales), as a multiple of ``background``; 0 for none.
    noise_correlation : tuple of float
        Widths ``(y, x)`` in px of a Gaussian that correlates the noise between
        neighbouring pixels, as many cameras and processed exports do
        (:func:`correlate_noise`); ``(0, 0)``, the default, keeps Poisson noise white.

    Returns
    -------
    Simulation
        ``noisy`` and ``clean`` as ``(frames, y, x)`` float32; ``truth`` with columns
        ``frame, y, x, track_id``.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    height, width = (int(s) for s in shape)
    if min(height, width) < 8:
        raise ValueError(f"frames must be at least 8 x 8 pixels, got {shape}")
    rng = np.random.default_rng(seed)
    if not psf_scale > 0 or texture < 0:
        raise ValueError(f"psf_scale must be > 0 and texture >= 0, got {psf_scale}, {texture}")
    params = _draw_timelapse_params(scenario, snr, density, (height, width), background,
                                    rng, randomise)
    params["sigma_along"] *= psf_scale
    params["sigma_across"] *= psf_scale
    params.update(psf_scale=float(psf_scale), texture=float(texture))
    tracks = _TrackSimulator(params, (height, width), rng)
    bg_fields = _Background(frames, (height, width), params["bg_variation"], rng)

    clean = np.empty((frames, height, width), dtype=np.float32)
    rows = []
    for t in range(frames):
        state = tracks.state()
        frame = _render_spots(
            (height, width),
            state["y"], state["x"],
            params["amplitude"] * state["brightness"],
            params["sigma_along"], params["sigma_across"], state["angle"],
        )
        clean[t] = background * bg_fields[t] + frame
        inside = ((state["y"] >= -0.5) & (state["y"] < height - 0.5)
                  & (state["x"] >= -0.5) & (state["x"] < width - 0.5))
        rows.append((np.full(int(inside.sum()), t), state["y"][inside], state["x"][inside],
                     state["track_id"][inside]))
        tracks.step()
    if texture > 0:
        clean += np.float32(texture * background) * _texture((height, width), rng)
    noisy = rng.poisson(clean).astype(np.float32)
    if max(noise_correlation) > 0:
        noisy = correlate_noise(noisy, clean, noise_correlation)
    params["noise_correlation"] = [float(w) for w in noise_correlation]
    frame_idx, ys, xs, ids = (np.concatenate(c) for c in zip(*rows, strict=True))
    truth = points_table(ys, xs, frame=frame_idx, track_id=ids.astype(np.int64))
    return Simulation(noisy=noisy, clean=clean, truth=truth, params=params)


def correlate_noise(noisy: np.ndarray, clean: np.ndarray,
                    widths: tuple[float, float]) -> np.ndarray:
    """Correlate the noise of a simulated stack between neighbouring pixels.

    The noise ``noisy - clean`` of each frame is smoothed by a Gaussian of ``widths``
    ``(y, x)`` px and scaled back to its own standard deviation, so every pixel keeps its
    noise level (and the PTC SNR its meaning) while neighbouring pixels share part of it.
    Neighbours along an axis then correlate by about ``2w / (1 + 2w^2)`` with
    ``w = exp(-1 / (2 width^2))``: 0.45 at 0.6 px and 0.17 at 0.45 px, what the real
    camera time-lapse ``timelapse_telomeres_2d.tif`` measures along y and x (0.48 and
    0.17, from frame differences).

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


def _draw_timelapse_params(scenario, snr, density, shape, background, rng, randomise):
    def draw(low, high):
        return float(rng.uniform(low, high)) if randomise else (low + high) / 2.0

    count = _density(density, DENSITIES) * shape[0] * shape[1] / 512.0**2

    sigma = draw(0.9, 1.6)
    if scenario == "microtubule":
        # Plus-end comets are two to three times longer than wide and move fast.
        sigma_along, sigma_across = sigma * draw(2.0, 3.0), sigma
        speed, diffusion, switch = draw(2.5, 5.0), draw(0.2, 0.5), 0.0
    elif scenario == "receptor":
        sigma_along = sigma_across = sigma
        speed, diffusion, switch = draw(1.0, 3.0), draw(0.5, 1.2), draw(0.05, 0.15)
    else:
        sigma_along = sigma_across = sigma
        speed, diffusion, switch = 0.0, draw(0.8, 2.0), 0.0
    return {
        "scenario": scenario,
        "snr": float(snr),
        "background": float(background),
        "amplitude": peak_amplitude(snr, background),
        "count": count,
        "sigma_along": sigma_along,
        "sigma_across": sigma_across,
        "intensity_spread": draw(0.0, 0.25),
        "bg_variation": draw(0.0, 0.3),
        "speed": speed,
        "diffusion": diffusion,
        "switch_rate": switch,
        "mean_lifetime": draw(15.0, 40.0),
    }


class _TrackSimulator:
    """Particles that move, are born and die; a steady population of ``count``."""

    def __init__(self, params, shape, rng):
        self.p, self.shape, self.rng = params, shape, rng
        self.next_id = 0
        self.arrays = {k: np.empty(0) for k in
                       ("y", "x", "vy", "vx", "brightness", "angle", "directed")}
        self.arrays["track_id"] = np.empty(0, dtype=np.int64)
        self._birth(self._poisson(self.p["count"]))

    def _poisson(self, mean):
        return int(self.rng.poisson(mean))

    def _birth(self, n):
        rng, p = self.rng, self.p
        h, w = self.shape
        # Births over a margin around the frame so that directed particles flow in.
        margin = 2.0 * max(p["speed"], p["diffusion"])
        heading = rng.uniform(0, 2 * np.pi, n)
        directed = (np.ones(n, bool) if p["scenario"] == "microtubule"
                    else rng.random(n) < 0.5 if p["scenario"] == "receptor"
                    else np.zeros(n, bool))
        speed = p["speed"] * rng.uniform(0.7, 1.3, n)
        new = {
            "y": rng.uniform(-0.5 - margin, h - 0.5 + margin, n),
            "x": rng.uniform(-0.5 - margin, w - 0.5 + margin, n),
            "vy": speed * np.sin(heading),
            "vx": speed * np.cos(heading),
            "brightness": np.clip(1.0 + p["intensity_spread"] * rng.standard_normal(n),
                                  0.3, None),
            "angle": heading,
            "directed": directed.astype(float),
            "track_id": np.arange(self.next_id, self.next_id + n, dtype=np.int64),
        }
        self.next_id += n
        for k, v in new.items():
            self.arrays[k] = np.concatenate([self.arrays[k], v])

    def state(self):
        return self.arrays

    def step(self):
        rng, p, a = self.rng, self.p, self.arrays
        n = len(a["y"])
        if p["switch_rate"] > 0:
            flip = rng.random(n) < p["switch_rate"]
            a["directed"] = np.where(flip, 1.0 - a["directed"], a["directed"])
        # Directed motion keeps its heading with a small angular wander.
        turn = rng.normal(0.0, 0.15, n)
        cos, sin = np.cos(turn), np.sin(turn)
        a["vy"], a["vx"] = sin * a["vx"] + cos * a["vy"], cos * a["vx"] - sin * a["vy"]
        a["y"] = a["y"] + a["directed"] * a["vy"] + p["diffusion"] * rng.standard_normal(n)
        a["x"] = a["x"] + a["directed"] * a["vx"] + p["diffusion"] * rng.standard_normal(n)
        a["angle"] = np.arctan2(a["vy"], a["vx"])
        h, w = self.shape
        margin = 4.0 * max(p["speed"], p["diffusion"]) + 5.0
        alive = ((rng.random(n) > 1.0 / p["mean_lifetime"])
                 & (a["y"] > -margin) & (a["y"] < h + margin)
                 & (a["x"] > -margin) & (a["x"] < w + margin))
        for k in a:
            a[k] = a[k][alive]
        # Births replace what died or left, keeping the population near its target.
        self._birth(self._poisson(max(p["count"] - alive.sum(), 0.0)))


def _texture(shape, rng):
    """Return a static structured background in [0, 1]: blobs and ridges at 6 and 20 px.

    Both scales are coarser than any spot, as in a cell's autofluorescence; texture at
    the spots' own scale and brightness could not be told from particles by anyone.
    """
    fine = ndimage.gaussian_filter(rng.standard_normal(shape), 6.0)
    coarse = ndimage.gaussian_filter(rng.standard_normal(shape), 20.0)
    field = np.abs(fine / fine.std()) + 0.5 * coarse / coarse.std()
    field -= field.min()
    return (field / (field.max() + 1e-9)).astype(np.float32)


class _Background:
    """A multiplicative background near 1 that drifts slowly from one shape to another."""

    def __init__(self, frames, shape, variation, rng):
        self.frames, self.variation = frames, variation
        if variation > 0:
            self.start, self.end = self._smooth_field(shape, rng), self._smooth_field(shape, rng)

    @staticmethod
    def _smooth_field(shape, rng):
        h, w = shape
        field = ndimage.zoom(rng.standard_normal((4, 4)), (h / 4, w / 4), order=3,
                             mode="nearest")[:h, :w]
        field -= field.mean()
        return (field / (np.abs(field).max() + 1e-9)).astype(np.float32)

    def __getitem__(self, t):
        if self.variation <= 0:
            return np.float32(1.0)
        ramp = t / max(self.frames - 1, 1)
        return 1.0 + self.variation * ((1 - ramp) * self.start + ramp * self.end)


def _render_spots(shape, y, x, amplitude, sigma_along, sigma_across, angle):
    """Sum anisotropic Gaussians (long axis along ``angle``) into an image, vectorised."""
    h, w = shape
    out = np.zeros(h * w, dtype=np.float64)
    if len(y) == 0:
        return out.reshape(h, w)
    radius = int(np.ceil(4.0 * max(sigma_along, sigma_across)))
    off = np.arange(-radius, radius + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    iy, ix = np.rint(y).astype(np.int64), np.rint(x).astype(np.int64)
    py = iy[:, None, None] + oy  # pixel rows of each particle's patch
    px = ix[:, None, None] + ox
    dy = py - y[:, None, None]
    dx = px - x[:, None, None]
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    along = dx * c + dy * s
    across = -dx * s + dy * c
    values = np.broadcast_to(np.asarray(amplitude, dtype=np.float64), y.shape)[:, None, None] \
        * np.exp(-0.5 * ((along / sigma_along) ** 2 + (across / sigma_across) ** 2))
    keep = (py >= 0) & (py < h) & (px >= 0) & (px < w)
    out += np.bincount((py * w + px)[keep], weights=values[keep], minlength=h * w)
    return out.reshape(h, w)


# --------------------------------------------------------------------------- micrograph


def simulate_micrograph(
    shape: tuple[int, int] = DEFAULT_MICROGRAPH_SHAPE,
    snr: float = DEFAULT_MICROGRAPH_SNR,
    density: str | float = DEFAULT_DENSITY,
    radius: float | tuple[float, float] = (5.0, 15.0),
    seed: int | None = 0,
    randomise: bool = True,
    carbon: bool | None = None,
    halo: float | tuple[float, float] = 0.0,
    blur: float | tuple[float, float] = 0.0,
) -> Simulation:
    """Simulate a binned cryo-EM micrograph.

    Parameters
    ----------
    shape : tuple of int
        Image size ``(y, x)``.
    snr : float
        Power ratio of particle signal to noise over the particles' pixels
        (cryo-EM convention; typical values 0.01–0.5).
    density : {'low', 'mid', 'high'} or float
        Fraction of the area covered by particles (see :data:`MICROGRAPH_COVERAGE`),
        or that fraction as a number.
    radius : float or (float, float)
        Particle radius in pixels, or a range the micrograph's radius is drawn from.
        Single particles vary by ±10 % around it.
    seed : int or None
        Seed of the random generator.
    randomise : bool
        Draw radius, texture, background gradients and carbon from ranges.
    carbon : bool or None
        Add a carbon edge (a darker region without particles); None draws it.
    halo : float or (float, float)
        Strength (0–1) of the bright fringe that phase contrast at defocus puts around
        each particle: the particles' density minus that fraction of itself blurred over
        half to one radius. A range is drawn from.
    blur : float or (float, float)
        Width (px) of a Gaussian low-pass applied to the noisy and the clean image, as
        in micrographs exported filtered (JPEG/PNG previews) or binned after filtering:
        the noise is then correlated over a few pixels. A range is drawn from. The SNR
        is set before the low-pass. With the defaults (0), or a range whose ends are
        equal, nothing is drawn, so a seed gives the same micrograph as without these
        two arguments.

    Returns
    -------
    Simulation
        ``noisy`` and ``clean`` as ``(y, x)`` float32, particles dark on a brighter
        background; ``truth`` with columns ``y, x, radius``.
    """
    if snr <= 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    h, w = (int(s) for s in shape)
    if min(h, w) < 32:
        raise ValueError(f"micrographs must be at least 32 x 32 pixels, got {shape}")
    rng = np.random.default_rng(seed)
    if isinstance(radius, tuple):
        r_mean = float(rng.uniform(*radius)) if randomise else sum(radius) / 2.0
    else:
        r_mean = float(radius)
    coverage = _density(density, MICROGRAPH_COVERAGE)
    if carbon is None:
        carbon = bool(rng.random() < 0.4) if randomise else False

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    allowed = np.ones((h, w), bool)
    background = np.zeros((h, w), np.float32)
    # Ice thickness: a plane plus a smooth field, a fraction of the particle contrast.
    tilt = rng.normal(0, 0.2, 2) if randomise else np.zeros(2)
    background += (tilt[0] * (yy / h - 0.5) + tilt[1] * (xx / w - 0.5)).astype(np.float32)
    coarse = rng.standard_normal((5, 5)) * (0.15 if randomise else 0.0)
    background += ndimage.zoom(coarse, (h / 5, w / 5), order=3, mode="nearest")[:h, :w]
    if carbon:
        # A curved carbon edge: the film is thicker (darker) and holds no particles.
        # The hole is a large circle whose rim crosses the image; beyond it lies carbon
        # over a band of 15-35 % of the image along a random direction u.
        phi = rng.uniform(0, 2 * np.pi)
        u = np.array([np.sin(phi), np.cos(phi)])
        size = float(max(h, w))
        depth = rng.uniform(0.15, 0.35)
        reach = abs(u[0]) * h / 2 + abs(u[1]) * w / 2  # half-extent of the image along u
        distance = 3.0 * size
        cy, cx = h / 2 - u[0] * distance, w / 2 - u[1] * distance
        r_hole = distance + reach * (1 - 2 * depth)
        on_carbon = np.hypot(yy - cy, xx - cx) > r_hole
        background -= 0.8 * on_carbon
        allowed &= ~ndimage.binary_dilation(on_carbon, iterations=int(np.ceil(r_mean)))

    centres = _place_without_overlap((h, w), r_mean, coverage, allowed, rng)
    radii = r_mean * rng.uniform(0.9, 1.1, len(centres))
    signal = _render_particles((h, w), centres, radii, rng)
    footprint = signal > 0.05 * (signal.max() if signal.size else 1.0)
    power = float(np.mean(signal[footprint] ** 2)) if footprint.any() else 1.0
    sigma = float(np.sqrt(power / snr))
    noise = rng.normal(0.0, sigma, (h, w))
    # Drawn after everything else, so that the defaults leave the random stream as it was.
    halo, blur = _drawn(halo, rng), _drawn(blur, rng)
    if halo > 0:
        signal = signal - halo * ndimage.gaussian_filter(
            signal, r_mean * float(rng.uniform(0.5, 1.0)), mode="nearest")
    clean = (background - signal).astype(np.float32)
    noisy = (clean + noise).astype(np.float32)
    if blur > 0:
        clean = ndimage.gaussian_filter(clean, blur, mode="reflect")
        noisy = ndimage.gaussian_filter(noisy, blur, mode="reflect")
    truth = points_table(centres[:, 0], centres[:, 1], radius=radii)
    params = {"scenario": "micrograph", "snr": float(snr), "radius": r_mean,
              "coverage": coverage, "noise_sigma": sigma, "carbon": bool(carbon),
              "count": len(centres), "halo": halo, "blur": blur}
    return Simulation(noisy=noisy, clean=clean, truth=truth, params=params)


def _drawn(value, rng) -> float:
    # A number, or one drawn from a (low, high) range; an empty range draws nothing.
    if not isinstance(value, tuple):
        return float(value)
    low, high = value
    return float(rng.uniform(low, high)) if high > low else float(low)


def _place_without_overlap(shape, radius, coverage, allowed, rng):
    """Draw centres at least 2 radii apart (bounded rejection sampling)."""
    h, w = shape
    target = int(coverage * h * w / (np.pi * radius * radius))
    cell = 2.0 * radius
    grid: dict[tuple[int, int], list[np.ndarray]] = {}
    kept = []
    candidates = rng.uniform([radius, radius], [h - 1 - radius, w - 1 - radius],
                             size=(target * 8 + 16, 2))
    for c in candidates:
        if len(kept) >= target:
            break
        if not allowed[int(c[0]), int(c[1])]:
            continue
        gy, gx = int(c[0] // cell), int(c[1] // cell)
        near = [p for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                for p in grid.get((gy + dy, gx + dx), ())]
        if near and np.min(np.hypot(*(np.asarray(near) - c).T)) < 2.0 * radius:
            continue
        grid.setdefault((gy, gx), []).append(c)
        kept.append(c)
    return np.asarray(kept, dtype=np.float64).reshape(-1, 2)


def _render_particles(shape, centres, radii, rng):
    """Render textured particles: a soft disc made of a few random density blobs."""
    h, w = shape
    out = np.zeros((h, w), np.float64)
    if len(centres) == 0:
        return out
    half = int(np.ceil(radii.max() * 1.3)) + 2
    off = np.arange(-half, half + 1)
    for (cy, cx), r in zip(centres, radii, strict=True):
        iy, ix = int(round(cy)), int(round(cx))
        oy, ox = np.meshgrid(off + iy - cy, off + ix - cx, indexing="ij")
        n_blobs = int(rng.integers(6, 15))
        ang = rng.uniform(0, 2 * np.pi, n_blobs)
        dist = r * np.sqrt(rng.uniform(0, 0.6, n_blobs))
        by, bx = dist * np.sin(ang), dist * np.cos(ang)
        bs = r * rng.uniform(0.12, 0.25, n_blobs)
        blobs = np.exp(-0.5 * ((oy[..., None] - by) ** 2 + (ox[..., None] - bx) ** 2) / bs**2)
        envelope = 1.0 / (1.0 + np.exp((np.hypot(oy, ox) - r) / 1.2))
        patch = envelope * (0.4 + 0.6 * np.minimum(blobs.sum(-1), 1.5))
        y0, x0 = iy - half, ix - half
        sy, sx = slice(max(y0, 0), min(y0 + 2 * half + 1, h)), \
            slice(max(x0, 0), min(x0 + 2 * half + 1, w))
        out[sy, sx] += patch[sy.start - y0:sy.stop - y0, sx.start - x0:sx.stop - x0]
    return out / max(out.max(), 1e-9)
