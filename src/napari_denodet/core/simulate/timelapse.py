"""2D+t fluorescence particle stacks (PTC-like), optionally through a realistic camera."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_denodet.core.points import points_table
from napari_denodet.core.simulate.base import (
    BACKGROUND,
    DEFAULT_DENSITY,
    DEFAULT_FRAMES,
    DEFAULT_SCENARIO,
    DEFAULT_TIMELAPSE_SHAPE,
    DEFAULT_TIMELAPSE_SNR,
    DENSITIES,
    SCENARIOS,
    Simulation,
    _density,
    peak_amplitude,
)
from napari_denodet.core.simulate.formation import Formation, correlate_noise


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
    formation: Formation | None = None,
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
    formation : Formation, optional
        A realistic image formation (:mod:`~napari_denodet.core.simulate.formation`):
        its camera records the stack (ADU instead of photons; ``clean`` is the camera's
        noise-free record), and its background level and structure, PSF width,
        elongation, intensity spread and clusters replace the PTC draws (the comets of
        ``microtubule`` keep their length). ``background`` and ``noise_correlation``
        must then stay at their defaults; ``params["formation"]`` records the draw.

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
    if formation is not None:
        if background != BACKGROUND or max(noise_correlation) > 0:
            raise ValueError("with a formation, its own background and camera apply: leave "
                             "background and noise_correlation at their defaults")
        background = formation.background
    params = _draw_timelapse_params(scenario, snr, density, (height, width), background,
                                    rng, randomise)
    if formation is not None:
        _apply_formation(params, formation)
    params["sigma_along"] *= psf_scale
    params["sigma_across"] *= psf_scale
    params.update(psf_scale=float(psf_scale), texture=float(texture))
    tracks = _TrackSimulator(params, (height, width), rng)
    bg_fields = _Background(frames, (height, width), params["bg_variation"], rng)

    structure = (None if formation is None
                 else formation.background_field(frames, (height, width), rng))
    clean = np.empty((frames, height, width), dtype=np.float32)
    rows = []
    for t in range(frames):
        state = tracks.state()
        frame = _render_spots(
            (height, width),
            state["y"], state["x"],
            params["amplitude"] * state["brightness"],
            params["sigma_along"], params["sigma_across"],
            state["orientation"] if formation is not None else state["angle"],
        )
        level = background * bg_fields[t]
        if structure is not None:
            # The structure multiplies the background only: spots keep their photons.
            level = level * structure[t]
        clean[t] = level + frame
        inside = ((state["y"] >= -0.5) & (state["y"] < height - 0.5)
                  & (state["x"] >= -0.5) & (state["x"] < width - 0.5))
        rows.append((np.full(int(inside.sum()), t), state["y"][inside], state["x"][inside],
                     state["track_id"][inside]))
        tracks.step()
    if texture > 0:
        clean += np.float32(texture * background) * _texture((height, width), rng)
    if formation is not None:
        noisy = formation.camera.expose(clean, rng)
        clean = formation.camera.clean(clean)
        params["formation"] = formation.to_dict()
    else:
        noisy = rng.poisson(clean).astype(np.float32)
    if max(noise_correlation) > 0:
        noisy = correlate_noise(noisy, clean, noise_correlation)
    params["noise_correlation"] = [float(w) for w in noise_correlation]
    frame_idx, ys, xs, ids = (np.concatenate(c) for c in zip(*rows, strict=True))
    truth = points_table(ys, xs, frame=frame_idx, track_id=ids.astype(np.int64))
    return Simulation(noisy=noisy, clean=clean, truth=truth, params=params)


def _apply_formation(params: dict, formation: Formation) -> None:
    # The formation's particle appearance replaces the PTC draws (comets stay comets).
    comet = params["sigma_along"] / params["sigma_across"]
    params["sigma_across"] = formation.psf_sigma
    params["sigma_along"] = formation.psf_sigma * (
        comet if params["scenario"] == "microtubule" else formation.elongation)
    params.update(intensity_spread=formation.intensity_spread, brightness_law="lognormal",
                  cluster_fraction=formation.cluster_fraction,
                  cluster_spread=formation.cluster_spread, orientation=True)


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
                       ("y", "x", "vy", "vx", "brightness", "angle", "directed",
                        "orientation")}
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
            "brightness": self._brightness(n),
            "angle": heading,
            "directed": directed.astype(float),
            "track_id": np.arange(self.next_id, self.next_id + n, dtype=np.int64),
        }
        # Drawn only for a realistic formation, so that PTC seeds keep their stream.
        new["orientation"] = rng.uniform(0, np.pi, n) if p.get("orientation") else heading
        if p.get("cluster_fraction", 0.0) > 0 and n > 1:
            self._cluster(new, n)
        self.next_id += n
        for k, v in new.items():
            self.arrays[k] = np.concatenate([self.arrays[k], v])

    def _brightness(self, n):
        p, rng = self.p, self.rng
        if p.get("brightness_law") == "lognormal":
            spread = p["intensity_spread"]
            return rng.lognormal(-0.5 * spread**2, spread, n)  # mean 1
        return np.clip(1.0 + p["intensity_spread"] * rng.standard_normal(n), 0.3, None)

    def _cluster(self, new, n):
        # A share of the newborn sit beside another newborn: clusters, near neighbours.
        p, rng = self.p, self.rng
        moved = np.flatnonzero(rng.random(n) < p["cluster_fraction"])
        anchor = rng.integers(0, n, len(moved))
        spread = p["cluster_spread"]
        for axis in ("y", "x"):
            new[axis][moved] = new[axis][anchor] + rng.normal(0.0, spread, len(moved))
        for key in ("vy", "vx", "angle", "directed"):
            new[key][moved] = new[key][anchor]

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
