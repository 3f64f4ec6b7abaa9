"""Tracking benchmark: the particle tracking challenge's measures on simulated stacks.

For each cell (vesicle / receptor / microtubule x SNR 1, 2, 4, 7 x low / mid density;
512 x 512 stacks of ``--frames`` frames, the detection benchmark's seeds), the
simulation's truth knows each particle's track. Three pipelines, the same linker
(:func:`napari_denodet.core.tracks.link`: laptrack's LAP linker, gap 2 frames, largest
step estimated from each pipeline's detections as ``track`` does by default, or
``--max-distance`` px):

- *DENODET*: the bundled single-frame model for the scenario at its per-image threshold;
- *timelapse*: the bundled ``timelapse`` model (frames t-1, t, t+1) at its per-image
  threshold, on every scenario;
- *LoG*: a Laplacian of Gaussian whose scale and threshold are tuned on the cell's
  validation stack (its truth), as in the detection benchmark.

Measures (:mod:`napari_denodet.core.trackmetrics`, gate 5 px): alpha, beta, and the
Jaccard indices of tracks and of detections. A ceiling per pipeline: alpha of its
detections linked by the truth (each detection matched to a true particle within the
gate takes that particle's track; the others stay alone), the best any linker could do
with them. trackpy's locate + link is not run: it is not a dependency of this project.
Writes ``docs/benchmarks/tracking.md`` and ``.json``.

Usage::

    python benchmarks/bench_tracking.py [--frames 20] [--max-distance PX]
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
from napari_denodet.core.metrics import match_points
from napari_denodet.core.models import load_model
from napari_denodet.core.predict import run
from napari_denodet.core.trackmetrics import score_tracks
from napari_denodet.core.tracks import LinkSettings, link

REPO = Path(__file__).resolve().parents[1]
MEASURES = ("alpha", "beta", "jaccard_tracks", "jaccard_detections")
#: The pipelines, as the rows' key prefixes.
WHO = ("denodet", "timelapse", "log")


GATE = 5.0


def linked_by_truth(points: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Give each detection the track of the true particle it matches (a linking ceiling).

    Per frame, detections and true particles are matched one-to-one within the gate;
    a matched detection takes its particle's ``track_id``, every other detection is a
    track of its own.
    """
    out = points[["frame", "y", "x"]].reset_index(drop=True).copy()
    ids = np.arange(len(out)) + int(truth["track_id"].max()) + 1
    for frame, rows in out.groupby("frame").groups.items():
        true = truth[truth["frame"] == frame]
        mine, theirs, _ = match_points(out.loc[rows, ["y", "x"]].to_numpy(),
                                       true[["y", "x"]].to_numpy(), GATE)
        ids[np.asarray(rows)[mine]] = true["track_id"].to_numpy()[theirs]
    return out.assign(track_id=ids)


def _cell(scenario: str, snr: float, density: str, args) -> dict:
    val, test = cell_stacks(scenario, snr, density, args.frames,
                            cell_index(scenario, snr, density))
    truth = test.truth[["track_id", "frame", "y", "x"]]
    _, sigma, threshold = tune_classic(val.noisy, val.truth, "log", "sigma", LOG_SIGMAS)
    log = pd.DataFrame(detect_classic(test.noisy, "log", sigma=sigma))
    found = {
        "denodet": run(load_model(SCENARIO_MODEL[scenario]).detect(test.noisy)).points,
        "timelapse": run(load_model("timelapse").detect(test.noisy)).points,
        "log": log[log["score"] >= threshold][["frame", "y", "x"]],
    }
    row = {"scenario": scenario, "snr": snr, "density": density}
    for who, points in found.items():
        settings = LinkSettings(max_distance=args.max_distance).for_points(points)
        row.update({f"{who}_{k}": v
                    for k, v in score_tracks(truth, link(points, settings)).as_dict().items()})
        row[f"{who}_step"] = settings.max_distance
        row[f"{who}_ceiling"] = score_tracks(truth, linked_by_truth(points, truth)).alpha
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
          file=sys.stderr)
    return row


def _markdown(rows: list[dict], args) -> str:
    lines = ["# Tracking: the particle tracking challenge's measures", "",
             f"Produced by `python benchmarks/bench_tracking.py --frames {args.frames}"
             + (f" --max-distance {args.max_distance:g}" if args.max_distance else "")
             + "` on "
             f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads. Alpha / beta / Jaccard of tracks / "
             "Jaccard of detections (gate 5 px), DENODET (bundled single-frame model, "
             "per-image threshold) and `timelapse` (the bundled model that reads frames "
             "t-1, t, t+1) against a LoG tuned on validation truth, all linked by the "
             "same LAP linker"
             + (f", largest step {args.max_distance:g} px." if args.max_distance else
                ", its largest step estimated from each pipeline's detections (as "
                "`napari-denodet track` does by default; the step used follows each "
                "cell's figures, in px)."), "",
             "| cell | DENODET | timelapse | LoG |", "|---|---|---|---|"]
    for r in rows:
        cells = [" / ".join(f"{r[f'{who}_{m}']:.3f}" for m in MEASURES)
                 + f" ({r[f'{who}_step']:g})" for who in WHO]
        lines.append(f"| {r['scenario']} SNR {r['snr']:g} {r['density']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Means per SNR:", "", "| SNR | DENODET | timelapse | LoG |",
              "|---|---|---|---|"]
    for snr in SNRS:
        mine = [r for r in rows if r["snr"] == snr]
        cells = [" / ".join(f"{np.mean([r[f'{who}_{m}'] for r in mine]):.3f}"
                            for m in MEASURES) for who in WHO]
        lines.append(f"| {snr:g} | " + " | ".join(cells) + " |")
    lines += ["", "Alpha against its ceiling (the same detections linked by the truth: the "
              "best any linker could do with them), means per SNR:", "",
              "| SNR | DENODET | timelapse | LoG | best pipeline - LoG | ceilings: best "
              "network - LoG |", "|---|---|---|---|---|---|"]
    for snr in SNRS:
        mine = [r for r in rows if r["snr"] == snr]
        alpha = {who: np.mean([r[f"{who}_alpha"] for r in mine]) for who in WHO}
        ceiling = {who: np.mean([r[f"{who}_ceiling"] for r in mine]) for who in WHO}
        cells = [f"{alpha[who]:.3f} (ceiling {ceiling[who]:.3f})" for who in WHO]
        best = max(alpha["denodet"], alpha["timelapse"]) - alpha["log"]
        roof = max(ceiling["denodet"], ceiling["timelapse"]) - ceiling["log"]
        lines.append(f"| {snr:g} | " + " | ".join(cells) + f" | {best:+.3f} | {roof:+.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--max-distance", type=float, default=None,
                        help="largest step (px) for every pipeline (default: estimated "
                             "from each pipeline's detections)")
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
