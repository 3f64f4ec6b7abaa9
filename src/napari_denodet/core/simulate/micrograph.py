"""Binned cryo-EM micrographs: textured particles on ice, carbon, fringes, low SNR."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_denodet.core.points import points_table
from napari_denodet.core.simulate.base import (
    DEFAULT_DENSITY,
    DEFAULT_MICROGRAPH_SHAPE,
    DEFAULT_MICROGRAPH_SNR,
    MICROGRAPH_COVERAGE,
    Simulation,
    _density,
)


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
    ctf: float | tuple[float, float] = 0.0,
    artefacts: bool = False,
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
    ctf : float or (float, float)
        Spatial frequency (cycles/px) of the first zero of a contrast transfer function
        (phase contrast at defocus, 10 % amplitude contrast, a Gaussian envelope) that
        filters the particles and the ice: rings in the power spectrum, fringes around
        every particle. A range is drawn from; 0, the default, applies none.
    artefacts : bool
        Add detector artefacts to the noisy image only: a few rows and columns offset
        (stripes), a brighter or darker band along one edge, and hot pixels.

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
    first_zero = _drawn(ctf, rng)
    if first_zero > 0:
        signal, background = (contrast_transfer(x, first_zero) for x in (signal, background))
        # The SNR holds for the filtered particles: the noise follows their power.
        after = float(np.mean(signal[footprint] ** 2)) if footprint.any() else power
        sigma *= float(np.sqrt(after / power))
        noise *= float(np.sqrt(after / power))
    clean = (background - signal).astype(np.float32)
    noisy = (clean + noise).astype(np.float32)
    if artefacts:
        noisy = noisy + _detector_artefacts((h, w), sigma, rng)
    if blur > 0:
        clean = ndimage.gaussian_filter(clean, blur, mode="reflect")
        noisy = ndimage.gaussian_filter(noisy, blur, mode="reflect")
    truth = points_table(centres[:, 0], centres[:, 1], radius=radii)
    params = {"scenario": "micrograph", "snr": float(snr), "radius": r_mean,
              "coverage": coverage, "noise_sigma": sigma, "carbon": bool(carbon),
              "count": len(centres), "halo": halo, "blur": blur, "ctf": first_zero,
              "artefacts": bool(artefacts)}
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


def contrast_transfer(image: np.ndarray, first_zero: float) -> np.ndarray:
    """Filter an image by a contrast transfer function whose first zero is at ``first_zero``.

    ``CTF(k) = sqrt(1 - A^2) sin(chi) + A cos(chi)`` with ``chi = pi (k / first_zero)^2``
    (cycles/px), amplitude contrast ``A = 0.1`` and a Gaussian envelope falling to 1/e at
    three times the first zero; scaled so that the strongest frequency passes as it is.
    Structure well below the first zero keeps its sign, so particles stay dark.
    """
    h, w = image.shape
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    k2 = (ky * ky + kx * kx) / (first_zero * first_zero)
    amplitude = 0.1
    chi = np.pi * k2 / 2.0  # the first zero of the sine term sits at k = first_zero x sqrt(2)
    transfer = (np.sqrt(1 - amplitude**2) * np.sin(chi) + amplitude * np.cos(chi)) \
        * np.exp(-k2 / 9.0)
    transfer /= np.abs(transfer).max()
    mean = float(image.mean())
    out = np.fft.irfft2(np.fft.rfft2(image - mean) * transfer, s=(h, w))
    return (out + mean).astype(image.dtype)


def _detector_artefacts(shape, sigma, rng) -> np.ndarray:
    # Stripes (offset rows and columns), a band along one edge, hot pixels: noise units.
    h, w = shape
    out = np.zeros(shape, np.float32)
    for axis, size in ((0, h), (1, w)):
        lines = rng.integers(0, size, int(rng.integers(0, 4)))
        offsets = rng.normal(0.0, 1.5 * sigma, len(lines)).astype(np.float32)
        if axis == 0:
            out[lines, :] += offsets[:, None]
        else:
            out[:, lines] += offsets[None, :]
    band = int(rng.uniform(0.02, 0.1) * min(h, w))
    edge = rng.integers(4)
    ramp = (np.linspace(1.0, 0.0, band) * rng.normal(0.0, 2.0 * sigma)).astype(np.float32)
    if edge == 0:
        out[:band] += ramp[:, None]
    elif edge == 1:
        out[-band:] += ramp[::-1, None]
    elif edge == 2:
        out[:, :band] += ramp[None, :]
    else:
        out[:, -band:] += ramp[None, ::-1]
    hot = rng.random(shape) < rng.uniform(0.0, 5e-4)
    out[hot] += np.float32(rng.uniform(5.0, 20.0) * sigma)
    return out
