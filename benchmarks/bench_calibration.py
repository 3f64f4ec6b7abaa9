"""How well a threshold can be chosen from a few clicks: the threshold-only mode's limits.

In the ``"threshold"`` mode, fine-tuning keeps the bundled model's weights and only
chooses a new score threshold from one completely clicked region
(:func:`napari_denodet.core.finetune.calibrate_from_area`). This script measures, on the
fine-tuning benchmark's micrograph cases (the model whose card advises that mode) and
over many click regions per click count:

- F1 of the shipped rule;
- F1 of two rules that read only the clicked region: the score of the k-th surest
  candidate there (k clicks; the rule's first half), and the threshold tuned for F1 in
  the region taken as completely annotated, as the LoG baseline is tuned;
- the best fixed threshold: the one threshold with the highest mean F1 over the regions,
  chosen on the truth it is scored against (an upper bound for any rule);
- the spread of the shipped rule's threshold over the regions.

F1 is scored as in ``bench_finetune.py``: outside the clicked region, same gates and
edge margins. Writes ``docs/benchmarks/calibration.md`` (and ``.json``).

Usage::

    python benchmarks/bench_calibration.py --regions 48 --clicks 10 25 50
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
    click_region,
    f1_at,
    finetune_cases,
    inside_region,
    network_points,
    score_outside,
)

from napari_denodet.core.finetune import FinetuneSettings, finetune
from napari_denodet.core.models import load_model
from napari_denodet.core.points import SCORE, X, Y

REPO = Path(__file__).resolve().parents[1]
LEVELS = np.round(np.arange(0.05, 0.951, 0.0125), 4)


def tuned_in_region(case, points, clicks, centre, radius) -> float:
    """The threshold with the best F1 inside the clicked region against the clicks.

    The region is the clicks' disk (the evaluation excludes 5 px more), as for the LoG
    baseline; where several thresholds tie, their median.
    """
    inner = radius - 5.0
    region = inside_region(points, centre, inner)
    if region.empty:
        return float(points[SCORE].min())
    truth = clicks.assign(frame=0) if "frame" not in clicks.columns else clicks
    scores = np.unique(region[SCORE].to_numpy())
    f1 = f1_at(region, truth, scores, case.gate)
    return float(np.median(scores[np.isclose(f1, f1.max())]))


def _threshold_only_model(parent, case, positives):
    image = case.image if len(case.image) > 1 else case.image[0]
    facts = {}
    generator = finetune(parent, image, positives, settings=FinetuneSettings(mode="threshold"))
    try:
        while True:
            report = next(generator)
            if report.stage == "calibrate":
                facts = dict(report.metrics)
    except StopIteration as done:
        return done.value.model, facts


def measure(case, clicks: list[int], regions: int) -> list[dict]:
    """Per click count and region: the thresholds of each rule and their F1."""
    parent = load_model(case.model)
    scored = {}  # the recalibrated card's blob term -> the candidates it scores
    before = network_points(parent, case.image)
    rows = []
    for n in clicks:
        for draw in range(regions):
            positives, centre, radius = click_region(case, n, draw)
            model, facts = _threshold_only_model(parent, case, positives)
            key = json.dumps(model.localisation.get("blob"), sort_keys=True)
            if key not in scored:
                scored[key] = network_points(model, case.image)
            points = scored[key]
            thresholds = {"shipped": model.threshold, "kth": facts.get("in_area"),
                          "tuned": tuned_in_region(case, points, positives[[Y, X]],
                                                   centre, radius)}
            row = {"case": case.name, "clicks": n, "draw": draw,
                   "f1_before": score_outside(case, before, parent.threshold, centre, radius).f1,
                   "levels": [score_outside(case, points, t, centre, radius).f1 for t in LEVELS]}
            for rule, t in thresholds.items():
                row[f"threshold_{rule}"] = t
                row[f"f1_{rule}"] = (None if t is None
                                     else score_outside(case, points, t, centre, radius).f1)
            rows.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                              for k, v in row.items() if k != "levels"}), file=sys.stderr)
    return rows


def _mean(rows, key) -> float:
    return float(np.mean([r[key] for r in rows if r[key] is not None]))


def markdown(rows: list[dict], args) -> str:
    lines = [
        "# Choosing the threshold from a few clicks",
        "",
        f"Written by `benchmarks/bench_calibration.py` ({time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, CPU only). Every "
        "figure was measured in that one run.",
        "",
        f"Command: `{shlex.join(sys.argv)}`",
        "",
        "The threshold-only mode of fine-tuning (the micrograph card's advice) keeps the "
        "bundled model's weights and chooses the score threshold from one completely "
        "clicked region. Regions are drawn as in "
        "[finetune.md](finetune.md) (its regions 1-24 are regions "
        "1-24 here); F1 is scored outside the clicked region with its gates and margins, "
        "on the candidates scored as the recalibrated card scores them (peak probability "
        "plus the denoised image's blob term). Mean F1 over the regions:",
        "",
        "- *shipped rule*: `calibrate_from_area`, the mean of the k-th surest candidate in "
        "the clicked area and the count over the frames from the parent's detections;",
        "- *k-th in the area*: that rule's first half alone;",
        "- *tuned in the region*: the threshold with the best F1 inside the clicks' disk "
        "against the clicks, the region taken as completely annotated (how the LoG "
        "baseline is tuned);",
        "- *best fixed threshold*: the one threshold (steps of 0.0125) with the highest "
        "mean F1 over the regions, chosen on the truth it is scored against: an upper "
        "bound for any rule that sets one threshold;",
        "- *spread*: the standard deviation of the shipped rule's threshold over the "
        "regions.",
        "",
        "| case | clicks | regions | F1 before | target (before + 0.2) | shipped rule "
        "| k-th in the area | tuned in the region | best fixed threshold | spread |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = {}  # (case, clicks) -> its rows, in the order measured
    for r in rows:
        groups.setdefault((r["case"], r["clicks"]), []).append(r)
    curves = {key: np.mean([r["levels"] for r in mine], axis=0)
              for key, mine in groups.items()}
    for (case, n), mine in groups.items():
        curve = curves[case, n]
        best = int(np.argmax(curve))
        spread = float(np.std([r["threshold_shipped"] for r in mine]))
        before = _mean(mine, "f1_before")
        lines.append(
            f"| {case} | {n} | {len(mine)} | {before:.3f} | {before + 0.2:.3f} | "
            f"{_mean(mine, 'f1_shipped'):.3f} | {_mean(mine, 'f1_kth'):.3f} | "
            f"{_mean(mine, 'f1_tuned'):.3f} | {curve[best]:.3f} (at {LEVELS[best]:g}) "
            f"| {spread:.3f} |")
    lines += ["", "F1 of the best fixed threshold's neighbours (mean over the regions at "
              f"{args.clicks[0]} clicks), to show how sharp the optimum is:", "",
              "| case | " + " | ".join(f"{d:+.2f}" for d in (-0.1, -0.05, 0, 0.05, 0.1))
              + " |", "|---|" + "---|" * 5]
    for case in dict.fromkeys(r["case"] for r in rows):
        curve = curves[case, args.clicks[0]]
        best = int(np.argmax(curve))
        cells = []
        for delta in (-0.1, -0.05, 0, 0.05, 0.1):
            i = best + int(round(delta / 0.0125))
            cells.append(f"{curve[i]:.3f}" if 0 <= i < len(LEVELS) else "–")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _rounded(value):
    # F1 and thresholds to 4 decimals keep the raw file small (73 levels per row).
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def main() -> None:
    """Measure the rules over the regions and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regions", type=int, default=48)
    parser.add_argument("--clicks", type=int, nargs="+", default=[10, 5, 25, 50])
    parser.add_argument("--out", type=Path,
                        default=REPO / "docs" / "benchmarks" / "calibration.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cases = [c for c in finetune_cases(quick=False) if c.model == "micrograph"]
    rows = [row for case in cases for row in measure(case, args.clicks, args.regions)]
    args.out.write_text(markdown(rows, args))
    args.out.with_suffix(".json").write_text(json.dumps(_rounded(rows)) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
