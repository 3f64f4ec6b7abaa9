"""Heatmap logits to sub-pixel particle centres: peaks, then DSNT in a local window.

DSNT (Nibali et al.) turns one heatmap into one coordinate; an image holds hundreds of
particles, so it is applied locally: find the peaks of the heatmap, then take the
softmax-weighted centroid of the logits in a ``(2r+1) x (2r+1)`` window around each
peak. Every step is vectorised over peaks and batches, stays on the input's device and
is differentiable with respect to the logits where that makes sense (the training loss
uses :func:`window_probabilities` and :func:`local_dsnt` on the true centres).

Coordinates are ``(y, x)`` in pixels with pixel centres on integers, as everywhere in
napari-denodet (:mod:`napari_denodet.core.points`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def _check_logits(logits: Tensor) -> None:
    if logits.ndim != 3:
        raise ValueError(f"logits must be (B, H, W), got shape {tuple(logits.shape)}")


def find_peaks(logits: Tensor, floor: float, min_distance: int = 2) -> Tensor:
    """Find local maxima of a batch of heatmaps.

    A pixel is a peak when its probability ``sigmoid(logit)`` is at least ``floor`` and
    no pixel in the ``(2 * min_distance + 1)`` square window around it is higher. Among
    equal maxima in one window (a flat plateau) only the first in row-major order is
    kept, so a plateau yields one peak.

    Parameters
    ----------
    logits : Tensor
        ``(B, H, W)`` heatmap logits.
    floor : float
        Lowest probability a peak may have, in ``[0, 1]``.
    min_distance : int
        Half-width of the suppression window, in pixels.

    Returns
    -------
    Tensor
        ``(K, 3)`` long tensor of ``(b, y, x)``, sorted by batch, then row, then column.
    """
    _check_logits(logits)
    if min_distance < 0:
        raise ValueError(f"min_distance must be >= 0, got {min_distance}")
    d = int(min_distance)
    values = logits.detach().unsqueeze(1)
    # A square max-pool is a row pool then a column pool: same result, about half the time.
    local_max = F.max_pool2d(F.max_pool2d(values, (1, 2 * d + 1), stride=1, padding=(0, d)),
                             (2 * d + 1, 1), stride=1, padding=(d, 0))
    # sigmoid(v) >= floor  <=>  v >= logit(floor), without a sigmoid over every pixel.
    if floor <= 0:
        lowest = -math.inf
    elif floor >= 1:
        lowest = math.inf
    else:
        lowest = math.log(floor / (1.0 - floor))
    candidate = (values == local_max) & (values >= lowest)
    peaks = candidate.squeeze(1).nonzero()
    if d > 0 and len(peaks):
        # Candidates in one window share the window maximum (windows are symmetric), so
        # ties are the only conflict: drop a candidate when another one precedes it in
        # row-major order within the window, i.e. lies in the d rows above or to its left
        # on the same row. Only the candidates' own windows are looked at.
        mask = F.pad(candidate.squeeze(1), (d, d, d, d))
        oy, ox = _preceding_offsets(d, logits.device)
        b, y, x = peaks.unbind(1)
        preceded = mask[b[:, None], y[:, None] + d + oy, x[:, None] + d + ox].any(dim=1)
        peaks = peaks[~preceded]
    return peaks


def _preceding_offsets(d: int, device: torch.device) -> tuple[Tensor, Tensor]:
    # Window offsets that come before the centre in row-major order.
    r = torch.arange(-d, d + 1, device=device)
    oy, ox = torch.meshgrid(r, r, indexing="ij")
    before = (oy < 0) | ((oy == 0) & (ox < 0))
    return oy[before], ox[before]


def _window_offsets(radius: int, device: torch.device) -> tuple[Tensor, Tensor]:
    r = torch.arange(-radius, radius + 1, device=device)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    return dy.reshape(-1), dx.reshape(-1)


def window_probabilities(
    logits: Tensor, centres: Tensor, radius: int = 2, temperature: float = 1.0
) -> Tensor:
    """Softmax of the logits inside a square window around each centre.

    Parameters
    ----------
    logits : Tensor
        ``(B, H, W)`` heatmap logits.
    centres : Tensor
        ``(K, 3)`` integer ``(b, y, x)`` window centres, inside the image.
    radius : int
        Window half-width; the window has ``(2 * radius + 1) ** 2`` pixels.
    temperature : float
        Logits are divided by it before the softmax: below 1 sharpens the distribution,
        above 1 flattens it.

    Returns
    -------
    Tensor
        ``(K, (2 * radius + 1) ** 2)`` probabilities in row-major window order, each row
        summing to 1. Pixels outside the image get probability 0 (logit ``-inf``).
        Differentiable with respect to ``logits``.
    """
    _check_logits(logits)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    centres = centres.to(device=logits.device, dtype=torch.long)
    _, height, width = logits.shape
    dy, dx = _window_offsets(radius, logits.device)
    ys = centres[:, 1:2] + dy
    xs = centres[:, 2:3] + dx
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    window = logits[centres[:, :1], ys.clamp(0, height - 1), xs.clamp(0, width - 1)]
    window = (window / temperature).masked_fill(~inside, float("-inf"))
    return torch.softmax(window, dim=1)


def local_dsnt(
    logits: Tensor, centres: Tensor, radius: int = 2, temperature: float = 1.0
) -> Tensor:
    """Sub-pixel centres: the softmax-weighted centroid in a window around each centre.

    Parameters
    ----------
    logits : Tensor
        ``(B, H, W)`` heatmap logits.
    centres : Tensor
        ``(K, 3)`` integer ``(b, y, x)`` window centres, inside the image.
    radius : int
        Window half-width; windows are clipped at the image border.
    temperature : float
        Softmax temperature, see :func:`window_probabilities`.

    Returns
    -------
    Tensor
        ``(K, 2)`` float ``(y, x)`` in pixels, pixel centres on integers; always inside
        the image. Differentiable with respect to ``logits``.
    """
    probs = window_probabilities(logits, centres, radius, temperature)
    dy, dx = _window_offsets(radius, logits.device)
    offsets = torch.stack([dy, dx], dim=1).to(probs.dtype)
    origin = centres[:, 1:].to(device=logits.device, dtype=probs.dtype)
    return origin + probs @ offsets


#: How far (px) :func:`merge_shallow_peaks` looks for a higher peak.
MERGE_REACH = 6


def merge_shallow_peaks(logits: Tensor, peaks: Tensor, ratio: float,
                        reach: int = MERGE_REACH) -> Tensor:
    """Drop peaks joined to a higher peak nearby by a ridge instead of a valley.

    An elongated particle (a microtubule comet) can leave two maxima on the heatmap,
    with hardly a dip between them; two particles side by side leave a clear dip. A
    peak is dropped when a higher peak (or an equal one earlier in row-major order)
    lies within ``reach`` px and the probability at a quarter, half and three quarters
    of the way to it never falls below ``ratio`` times the peak's own.

    Parameters
    ----------
    logits : Tensor
        ``(B, H, W)`` heatmap logits.
    peaks : Tensor
        ``(K, 3)`` long ``(b, y, x)`` peaks, as from :func:`find_peaks`.
    ratio : float
        Depth of the dip, relative to the lower peak, that keeps two peaks apart; 0 keeps
        every peak, 1 merges every pair without a dip.
    reach : int
        Largest distance (px) between peaks that are merged.

    Returns
    -------
    Tensor
        The peaks kept, in their input order.
    """
    _check_logits(logits)
    if ratio <= 0 or len(peaks) == 0:
        return peaks
    prob = torch.sigmoid(logits.detach())
    batch, height, width = prob.shape
    index = torch.full((batch, height + 2 * reach, width + 2 * reach), -1, dtype=torch.long,
                       device=logits.device)
    b, y, x = peaks.unbind(1)
    order = torch.arange(len(peaks), device=logits.device)
    index[b, y + reach, x + reach] = order
    r = torch.arange(-reach, reach + 1, device=logits.device)
    oy, ox = torch.meshgrid(r, r, indexing="ij")
    near = (oy * oy + ox * ox <= reach * reach) & ((oy != 0) | (ox != 0))
    oy, ox = oy[near], ox[near]
    other = index[b[:, None], y[:, None] + reach + oy, x[:, None] + reach + ox]  # (K, O)
    mine = prob[b, y, x]
    theirs = mine[other.clamp(min=0)]
    higher = (other >= 0) & ((theirs > mine[:, None])
                             | ((theirs == mine[:, None]) & (other < order[:, None])))
    dip = None
    for t in (0.25, 0.5, 0.75):
        py = (y[:, None] + t * oy).round().long().clamp(0, height - 1)
        px = (x[:, None] + t * ox).round().long().clamp(0, width - 1)
        on_line = prob[b[:, None].expand_as(py), py, px]
        dip = on_line if dip is None else torch.minimum(dip, on_line)
    merged = (higher & (dip >= ratio * mine[:, None])).any(dim=1)
    return peaks[~merged]


def detect_points(
    logits: Tensor,
    floor: float = 0.05,
    radius: int = 2,
    min_distance: int = 2,
    temperature: float = 1.0,
    merge_ratio: float = 0.0,
) -> dict[str, Tensor]:
    """Detect particles in a batch of heatmaps with sub-pixel precision.

    Parameters
    ----------
    logits : Tensor
        ``(B, H, W)`` heatmap logits.
    floor : float
        Lowest probability (``sigmoid(logit)`` at the peak) kept; callers filter
        higher thresholds on ``score`` afterwards without recomputing.
    radius : int
        Half-width of the DSNT window.
    min_distance : int
        Half-width of the peak suppression window.
    temperature : float
        Softmax temperature for the DSNT window.
    merge_ratio : float
        Merge shallow double peaks (:func:`merge_shallow_peaks`); 0 keeps every peak.

    Returns
    -------
    dict of str to Tensor
        ``batch`` ``(K,)`` long frame index within the batch; ``y``, ``x`` ``(K,)``
        sub-pixel coordinates; ``score`` ``(K,)`` probability at the peak pixel. All on
        the device of ``logits``.
    """
    peaks = merge_shallow_peaks(logits, find_peaks(logits, floor, min_distance), merge_ratio)
    coords = local_dsnt(logits, peaks, radius, temperature)
    score = torch.sigmoid(logits[peaks[:, 0], peaks[:, 1], peaks[:, 2]])
    return {"batch": peaks[:, 0], "y": coords[:, 0], "x": coords[:, 1], "score": score}


def blob_kernel(sigma: float) -> np.ndarray:
    """Return the scale-normalised blob kernel ``-sigma^2 * LoG`` of width ``sigma`` px.

    The same sampled kernel as :func:`scipy.ndimage.gaussian_laplace` (truncated at
    4 sigma), so that correlating it with an image gives ``-sigma**2 *
    gaussian_laplace(image, sigma)``: positive at the centre of a bright blob.
    """
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    g2 = g * (x**2 - sigma**2) / sigma**4
    return -(sigma**2) * (np.outer(g2, g) + np.outer(g, g2))


def blob_response(frames: np.ndarray, batch: np.ndarray, y: np.ndarray, x: np.ndarray,
                  sigma: float) -> np.ndarray:
    """Return the blob filter's response of ``frames`` at the rounded points.

    Equal to ``-sigma**2 * scipy.ndimage.gaussian_laplace(frame, sigma)`` read at each
    point (edges reflected as there), but computed only where it is read: one window per
    point, vectorised over the points.

    Parameters
    ----------
    frames : numpy.ndarray
        ``(B, H, W)`` images (the network's denoised output, normalised).
    batch, y, x : numpy.ndarray
        ``(K,)`` frame index into ``frames`` and sub-pixel coordinates of each point.
    sigma : float
        Width of the blob filter, px.

    Returns
    -------
    numpy.ndarray
        ``(K,)`` float64 responses; positive where a bright blob is centred.
    """
    kernel = blob_kernel(sigma)
    r = kernel.shape[0] // 2
    height, width = frames.shape[-2:]
    if not len(batch):
        return np.zeros(0)
    padded = np.pad(np.asarray(frames, np.float32), ((0, 0), (r, r), (r, r)), mode="symmetric")
    iy = np.clip(np.rint(y).astype(np.int64), 0, height - 1)
    ix = np.clip(np.rint(x).astype(np.int64), 0, width - 1)
    offsets = np.arange(2 * r + 1)
    windows = padded[np.asarray(batch, np.int64)[:, None, None],
                     iy[:, None, None] + offsets[None, :, None],
                     ix[:, None, None] + offsets[None, None, :]]
    return np.einsum("kij,ij->k", windows.astype(np.float64), kernel)


@dataclass(frozen=True)
class BlobScore:
    """A detection score with ties broken by the denoised image's blob response.

    ``score = clip(p + weight * tanh((r - centre) / scale), 0, 1)``, ``p`` the heatmap's
    peak probability and ``r`` the :func:`blob_response` of the network's normalised
    denoised output at the detection. The peak probability still orders detections
    whose probabilities differ by more than ``weight``; where they bunch (a heatmap
    that saturates on data unlike its training data, as on the real EMPIAR-10017
    micrograph, 40 % of candidates within 0.004), the denoised image orders them.
    ``centre`` and ``scale`` (median and 1.4826 x MAD of the responses of the
    candidates it was fitted on, :meth:`fit`) keep the term comparable across data.

    Attributes
    ----------
    weight : float
        Largest change of a score, in [0, 1]; 0 leaves the peak probability.
    sigma : float
        Width of the blob filter, px (of the image as detected).
    centre, scale : float
        Response mapped to 0, and response change mapped to tanh(1) of ``weight``.
    """

    weight: float
    sigma: float = 2.0
    centre: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("weight", "sigma", "centre", "scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value)):
                raise ValueError(f"blob score {name} must be a finite number, got {value!r}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"blob score weight must be in [0, 1], got {self.weight}")
        if self.sigma <= 0 or self.scale <= 0:
            raise ValueError("blob score sigma and scale must be > 0, got "
                             f"{self.sigma} and {self.scale}")

    @classmethod
    def fit(cls, responses: np.ndarray, weight: float, sigma: float) -> BlobScore:
        """Return the score whose ``centre`` and ``scale`` are the responses' median and MAD."""
        responses = np.asarray(responses, np.float64)
        centre = float(np.median(responses)) if len(responses) else 0.0
        scale = 1.4826 * float(np.median(np.abs(responses - centre))) if len(responses) else 0.0
        if not scale > 0:
            scale = float(np.std(responses)) if len(responses) else 0.0
        return cls(float(weight), float(sigma), centre, scale if scale > 0 else 1.0)

    def apply(self, score: np.ndarray, response: np.ndarray) -> np.ndarray:
        """Return the combined scores of peak probabilities ``score`` at ``response``."""
        term = np.tanh((np.asarray(response, np.float64) - self.centre) / self.scale)
        return np.clip(np.asarray(score, np.float64) + self.weight * term, 0.0, 1.0)

    def to_dict(self) -> dict:
        """Return the card's form of it (``localisation.blob``)."""
        return {"weight": self.weight, "sigma": self.sigma, "centre": self.centre,
                "scale": self.scale}
