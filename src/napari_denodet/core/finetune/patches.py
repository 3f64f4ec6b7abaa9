"""Training patches for fine-tuning: drawn, augmented and batched with their labels.

Patches are drawn around clicks (so that each step sees labels) and anywhere in the
images (so that the unlabelled risk sees the whole background), and augmented by flips
and 90-degree rotations.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from napari_denodet.core.errors import InputError
from napari_denodet.core.finetune.clicks import _Frame
from napari_denodet.core.network import STRIDE


def _patch_size(frames: list[_Frame], wanted: int) -> int:
    smallest = min(min(f.shape) for f in frames)
    size = min(wanted, smallest) // STRIDE * STRIDE
    if size < 16:
        raise InputError(None, f"the image is too small to fine-tune on ({smallest} px; "
                               "at least 16 px per side)")
    return size


def _draw_patch(frames: list[_Frame], size: int, near_click: bool,
                rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # One patch (image and completely clicked region) and its positives, negatives and
    # pseudo-labels, in the patch's pixels.
    if near_click:
        counts = np.array([len(f.positives) for f in frames], dtype=float)
        frame = frames[int(rng.choice(len(frames), p=counts / counts.sum()))]
        cy, cx = frame.positives[int(rng.integers(len(frame.positives)))]
        margin = min(8, size // 4)
        y0 = int(round(cy)) - int(rng.integers(margin, size - margin))
        x0 = int(round(cx)) - int(rng.integers(margin, size - margin))
    else:
        frame = frames[int(rng.integers(len(frames)))]
        y0 = int(rng.integers(0, frame.shape[0] - size + 1))
        x0 = int(rng.integers(0, frame.shape[1] - size + 1))
    h, w = frame.shape
    y0, x0 = min(max(y0, 0), h - size), min(max(x0, 0), w - size)
    # (channels + 1, size, size): the frame (or its window), then the clicked region.
    image = frame.image.reshape(-1, h, w)
    patch = np.concatenate([image[:, y0 : y0 + size, x0 : x0 + size],
                            frame.region[None, y0 : y0 + size, x0 : x0 + size]])

    def inside(points):
        shifted = points - (y0, x0)
        keep = np.all((shifted >= -0.5) & (shifted < size - 0.5), axis=1)
        return shifted[keep]

    return patch, inside(frame.positives), inside(frame.negatives), inside(frame.pseudo)


def _augment(patch: np.ndarray, pos: np.ndarray, neg: np.ndarray, k: int, flip: bool):
    # Rotate by k x 90 degrees, then maybe flip left-right; points follow.
    size = patch.shape[-1]

    def move(points):
        for _ in range(k):
            points = np.stack([size - 1 - points[:, 1], points[:, 0]], axis=1)
        if flip:
            points = np.stack([points[:, 0], size - 1 - points[:, 1]], axis=1)
        return points.reshape(-1, 2)

    out = np.rot90(patch, k, axes=(-2, -1))
    if flip:
        out = out[..., ::-1]
    return np.ascontiguousarray(out), move(pos), move(neg)


def _batch(frames, size, settings, rng):
    # (B, C, size, size) noisy patches, their positives and negatives as (patch, y, x)
    # rows, and (B, size, size) bool of the completely clicked region.
    patches, positives, negatives = [], [], []
    n_click = int(round(settings.batch_size * settings.click_patch_fraction))
    n_click = min(max(n_click, 1), settings.batch_size)
    for i in range(settings.batch_size):
        patch, pos, neg, pseudo = _draw_patch(frames, size, i < n_click, rng)
        # Pseudo-labels are learnt as particles, like the clicks.
        patch, pos, neg = _augment(patch, np.concatenate([pos, pseudo]), neg,
                                   int(rng.integers(4)), rng.random() < 0.5)
        patches.append(patch)
        positives.append(np.column_stack([np.full(len(pos), i), pos]))
        negatives.append(np.column_stack([np.full(len(neg), i), neg]))
    stacked = np.stack(patches).astype(np.float32)
    noisy = torch.from_numpy(np.ascontiguousarray(stacked[:, :-1]))
    region = torch.from_numpy(stacked[:, -1] > 0.5)

    def centres(parts):
        return torch.from_numpy(np.concatenate(parts).astype(np.float32)).reshape(-1, 3)

    return noisy, centres(positives), centres(negatives), region


def _transform(x: Tensor, k: int, flip: bool) -> Tensor:
    # The consistency term's copy of a batch: as `_augment`, on (..., H, W) tensors.
    x = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def _disk_mask(points: Tensor, shape: tuple[int, int, int], radius: float) -> Tensor:
    # (B, H, W) bool: pixels within `radius` of any (batch, y, x) point.
    out = torch.zeros(shape, dtype=torch.bool)
    if len(points) == 0:
        return out
    r = int(math.ceil(radius))
    offsets = torch.arange(-r, r + 1)
    py = torch.round(points[:, 1]).long()[:, None, None] + offsets[None, :, None]
    px = torch.round(points[:, 2]).long()[:, None, None] + offsets[None, None, :]
    py, px = torch.broadcast_tensors(py, px)
    near = (py - points[:, 1, None, None]) ** 2 + (px - points[:, 2, None, None]) ** 2
    keep = (near <= radius * radius) & (py >= 0) & (py < shape[1]) & (px >= 0) & (px < shape[2])
    b = points[:, 0].long()[:, None, None].expand_as(py)
    out[b[keep], py[keep], px[keep]] = True
    return out
