"""Detection engine: a network over a frame or a stack, streamed, batched and tiled.

:func:`detect` is a generator (the project's pattern for long work): it yields a
:class:`DetectProgress` after every forward pass, which is where a caller cancels by
closing it, and returns a :class:`DetectionResult`. :func:`run` drains it for scripts
and tests; the napari face wraps the same generator in a thread worker.

Frames are read from the input batch by batch (:func:`napari_denodet.core.io.load_block`),
so a memory-mapped or dask-backed stack is never read whole, and the denoised frames go
to ``out`` when one is given (e.g. an :func:`~napari_denodet.core.io.open_denoised_output`
writer on disk): memory is bounded by the batch, not by the stack. Each frame is
normalised by its own background and noise scale (:mod:`napari_denodet.core.normalize`)
and the denoised output is mapped back to the input's intensities. Frames larger than
``tile_size`` are cut into overlapping tiles whose centres are stitched into full-frame
outputs; peaks and local DSNT are then found on the stitched heatmap
(:func:`napari_denodet.core.localize.detect_points`), so a particle on a seam is found
once, exactly as in an untiled run.

Tiled and untiled runs agree because the network, with batch norm in evaluation mode,
is a local operator: an output pixel depends on input pixels at most 45 px away (the
receptive field of the default architecture), tiles keep at least ``overlap`` px (48 by
default) of context on every inner side, and tiles start on multiples of
:data:`~napari_denodet.core.network.STRIDE` so they pool on the same grid as the frame.

:func:`prepare_network` makes inference faster without changing results beyond float
rounding: batch norm is folded into the convolutions and, on CPU, activations use the
channels-last layout, for which the oneDNN convolutions are faster. On a CPU with
bfloat16 instructions (AVX512-BF16 or AMX) the network runs in bfloat16 by default
(:func:`choose_precision`): faster, with the same detections (speed and accuracy
measured in ``docs/benchmarks/precision.md``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from napari_denodet.core.device import (  # noqa: F401  (public names, kept here too)
    DEVICES,
    PRECISIONS,
    available_devices,
    choose_device,
    choose_precision,
    native_bfloat16,
)
from napari_denodet.core.errors import InputError
from napari_denodet.core.io import load_block
from napari_denodet.core.localize import BlobScore, blob_response, detect_points
from napari_denodet.core.network import STRIDE
from napari_denodet.core.normalize import FrameScale, normalise_frame
from napari_denodet.core.points import points_table
from napari_denodet.core.progress import Stage

#: A prepared network: ``(B, 1, H, W)`` float32 batch -> ``(denoised, logits)``.
PreparedNetwork = Callable[[Tensor], tuple[Tensor, Tensor]]

#: Pixels per forward pass on CPU when the batch size is automatic: four 512 x 512
#: frames ran fastest (with :func:`keep_heap` in force; docs/architecture.md, Measured
#: choices).
CPU_BATCH_PIXELS = 4 * 512 * 512
#: Frames (or tiles) per forward pass on GPUs when the batch size is automatic.
GPU_BATCH = 4
#: glibc heap above this many free bytes is returned to the system (see keep_heap).
HEAP_TRIM_BYTES = 1 << 30
_heap_kept = False


def keep_heap() -> bool:
    """Stop glibc from handing large activations back to the system after every pass.

    glibc serves blocks above 32 MB with ``mmap`` and unmaps them when freed, so every
    forward pass on a frame of 1024 x 1024 or more page-faults its activations back in.
    With large blocks kept on the heap (``M_MMAP_MAX`` = 0, heap trimmed only above
    :data:`HEAP_TRIM_BYTES`) the cost grows linearly with pixels (docs/architecture.md,
    Measured choices). Called once per process on CPU runs; a no-op (False) where the
    C library is not glibc.

    Returns
    -------
    bool
        Whether the setting is in force.
    """
    global _heap_kept
    if _heap_kept:
        return True
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    _heap_kept = bool(mallopt(m_mmap_max, 0)) and bool(
        mallopt(m_trim_threshold, HEAP_TRIM_BYTES))
    return _heap_kept
#: Lowest peak probability of a candidate that :func:`detect` keeps by default.
DEFAULT_FLOOR = 0.05
_Result = TypeVar("_Result")


def floor_for(threshold: float, localisation: dict) -> float:
    """Return the engine floor that keeps every candidate scoring at least ``threshold``.

    The floor applies to the peak probability; a ``blob`` term
    (:class:`~napari_denodet.core.localize.BlobScore`) can lift a score above it by up
    to its weight, so the floor is that much lower (never below :data:`DEFAULT_FLOOR`).

    Parameters
    ----------
    threshold : float
        The score threshold that will be applied.
    localisation : dict
        The model's :attr:`~napari_denodet.core.models.Model.localisation`.
    """
    lift = float((localisation.get("blob") or {}).get("weight", 0.0))
    return max(DEFAULT_FLOOR, threshold - lift)


def _fold_batch_norms(module: nn.Module) -> None:
    # A convolution followed by an eval-mode batch norm is one affine map per output
    # channel: fold it into the convolution's weights and bias, and drop the norm.
    for child in module.modules():
        if not isinstance(child, nn.Sequential):
            continue
        for i in range(len(child) - 1):
            conv, norm = child[i], child[i + 1]
            if (
                isinstance(conv, nn.Conv2d)
                and type(norm) is nn.BatchNorm2d
                and norm.track_running_stats
                and norm.num_features == conv.out_channels
            ):
                child[i] = fuse_conv_bn_eval(conv, norm)
                child[i + 1] = nn.Identity()


class _Prepared:
    # A frozen evaluation copy of a network; the caller's module is never modified.

    def __init__(self, network: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        model = copy.deepcopy(network).eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        _fold_batch_norms(model)
        # Channels-last convolutions run faster on CPU (docs/architecture.md, Measured
        # choices). Other devices keep their default layout.
        self.memory_format = (
            torch.channels_last if device.type == "cpu" else torch.contiguous_format
        )
        self.model = model.to(device=device, dtype=dtype, memory_format=self.memory_format)
        self.device, self.dtype = device, dtype

    def __call__(self, batch: Tensor) -> tuple[Tensor, Tensor]:
        batch = batch.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)
        denoised, logits = self.model(batch)
        return (denoised.to(torch.float32).contiguous(),
                logits.to(torch.float32).contiguous())


def prepare_network(
    network: nn.Module, device: torch.device | str = "cpu", precision: str = "float32"
) -> PreparedNetwork:
    """Return a fast inference copy of ``network`` on ``device``.

    The copy is in evaluation mode with gradients off, its batch norms are folded into
    the preceding convolutions, and on CPU it runs in the channels-last layout. In
    float32, outputs equal those of ``network.eval()`` up to float rounding (about 1e-5
    on the logits); in bfloat16 to about 3 significant digits (logits within about 0.1).
    Preparing takes milliseconds, so it is done afresh on every call: a network being
    fine-tuned in place is never served from a stale copy.

    Parameters
    ----------
    network : torch.nn.Module
        A module mapping a ``(B, 1, H, W)`` batch to ``(denoised, heatmap_logits)``.
    device : torch.device or str
        Where to run it.
    precision : str
        ``"float32"``, ``"bfloat16"`` or ``"auto"`` (:func:`choose_precision`).

    Returns
    -------
    callable
        Takes a ``(B, 1, H, W)`` float32 tensor (moved to ``device`` if needed) and
        returns float32 ``(denoised, logits)``, each ``(B, 1, H, W)`` on ``device``.
        Call it under :func:`torch.inference_mode`.
    """
    device = torch.device(device)
    return _Prepared(network, device, choose_precision(precision, device))


@dataclass(frozen=True)
class DetectProgress:
    """Progress of :func:`detect`, yielded after every forward pass.

    Attributes
    ----------
    stage : Stage
        ``Stage.DETECT`` (``Stage.CHOOSE`` when re-yielded by
        :func:`~napari_denodet.core.choice.choose_model`).
    step, total : int
        Forward passes (batches of frames, or of tiles of a large frame) done and in all.
    frames_done, frames_total : int
        Frames fully processed (denoised and detected) and to process.
    """

    stage: Stage
    step: int
    total: int
    frames_done: int
    frames_total: int


@dataclass
class DetectionResult:
    """What :func:`detect` returns.

    Attributes
    ----------
    denoised : numpy.ndarray or array_like
        float32 denoised frames in the input's intensity scale: ``(y, x)`` for a single
        image, ``(n, y, x)`` for the ``n`` processed frames of a stack; the ``out``
        given to :func:`detect`, if any.
    points : pandas.DataFrame
        Points table (:mod:`napari_denodet.core.points`): ``frame`` (stacks only, the
        absolute frame index in the input), ``y``, ``x``, ``score`` and ``intensity``
        (the denoised value at the rounded position). Every candidate whose peak
        probability is at least ``floor`` is kept; thresholds are applied afterwards.
    scales : list of FrameScale
        Normalisation of each processed frame, in order.
    first_frame : int
        Index in the input of ``denoised[0]`` (0 for single images and whole stacks).
    non_finite : int
        Pixels of the processed frames that were NaN or infinite and were treated as
        background (:func:`~napari_denodet.core.normalize.normalise_frame`).
    """

    denoised: Any
    points: pd.DataFrame
    scales: list[FrameScale]
    first_frame: int = 0
    non_finite: int = 0


def _axis_windows(size: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    # Windows (start, stop) along one axis, all of one length, starting on multiples of
    # STRIDE; the last one ends on the frame edge so it is padded exactly like the whole
    # frame, which needs length == size (mod STRIDE). Each window keeps (keep_start,
    # keep_stop): the seams lie midway through the overlaps, at least `margin` px from
    # every window edge that is not a frame edge.
    core = max(STRIDE, tile // STRIDE * STRIDE)
    margin = -(-overlap // STRIDE) * STRIDE
    length = core + 2 * margin
    length += (size - length) % STRIDE
    if size <= length:
        return [(0, size, 0, size)]
    last = (size - length) // STRIDE
    gaps = -(-last // (core // STRIDE))
    starts = [STRIDE * (i * last // gaps) for i in range(gaps + 1)]
    seams = [(a + length + b) // 2 for a, b in pairwise(starts)]
    keeps = [0, *seams, size]
    return [(s, s + length, keeps[i], keeps[i + 1]) for i, s in enumerate(starts)]


def _tiles(height: int, width: int, tile: int, overlap: int) -> list[tuple[slice, ...]]:
    # (window_y, window_x, keep_y, keep_x) slices: the window in the frame, and the kept
    # part both in frame coordinates and in window coordinates.
    tiles = []
    for wy0, wy1, ky0, ky1 in _axis_windows(height, tile, overlap):
        for wx0, wx1, kx0, kx1 in _axis_windows(width, tile, overlap):
            tiles.append(
                (
                    (slice(wy0, wy1), slice(wx0, wx1)),
                    (slice(ky0, ky1), slice(kx0, kx1)),
                    (slice(ky0 - wy0, ky1 - wy0), slice(kx0 - wx0, kx1 - wx0)),
                )
            )
    return tiles


def _auto_batch_size(device: torch.device, pixels: int) -> int:
    if device.type == "cpu":
        return max(1, CPU_BATCH_PIXELS // pixels)
    return GPU_BATCH


def _check_frames(frames: Sequence[int] | None, n_frames: int, stack: bool) -> tuple[int, int]:
    if frames is None:
        return 0, n_frames
    if not stack:
        raise InputError(None, "a frame range applies to a (t, y, x) stack, not a single image")
    try:
        start, stop = (int(f) for f in frames)
    except (TypeError, ValueError):
        raise InputError(
            None, f"frames must be a (start, stop) pair of integers, got {frames!r}"
        ) from None
    if not 0 <= start < stop <= n_frames:
        raise InputError(
            None,
            f"frame range ({start}, {stop}) is not within the stack's {n_frames} frames "
            "(start is included, stop excluded)",
        )
    return start, stop


@dataclass
class _Detections:
    # Per-frame detections collected while streaming; concatenated at the end.
    frame: list[np.ndarray]
    y: list[np.ndarray]
    x: list[np.ndarray]
    score: list[np.ndarray]
    intensity: list[np.ndarray]
    blob: BlobScore | None = None

    def add(self, found: dict[str, Tensor], first: int, denoised: np.ndarray,
            normalised: np.ndarray) -> None:
        # ``denoised``: the batch's (B, H, W) frames in the input's scale; ``normalised``:
        # the same as the network gave them (for the blob score).
        b = found["batch"].cpu().numpy()
        y = found["y"].cpu().numpy().astype(np.float64)
        x = found["x"].cpu().numpy().astype(np.float64)
        height, width = denoised.shape[-2:]
        iy = np.clip(np.rint(y).astype(np.int64), 0, height - 1)
        ix = np.clip(np.rint(x).astype(np.int64), 0, width - 1)
        score = found["score"].cpu().numpy().astype(np.float64)
        if self.blob is not None:
            score = self.blob.apply(score, blob_response(normalised, b, y, x, self.blob.sigma))
        self.frame.append(first + b)
        self.y.append(y)
        self.x.append(x)
        self.score.append(score)
        self.intensity.append(denoised[b, iy, ix].astype(np.float64))

    def table(self, stack: bool) -> pd.DataFrame:
        def joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0, dtype)

        return points_table(
            joined(self.y, np.float64),
            joined(self.x, np.float64),
            frame=joined(self.frame, np.int64) if stack else None,
            score=joined(self.score, np.float64),
            intensity=joined(self.intensity, np.float64),
        )


def detect(
    image: Any,
    network: nn.Module,
    *,
    invert: bool = False,
    batch_size: int | None = None,
    tile_size: int = 1024,
    overlap: int = 48,
    device: str = "auto",
    precision: str = "auto",
    floor: float = DEFAULT_FLOOR,
    radius: int = 2,
    min_distance: int = 3,
    temperature: float = 1.0,
    merge_ratio: float = 0.0,
    blob: dict | None = None,
    frames: Sequence[int] | None = None,
    out: Any = None,
) -> Generator[DetectProgress, None, DetectionResult]:
    """Denoise frames and detect particles in them with a DENODET network.

    Parameters
    ----------
    image : array_like
        ``(y, x)`` image or ``(t, y, x)`` stack, any numeric dtype; anything that slices
        like a numpy array (e.g. a :class:`numpy.memmap`), read one batch at a time.
        A network that reads a window of ``w`` frames (:func:`network_window`) sees
        each frame of a stack among its neighbours (the first and last frames, and a
        single image, repeat themselves where neighbours are missing); it also takes
        ``(n, w, y, x)`` windows given whole, each detected in its middle frame.
    network : torch.nn.Module
        Maps a normalised ``(B, C, H, W)`` batch to ``(denoised, heatmap_logits)``; run
        in evaluation mode on a copy (:func:`prepare_network`), never modified.
    invert : bool
        Particles are darker than the background (cryo-EM).
    batch_size : int, optional
        Frames (or tiles of one large frame) per forward pass. By default as many as
        fit in :data:`CPU_BATCH_PIXELS` (at least one) on CPU, and :data:`GPU_BATCH`
        on GPUs.
    tile_size : int
        Frames with a side longer than this are tiled. Tiles keep about ``tile_size``
        px per side (rounded to a multiple of 4) and feed the network that plus
        ``overlap`` px of context on each side.
    overlap : int
        Context around each tile, rounded up to a multiple of 4; at least the network's
        receptive radius (45 px for the default architecture) for tiled results to equal
        untiled ones.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"`` (:func:`choose_device`).
    precision : str
        Arithmetic of the forward pass: ``"auto"`` (bfloat16 on CPUs with native
        bfloat16 instructions, else float32), ``"float32"`` or ``"bfloat16"``
        (:func:`choose_precision`).
    floor : float
        Lowest peak probability kept (before any ``blob`` term).
    radius : int
        Half-width of the local DSNT window.
    min_distance : int
        Half-width of the peak suppression window.
    temperature : float
        Softmax temperature of the local DSNT.
    merge_ratio : float
        Merge shallow double peaks (see
        :func:`~napari_denodet.core.localize.merge_shallow_peaks`); 0 keeps every peak.
    blob : dict, optional
        The fields of a :class:`~napari_denodet.core.localize.BlobScore` (a card's
        ``localisation.blob``): scores then combine the peak probability with the blob
        response of the denoised output. Without it a score is the peak probability.
    frames : (int, int), optional
        ``(start, stop)`` range of a stack's frames to process, stop excluded.
    out : array_like, optional
        Where the denoised frames go, one batch (or one tiled frame) at a time, as
        ``out[a:b] = frames`` for stacks and ``out[...] = image`` for single images: a
        :class:`~napari_denodet.core.io.FrameWriter`, a writable :class:`numpy.memmap`, a
        Zarr array... Its shape must be ``(n, y, x)`` for the ``n`` processed frames of a
        stack, or ``(y, x)``. By default a float32 array in memory.

    Yields
    ------
    DetectProgress
        After every forward pass; close the generator to stop.

    Returns
    -------
    DetectionResult
        Denoised frames, the points table and the frame normalisations.

    Raises
    ------
    InputError
        For an image that is not 2D or 3D, a bad frame range or setting, an ``out`` of
        the wrong shape, a device that is not available, an unknown precision, or a
        frame without a single finite pixel. NaN and infinite pixels of other frames
        are treated as background and counted in the result's ``non_finite``.
    """
    shape = tuple(int(n) for n in np.shape(image))
    blob_score = _checked_settings(shape, network, batch_size, tile_size, overlap, blob)
    stack = len(shape) >= 3
    given_windows = len(shape) == 4
    height, width = shape[-2:]
    start, stop = _check_frames(frames, shape[0] if stack else 1, stack)
    torch_device = choose_device(device)
    if torch_device.type == "cpu":
        keep_heap()
    model = prepare_network(network, torch_device, precision)
    settings = {"floor": floor, "radius": radius, "min_distance": min_distance,
                "temperature": temperature, "merge_ratio": merge_ratio}

    n_frames = stop - start
    expected = (n_frames, height, width) if stack else (height, width)
    out = _denoised_output(out, expected)
    scales: list[FrameScale] = []
    found = _Detections([], [], [], [], [], blob_score)

    non_finite = 0

    half = network_window(network) // 2
    total_frames = shape[0] if stack else 1

    def read(first: int, last: int) -> list[tuple[np.ndarray, FrameScale]]:
        # Frames first..last-1, normalised, each as the network reads it: one frame, or
        # its window of neighbours (the frame itself where one is missing:
        # window_indices).
        nonlocal non_finite
        if given_windows:
            return [_normalised_window(window, invert, first + i, half)
                    for i, window in enumerate(load_block(image[first:last]))]
        low, high = max(first - half, 0), min(last + half, total_frames)
        block = load_block(image[low:high] if stack else image)
        block = block if stack else block[None]
        frames = []
        for i, frame in enumerate(block):
            normalised, scale, bad = normalise_frame(frame, invert,
                                                     low + i if stack else None)
            if first <= low + i < last:
                non_finite += bad
            frames.append((normalised, scale))
        if not half:
            return frames
        windows = []
        for index in range(first, last):
            around = [j - low for j in window_indices(index, 2 * half + 1, 0, total_frames - 1)]
            windows.append((np.stack([frames[j][0] for j in around]), frames[index - low][1]))
        return windows

    def write(first: int, frames: np.ndarray) -> None:
        if stack:
            out[first - start : first - start + len(frames)] = frames
        else:
            out[...] = frames[0]

    if height <= tile_size and width <= tile_size:
        batch_size = batch_size or _auto_batch_size(torch_device, height * width)
        total = -(-n_frames // batch_size)
        for step, first in enumerate(range(start, stop, batch_size), start=1):
            last = min(first + batch_size, stop)
            normalised = read(first, last)
            scales.extend(scale for _, scale in normalised)
            write(first, _run_frames(model, normalised, found, first, settings))
            yield DetectProgress(Stage.DETECT, step, total, last - start, n_frames)
    else:
        tiles = _tiles(height, width, tile_size, overlap)
        (window_y, window_x), _, _ = tiles[0]
        tile_pixels = (window_y.stop - window_y.start) * (window_x.stop - window_x.start)
        batch_size = batch_size or _auto_batch_size(torch_device, tile_pixels)
        per_frame = -(-len(tiles) // batch_size)
        total = n_frames * per_frame
        step = 0
        for index in range(start, stop):
            ((frame, scale),) = read(index, index + 1)
            scales.append(scale)
            stitched = _Stitched.empty(height, width, model)
            for i in range(0, len(tiles), batch_size):
                stitched.add(model, frame, tiles[i : i + batch_size])
                step += 1
                done = i + batch_size >= len(tiles)
                if done:
                    write(index, stitched.finish(scale, found, index, settings))
                yield DetectProgress(Stage.DETECT, step, total, index - start + int(done),
                                     n_frames)

    return DetectionResult(
        denoised=out,
        points=found.table(stack),
        scales=scales,
        first_frame=start,
        non_finite=non_finite,
    )


def _normalised_window(window: np.ndarray, invert: bool, index: int,
                       half: int) -> tuple[np.ndarray, FrameScale]:
    # A window given whole (frames around one frame, e.g. the clicked frames' windows of
    # a fine-tuning run): each frame normalised on its own; the centre's scale returned.
    frames = [normalise_frame(frame, invert, index) for frame in window]
    return np.stack([frame for frame, _, _ in frames]), frames[half][1]


def window_indices(centre: int, window: int, first: int, last: int) -> list[int]:
    """Frames a network with a ``window`` reads to detect in frame ``centre``.

    The one rule for neighbours, at inference and in training: a neighbour outside the
    frames ``first..last`` (the stack ends there, or there is a single image) is
    replaced by the centre frame itself.

    Parameters
    ----------
    centre : int
        The frame detected in, the middle of the window.
    window : int
        Odd number of frames.
    first, last : int
        The frames that exist (both included).

    Returns
    -------
    list of int
        ``window`` frame indices, oldest first.
    """
    half = window // 2
    return [j if first <= j <= last else centre for j in range(centre - half, centre + half + 1)]


def network_window(network: nn.Module) -> int:
    """Frames a network reads per detection: 1, or an odd window centred on the frame.

    Parameters
    ----------
    network : torch.nn.Module
        A DENODET network; its input channels are the window.

    Returns
    -------
    int
        The window (1 for single-frame networks and networks without a config).
    """
    return int(getattr(getattr(network, "config", None), "in_channels", 1))


def _denoised_output(out: Any, expected: tuple[int, ...]) -> Any:
    # Where the denoised frames go: a float32 array in memory, or ``out`` if it fits.
    if out is None:
        return np.empty(expected, dtype=np.float32)
    if tuple(np.shape(out)) != expected:
        raise InputError(None, f"out has shape {tuple(np.shape(out))}; this run writes "
                               f"{expected}")
    return out


def _checked_settings(shape: tuple[int, ...], network: nn.Module, batch_size: int | None,
                      tile_size: int, overlap: int, blob: dict | None) -> BlobScore | None:
    # The arguments of detect checked (one line each when wrong); returns the blob term.
    channels = network_window(network)
    windows = len(shape) == 4 and channels > 1 and shape[1] == channels
    if (len(shape) not in (2, 3) and not windows) or min(shape, default=0) < 1:
        raise InputError(None, f"expected a (y, x) image or a (t, y, x) stack, got shape {shape}")
    if channels % 2 == 0:
        raise InputError(None, f"this network expects {channels} channels; images have 1 "
                               "(a window of frames has an odd number)")
    for name, value, lowest in (
        ("batch_size", 1 if batch_size is None else batch_size, 1),
        ("tile_size", tile_size, 1),
        ("overlap", overlap, 0),
    ):
        if not isinstance(value, (int, np.integer)) or value < lowest:
            raise InputError(None, f"{name} must be an integer >= {lowest}, got {value!r}")
    try:
        return None if blob is None else BlobScore(**blob)
    except (TypeError, ValueError) as error:
        raise InputError(None, f"bad blob score settings {blob!r}: {error}") from None


@torch.inference_mode()
def _run_frames(
    model: PreparedNetwork,
    normalised: list[tuple[np.ndarray, FrameScale]],
    found: _Detections,
    first: int,
    settings: dict[str, Any],
) -> np.ndarray:
    # One forward pass over whole frames, then detection on their heatmaps; returns the
    # denoised frames in the input's intensity scale.
    batch = np.stack([frame for frame, _ in normalised])
    den, logits = model(torch.from_numpy(batch if batch.ndim == 4 else batch[:, None]))
    den = den[:, 0].cpu().numpy()
    out = np.empty(den.shape, dtype=np.float32)
    for i, (_, scale) in enumerate(normalised):
        out[i] = scale.inverse(den[i])
    found.add(detect_points(logits[:, 0], **settings), first, out, den)
    return out


@dataclass
class _Stitched:
    # Full-frame network outputs assembled from the kept centres of tiles.
    denoised: Tensor
    logits: Tensor

    @classmethod
    @torch.inference_mode()
    def empty(cls, height: int, width: int, model: PreparedNetwork) -> _Stitched:
        device = getattr(model, "device", torch.device("cpu"))
        return cls(
            torch.empty(height, width, device=device),
            torch.empty(1, height, width, device=device),
        )

    @torch.inference_mode()
    def add(self, model: PreparedNetwork, frame: np.ndarray, tiles: list) -> None:
        batch = np.stack([frame[(..., *window)] for window, _, _ in tiles])
        den, logits = model(torch.from_numpy(batch if batch.ndim == 4 else batch[:, None]))
        for i, (_, keep, inner) in enumerate(tiles):
            self.denoised[keep] = den[i, 0][inner].to(self.denoised.device)
            self.logits[0][keep] = logits[i, 0][inner].to(self.logits.device)

    @torch.inference_mode()
    def finish(
        self, scale: FrameScale, found: _Detections, index: int, settings: dict[str, Any]
    ) -> np.ndarray:
        # Detection on the stitched heatmap; returns the (1, H, W) denoised frame.
        normalised = self.denoised.cpu().numpy()[None]
        out = np.asarray(scale.inverse(normalised[0]), np.float32)[None]
        found.add(detect_points(self.logits, **settings), index, out, normalised)
        return out


def run(generator: Generator[Any, Any, _Result]) -> _Result:
    """Drain a generator and return its return value.

    Parameters
    ----------
    generator : Generator
        E.g. ``detect(image, network)``; what it yields is discarded.

    Returns
    -------
    object
        The generator's return value.
    """
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value
