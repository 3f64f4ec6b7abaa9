"""Correlated camera noise: what it does to the bundled model, and what training on it buys.

The simulator's Poisson noise is white, but the real telomere time-lapse
(``timelapse_telomeres_2d.tif``) is not: its frame differences correlate by 0.48
between neighbouring rows and 0.17 between neighbouring columns. This script scores,
in one run, the bundled ``fluorescence`` model and models given with ``--compare``
(e.g. the bundled recipe trained with ``--correlated-noise``):

- on the detection benchmark's own cells (same seeds, stacks, tuning rule and 5 px gate
  as :mod:`bench_detection`), once with white noise and once with the same noise
  correlated like the real camera's (:func:`~napari_denodet.core.simulate.correlate_noise`,
  widths 0.6 px along y and 0.45 px along x): F1 at the threshold tuned on the
  validation stack, and F1 at each model's own default threshold (what a user gets),
  beside a LoG tuned the same way;
- on the real time-lapse (frames 0-39, no ground truth): detections per frame at each
  model's default threshold, and how many of them are found again within 1.5 px in the
  next frame (telomeres move little between frames; noise detections recur only by
  chance, which is measured with random positions against the same next-frame points).

Writes ``docs/benchmarks/correlated-noise.md`` and ``.json``.

Usage::

    python benchmarks/bench_correlated_noise.py \\
        --compare 'trained with correlated noise=runs/fluorescence-camera.pt'
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import (
    DENSITIES,
    LOG_SIGMAS,
    candidate_table,
    cell_index,
    cell_stacks,
    network_candidates,
    score_network,
    tune_classic,
)
from scipy.spatial import cKDTree

from napari_denodet.core.classic import detect_classic
from napari_denodet.core.io import read_image
from napari_denodet.core.metrics import score_detections
from napari_denodet.core.models import load_model
from napari_denodet.core.simulate import SCENARIOS

REPO = Path(__file__).resolve().parents[1]
TELOMERES = REPO.parent / "shared" / "data" / "timelapse_telomeres_2d.tif"
#: Noise widths (y, x) in px that give the real time-lapse's neighbour correlations.
CAMERA = (0.6, 0.45)
NOISES = {"white": (0.0, 0.0), "camera-like": CAMERA}
SNRS = (1.0, 2.0, 4.0)
#: Largest distance (px) at which a detection counts as found again in the next frame.
REDETECT = 1.5


def score_cell(models, scenario, snr, density, widths, frames) -> dict:
    """F1 (tuned and default threshold) of every model and a tuned LoG on one cell."""
    val, test = cell_stacks(scenario, snr, density, frames,
                            cell_index(scenario, snr, density), noise_correlation=widths)
    row = {"scenario": scenario, "snr": snr, "density": density}
    for name, model in models.items():
        row[name] = score_network(model, val, test)[0]
    _, sigma, threshold = tune_classic(val.noisy, val.truth, "log", "sigma", LOG_SIGMAS)
    points = candidate_table(detect_classic(test.noisy, "log", sigma=sigma))
    row["LoG"] = {"f1": score_detections(points[points.score >= threshold], test.truth).f1}
    return row


def redetection(model, stack, seed=0) -> dict:
    """Detections per frame at the model's threshold and how many recur in the next frame."""
    points = network_candidates(model, stack)[0]
    points = points[points.score >= model.threshold]
    height, width = stack.shape[1:]
    rng = np.random.default_rng(seed)
    found = total = 0
    chance = []
    for t in range(len(stack) - 1):
        here, after = points[points.frame == t], points[points.frame == t + 1]
        if here.empty or after.empty:
            continue
        tree = cKDTree(after[["y", "x"]].to_numpy())
        distance, _ = tree.query(here[["y", "x"]].to_numpy())
        found += int((distance <= REDETECT).sum())
        total += len(here)
        anywhere = np.column_stack([rng.uniform(0, height - 1, 500),
                                    rng.uniform(0, width - 1, 500)])
        chance.append(float((tree.query(anywhere)[0] <= REDETECT).mean()))
    return {"per_frame": total / max(len(stack) - 1, 1),
            "found_again": found / max(total, 1),
            "chance": float(np.mean(chance)) if chance else float("nan")}


def neighbour_correlation(stack) -> tuple[float, float]:
    """Correlation of neighbouring rows and columns in frame differences (noise only)."""
    diff = np.diff(np.asarray(stack, np.float64), axis=0)
    diff -= diff.mean(axis=(1, 2), keepdims=True)
    power = np.mean(diff * diff)
    return (float(np.mean(diff[:, 1:] * diff[:, :-1]) / power),
            float(np.mean(diff[:, :, 1:] * diff[:, :, :-1]) / power))


def _mean(rows, name, key):
    values = [r[name][key] for r in rows if key in r[name]]
    return float(np.mean(values)) if values else float("nan")


def write_markdown(path: Path, report: dict, command: str) -> None:
    names = report["models"]
    lines = [
        "# Correlated camera noise",
        "",
        f"Written by `benchmarks/bench_correlated_noise.py`; every figure below was measured "
        f"in one run on this machine's CPU ({platform.machine()}, {torch.get_num_threads()} "
        f"torch threads, torch {torch.__version__}). Total time "
        f"{report['seconds'] / 60:.1f} min.",
        "",
        f"Command: `{command}`",
        "",
        "Models: " + "; ".join(f"**{n}**: `{c}`" for n, c in report["commands"].items()),
        "",
        "Cells: the detection benchmark's (same seeds; "
        f"{report['frames']} frames of 512 x 512 per validation and test stack; threshold "
        "tuned on the validation stack by the same rule; 5 px gate), with white noise and "
        f"with the same noise correlated by Gaussian widths {CAMERA[0]:g} / {CAMERA[1]:g} px "
        "along y / x (neighbour correlation about 0.45 / 0.17). 'default' is each model's "
        "own threshold, untuned.",
        "",
        "## Mean F1 over the three scenarios and two densities",
        "",
        "| noise | SNR | " + " | ".join(f"{n} tuned | {n} default" for n in names)
        + " | LoG tuned |",
        "|---|---|" + "---|---|" * len(names) + "---|",
    ]
    for noise in NOISES:
        for snr in report["snrs"]:
            rows = [r for r in report["rows"] if r["noise"] == noise and r["snr"] == snr]
            cells = " | ".join(f"{_mean(rows, n, 'f1'):.3f} | {_mean(rows, n, 'f1_default'):.3f}"
                               for n in names)
            lines.append(f"| {noise} | {snr:g} | {cells} | {_mean(rows, 'LoG', 'f1'):.3f} |")
    real = report.get("real")
    if real:
        cy, cx = real["neighbour_correlation"]
        lines += ["", "## Real time-lapse", "",
                  f"`{TELOMERES.name}`, frames 0-{real['frames'] - 1}: neighbouring rows of "
                  f"its frame differences correlate by {cy:.2f}, columns by {cx:.2f}. At each "
                  f"model's default threshold, detections per frame and the share found again "
                  f"within {REDETECT:g} px in the next frame (chance: random positions against "
                  "the same next-frame detections):", "",
                  "| model | threshold | detections per frame | found again | chance |",
                  "|---|---|---|---|---|"]
        for name in names:
            r = real["models"][name]
            lines.append(f"| {name} | {r['threshold']:.2f} | {r['per_frame']:.1f} | "
                         f"{r['found_again']:.2f} | {r['chance']:.2f} |")
    lines += ["", "## Every cell", "",
              "| noise | scenario | SNR | density | "
              + " | ".join(f"{n} tuned | {n} default" for n in names) + " | LoG tuned |",
              "|---|---|---|---|" + "---|---|" * len(names) + "---|"]
    for r in report["rows"]:
        cells = " | ".join(f"{r[n]['f1']:.3f} | {r[n]['f1_default']:.3f}" for n in names)
        lines.append(f"| {r['noise']} | {r['scenario']} | {r['snr']:g} | {r['density']} | "
                     f"{cells} | {r['LoG']['f1']:.3f} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", action="append", default=[], metavar="LABEL=PATH",
                        help="a model to score beside the bundled one (repeatable)")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--out", type=Path,
                        default=REPO / "docs" / "benchmarks" / "correlated-noise.md")
    args = parser.parse_args()
    started = time.perf_counter()
    models = {"bundled": load_model("fluorescence")}
    for item in args.compare:
        label, _, path = item.partition("=")
        models[label] = load_model(path)
    rows = []
    for noise, widths in NOISES.items():
        for scenario in SCENARIOS:
            for snr in SNRS:
                for density in DENSITIES:
                    row = score_cell(models, scenario, snr, density, widths, args.frames)
                    rows.append({"noise": noise, **row})
                    print(json.dumps(rows[-1]), flush=True)
    report = {"models": list(models), "snrs": list(SNRS), "frames": args.frames,
              "commands": {n: m.card["training"]["command"] for n, m in models.items()},
              "rows": rows, "real": None}
    if TELOMERES.exists():
        stack = np.asarray(read_image(TELOMERES)[:40])
        report["real"] = {
            "frames": len(stack), "neighbour_correlation": neighbour_correlation(stack),
            "models": {n: {"threshold": m.threshold, **redetection(m, stack)}
                       for n, m in models.items()}}
    report["seconds"] = time.perf_counter() - started
    command = "benchmarks/bench_correlated_noise.py " + " ".join(
        f"'{a}'" if " " in a else a for a in sys.argv[1:])
    write_markdown(args.out, report, command.strip())
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
