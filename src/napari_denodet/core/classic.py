"""Classic spot detectors, the baselines every benchmark compares against.

* :func:`log_candidates` — Laplacian of Gaussian at the particle scale, local maxima,
  and a parabola fit through the response in y and in x for sub-pixel positions (the
  TrackMate LoG detector's recipe).
* :func:`wavelet_candidates` — the multiscale product of undecimated (à trous) B3-spline
  wavelet planes of Olivo-Marin (2002), the core of the SOS detector: each plane is
  hard-thresholded at k times its own noise level, the planes are multiplied, and
  particles are the local maxima of the product, refined by the product's centroid.

Both work on a frame normalised like the network's input (median 0, MAD-sigma 1) and
return every candidate with a score, so that one threshold can be tuned on validation
data and applied afterwards, exactly as for the network.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_denodet.core.normalize import normalise_frame


def _local_maxima(response: np.ndarray, floor: float, min_distance: int) -> np.ndarray:
    size = 2 * min_distance + 1
    peaks = (response == ndimage.maximum_filter(response, size=size, mode="nearest")) & (
        response >= floor)
    return np.argwhere(peaks)


def _parabola_offset(minus: np.ndarray, centre: np.ndarray, plus: np.ndarray) -> np.ndarray:
    curvature = minus - 2.0 * centre + plus
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(curvature < 0, 0.5 * (minus - plus) / curvature, 0.0)
    return np.clip(offset, -0.5, 0.5)


def log_candidates(frame: np.ndarray, sigma: float = 1.5, floor: float = 0.5,
                   min_distance: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detect spots with a scale-normalised Laplacian of Gaussian.

    Parameters
    ----------
    frame : numpy.ndarray
        A normalised 2D frame (bright particles).
    sigma : float
        Gaussian scale, about the particle radius over sqrt(2).
    floor : float
        Lowest response kept as a candidate.
    min_distance : int
        Half-size of the non-maximum suppression window.

    Returns
    -------
    y, x, score : numpy.ndarray
        Sub-pixel positions and the LoG response at each maximum.
    """
    response = -sigma * sigma * ndimage.gaussian_laplace(np.asarray(frame, np.float32), sigma)
    peaks = _local_maxima(response, floor, min_distance)
    pad = np.pad(response, 1, mode="edge")
    py, px = peaks[:, 0] + 1, peaks[:, 1] + 1
    centre = pad[py, px]
    dy = _parabola_offset(pad[py - 1, px], centre, pad[py + 1, px])
    dx = _parabola_offset(pad[py, px - 1], centre, pad[py, px + 1])
    return peaks[:, 0] + dy, peaks[:, 1] + dx, centre.astype(np.float64)


def atrous_planes(frame: np.ndarray, levels: int = 3) -> list[np.ndarray]:
    """Return the à trous B3-spline wavelet planes ``W_1 .. W_levels`` of a frame."""
    kernel = np.array([1, 4, 6, 4, 1], np.float32) / 16.0
    smooth = np.asarray(frame, np.float32)
    planes = []
    for j in range(levels):
        holes = np.zeros(4 * 2**j + 1, np.float32)
        holes[:: 2**j] = kernel
        nxt = ndimage.convolve1d(ndimage.convolve1d(smooth, holes, axis=0, mode="mirror"),
                                 holes, axis=1, mode="mirror")
        planes.append(smooth - nxt)
        smooth = nxt
    return planes


def wavelet_candidates(frame: np.ndarray, levels: int = 3, k: float = 1.0,
                       floor: float = 1e-3, min_distance: int = 2
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detect spots with the à trous wavelet multiscale product (Olivo-Marin 2002).

    Parameters
    ----------
    frame : numpy.ndarray
        A 2D frame (bright particles).
    levels : int
        Number of wavelet planes multiplied.
    k : float
        Each plane keeps coefficients above ``k`` times its noise level (MAD-based).
    floor : float
        Lowest product kept as a candidate.
    min_distance : int
        Half-size of the non-maximum suppression window.

    Returns
    -------
    y, x, score : numpy.ndarray
        Sub-pixel positions (centroid of the product in a 3 x 3 window) and the
        product's value at each maximum.
    """
    product = np.ones(np.shape(frame), np.float32)
    for plane in atrous_planes(frame, levels):
        noise = 1.4826 * np.median(np.abs(plane - np.median(plane)))
        product *= np.where(plane > k * noise, plane, 0.0)
    peaks = _local_maxima(product, max(floor, 1e-12), min_distance)
    pad = np.pad(product, 1)
    offs = np.arange(-1, 2)
    wy = pad[peaks[:, 0, None, None] + 1 + offs[:, None], peaks[:, 1, None, None] + 1 + offs]
    total = wy.sum(axis=(1, 2))
    dy = (wy.sum(axis=2) * offs).sum(axis=1) / total
    dx = (wy.sum(axis=1) * offs).sum(axis=1) / total
    score = product[peaks[:, 0], peaks[:, 1]].astype(np.float64)
    return peaks[:, 0] + dy, peaks[:, 1] + dx, score


def detect_classic(stack: np.ndarray, method: str = "log", invert: bool = False,
                   **kwargs) -> dict[str, np.ndarray]:
    """Run a classic detector over every frame of a stack (or one image).

    Parameters
    ----------
    stack : numpy.ndarray
        ``(t, y, x)`` or ``(y, x)``.
    method : {'log', 'wavelet'}
        Which detector.
    invert : bool
        Particles are dark (cryo-EM).
    **kwargs
        Passed to the detector.

    Returns
    -------
    dict
        ``frame``, ``y``, ``x``, ``score`` arrays of every candidate.
    """
    detector = {"log": log_candidates, "wavelet": wavelet_candidates}[method]
    frames = stack[None] if stack.ndim == 2 else stack
    out = {"frame": [], "y": [], "x": [], "score": []}
    for t, frame in enumerate(frames):
        y, x, score = detector(normalise_frame(frame, invert, t)[0], **kwargs)
        out["frame"].append(np.full(len(y), t))
        out["y"].append(y)
        out["x"].append(x)
        out["score"].append(score)
    return {k: np.concatenate(v) for k, v in out.items()}
