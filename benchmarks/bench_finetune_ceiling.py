"""How high F1 can go on the fine-tuning benchmark's low-start cases, with every label.

The fine-tuning target asks 10 clicks to raise F1 by 0.2 where the bundled model starts
below 0.7: the simulated micrograph at SNR 0.05 and the real EMPIAR-10017 micrograph.
This script measures upper bounds on the same images, each scored on the whole annotated
area at the best threshold (chosen on the very truth it is scored against):

- the bundled model, before fine-tuning;
- a Laplacian of Gaussian whose scale and threshold are tuned on the whole truth;
- the bundled model fine-tuned with *every* true particle clicked and the image taken as
  completely annotated (it is scored on particles it was trained on);
- for the simulated case, a model trained on simulated micrographs of that SNR with their
  clean images (``--specialist``; its command is in its card).

Writes ``docs/benchmarks/finetune-ceiling.md``.

Usage::

    python benchmarks/bench_finetune_ceiling.py --specialist runs/micrograph-snr005.pt
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import (
    FINETUNE_LOG_SIGMAS,
    annotated,
    f1_at,
    finetune_cases,
    network_points,
)

from napari_denodet.core.classic import detect_classic
from napari_denodet.core.finetune import FinetuneSettings, finetune
from napari_denodet.core.metrics import score_detections
from napari_denodet.core.models import load_model
from napari_denodet.core.points import SCORE, X, Y, points_table
from napari_denodet.core.predict import run

REPO = Path(__file__).resolve().parents[1]
LOW_START = ("micrograph, SNR 0.05", "real micrograph")


def best_f1(case, points) -> tuple[float, float]:
    """Best F1 (and its threshold) over score quantiles, on the whole annotated area."""
    truth = annotated(case, case.truth)
    points = annotated(case, points)
    if points.empty:
        return 0.0, float("nan")
    levels = np.unique(np.quantile(points[SCORE], np.linspace(0, 0.995, 200)))
    f1 = f1_at(points, truth, levels, case.gate)
    return max(zip(f1.tolist(), levels.tolist(), strict=True))


def at_threshold(case, points, threshold) -> float:
    kept = annotated(case, points[points[SCORE] >= threshold])
    return score_detections(kept, annotated(case, case.truth), gate=case.gate).f1


def log_oracle(case, invert) -> tuple[float, float]:
    best = (-1.0, None)
    for sigma in FINETUNE_LOG_SIGMAS["micrograph"]:
        found = detect_classic(case.image, "log", invert=invert, sigma=sigma,
                               min_distance=max(2, int(sigma)), floor=0.0)
        table = points_table(found["y"], found["x"], frame=found["frame"],
                             score=found["score"])
        f1, _ = best_f1(case, table)
        best = max(best, (f1, sigma))
    return best


def measure(case, specialist, budget) -> dict:
    parent = load_model(case.model)
    points = network_points(parent, case.image)
    row = {"case": case.name, "particles": len(annotated(case, case.truth)),
           "before": at_threshold(case, points, parent.threshold),
           "before_best": best_f1(case, points)[0]}
    row["log_oracle"], row["log_sigma"] = log_oracle(case, parent.invert)
    clicks = annotated(case, case.truth)[[Y, X]]
    started = time.perf_counter()
    settings = FinetuneSettings(time_budget=budget, complete_region=True)
    tuned = run(finetune(parent, case.image[0], clicks, settings=settings)).model
    row["all_clicked_s"] = time.perf_counter() - started
    tuned_points = network_points(tuned, case.image)
    row["all_clicked"] = at_threshold(case, tuned_points, tuned.threshold)
    row["all_clicked_best"] = best_f1(case, tuned_points)[0]
    if specialist is not None and not case.name.startswith("real"):
        row["specialist_best"] = best_f1(case, network_points(specialist, case.image))[0]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
          file=sys.stderr)
    return row


def markdown(rows, args, specialist) -> str:
    lines = [
        "# How high F1 can go on the low-start fine-tuning cases",
        "",
        f"Written by `benchmarks/bench_finetune_ceiling.py` ({time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, CPU only). Every "
        "figure was measured in that one run.",
        "",
        f"Command: `{shlex.join(sys.argv)}`",
        "",
        "Each figure is F1 on the whole annotated area of the case's image (same images, "
        "gates and edge margins as [finetune.md](finetune.md)). "
        "'best' means at the threshold that maximises F1 against the very truth it is "
        "scored on, so every 'best' column is an upper bound. *All clicked*: the "
        "bundled model fine-tuned with every true particle as a click and the image taken as "
        f"completely annotated ({args.budget:g} s budget), scored on the particles it was "
        "trained on. *Specialist*: a model trained with clean images on simulated "
        "micrographs of that SNR"
        + (f" (`{specialist.card['training']['command']}`)" if specialist else "") + ".",
        "",
        "| case | particles | before (card threshold) | before, best | target (before + 0.2) "
        "| LoG tuned on all truth, best | all clicked | all clicked, best | specialist, best |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        spec = f"{r['specialist_best']:.3f}" if "specialist_best" in r else "–"
        lines.append(
            f"| {r['case']} | {r['particles']} | {r['before']:.3f} | {r['before_best']:.3f} | "
            f"{r['before'] + 0.2:.3f} | {r['log_oracle']:.3f} (σ={r['log_sigma']:g}) | "
            f"{r['all_clicked']:.3f} | {r['all_clicked_best']:.3f} | {spec} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure the bounds and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--specialist", type=Path, default=None,
                        help="a model trained on simulated micrographs of the case's SNR")
    parser.add_argument("--budget", type=float, default=45.0)
    parser.add_argument("--out", type=Path,
                        default=REPO / "docs" / "benchmarks" / "finetune-ceiling.md")
    args = parser.parse_args()
    specialist = load_model(args.specialist) if args.specialist else None
    cases = [c for c in finetune_cases(quick=False) if c.name.startswith(LOW_START)]
    rows = [measure(c, specialist, args.budget) for c in cases]
    args.out.write_text(markdown(rows, args, specialist))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
