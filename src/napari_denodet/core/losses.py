"""Losses of the joint network: denoising, detection, and their combination.

Detection follows DENODET (section III-B) applied locally, because an image holds many
particles: for every true particle, the softmax of the heatmap logits in a small window
around its nearest pixel is compared with a sigma = 1 px Gaussian centred on the true
sub-pixel position (Jensen-Shannon divergence), and the window's soft-argmax (local
DSNT) is compared with the true position (Euclidean distance). Those two terms only
shape the heatmap near particles; a dense, class-balanced binary cross-entropy against
the Gaussian target heatmap keeps empty background empty and makes the peak height a
score. The joint loss is ``L = L_det + gamma * L_deno``.

Fine-tuning from a few clicks (:mod:`napari_denodet.core.finetune`) has no clean image
and few labels, so it uses two more:

- **Denoising** is blind-spot self-supervision (Noise2Void, :func:`blind_spot_mask`): a
  few pixels of each patch are replaced by a random neighbour and the denoising head is
  trained to predict their original noisy values from the surrounding context. With
  noise independent from pixel to pixel, the best such prediction is the clean value.
- **Detection** is positive-unlabelled learning on the heatmap
  (:func:`positive_unlabelled_loss`). Pixels at the clicked centres are positives,
  pixels around deleted detections (or negative clicks) are negatives, and every other
  pixel is unlabelled: it may hold a particle nobody clicked, so it is not simply
  background. The class-balanced non-negative PU risk (Kiryo et al. 2017, the
  estimator behind Topaz's picker) estimates the background risk from the unlabelled
  pixels minus the expected share of particles in them, which needs the class prior:
  the number of particles per pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from napari_denodet.core.localize import local_dsnt, window_probabilities

#: Width of the target Gaussian, in pixels (the paper's sigma).
TARGET_SIGMA = 1.0


def gaussian_heatmap(centres: Tensor, shape: tuple[int, int, int],
                     sigma: float = TARGET_SIGMA) -> Tensor:
    """Render the target heatmap: a unit-peak Gaussian at every particle, max-combined.

    Parameters
    ----------
    centres : Tensor
        ``(K, 3)`` float of ``(batch, y, x)``.
    shape : tuple of int
        ``(B, H, W)`` of the heatmap.
    sigma : float
        Gaussian width in pixels.

    Returns
    -------
    Tensor
        ``(B, H, W)`` float in [0, 1].
    """
    b, h, w = shape
    out = torch.zeros(shape, dtype=torch.float32, device=centres.device)
    if len(centres) == 0:
        return out
    r = int(torch.ceil(torch.tensor(3.0 * sigma)).item())
    offsets = torch.arange(-r, r + 1, device=centres.device)
    bi = centres[:, 0].long()
    cy, cx = centres[:, 1], centres[:, 2]
    py = torch.round(cy).long()[:, None, None] + offsets[None, :, None]
    px = torch.round(cx).long()[:, None, None] + offsets[None, None, :]
    py, px = torch.broadcast_tensors(py, px)
    values = torch.exp(-((py - cy[:, None, None]) ** 2 + (px - cx[:, None, None]) ** 2)
                       / (2.0 * sigma * sigma))
    keep = (py >= 0) & (py < h) & (px >= 0) & (px < w)
    flat = (bi[:, None, None] * h * w + py * w + px)[keep]
    out.view(-1).scatter_reduce_(0, flat, values[keep].float(), reduce="amax")
    return out


def balanced_bce(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy with particle and background pixels weighted equally.

    Parameters
    ----------
    logits, target : Tensor
        Same shape; target in [0, 1].

    Returns
    -------
    Tensor
        Scalar loss.
    """
    positive = target.sum()
    total = torch.tensor(float(target.numel()), device=target.device)
    # Weight soft positives up so that both classes carry half the loss.
    pos_weight = ((total - positive) / positive.clamp(min=1.0)).clamp(max=1000.0)
    weight = 1.0 + (pos_weight - 1.0) * target
    loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum")
    return loss / (weight.sum() + 1e-6)


def _window_targets(centres: Tensor, radius: int, sigma: float = TARGET_SIGMA) -> Tensor:
    """Gaussian distribution over each particle's window, centred at its true position."""
    offsets = torch.arange(-radius, radius + 1, device=centres.device, dtype=torch.float32)
    dy = torch.round(centres[:, 1])[:, None] + offsets[None, :] - centres[:, 1:2]
    dx = torch.round(centres[:, 2])[:, None] + offsets[None, :] - centres[:, 2:3]
    g = torch.exp(-(dy[:, :, None] ** 2 + dx[:, None, :] ** 2) / (2 * sigma * sigma))
    g = g.reshape(len(centres), -1)
    return g / g.sum(dim=1, keepdim=True)


def jensen_shannon(p: Tensor, q: Tensor, eps: float = 1e-8) -> Tensor:
    """Mean Jensen-Shannon divergence between rows of two distributions."""
    m = 0.5 * (p + q)
    kl_pm = (p * (torch.log(p + eps) - torch.log(m + eps))).sum(dim=1)
    kl_qm = (q * (torch.log(q + eps) - torch.log(m + eps))).sum(dim=1)
    return (0.5 * (kl_pm + kl_qm)).mean()


def local_terms(logits: Tensor, centres: Tensor, radius: int = 2,
                temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Compute the per-particle detection terms: JS divergence and Euclidean error.

    Parameters
    ----------
    logits : Tensor
        ``(B, H, W)`` heatmap logits.
    centres : Tensor
        ``(K, 3)`` float of true ``(batch, y, x)`` inside the image.
    radius : int
        Half-width of the window.
    temperature : float
        Softmax temperature used at inference too.

    Returns
    -------
    js, euclid : Tensor
        Scalars (zero when there are no particles).
    """
    if len(centres) == 0:
        zero = logits.sum() * 0.0
        return zero, zero
    h, w = logits.shape[-2:]
    integer = torch.stack([
        centres[:, 0].long(),
        torch.round(centres[:, 1]).long().clamp(0, h - 1),
        torch.round(centres[:, 2]).long().clamp(0, w - 1),
    ], dim=1)
    probs = window_probabilities(logits, integer, radius=radius, temperature=temperature)
    js = jensen_shannon(probs, _window_targets(centres, radius))
    yx = local_dsnt(logits, integer, radius=radius, temperature=temperature)
    euclid = torch.linalg.vector_norm(yx - centres[:, 1:], dim=1).mean()
    return js, euclid


def detection_loss(logits: Tensor, centres: Tensor, lam: float = 1.0, radius: int = 2,
                   temperature: float = 1.0) -> tuple[Tensor, dict[str, float]]:
    """Dense balanced BCE to the Gaussian heatmap plus ``lam`` times the local terms.

    Parameters
    ----------
    logits : Tensor
        ``(B, 1, H, W)`` or ``(B, H, W)`` heatmap logits.
    centres : Tensor
        ``(K, 3)`` float of ``(batch, y, x)``.
    lam : float
        Weight of the JS + Euclidean terms (the paper's lambda).
    radius, temperature
        As in :func:`local_terms`.

    Returns
    -------
    loss : Tensor
        Scalar.
    parts : dict
        The value of each term, for progress reports.
    """
    logits = logits.reshape(-1, *logits.shape[-2:])
    target = gaussian_heatmap(centres, tuple(logits.shape))
    dense = balanced_bce(logits, target)
    js, euclid = local_terms(logits, centres, radius, temperature)
    loss = dense + lam * (js + euclid)
    return loss, {"bce": dense.item(), "js": js.item(), "euclid": euclid.item()}


#: Denoising losses :func:`denoising_loss` knows: ours (L1) and the paper's (eq. 1).
DENOISING_LOSSES = ("l1", "dice-bce")


def dice_bce_loss(denoised: Tensor, clean: Tensor, delta: float = 1.0,
                  eps: float = 1e-6) -> Tensor:
    """Return the paper's denoising loss: soft Dice + ``delta`` x balanced BCE (eq. 1).

    Dice and cross-entropy need images in [0, 1]. Both images are mapped there by the
    clean patch's own range (its minimum to 0, its maximum to 1), so the network's output
    stays in normalised units and maps back to the input's intensities at inference; a
    prediction outside the clean range is clipped, where this loss gives no gradient.

    Parameters
    ----------
    denoised, clean : Tensor
        ``(B, 1, H, W)`` in normalised units.
    delta : float
        Weight of the balanced BCE term (the paper's delta).
    eps : float
        The paper's smoothing constant of the Dice ratio.

    Returns
    -------
    Tensor
        Scalar loss.
    """
    dims = tuple(range(1, clean.ndim))
    lo = clean.amin(dim=dims, keepdim=True)
    scale = (clean.amax(dim=dims, keepdim=True) - lo).clamp(min=eps)
    r = (clean - lo) / scale
    p = ((denoised - lo) / scale).clamp(1e-4, 1.0 - 1e-4)
    dice = 1.0 - (2.0 * (p * r).sum(dims) + eps) / (p.sum(dims) + r.sum(dims) + eps)
    return dice.mean() + delta * balanced_bce(torch.logit(p), r)


def denoising_loss(denoised: Tensor, clean: Tensor, kind: str = "l1") -> Tensor:
    """Denoising loss of the joint network.

    Parameters
    ----------
    denoised, clean : Tensor
        ``(B, 1, H, W)`` in the input's normalised units.
    kind : {"l1", "dice-bce"}
        ``"l1"``: mean absolute difference (the bundled models). ``"dice-bce"``: the
        paper's soft Dice + balanced BCE (:func:`dice_bce_loss`).

    Returns
    -------
    Tensor
        Scalar loss.
    """
    if kind == "l1":
        return F.l1_loss(denoised, clean)
    if kind == "dice-bce":
        return dice_bce_loss(denoised, clean)
    raise ValueError(f"unknown denoising loss {kind!r}; choose one of {DENOISING_LOSSES}")


# --------------------------------------------------------------------------- fine-tuning


def blind_spot_mask(noisy: Tensor, fraction: float,
                    generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Replace a random ``fraction`` of pixels by a random neighbour (Noise2Void).

    Parameters
    ----------
    noisy : Tensor
        ``(B, C, H, W)`` batch: one frame, or a window of frames (``C`` > 1), masked at
        the same pixels in every frame, from the same neighbour: a frame repeated in the
        window (at a stack's first or last frame) must not show the masked pixel.
    fraction : float
        Share of pixels to mask.
    generator : torch.Generator
        Source of the random choices.

    Returns
    -------
    masked : Tensor
        The batch with the masked pixels replaced by a pixel of their 5 x 5
        neighbourhood (never themselves).
    mask : Tensor
        ``(B, 1, H, W)`` bool, True where a pixel was replaced.
    """
    b, _, h, w = noisy.shape
    mask = torch.rand((b, 1, h, w), generator=generator) < fraction
    where = mask.nonzero(as_tuple=True)
    n = len(where[0])
    dy = torch.randint(-2, 3, (n,), generator=generator)
    dx = torch.randint(-2, 3, (n,), generator=generator)
    same = (dy == 0) & (dx == 0)
    dx[same] = torch.where(torch.rand(int(same.sum()), generator=generator) < 0.5, -1, 1)
    # A neighbour beyond the border is taken from the other side instead (never itself).
    sy, sx = where[2] + dy, where[3] + dx
    sy = torch.where((sy < 0) | (sy >= h), where[2] - dy, sy)
    sx = torch.where((sx < 0) | (sx >= w), where[3] - dx, sx)
    masked = noisy.clone()
    masked[where[0], :, where[2], where[3]] = noisy[where[0], :, sy, sx]
    return masked, mask


def positive_unlabelled_loss(logits: Tensor, positive: Tensor, negative: Tensor,
                             prior: float) -> Tensor:
    """Class-balanced non-negative PU risk of a heatmap.

    Parameters
    ----------
    logits : Tensor
        ``(B, H, W)`` heatmap logits.
    positive : Tensor
        ``(B, H, W)`` bool, labelled particle pixels.
    negative : Tensor
        ``(B, H, W)`` bool, known background pixels.
    prior : float
        Share of particle pixels among the unlabelled pixels.

    Returns
    -------
    Tensor
        Scalar: half the positive risk plus half the background risk, the latter
        estimated from unlabelled pixels with the positives' share removed, clipped at
        zero (non-negative PU), and from the known negatives where there are any.
    """
    unlabelled = ~(positive | negative)
    loss_as_positive = F.softplus(-logits)
    loss_as_negative = F.softplus(logits)
    zero = logits.sum() * 0.0
    if positive.any():
        risk_positive = loss_as_positive[positive].mean()
        risk_positive_as_negative = loss_as_negative[positive].mean()
    else:
        risk_positive = risk_positive_as_negative = zero
    prior = float(min(max(prior, 0.0), 0.5))
    risk_background = (loss_as_negative[unlabelled].mean()
                       - prior * risk_positive_as_negative) / (1.0 - prior)
    risk_background = risk_background.clamp(min=0.0)
    if negative.any():
        n_neg, n_unl = float(negative.sum()), float(unlabelled.sum())
        known = loss_as_negative[negative].mean()
        # Known negatives count as much as unlabelled pixels, and at least a tenth.
        share = max(n_neg / (n_neg + n_unl), 0.1)
        risk_background = (1 - share) * risk_background + share * known
    return 0.5 * risk_positive + 0.5 * risk_background
