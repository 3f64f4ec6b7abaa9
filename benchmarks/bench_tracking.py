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
- *auto*: what ``napari-denodet detect`` does by default (``--model auto``: the better
  of ``fluorescence`` and ``timelapse`` by the F1 their probabilities expect);
- *LoG*: a Laplacian of Gaussian whose scale and threshold are tuned on the cell's
  validation stack (its truth), as in the detection benchmark;
- *trackpy*: trackpy's ``locate`` (diameter 5, 7 or 9 px and ``minmass`` tuned on the
  validation stack's detection F1) and its own ``link`` (``memory`` 2 frames, the same
  gap; ``search_range`` 3-9 px tuned on the validation stack's alpha), the pipeline of
  trackpy's walkthrough.

Measures (:mod:`napari_denodet.core.trackmetrics`, gate 5 px): alpha, beta, and the
Jaccard indices of tracks and of detections. A ceiling per pipeline: alpha of its
detections linked by the truth (each detection matched to a true particle within the
gate takes that particle's track; the others stay alone), the best any linker could do
with them. trackpy is a benchmark dependency only (``pip install -e .[benchmarks]``).
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
    best_threshold,
    cell_index,
    cell_stacks,
    tune_classic,
)

from napari_denodet.core.choice import choose_model
from napari_denodet.core.classic import detect_classic
from napari_denodet.core.metrics import match_points
from napari_denodet.core.models import load_model
from napari_denodet.core.predict import run
from napari_denodet.core.trackmetrics import score_tracks
from napari_denodet.core.tracks import LinkSettings, link

REPO = Path(__file__).resolve().parents[1]
MEASURES = ("alpha", "beta", "jaccard_tracks", "jaccard_detections")
#: The pipelines, as the rows' key prefixes.
WHO = ("denodet", "timelapse", "auto", "log", "trackpy")
NAMES = {"denodet": "DENODET", "timelapse": "timelapse", "auto": "auto", "log": "LoG",
         "trackpy": "trackpy"}
#: trackpy's locate diameters and link search ranges tried on the validation stack.
TRACKPY_DIAMETERS = (5, 7, 9)
TRACKPY_RANGES = (3.0, 5.0, 7.0, 9.0)


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


def _trackpy_located(stack, diameter: int) -> pd.DataFrame:
    import trackpy

    trackpy.quiet()
    tables = [trackpy.locate(frame.astype(np.float32), diameter, minmass=0, engine="python")
              .assign(frame=i) for i, frame in enumerate(stack)]
    table = pd.concat(tables, ignore_index=True)
    return table.rename(columns={"mass": "score"})[["frame", "y", "x", "score"]]


def _trackpy_linked(points: pd.DataFrame, search_range: float) -> pd.DataFrame | None:
    import trackpy

    try:
        linked = trackpy.link(points, search_range, memory=2)
    except trackpy.SubnetOversizeException:
        return None  # too many candidate links in a crowded field at this range
    return linked.rename(columns={"particle": "track_id"})


def _trackpy(val, test) -> tuple[pd.DataFrame, pd.DataFrame | None, float]:
    # trackpy's locate + link, tuned on the validation stack; the test detections and
    # their tracks.
    _, diameter, minmass = _trackpy_tuned(val)
    located = _trackpy_located(val.noisy, diameter)
    located = located[located["score"] >= minmass]
    truth = val.truth[["track_id", "frame", "y", "x"]]
    alphas = {}
    for search_range in TRACKPY_RANGES:
        linked = _trackpy_linked(located, search_range)
        alphas[search_range] = -1.0 if linked is None else score_tracks(truth, linked).alpha
    search_range = max(alphas, key=alphas.get)
    found = _trackpy_located(test.noisy, diameter)
    found = found[found["score"] >= minmass].reset_index(drop=True)
    return found, _trackpy_linked(found, search_range), search_range


def _trackpy_tuned(val) -> tuple[float, int, float]:
    # (F1, diameter, minmass) of the best locate diameter on the validation truth.
    best = (-1.0, TRACKPY_DIAMETERS[0], 0.0)
    for diameter in TRACKPY_DIAMETERS:
        f1, minmass = best_threshold(_trackpy_located(val.noisy, diameter), val.truth)
        if f1 > best[0]:
            best = (f1, diameter, minmass)
    return best


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
    choice = run(choose_model(test.noisy))
    same = {"timelapse": "timelapse", SCENARIO_MODEL[scenario]: "denodet"}
    found["auto"] = (found[same[choice.name]] if choice.name in same
                     else run(choice.model.detect(test.noisy)).points)
    row = {"scenario": scenario, "snr": snr, "density": density, "auto_model": choice.name}
    for who, points in found.items():
        settings = LinkSettings(max_distance=args.max_distance).for_points(points)
        row.update({f"{who}_{k}": v
                    for k, v in score_tracks(truth, link(points, settings)).as_dict().items()})
        row[f"{who}_step"] = settings.max_distance
        row[f"{who}_ceiling"] = score_tracks(truth, linked_by_truth(points, truth)).alpha
    points, linked, search_range = _trackpy(val, test)
    measures = (score_tracks(truth, linked).as_dict() if linked is not None
                else dict.fromkeys(MEASURES, 0.0))
    row.update({f"trackpy_{k}": v for k, v in measures.items()})
    row["trackpy_step"] = search_range
    row["trackpy_ceiling"] = score_tracks(truth, linked_by_truth(points, truth)).alpha
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
          file=sys.stderr)
    return row


def _markdown(rows: list[dict], args) -> str:
    heads = " | ".join(NAMES[who] for who in WHO)
    rule = "|---" * (len(WHO) + 1) + "|"
    lines = ["# Tracking: the particle tracking challenge's measures", "",
             f"Produced by `python benchmarks/bench_tracking.py --frames {args.frames}"
             + (f" --max-distance {args.max_distance:g}" if args.max_distance else "")
             + "` on "
             f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads. Alpha / beta / Jaccard of tracks / "
             "Jaccard of detections (gate 5 px). DENODET: the bundled single-frame model "
             "for the scenario; `timelapse`: the bundled model that reads frames t-1, t, "
             "t+1; auto: what `detect` does by default (the model it chose is named); all "
             "three at the per-image threshold. LoG: tuned on validation truth. These four "
             "are linked by the same LAP linker"
             + (f", largest step {args.max_distance:g} px." if args.max_distance else
                ", its largest step estimated from each pipeline's detections (as "
                "`napari-denodet track` does by default)."),
             "trackpy: `locate` and `link` (memory 2), diameter, minmass and search range "
             "tuned on validation truth. The step used (px) follows each entry.", "",
             f"| cell | {heads} |", rule]
    for r in rows:
        cells = [" / ".join(f"{r[f'{who}_{m}']:.3f}" for m in MEASURES)
                 + f" ({r[f'{who}_step']:g})"
                 + (f" {r['auto_model']}" if who == "auto" else "") for who in WHO]
        lines.append(f"| {r['scenario']} SNR {r['snr']:g} {r['density']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Means per SNR:", "", f"| SNR | {heads} |", rule]
    for snr in SNRS:
        mine = [r for r in rows if r["snr"] == snr]
        cells = [" / ".join(f"{np.mean([r[f'{who}_{m}'] for r in mine]):.3f}"
                            for m in MEASURES) for who in WHO]
        lines.append(f"| {snr:g} | " + " | ".join(cells) + " |")
    lines += ["", "Alpha, and in brackets its ceiling (the same detections linked by the "
              "truth: the best any linker could do with them), means per SNR:", "",
              f"| SNR | {heads} | auto - LoG (ceilings) | auto / best peer |",
              rule + "---|---|"]
    for snr in SNRS:
        mine = [r for r in rows if r["snr"] == snr]
        alpha = {who: np.mean([r[f"{who}_alpha"] for r in mine]) for who in WHO}
        ceiling = {who: np.mean([r[f"{who}_ceiling"] for r in mine]) for who in WHO}
        cells = [f"{alpha[who]:.3f} ({ceiling[who]:.3f})" for who in WHO]
        peer = max(alpha["log"], alpha["trackpy"])
        lines.append(f"| {snr:g} | " + " | ".join(cells)
                     + f" | {alpha['auto'] - alpha['log']:+.3f} "
                       f"({ceiling['auto'] - ceiling['log']:+.3f}) | "
                       f"{alpha['auto'] / peer:.2f} |")
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
