"""Supervised training of the joint network on simulated data.

Training is a generator (the project's pattern for long work): it yields a
:class:`TrainProgress` after every step and returns a :class:`TrainedModel`; the CLI
wraps it in a progress bar, tests drain it, and closing it stops the run at the next
step. Every batch is simulated afresh from randomised parameters (scenario, SNR,
density, PSF width, background), cut to patches and augmented by flips and 90-degree
rotations, so the network never sees the same image twice. Checkpoints make a run
resumable; the same seed gives the same model.

The schedule follows the paper where it converges on a CPU: Adam, a detection-only
warm-up (gamma = 0) and then the joint loss (gamma = 0.5), and a plateau scheduler on
the validation loss. Deviations (learning rate, scheduler patience, denoising loss) are
recorded in the model card.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from napari_denodet.core.errors import InputError
from napari_denodet.core.localize import detect_points
from napari_denodet.core.losses import DENOISING_LOSSES, denoising_loss, detection_loss
from napari_denodet.core.metrics import f1_by_threshold, score_detections
from napari_denodet.core.network import Denodet, NetworkConfig, build_network, train_mode
from napari_denodet.core.normalize import frame_scale
from napari_denodet.core.points import points_table
from napari_denodet.core.predict import window_indices
from napari_denodet.core.progress import Stage
from napari_denodet.core.simulate import (
    SCENARIOS,
    draw_formation,
    simulate_micrograph,
    simulate_timelapse,
)
from napari_denodet.core.simulate.formation import RANGES

#: Training scenarios: one per particle type, a mix of all fluorescence types, or EM.
TRAIN_SCENARIOS = ("fluorescence", *SCENARIOS, "micrograph")
_DEFAULT_SNR = {"micrograph": (0.03, 0.6)}
# Up to 40: bright spots (SNR 15+) were missed entirely by a model trained to 10.
_FLUORESCENCE_SNR = (0.8, 40.0)
_VALIDATION_SEED = 1_000_000_000  # seeds the validation stream, apart from training's
#: Training domains of fluorescence models: the PTC-like world alone, or the realistic
#: image formation (:mod:`napari_denodet.core.simulate.formation`) around it.
DOMAINS = ("ptc", "realistic")
#: Share of the realistic domain's patches drawn from the plain PTC-like world, by
#: default (``TrainSettings.ptc_share``).
PTC_SHARE = 0.25


@dataclass(frozen=True)
class TrainSettings:
    """Everything that defines a training run (saved in the model card).

    Parameters
    ----------
    scenario : str
        One of :data:`TRAIN_SCENARIOS`.
    steps : int
        Optimiser steps.
    batch_size, patch_size : int
        Patches per step and their edge in pixels.
    learning_rate : float
        Adam's initial learning rate.
    gamma : float
        Weight of the denoising loss after the warm-up (the paper's gamma).
    lam : float
        Weight of the local JS + Euclidean detection terms (the paper's lambda).
    warmup_fraction : float
        Fraction of the steps trained on detection only (gamma = 0).
    settle_fraction : float
        Fraction of the last steps trained with the batch-norm statistics frozen (as at
        inference) at a tenth of the learning rate. Batch statistics in training and
        running statistics at inference differ; without this phase the denoised
        background sat too high (see docs/models-history.md, History).
    snr_range : tuple of float, optional
        SNRs drawn log-uniformly; by default 0.8–40 (fluorescence), 0.03–0.6 (EM).
    seed : int
        Seeds the simulator, the augmentation and the network initialisation.
    eval_every : int
        Steps between validations (which also feed the plateau scheduler).
    radius, temperature
        Local DSNT window half-width and softmax temperature.
    validation_patches : int
        Fixed 128 x 128 validation patches, spread over the SNR range.
    min_distance : int
        Peaks closer than this (px) are one particle. 3 rather than 2: elongated
        microtubule comets otherwise give two peaks (see docs/models-history.md,
        Inference settings).
    network : NetworkConfig
        The network's shape.
    denoising_loss : {"l1", "dice-bce"}
        L1 to the clean patch (default), or the paper's soft Dice + balanced BCE.
    halo_range, blur_range : tuple of float
        Micrographs only: the ranges each patch draws its phase-contrast fringe strength
        and its low-pass width (px) from (``halo`` and ``blur`` of
        :func:`~napari_denodet.core.simulate.simulate_micrograph`). ``(0, 0)``, the
        default, simulates neither.
    correlated_noise : float
        Time-lapses only: the largest width (px) of the spatial correlation given to the
        noise of half the patches, drawn per patch and axis from ``[0, correlated_noise]``
        (:func:`~napari_denodet.core.simulate.correlate_noise`); the other half keep
        white Poisson noise. 0, the default, keeps every patch white. In the realistic
        domain it applies to the PTC-like share (``ptc_share``) only: the randomised
        formation's camera draws correlated noise of its own.
    domain : {"ptc", "realistic"}
        ``"realistic"`` draws each time-lapse patch's camera, background structure, PSF
        width, intensities and clusters from
        :data:`~napari_denodet.core.simulate.formation.RANGES`, and each micrograph
        patch's radius, fringe, low-pass, contrast transfer and detector artefacts from
        :data:`MICROGRAPH_DOMAIN` (all but ``ptc_share`` of the patches; each patch's
        draw comes from its own seed, so any patch can be made again); ``"ptc"``, the
        default, the PTC-like world alone (and the halo and blur ranges).
    ptc_share : float
        The realistic domain only: share of the patches drawn from the plain PTC-like
        world (default :data:`PTC_SHARE`).
    init : str, optional
        A model (bundled name or ``.pt`` path) whose weights the network starts from,
        instead of a random initialisation; its shape must match ``network``, except
        that a single-frame model can start a model with a time window (its weights go
        to the centre frame, the neighbours start at zero: the start detects exactly as
        the single-frame model does).
    window_init : {"centre", "sum"}
        How a single-frame ``init`` model's input weights are grown to the window:
        ``"centre"`` puts them on the centre frame (neighbours at zero: the start
        detects exactly as the single-frame model); ``"sum"`` gives every frame of the
        window those weights over the square root of the window, so that the start sees
        the window's sum, scaled to the noise of one frame: a still particle stands out
        of the noise as in a frame of higher SNR.
    window : int
        Time-lapses only: frames the network sees, centred on the frame it detects in
        (1, the default: frame by frame; 3: the frames before and after too). It
        becomes the network's input channels. :data:`EDGE_SHARE` of the patches repeat
        the centre frame in place of some neighbours, as at the first and last frames
        of a stack and for single images (:func:`time_window`).
    """

    scenario: str = "fluorescence"
    steps: int = 2000
    batch_size: int = 8
    patch_size: int = 96
    learning_rate: float = 1e-3
    gamma: float = 0.5
    lam: float = 1.0
    warmup_fraction: float = 0.15
    settle_fraction: float = 0.2
    snr_range: tuple[float, float] | None = None
    seed: int = 0
    eval_every: int = 250
    radius: int = 2
    temperature: float = 1.0
    min_distance: int = 3
    validation_patches: int = 16
    network: NetworkConfig = field(default_factory=NetworkConfig)
    denoising_loss: str = "l1"
    halo_range: tuple[float, float] = (0.0, 0.0)
    blur_range: tuple[float, float] = (0.0, 0.0)
    correlated_noise: float = 0.0
    domain: str = "ptc"
    ptc_share: float = PTC_SHARE
    init: str | None = None
    window: int = 1
    window_init: str = "centre"

    def __post_init__(self) -> None:
        if self.scenario not in TRAIN_SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; choose one of "
                             f"{', '.join(TRAIN_SCENARIOS)}")
        if self.denoising_loss not in DENOISING_LOSSES:
            raise ValueError(f"unknown denoising loss {self.denoising_loss!r}; choose one "
                             f"of {', '.join(DENOISING_LOSSES)}")
        if self.steps < 1 or self.batch_size < 1 or self.patch_size < 16:
            raise ValueError("steps and batch_size must be >= 1 and patch_size >= 16")
        if not 0.0 <= self.warmup_fraction + self.settle_fraction <= 1.0 \
                or min(self.warmup_fraction, self.settle_fraction) < 0.0:
            raise ValueError("warmup_fraction and settle_fraction must be >= 0 and sum "
                             "to at most 1")
        for name in ("halo_range", "blur_range"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high:
                raise ValueError(f"{name} must be two numbers 0 <= low <= high, got "
                                 f"{(low, high)}")
        if self.scenario != "micrograph" and max(*self.halo_range, *self.blur_range) > 0:
            raise ValueError("halo_range and blur_range apply to micrographs only")
        if not self.correlated_noise >= 0:
            raise ValueError(f"correlated_noise must be >= 0, got {self.correlated_noise}")
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}; choose one of "
                             f"{', '.join(DOMAINS)}")
        if not 0.0 <= self.ptc_share <= 1.0:
            raise ValueError(f"ptc_share must be between 0 and 1, got {self.ptc_share}")
        if self.domain != "realistic" and self.ptc_share != PTC_SHARE:
            raise ValueError("ptc_share applies to the realistic domain only")
        if self.scenario == "micrograph" and self.correlated_noise > 0:
            raise ValueError("correlated_noise applies to time-lapses only (micrographs "
                             "have blur_range)")
        if int(self.window) != self.window or self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"window must be an odd number of frames >= 1, got "
                             f"{self.window}")
        if self.scenario == "micrograph" and self.window != 1:
            raise ValueError("window applies to time-lapses only")
        if self.window_init not in WINDOW_INITS:
            raise ValueError(f"unknown window_init {self.window_init!r}; choose one of "
                             f"{', '.join(WINDOW_INITS)}")
        if self.network.in_channels not in (1, self.window):
            raise ValueError(f"the network has {self.network.in_channels} input channels; "
                             f"a window of {self.window} frames needs {self.window}")
        object.__setattr__(self, "network",
                           replace(self.network, in_channels=int(self.window)))

    @property
    def settle_start(self) -> int:
        """The last step trained with batch statistics; later steps are settled."""
        return self.steps - int(round(self.settle_fraction * self.steps))

    @property
    def invert(self) -> bool:
        """Micrograph particles are dark; they are inverted before the network."""
        return self.scenario == "micrograph"

    @property
    def snr(self) -> tuple[float, float]:
        """The SNR range drawn from."""
        return self.snr_range or _DEFAULT_SNR.get(self.scenario, _FLUORESCENCE_SNR)

    def to_dict(self) -> dict:
        """Return the settings as JSON-serialisable values."""
        d = asdict(self)
        d["network"] = self.network.to_dict()
        d["snr_range"] = list(self.snr)
        d["halo_range"], d["blur_range"] = list(self.halo_range), list(self.blur_range)
        return d


@dataclass(frozen=True)
class TrainProgress:
    """One report of a training run."""

    stage: Stage  # Stage.TRAIN or Stage.VALIDATE
    step: int
    total: int
    metrics: dict


@dataclass
class TrainedModel:
    """The result of a run: the network and the facts its model card needs."""

    network: Denodet
    threshold: float
    history: list[dict]
    settings: TrainSettings
    wall_time: float


@dataclass
class Sample:
    """A normalised training or validation image."""

    noisy: np.ndarray
    clean: np.ndarray
    truth: np.ndarray  # (K, 2) y, x
    params: dict = field(default_factory=dict)  # the simulator's draws, seed included


def draw_sample(settings: TrainSettings, rng: np.random.Generator,
                snr: float | None = None) -> Sample:
    """Simulate one patch with randomised parameters and normalise it as at inference.

    Parameters
    ----------
    settings : TrainSettings
        Scenario, patch size and SNR range.
    rng : numpy.random.Generator
        Source of every random choice.
    snr : float, optional
        Fix the SNR instead of drawing it.

    Returns
    -------
    Sample
        Noisy and clean patch in the noisy patch's normalised units, and the centres.
    """
    lo, hi = settings.snr
    snr = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if snr is None else snr
    seed = int(rng.integers(2**31))
    size = settings.patch_size
    if settings.scenario == "micrograph":
        sim = simulate_micrograph(shape=(size, size), snr=snr, density=rng.uniform(0.05, 0.35),
                                  seed=seed, **patch_micrograph(settings, seed))
        noisy, clean = sim.noisy, sim.clean
    else:
        scenario = (settings.scenario if settings.scenario in SCENARIOS
                    else SCENARIOS[int(rng.integers(len(SCENARIOS)))])
        widths = (0.0, 0.0)
        formation = patch_formation(settings, seed)
        # Drawn only when asked for, so that runs without it keep their random stream; a
        # realistic formation brings its own camera, so only PTC-like patches get them.
        if settings.correlated_noise > 0 and formation is None and rng.random() < 0.5:
            widths = tuple(float(w) for w in rng.uniform(0.0, settings.correlated_noise, 2))
        density = rng.uniform(30, 1200)
        window = settings.window
        sim = simulate_timelapse(scenario, snr=snr, density=density, frames=window,
                                 shape=(size, size), seed=seed, noise_correlation=widths,
                                 formation=formation)
        if window > 1:
            centre = window // 2
            edge = _draw_edge(rng)
            frames = [sim.noisy[t] for t in time_window(centre, window, edge)]
            scales = [frame_scale(frame) for frame in frames]
            noisy = np.stack([sc.forward(frame) for sc, frame in zip(scales, frames,
                                                                          strict=True)])
            truth = sim.truth[sim.truth["frame"] == centre][["y", "x"]]
            return Sample(noisy, scales[centre].forward(sim.clean[centre]),
                          truth.to_numpy(dtype=np.float64),
                          params={**sim.params, "seed": seed, "edge": edge})
        noisy, clean = sim.noisy[0], sim.clean[0]
    scale = frame_scale(noisy, invert=settings.invert)
    truth = sim.truth[["y", "x"]].to_numpy(dtype=np.float64)
    return Sample(scale.forward(noisy), scale.forward(clean), truth,
                  params={**sim.params, "seed": seed})


#: Shares of windowed training patches that repeat the centre frame in place of the
#: frames before it (as at a stack's first frame), after it (last frame), or all of
#: them (a single image); the rest see real neighbours.
EDGE_SHARE = {"first": 0.08, "last": 0.08, "single": 0.04}


def _draw_edge(rng: np.random.Generator) -> str:
    u, total = rng.random(), 0.0
    for edge, share in EDGE_SHARE.items():
        total += share
        if u < total:
            return edge
    return "inside"


def time_window(centre: int, window: int, edge: str = "inside") -> list[int]:
    """Frames of a simulated ``window``-frame movie a training patch shows the network.

    Parameters
    ----------
    centre : int
        The frame detected in, the middle of the window.
    window : int
        Odd number of frames.
    edge : {"inside", "first", "last", "single"}
        Which neighbours are missing, as at inference (:func:`window_indices`): those
        before the centre (a stack's first frame), after it (its last frame), or all
        (a single image); the centre frame takes their place.

    Returns
    -------
    list of int
        ``window`` frame indices, oldest first.
    """
    half = window // 2
    first = centre if edge in ("first", "single") else centre - half
    last = centre if edge in ("last", "single") else centre + half
    return window_indices(centre, window, first, last)


#: The realistic micrograph domain: particle radii (px) and, per patch, how often and
#: over which range each effect is drawn (``simulate_micrograph`` arguments).
MICROGRAPH_DOMAIN = {
    "radius": (4.0, 20.0),
    "halo": (0.5, (0.0, 0.8)),
    "blur": (0.5, (0.0, 2.5)),
    "ctf": (0.5, (0.12, 0.4)),
    "artefacts": 0.3,
}


def patch_micrograph(settings: TrainSettings, seed: int) -> dict:
    """Return the ``simulate_micrograph`` arguments of the patch simulated from ``seed``.

    The ``"ptc"`` domain uses the settings' halo and blur ranges. The realistic domain
    draws, from a generator of its own seeded by ``seed``, a wider radius range and, each
    in part of the patches, a phase-contrast fringe, a low-pass (filtered exports), a
    contrast transfer function and detector artefacts (:data:`MICROGRAPH_DOMAIN`);
    ``settings.ptc_share`` of its patches stay in the plain micrograph world.
    """
    if settings.domain != "realistic":
        return {"halo": tuple(settings.halo_range), "blur": tuple(settings.blur_range)}
    rng = np.random.default_rng([seed, 2])
    if rng.random() < settings.ptc_share:
        return {}
    d = MICROGRAPH_DOMAIN
    options = {"radius": d["radius"]}
    for key in ("halo", "blur", "ctf"):
        share, (low, high) = d[key]
        options[key] = float(rng.uniform(low, high)) if rng.random() < share else 0.0
    options["artefacts"] = bool(rng.random() < d["artefacts"])
    return options


def patch_formation(settings: TrainSettings, seed: int):
    """Return the image formation of the training patch simulated from ``seed``.

    None for the PTC-like world (the ``"ptc"`` domain, micrographs, and
    ``settings.ptc_share`` of the realistic domain's patches). The draw comes from a
    generator of its own seeded by ``seed``, so a patch is made again from its seed.
    """
    if settings.domain != "realistic":
        return None
    rng = np.random.default_rng([seed, 1])
    return None if rng.random() < settings.ptc_share else draw_formation(rng)


def augment(sample: Sample, rng: np.random.Generator) -> Sample:
    """Rotate by a random multiple of 90 degrees and maybe flip, points included.

    A windowed sample's ``(frames, y, x)`` noisy stack turns with its clean centre.
    """
    noisy, clean, yx = sample.noisy, sample.clean, sample.truth.copy()
    for _ in range(int(rng.integers(4))):
        width = noisy.shape[-1]
        noisy, clean = np.rot90(noisy, axes=(-2, -1)), np.rot90(clean)
        yx = np.stack([width - 1 - yx[:, 1], yx[:, 0]], axis=1)  # (y, x) -> (W-1-x, y)
    if rng.random() < 0.5:
        width = noisy.shape[-1]
        noisy, clean = noisy[..., ::-1], clean[:, ::-1]
        yx = np.stack([yx[:, 0], width - 1 - yx[:, 1]], axis=1)
    return Sample(np.ascontiguousarray(noisy), np.ascontiguousarray(clean), yx)


def collate(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack samples into ``(B, C, H, W)`` tensors and ``(K, 3)`` centres.

    ``C`` is 1, or a windowed sample's frames; the clean target always has one channel.
    """
    noisy = np.stack([s.noisy for s in samples])
    noisy = torch.from_numpy((noisy if noisy.ndim == 4 else noisy[:, None]).astype(np.float32))
    clean = torch.from_numpy(np.stack([s.clean for s in samples])[:, None].astype(np.float32))
    centres = [np.column_stack([np.full(len(s.truth), i), s.truth]) for i, s in
               enumerate(samples)]
    centres = torch.from_numpy(np.concatenate(centres).astype(np.float32)).reshape(-1, 3)
    return noisy, clean, centres


def validation_set(settings: TrainSettings, count: int | None = None) -> list[Sample]:
    """Return fixed validation patches from simulator seeds that training never draws."""
    count = settings.validation_patches if count is None else count
    rng = np.random.default_rng(_VALIDATION_SEED + settings.seed)
    lo, hi = settings.snr
    snrs = np.exp(np.linspace(np.log(lo), np.log(hi), count))
    val = replace(settings, patch_size=max(settings.patch_size, 128))
    return [draw_sample(val, rng, snr=float(s)) for s in snrs]


def evaluate(network: Denodet, samples: list[Sample], settings: TrainSettings,
             gamma: float) -> dict:
    """Return the validation loss, the best F1 and the threshold that gives it."""
    modes = [m.training for m in network.modules()]
    network.eval()
    noisy, clean, centres = collate(samples)
    with torch.inference_mode():
        denoised, logits = network(noisy)
        det, _ = detection_loss(logits, centres, settings.lam, settings.radius,
                                settings.temperature)
        loss = float(det + gamma * denoising_loss(denoised, clean, settings.denoising_loss))
        found = detect_points(logits[:, 0], floor=0.05, radius=settings.radius,
                              temperature=settings.temperature,
                              min_distance=settings.min_distance)
    for module, mode in zip(network.modules(), modes, strict=True):
        module.training = mode
    pred = points_table(found["y"].numpy(), found["x"].numpy(), frame=found["batch"].numpy(),
                        score=found["score"].numpy())
    truth = points_table(centres[:, 1].numpy(), centres[:, 2].numpy(),
                         frame=centres[:, 0].numpy().astype(int))
    thresholds = np.round(np.arange(0.1, 0.951, 0.05), 2)
    f1 = dict(zip(thresholds.tolist(), f1_by_threshold(pred, truth, thresholds).tolist(),
                  strict=True))
    best = max(f1, key=lambda t: (f1[t], -abs(t - 0.5)))
    rmse = score_detections(pred[pred.score >= best], truth).rmse
    return {"val_loss": loss, "val_f1": f1[best], "val_rmse": rmse, "threshold": best}


def train(
    settings: TrainSettings,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 250,
    resume: bool = False,
) -> Generator[TrainProgress, None, TrainedModel]:
    """Train a network on simulated data.

    Parameters
    ----------
    settings : TrainSettings
        The run.
    checkpoint : str or pathlib.Path, optional
        File to write the full training state to every ``checkpoint_every`` steps.
    checkpoint_every : int
        Steps between checkpoints.
    resume : bool
        Continue from ``checkpoint`` when it exists (settings must match).

    Yields
    ------
    TrainProgress
        After every step (``Stage.TRAIN``) and every validation (``Stage.VALIDATE``).

    Returns
    -------
    TrainedModel
        The network (eval mode), its calibrated threshold and the history.
    """
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    network = build_network(settings.network)
    if settings.init:
        _warm_start(network, settings.init, settings.window_init)
    optimiser = torch.optim.Adam(network.parameters(), lr=settings.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.3, patience=2)
    history: list[dict] = []
    start_step, elapsed = 0, 0.0
    checkpoint = Path(checkpoint) if checkpoint else None
    if resume and checkpoint is not None and checkpoint.exists():
        state = _load_checkpoint(checkpoint)
        if state["settings"] != settings.to_dict():
            raise ValueError(f"{checkpoint}: the checkpoint was made with other settings")
        network.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        start_step, history, elapsed = state["step"], state["history"], state["elapsed"]
    validation = validation_set(settings)
    warmup = int(settings.warmup_fraction * settings.steps)
    started = time.perf_counter() - elapsed
    for step in range(start_step + 1, settings.steps + 1):
        gamma = 0.0 if step <= warmup else settings.gamma
        settled = step > settings.settle_start
        if step == settings.settle_start + 1:
            for group in optimiser.param_groups:
                group["lr"] *= 0.1
        train_mode(network, freeze_norm=settled)
        noisy, clean, centres = collate([augment(draw_sample(settings, rng), rng)
                                         for _ in range(settings.batch_size)])
        denoised, logits = network(noisy)
        det, parts = detection_loss(logits, centres, settings.lam, settings.radius,
                                    settings.temperature)
        deno = denoising_loss(denoised, clean, settings.denoising_loss)
        loss = det + gamma * deno
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        metrics = {"loss": loss.item(), "detection": det.item(), "denoising": deno.item(),
                   "gamma": gamma, "lr": optimiser.param_groups[0]["lr"], **parts}
        val = None
        if step % settings.eval_every == 0 or step == settings.steps:
            val = evaluate(network, validation, settings, settings.gamma)
            if warmup < step <= settings.settle_start:
                scheduler.step(val["val_loss"])
            history.append({"step": step, **val, "loss": metrics["loss"],
                            "seconds": time.perf_counter() - started})
        # Checkpoint before yielding: a consumer that stops here loses nothing.
        if checkpoint is not None and (step % checkpoint_every == 0 or step == settings.steps):
            _save_checkpoint(checkpoint, settings, step, network, optimiser, scheduler, rng,
                             history, time.perf_counter() - started)
        yield TrainProgress(Stage.TRAIN, step, settings.steps, metrics)
        if val is not None:
            yield TrainProgress(Stage.VALIDATE, step, settings.steps, val)
    final = evaluate(network, validation, settings, settings.gamma)
    network.eval()
    return TrainedModel(network=network, threshold=final["threshold"], history=history,
                        settings=settings, wall_time=time.perf_counter() - started)


def init_training(init: str) -> dict:
    """Return the training record of the model a warm start began from (command included).

    A warm-started model's card keeps it (``training.init_training``), so the model can
    be made again: that record's command first, then this one with ``--init`` its output.
    """
    from napari_denodet.core.models import load_model

    return load_model(init).card.to_dict()["training"]


#: How a single-frame model's input weights grow to a window (``TrainSettings.window_init``).
WINDOW_INITS = ("centre", "sum")


def _warm_start(network: Denodet, init: str, window_init: str = "centre") -> None:
    # Start from a trained model's weights (same network shape), e.g. to widen the domain
    # of a bundled model instead of learning the narrow world again from scratch.
    from napari_denodet.core.models import load_model

    start = load_model(init)
    theirs, ours = start.network.config, network.config
    if replace(theirs, in_channels=ours.in_channels) != ours or \
            theirs.in_channels not in (1, ours.in_channels):
        raise ValueError(f"--init {init}: its network {theirs.to_dict()} is "
                         f"not the one asked for ({ours.to_dict()})")
    state = start.network.state_dict()
    if theirs.in_channels != ours.in_channels:
        # A single-frame model starts a windowed one: each weight that reads the input
        # reads the centre frame; the neighbours start at zero.
        inflated = network.state_dict()
        for key, value in state.items():
            if value.shape != inflated[key].shape:
                grown = torch.zeros_like(inflated[key])
                if window_init == "sum":
                    grown[:] = value / ours.in_channels ** 0.5
                else:
                    grown[:, ours.in_channels // 2] = value[:, 0]
                state[key] = grown
    network.load_state_dict(state)


#: What a training checkpoint holds (plain types and tensors only: it loads without
#: unpickling arbitrary objects, so a checkpoint file can never run code).
_CHECKPOINT_KEYS = {"settings", "step", "network", "optimiser", "scheduler", "rng",
                    "torch_rng", "history", "elapsed"}


def _load_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # weights_only refuses any object that is not plain data or a tensor.
        raise InputError(path, "not a readable training checkpoint "
                               f"({type(exc).__name__})") from None
    if not isinstance(state, dict) or not set(state) >= _CHECKPOINT_KEYS:
        raise InputError(path, "not a napari-denodet training checkpoint")
    return state


def _save_checkpoint(path, settings, step, network, optimiser, scheduler, rng, history,
                     elapsed):
    from napari_denodet.core.io import atomic_write

    state = {"settings": settings.to_dict(), "step": step, "network": network.state_dict(),
             "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
             "history": history, "elapsed": elapsed}
    atomic_write(path, lambda tmp: torch.save(state, tmp), overwrite=True)


#: Shallow double peaks merged at inference (cards' localisation; training evaluates
#: without): one comet leaves a ridge, two particles a valley (see
#: docs/models-history.md, Inference settings).
MERGE_RATIO = 0.75

#: Softmax temperature of the local DSNT at inference (cards' localisation; training uses
#: ``TrainSettings.temperature``): it localises better at the same F1, chosen on the
#: detection benchmark's validation stacks (see docs/models-history.md, Inference
#: settings).
INFERENCE_TEMPERATURE = 0.6


#: Where the trained models depart from the DENODET paper, and why (copied into cards).
DEVIATIONS = [
    "Batch normalisation instead of instance normalisation: at inference batch norm is a "
    "fixed affine map, so tiled and whole-frame results agree exactly, and it folds into "
    "the convolutions. Measured with the same recipe, on the PTC-like world alone "
    "(docs/benchmarks/detection-recipe.md): "
    "instance norm's tiles differ from the whole frame by up to 1.03 noise units, it runs "
    "at 4.2 against 9.0 frames/s of 512 x 512 (float32, same run), and its mean F1 is 0.402"
    " / 0.816 against 0.486 / 0.880 at SNR 1 / 2 (0.972 / 0.964 against 0.973 / 0.961 at "
    "SNR 4 / 7).",
    "Denoising loss is L1 to the clean image in normalised units, not soft Dice + balanced "
    "BCE: the output must map back to the input's intensities. Measured with the paper's "
    "loss on the clean patch's range (--denoising-loss dice-bce): the same F1 (0.484 / "
    "0.880 / 0.975 / 0.970 at SNR 1 / 2 / 4 / 7) but a PSNR 1.4-12.0 dB lower (22.4-36.4 "
    "against 26.7-46.6 dB): soft Dice on continuous intensities is not minimised by the "
    "clean image.",
    "DSNT is applied locally (peaks, then a soft-argmax in a 5 x 5 window) because an image"
    " holds many particles; a dense class-balanced BCE to the Gaussian heatmap keeps the "
    "background empty and makes the peak a score.",
    "Adam at 1e-3 (not 1e-4) and a plateau scheduler (x0.3 after 2 stale validations) so "
    "that training converges within CPU minutes; fresh simulated patches every step. "
    "Measured at 1e-4 with the same 3000 steps on the PTC-like world alone "
    "(docs/benchmarks/detection-recipe.md): mean F1 "
    "0.459 / 0.848 against 0.486 / 0.880 at SNR 1 / 2.",
    "A final settling phase (the last settle_fraction of the steps) trains at a tenth of "
    "the learning rate with the batch-norm statistics frozen, so the network adapts to the "
    "statistics it uses at inference: without it the denoised background sat 0.25 noise "
    "units too high (PSNR about 16 instead of 28 dB at SNR 1).",
]


def _jsonable(ranges: dict) -> dict:
    # Tuples become lists, nested ones too, so the card's JSON reads back equal.
    def convert(v):
        return [convert(x) for x in v] if isinstance(v, tuple | list) else v

    return {k: convert(v) for k, v in ranges.items()}


def model_card(result: TrainedModel, name: str, command: str) -> dict:
    """Build the model card of a trained model.

    Parameters
    ----------
    result : TrainedModel
        What :func:`train` returned.
    name : str
        The model's name.
    command : str
        The command line that reproduces it.

    Returns
    -------
    dict
        A card with the fields of :data:`napari_denodet.core.models.CARD_FIELDS`.
    """
    s = result.settings
    last = result.history[-1] if result.history else {}
    micrograph = s.scenario == "micrograph"
    realistic = s.domain == "realistic"
    data = ("simulated binned cryo-EM micrographs" if micrograph else
            "simulated 2D fluorescence particles (PTC-like: vesicle, receptor, microtubule)"
            if s.scenario == "fluorescence" else
            f"simulated 2D fluorescence particles ({s.scenario})")
    if realistic and micrograph:
        data += (f", {1 - s.ptc_share:.0%} of them with radii 4-20 px and, drawn per patch, "
                 "phase-contrast fringes, low-pass filtering, a contrast transfer function "
                 "and detector artefacts")
    elif realistic:
        data += (f", {1 - s.ptc_share:.0%} of them through a randomised image formation "
                 "(camera noise of several kinds, structured backgrounds, PSF and "
                 "intensity spread, clusters)")
    if s.window > 1:
        data += (f"; each frame seen among its neighbours ({s.window} frames, the middle "
                 "one detected)")
    return {
        "name": name,
        "scenario": s.scenario,
        "training": {
            "data": data,
            "command": command,
            "settings": s.to_dict(),
            "wall_time_s": round(result.wall_time, 1),
            "validation": {k: last.get(k) for k in ("val_f1", "val_rmse", "val_loss")},
            **({"formation_ranges": _jsonable(MICROGRAPH_DOMAIN if micrograph else RANGES),
                "ptc_share": s.ptc_share} if realistic else {}),
            **({"init_training": init_training(s.init)} if s.init else {}),
        },
        "normalisation": "per frame: subtract the median, divide by 1.4826 x MAD",
        "invert": s.invert,
        "particle_size": ({"radius_px": list(MICROGRAPH_DOMAIN["radius"]) if realistic
                           else [5, 15]} if micrograph else
                          {"psf_sigma_px": list(RANGES["psf_sigma_px"]) if realistic
                           else [0.9, 1.6], "comet_length_factor": [2.0, 3.0]}),
        "threshold": result.threshold,
        "localisation": {"radius": s.radius,
                         "temperature": s.temperature if micrograph else INFERENCE_TEMPERATURE,
                         "min_distance": s.min_distance,
                         "merge_ratio": 0.0 if micrograph else MERGE_RATIO},
        "benchmark": None,
        "deviations": DEVIATIONS,
        "parent": None,
    }
