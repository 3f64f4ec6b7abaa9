"""Helpers the benchmark scripts share: the detection benchmark's cells and tuning rule,
the fine-tuning benchmark's cases and click regions, and the fine-tuning advice.

Public on purpose: every script in ``benchmarks/`` (and ``scripts/card_benchmarks.py``)
imports what it shares from here, never another script's names. A script run as
``python benchmarks/NAME.py`` finds this module because Python puts the script's folder
first on ``sys.path``; ``scripts/card_benchmarks.py`` adds ``benchmarks/`` once.

Detection (``bench_detection.py`` and the scripts that score its stacks): the grid
(:data:`SNRS`, :data:`DENSITIES`, :func:`cell_index`), the validation and test stacks of a
cell (:func:`cell_stacks`), the one rule every method's threshold and scale is tuned by
(:func:`score_levels`, :func:`best_threshold`, :func:`tune_classic`, :data:`CLASSIC`), the
network's candidates and scores (:func:`network_candidates`, :func:`score_network`), the
merging bound and the speed measurement.

Fine-tuning (``bench_finetune.py`` and the scripts that reuse its cases): the
domain-shift cases (:class:`Case`, :func:`finetune_cases`), the clicked regions
(:func:`click_region`), scoring outside them (:func:`score_outside`), and the mode
and threshold the cards advise (:func:`advised_modes`, :func:`advised_calibrations`).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from napari_denodet.core.classic import detect_classic
from napari_denodet.core.io import read_image
from napari_denodet.core.metrics import GATE, f1_by_threshold, psnr, score_detections
from napari_denodet.core.models import load_model
from napari_denodet.core.points import FRAME, SCORE, X, Y, points_table
from napari_denodet.core.predict import detect, run
from napari_denodet.core.resample import bin_image, bin_points
from napari_denodet.core.simulate import SCENARIOS, simulate_micrograph, simulate_timelapse

REPO = Path(__file__).resolve().parents[1]
#: The real data the benchmarks read when present (the telomere time-lapse, the
#: EMPIAR-10017 micrograph and its expert picks); scripts skip what is missing.
DATA = REPO.parent / "shared" / "data"


# ----------------------------------------------------------- detection cells

#: The detection benchmark's grid: scenarios (``SCENARIOS``) x SNRs x densities.
SNRS = (1.0, 2.0, 4.0, 7.0)
DENSITIES = ("low", "mid")
#: Simulator seeds of the validation and test stacks (training draws seeds below 2^31).
VAL_SEED, TEST_SEED = 3_000_000_000, 4_000_000_000
#: The classic detectors' scale grids, tuned by the detection benchmark and the ceiling
#: script alike.
LOG_SIGMAS = (0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
WAVELET_KS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
#: (row entry, detect_classic method, parameter name, parameter grid).
CLASSIC = (("LoG", "log", "sigma", LOG_SIGMAS), ("wavelet", "wavelet", "k", WAVELET_KS))
#: How many score levels a threshold is chosen from.
LEVELS = 150
#: The row entry (and table column) of the bundled model a user picks for the scenario.
BUNDLED = "bundled for the scenario"
#: The bundled model a user picks for each simulated scenario.
SCENARIO_MODEL = {"vesicle": "fluorescence", "receptor": "fluorescence",
                  "microtubule": "microtubule"}


def candidate_table(c):
    """The points table of ``detect_classic``'s (or the engine's) candidate columns."""
    return points_table(c["y"], c["x"], frame=c["frame"], score=c["score"])


def network_candidates(model, stack, precision="auto"):
    """Every candidate of ``model`` on ``stack`` (score floor 0.05), and the denoised stack."""
    result = run(detect(stack, model.network, invert=model.invert, floor=0.05,
                        precision=precision, **model.localisation))
    return result.points, result.denoised


def score_levels(points, n_truth: int, levels: int = LEVELS) -> np.ndarray:
    """The thresholds a method's score threshold is chosen from.

    Quantiles of the ``3 * n_truth`` highest scores: keeping more candidates than that
    cannot reach an F1 of 0.5, and quantiles of all the candidates (or a fixed grid)
    would leave a few coarse steps where the particles' scores lie (a network keeps
    many faint candidates above its floor; a classic detector's scores have no fixed
    range). Every method, network or classic, is tuned on the same rule.
    """
    top = np.sort(points["score"].to_numpy())[::-1][:3 * max(n_truth, 1)]
    return np.unique(np.quantile(top, np.linspace(0.0, 1.0, levels)))


def best_threshold(points, truth, levels: int = LEVELS) -> tuple[float, float]:
    """The best F1 of ``points`` against ``truth`` over :func:`score_levels`, and its
    threshold (the lowest of equals); (0, nan) when there is no candidate."""
    if points.empty:
        return 0.0, float("nan")
    thresholds = score_levels(points, len(truth), levels)
    f1 = f1_by_threshold(points, truth, thresholds, gate=GATE)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def tune_classic(stack, truth, method, key, params) -> tuple[float, float, float]:
    """Best (F1, parameter, threshold) of a classic detector on ``stack``'s truth."""
    best = (-1.0, None, float("nan"))
    for p in params:
        f1, t = best_threshold(candidate_table(detect_classic(stack, method, **{key: p})),
                               truth)
        if f1 > best[0]:
            best = (f1, p, t)
    return best


def cell_index(scenario, snr, density) -> int:
    """A cell's place in the full grid: its seeds follow it, so a run over some
    scenarios or SNRs (or another script) scores the same stacks as the full run."""
    return 1 + (SCENARIOS.index(scenario) * len(SNRS) + SNRS.index(snr)) \
        * len(DENSITIES) + DENSITIES.index(density)


def cell_stacks(scenario, snr, density, frames, index, noise_correlation=(0.0, 0.0)):
    """The validation and test stacks of a cell (512 x 512, seeds from :func:`cell_index`)."""
    return _stacks(scenario, index, snr=snr, density=density, frames=frames,
                   noise_correlation=noise_correlation)


def _stacks(scenario, index, **kwargs):
    # A cell's validation and test stacks: 512 x 512, seeds from its index.
    val = simulate_timelapse(scenario, seed=VAL_SEED + index, shape=(512, 512), **kwargs)
    test = simulate_timelapse(scenario, seed=TEST_SEED + index, shape=(512, 512), **kwargs)
    return val, test


#: Test conditions: keyword arguments of ``simulate_timelapse`` for every cell's stacks.
#: ``correlated`` gives the noise the neighbour correlations of a real camera (as the
#: telomere time-lapse measures), ``structured`` a static structured background as high
#: as the background itself, ``wide-structured`` that with PSFs twice as wide.
CONDITIONS = {
    "plain": {},
    "correlated": {"noise_correlation": (0.6, 0.45)},
    "structured": {"texture": 1.0},
    "wide-structured": {"texture": 1.0, "psf_scale": 2.0},
}


def condition_stacks(scenario, snr, density, frames, index, condition="plain"):
    """The validation and test stacks of a cell under one of :data:`CONDITIONS`."""
    return _stacks(scenario, index, snr=snr, density=density, frames=frames,
                   **CONDITIONS[condition])


def merged_pairs_bound(truth, distance=3.0):
    """Highest F1 a detector can reach when particles closer than ``distance`` px are one.

    Peaks closer than the localisation's ``min_distance`` (3 px) count as one particle,
    so each group of particles chained by such distances can be found once at most.
    """
    found = 0
    for _, frame in truth.groupby("frame"):
        pairs = cKDTree(frame[["y", "x"]].to_numpy()).query_pairs(distance,
                                                                   output_type="ndarray")
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                           shape=(len(frame), len(frame)))
        found += connected_components(graph, directed=False)[0]
    recall = found / max(len(truth), 1)
    return 2 * recall / (1 + recall)


def score_network(model, val, test, precision="auto"):
    """F1, RMSE and PSNR of ``model`` on the test stack, its threshold tuned on ``val``.

    Also the F1 and RMSE at the model's own threshold (``f1_default``); returns the
    figures and the denoised test stack.
    """
    vpred, _ = network_candidates(model, val.noisy, precision)
    _, t = best_threshold(vpred, val.truth)
    tpred, denoised = network_candidates(model, test.noisy, precision)
    s = score_detections(tpred[tpred.score >= t], test.truth)
    d = score_detections(tpred[tpred.score >= model.threshold], test.truth)
    return {"f1": s.f1, "rmse": s.rmse, "threshold": t, "psnr": psnr(test.clean, denoised),
            "f1_default": d.f1, "rmse_default": d.rmse}, denoised


def measure_speed(models, repeats=5, frames=8, precisions=None):
    """Frames per second of every method on the same 512 x 512 stack.

    Each method is warmed up on the whole stack, then the methods take turns ``repeats``
    times (round robin), so that a slow spell of the machine hits them all alike; the
    median of each method's runs is reported. A network runs at the engine's default
    precision unless ``precisions`` (name -> precision) says otherwise.
    """
    stack = simulate_timelapse("vesicle", snr=4, density="mid", frames=frames,
                               shape=(512, 512), seed=TEST_SEED).noisy
    precisions = precisions or {}

    def network(model, precision):
        return lambda: run(detect(stack, model.network, invert=model.invert,
                                  precision=precision, **model.localisation))

    runners = {name: network(model, precisions.get(name, "auto"))
               for name, model in models.items()}
    runners["LoG"] = lambda: detect_classic(stack, "log")
    runners["wavelet"] = lambda: detect_classic(stack, "wavelet")
    return frames_per_second(runners, frames, repeats)


def frames_per_second(runners: dict, frames: int, repeats: int = 5) -> dict[str, float]:
    """Frames per second of each runner (a call that processes ``frames`` frames).

    Each is warmed up once, then they take turns ``repeats`` times (round robin), so
    that a slow spell of the machine hits them all alike; the median run counts.
    """
    times = {name: [] for name in runners}
    for runner in runners.values():
        runner()
    for _ in range(repeats):
        for name, runner in runners.items():
            t0 = time.perf_counter()
            runner()
            times[name].append(time.perf_counter() - t0)
    return {name: frames / statistics.median(t) for name, t in times.items()}


# ----------------------------------------------------------- fine-tuning cases

#: Simulator seed of the fine-tuning cases and (plus the draw and click count) their regions.
FINETUNE_SEED = 6_000_000_000
#: The LoG scales the fine-tuning benchmark tunes on the clicks, per starting model.
FINETUNE_LOG_SIGMAS = {"fluorescence": (1.5, 2.0, 2.5, 3.0, 4.0),
                       "micrograph": (3.0, 4.0, 5.0, 6.0, 8.0)}


@dataclass
class Case:
    """A domain-shift case: images, truth, the bundled model it starts from."""

    name: str
    image: np.ndarray  # (t, y, x); single images get t = 1
    truth: pd.DataFrame  # frame, y, x
    model: str
    note: str
    gate: float = 5.0  # px of the image as detected
    margin: float = 0.0  # px from the edge where nothing is scored (outside the annotation)


def finetune_cases(quick: bool) -> list[Case]:
    """The fine-tuning benchmark's cases (smaller images and fewer cases when ``quick``).

    Wide-PSF vesicles on a structured background at SNR 2 and 4, simulated micrographs at
    SNR 0.05 and 0.1, and the real EMPIAR-10017 micrograph when :data:`DATA` holds it.
    """
    size, frames = (256, 2) if quick else (512, 4)
    cases = []
    for snr in (2.0,) if quick else (2.0, 4.0):
        sim = simulate_timelapse("vesicle", snr=snr, density="mid", frames=frames,
                                 shape=(size, size), seed=FINETUNE_SEED + int(snr),
                                 psf_scale=2.0, texture=0.5)
        cases.append(Case(f"fluorescence, PSF x2 + structure, SNR {snr:g}", sim.noisy,
                          sim.truth[[FRAME, Y, X]], "fluorescence",
                          f"{frames} frames of {size}^2, vesicles, psf_scale 2, "
                          "texture 0.5 (cell-like blobs at 6 and 20 px)"))
    for snr in (0.1,) if quick else (0.05, 0.1):
        msize = 512 if quick else 1024
        sim = simulate_micrograph(shape=(msize, msize), snr=snr, seed=FINETUNE_SEED + 7)
        truth = sim.truth.assign(frame=0)[[FRAME, Y, X]]
        cases.append(Case(f"micrograph, SNR {snr:g}", sim.noisy[None], truth, "micrograph",
                          f"one simulated {msize}^2 micrograph"))
    jpg, coords = DATA / "empiar10017_micrograph.jpg", DATA / "empiar10017_coords.csv"
    if jpg.is_file() and coords.is_file():
        table = pd.read_csv(coords)
        diameter = float(table["Diameter"].median())  # 108 px
        factor = load_model("micrograph").bin_for_diameter(diameter)
        image = bin_image(np.asarray(read_image(jpg)), factor)
        truth = bin_points(points_table(table["Y-Coordinate"], table["X-Coordinate"],
                                        frame=np.zeros(len(table), int)), factor)
        edge = float(edge_distance(truth, image.shape).min()) * factor
        cases.append(Case(
            f"real micrograph EMPIAR-10017, bin {factor}", image[None], truth, "micrograph",
            f"4096^2 JPEG binned to {image.shape[0]}^2 (the bin the model card gives for "
            f"the {diameter:g} px particles); {len(table)} expert picks, all at least "
            f"{edge:.0f} px from the edge, so nothing within one particle diameter "
            f"({diameter:g} px) of the edge is scored; gate 40 px full-res",
            gate=40.0 / factor, margin=diameter / factor))
    return cases


def _region(case: Case, n: int, rng: np.random.Generator):
    """The n particles nearest a random particle of frame 0, away from the edges."""
    first = case.truth[case.truth[FRAME] == 0]
    h, w = case.image.shape[-2:]
    inner = first[(first[Y] > 32) & (first[Y] < h - 32) & (first[X] > 32) & (first[X] < w - 32)]
    centre = inner.iloc[int(rng.integers(len(inner)))][[Y, X]].to_numpy(float)
    distance = np.hypot(first[Y] - centre[0], first[X] - centre[1]).to_numpy()
    order = np.argsort(distance)
    clicks = first.iloc[order[:n]].reset_index(drop=True)
    return clicks, centre, float(distance[order[n - 1]]) + 5.0


def outside_region(table: pd.DataFrame, centre, radius) -> pd.DataFrame:
    """The points of ``table`` outside the clicked disk (every point of other frames)."""
    inside = (np.hypot(table[Y] - centre[0], table[X] - centre[1]) <= radius) & (
        table[FRAME] == 0)
    return table[~inside.to_numpy()]


def edge_distance(table: pd.DataFrame, shape) -> np.ndarray:
    """Distance (px) of each point of ``table`` to the nearest edge of a ``shape`` image."""
    h, w = shape[-2:]
    return np.asarray(np.minimum.reduce([table[Y], table[X], h - 1 - table[Y],
                                         w - 1 - table[X]]))


def away_from_edge(table: pd.DataFrame, shape, margin: float) -> pd.DataFrame:
    """The part of ``table`` at least ``margin`` px from every edge."""
    return table[edge_distance(table, shape) >= margin]


def annotated(case: Case, table: pd.DataFrame) -> pd.DataFrame:
    """The points of ``table`` inside the case's annotated area (``case.margin`` from the edge)."""
    return away_from_edge(table, case.image.shape, case.margin)


def inside_region(table: pd.DataFrame, centre, radius) -> pd.DataFrame:
    """The points of ``table`` inside the clicked disk (frame 0)."""
    inside = (np.hypot(table[Y] - centre[0], table[X] - centre[1]) <= radius) & (
        table[FRAME] == 0)
    return table[inside.to_numpy()]


def click_region(case: Case, n: int, draw: int):
    """The clicks of a row (its region drawn from the row's seed), as finetune takes them."""
    rng = np.random.default_rng(FINETUNE_SEED + 1000 * draw + n)
    clicks, centre, radius = _region(case, n, rng)
    positives = clicks if len(case.image) > 1 else clicks[[Y, X]]
    return positives, centre, radius


def network_points(model, image):
    """The candidates of ``model`` on ``image`` at the engine's default floor."""
    return run(detect(image, model.network, invert=model.invert, **model.localisation)).points


def score_outside(case: Case, points, threshold, centre, radius):
    """Scores of ``points`` at ``threshold`` on the annotated area outside the clicked disk."""
    kept = annotated(case, points[points[SCORE] >= threshold])
    return score_detections(outside_region(kept, centre, radius),
                            outside_region(annotated(case, case.truth), centre, radius),
                            gate=case.gate)


def f1_at(points, truth, levels, gate: float) -> np.ndarray:
    """F1 of ``points`` against ``truth`` when only scores at or above each level are kept."""
    return f1_by_threshold(points, truth, levels, gate=gate)


def model_of(row: dict) -> str:
    """The model a fine-tuning row started from.

    Rows of earlier runs do not name their model; the case name tells it.
    """
    return row.get("model") or ("micrograph" if "micrograph" in row["case"] else
                                "fluorescence")


def _ten_click_cases(rows: list[dict], model: str) -> dict[str, list[dict]]:
    # The model's 10-click rows, per case.
    cases = {}
    for r in rows:
        if model_of(r) == model and r["clicks"] == 10:
            cases.setdefault(r["case"], []).append(r)
    return cases


def _case_mean(cases: dict[str, list[dict]], key: str) -> float:
    # The mean over cases of each case's mean of ``key``.
    return float(np.mean([np.mean([r[key] for r in c]) for c in cases.values()]))


def weights_column(calibration: str) -> str:
    """The row column of the trained weights' F1 under ``calibration`` (count or clicks)."""
    return "f1_after_count" if calibration == "count" else "f1_after"


def advised_calibrations(rows: list[dict]) -> dict[str, tuple[str, float, float | None]]:
    """Per model: the better threshold after training from 10 clicks, and both mean F1s.

    ``"count"`` (the parent's count, ``f1_after_count``) is advised when its mean over the
    model's cases is higher than from the clicks (``f1_after``); rows without it count
    as clicks.
    """
    return {model: _better(_ten_click_cases(rows, model), ("clicks", "f1_after"),
                           ("count", "f1_after_count"))
            for model in dict.fromkeys(model_of(r) for r in rows)}


def _better(cases: dict[str, list[dict]], first: tuple[str, str],
            other: tuple[str, str]) -> tuple[str, float, float | None]:
    # The (name, column) of ``other`` where its case mean is higher, else ``first``'s;
    # and both means (None for ``other`` when some row lacks it).
    mean_first = _case_mean(cases, first[1])
    if not all(r.get(other[1]) is not None for c in cases.values() for r in c):
        return first[0], mean_first, None
    mean_other = _case_mean(cases, other[1])
    return (other[0] if mean_other > mean_first else first[0]), mean_first, mean_other


def advised_modes(rows: list[dict]) -> dict[str, tuple[str, float, float | None]]:
    """Per model: the better fine-tuning mode from 10 clicks, and both mean F1s.

    The mean is over the model's cases, each case the mean of its 10-click regions;
    weights at the threshold after training :func:`advised_calibrations` advises.
    Threshold only is advised when it is higher; rows without it count as weights.
    """
    calibrations = advised_calibrations(rows)
    return {model: _better(_ten_click_cases(rows, model),
                           ("weights", weights_column(calibrations[model][0])),
                           ("threshold", "f1_threshold_only"))
            for model in dict.fromkeys(model_of(r) for r in rows)}


#: LoG response floor per model kind (micrograph LoG responses at SNR 0.05 stay below 0.5).
LOG_FLOOR = {"fluorescence": 0.5, "micrograph": 0.0}


def log_on_clicks(case: Case, invert: bool, centre, radius, scenario: str):
    """LoG with scale and threshold tuned on the clicked region (taken as complete)."""
    # The clicked region proper: the clicks' disk (the evaluation excludes 5 px more).
    inner = radius - 5.0
    region_truth = inside_region(annotated(case, case.truth), centre, inner)
    best = (-1.0, None, None)
    candidates = {}
    for sigma in FINETUNE_LOG_SIGMAS[scenario]:
        # Micrograph LoG responses at SNR 0.05 stay below the default floor of 0.5.
        found = detect_classic(case.image, "log", invert=invert, sigma=sigma,
                               min_distance=max(2, int(sigma)), floor=LOG_FLOOR[scenario])
        table = points_table(found["y"], found["x"], frame=found["frame"],
                             score=found["score"])
        candidates[sigma] = table
        region = inside_region(annotated(case, table), centre, inner)
        if region.empty:
            continue
        levels = np.unique(np.quantile(region[SCORE], np.linspace(0, 0.99, 40)))
        f1 = f1_at(region, region_truth, levels, case.gate)
        if f1.max() > best[0]:
            best = (float(f1.max()), sigma, float(levels[int(np.argmax(f1))]))
    _, sigma, threshold = best
    if sigma is None:
        raise RuntimeError(f"{case.name}: no LoG candidate in the clicked region")
    return score_outside(case, candidates[sigma], threshold, centre, radius), sigma, threshold


def kept_text(accepted, unchecked: str = "–") -> str:
    """Say whether fine-tuning's acceptance check kept the trained weights.

    ``accepted`` is :attr:`FinetunedModel.accepted` (None: nothing was checked, said as
    ``unchecked``).
    """
    return {True: "yes", False: "no"}.get(accepted, unchecked)
