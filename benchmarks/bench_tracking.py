"""Tracking benchmark: the particle tracking challenge's measures on simulated stacks.

For each cell (vesicle / receptor / microtubule x SNR 1, 2, 4, 7 x low / mid density;
512 x 512 stacks of ``--frames`` frames, the detection benchmark's seeds), the
simulation's truth knows each particle's track. Two pipelines, the same linker
(:func:`napari_denodet.core.tracks.link`: laptrack's LAP linker, largest step
``--max-distance`` px, gap 2 frames):

- *DENODET*: the bundled single-frame model for the scenario at its per-image threshold;
- *timelapse*: the bundled ``timelapse`` model (frames t-1, t, t+1) at its per-image
  threshold, on every scenario;
- *LoG*: a Laplacian of Gaussian whose scale and threshold are tuned on the cell's
  validation stack (its truth), as in the detection benchmark.

Measures (:mod:`napari_denodet.core.trackmetrics`, gate 5 px): alpha, beta, and the
Jaccard indices of tracks and of detections. trackpy's locate + link is not run: it is
not a dependency of this project. Writes ``docs/benchmarks/tracking.md`` and ``.json``.

Usage::

    python benchmarks/bench_tracking.py [--frames 20] [--max-distance 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import (
    DENSITIES,
    LOG_SIGMAS,
    SCENARIO_MODEL,
    SCENARIOS,
    SNRS,
    cell_index,
    cell_stacks,
    tune_classic,
)

from napari_denodet.core.classic import detect_classic
from napari_denodet.core.models import load_model
from napari_denodet.core.predict import run
from napari_denodet.core.trackmetrics import score_tracks
from napari_denodet.core.tracks import LinkSettings, link

REPO = Path(__file__).resolve().parents[1]
MEASURES = ("alpha", "beta", "jaccard_tracks", "jaccard_detections")
#: The pipelines, as the rows' key prefixes.
WHO = ("denodet", "timelapse", "log")


def _cell(scenario: str, snr: float, density: str, args) -> dict:
    val, test = cell_stacks(scenario, snr, density, args.frames,
                            cell_index(scenario, snr, density))
    settings = LinkSettings(max_distance=args.max_distance)
    truth = test.truth[["track_id", "frame", "y", "x"]]
    found = run(load_model(SCENARIO_MODEL[scenario]).detect(test.noisy)).points
    ours = score_tracks(truth, link(found, settings))
    windowed = run(load_model("timelapse").detect(test.noisy)).points
    timed = score_tracks(truth, link(windowed, settings))
    _, sigma, threshold = tune_classic(val.noisy, val.truth, "log", "sigma", LOG_SIGMAS)
    log = pd.DataFrame(detect_classic(test.noisy, "log", sigma=sigma))
    log = log[log["score"] >= threshold][["frame", "y", "x"]]
    theirs = score_tracks(truth, link(log, settings))
    row = {"scenario": scenario, "snr": snr, "density": density,
           **{f"denodet_{k}": v for k, v in ours.as_dict().items()},
           **{f"timelapse_{k}": v for k, v in timed.as_dict().items()},
           **{f"log_{k}": v for k, v in theirs.as_dict().items()}}
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
          file=sys.stderr)
    return row


def _markdown(rows: list[dict], args) -> str:
    lines = ["# Tracking: the particle tracking challenge's measures", "",
             f"Produced by `python benchmarks/bench_tracking.py --frames {args.frames} "
             f"--max-distance {args.max_distance:g}` on "
             f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads. Alpha / beta / Jaccard of tracks / "
             "Jaccard of detections (gate 5 px), DENODET (bundled single-frame model, "
             "per-image threshold) and `timelapse` (the bundled model that reads frames "
             "t-1, t, t+1) against a LoG tuned on validation truth, all linked by the "
             "same LAP linker.", "",
             "| cell | DENODET | timelapse | LoG |", "|---|---|---|---|"]
    for r in rows:
        cells = [" / ".join(f"{r[f'{who}_{m}']:.3f}" for m in MEASURES)
                 for who in WHO]
        lines.append(f"| {r['scenario']} SNR {r['snr']:g} {r['density']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Means per SNR:", "", "| SNR | DENODET | timelapse | LoG |",
              "|---|---|---|---|"]
    for snr in SNRS:
        mine = [r for r in rows if r["snr"] == snr]
        cells = [" / ".join(f"{np.mean([r[f'{who}_{m}'] for r in mine]):.3f}"
                            for m in MEASURES) for who in WHO]
        lines.append(f"| {snr:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--max-distance", type=float, default=LinkSettings.max_distance)
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "tracking")
    args = parser.parse_args()
    rows = [_cell(scenario, snr, density, args) for scenario in args.scenarios
            for snr in SNRS for density in DENSITIES]
    args.out.with_suffix(".json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(rows, args))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
