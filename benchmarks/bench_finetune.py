"""Fine-tuning benchmark: the bundled models on data they were not trained for.

For each domain-shift case, clicks are drawn as a user would make them: the ``n``
particles nearest to a random particle of the first image (one region, every particle
in it clicked). F1 and RMSE (5 px gate) are measured on everything else: the other
frames, and the first image outside the clicked region (the region's disk plus 5 px).
Reported per case and click count:

- the bundled model before fine-tuning, at its calibrated threshold;
- the fine-tuned model at its recalibrated threshold, and the wall time of fine-tuning
  (training with a 45 s budget, then calibration; on these 2 CPU cores): the trained
  weights, whether or not the acceptance check kept them (recorded as ``accepted``);
- a Laplacian-of-Gaussian detector (sub-pixel refined, as TrackMate's) whose scale and
  threshold are tuned on the same clicks: the clicked region is taken as completely
  annotated, which is more information than fine-tuning uses.

Cases: (i) simulated fluorescence time-lapses with a PSF twice as wide as in training
on a structured background (vesicles at SNR 2 and 4); (ii) simulated micrographs at
SNR 0.05 and 0.1; (iii) the real EMPIAR-10017 micrograph with its 629 expert
coordinates, binned as the micrograph model's card asks for its 108 px particles (6x),
scored inside the area the expert annotated (nothing within one particle diameter of
the edge). Writes ``docs/benchmarks/finetune.md`` and ``.json``.

Usage::

    python benchmarks/bench_finetune.py [--clicks 5 10 25] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from common import (
    Case,
    advised_calibrations,
    advised_modes,
    click_region,
    finetune_cases,
    kept_text,
    log_on_clicks,
    model_of,
    network_points,
    score_outside,
    weights_column,
)

from napari_denodet.core.finetune import FinetuneSettings, finetune
from napari_denodet.core.models import load_model
from napari_denodet.core.points import SCORE
from napari_denodet.core.predict import run

REPO = Path(__file__).resolve().parents[1]
# The threshold-only rule (calibrate_from_area) was chosen on the 10-click regions of the
# first RULE_DRAWS draws; draws beyond them test it on regions it was not chosen on. (Its
# count over the frames, from the parent's detections, was chosen later with regions 1-36
# in view: no region is held out from that part, docs/models-history.md.)
RULE_DRAWS = 6
# The threshold-only mode's blob score (its weight and sigma) was chosen on the first
# BLOB_DRAWS draws; draws beyond them test both.
BLOB_DRAWS = 12


def _threshold_only(case: Case, parent, positives, parent_points, centre, radius) -> dict:
    """The threshold-only columns of a row: the parent, its threshold from the clicks."""
    image = case.image if len(case.image) > 1 else case.image[0]
    started = time.perf_counter()
    recalibrated = run(finetune(parent, image, positives,
                                settings=FinetuneSettings(mode="threshold"))).model
    seconds = time.perf_counter() - started
    # The recalibrated card may score with the denoised output's blob term: detect again.
    points = (parent_points if "blob" not in recalibrated.localisation
              else network_points(recalibrated, case.image))
    only = score_outside(case, points, recalibrated.threshold, centre, radius)
    return {"model": case.model, "f1_threshold_only": only.f1,
            "rmse_threshold_only": only.rmse, "threshold_only": recalibrated.threshold,
            "threshold_only_s": seconds}


def _measure(case: Case, n: int, budget: float, draw: int = 0,
             pseudo_labels: float | None = None) -> dict:
    parent = load_model(case.model)
    positives, centre, radius = click_region(case, n, draw)
    parent_points = network_points(parent, case.image)
    before = score_outside(case, parent_points, parent.threshold, centre, radius)
    image = case.image if len(case.image) > 1 else case.image[0]
    started = time.perf_counter()
    # Both thresholds after training are on the card; "clicks" is used, "count" scored too.
    settings = FinetuneSettings(time_budget=budget, mode="weights", calibration="clicks")
    if pseudo_labels is not None:
        settings = replace(settings, pseudo_labels=pseudo_labels)
    result = run(finetune(parent, image, positives, settings=settings))
    seconds = time.perf_counter() - started
    # The "threshold" mode: the parent's weights, the threshold from the clicked area.
    only = _threshold_only(case, parent, positives, parent_points, centre, radius)
    # The trained weights, whether or not the acceptance check kept them: this table
    # measures training (the correction-loop benchmark measures what the user keeps).
    tuned = result.adapted or result.model
    tuned_points = network_points(tuned, case.image)
    after = score_outside(case, tuned_points, tuned.threshold, centre, radius)
    # What a perfectly chosen threshold would give: the cost of calibrating from clicks.
    # Scores can bunch within a few hundredths, so the levels are quantiles of the scores.
    levels = np.union1d(np.arange(0.05, 0.951, 0.025),
                        np.quantile(tuned_points[SCORE], np.linspace(0, 0.995, 200)))
    best_after = max(score_outside(case, tuned_points, t, centre, radius).f1 for t in levels)
    keeping = tuned.card["training"]["calibration"]["threshold_keeping_count"]
    count = None if keeping is None else score_outside(case, tuned_points, keeping, centre, radius)
    log, sigma, threshold = log_on_clicks(case, parent.invert, centre, radius, case.model)
    row = {
        "case": case.name, "clicks": n, "draw": draw, "evaluated": int(before.tp + before.fn),
        "f1_before": before.f1, "rmse_before": before.rmse,
        "f1_after": after.f1, "rmse_after": after.rmse, "f1_after_best_threshold": best_after,
        "threshold_after": tuned.threshold, "steps": result.steps_done,
        "accepted": result.accepted,
        "f1_after_count": None if count is None else count.f1,
        "rmse_after_count": None if count is None else count.rmse,
        "threshold_after_count": keeping,
        **only,
        "pseudo_labels": settings.pseudo_labels,
        "finetune_s": seconds,
        "f1_log": log.f1, "rmse_log": log.rmse, "log_sigma": sigma, "log_threshold": threshold,
    }
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
          file=sys.stderr)
    return row


def _markdown(rows: list[dict], cases: list[Case], args, baseline=None) -> str:
    baseline = baseline or {}
    pseudo = sorted({r.get("pseudo_labels", 0.0) for r in rows})
    lines = [
        "# Fine-tuning benchmark",
        "",
        "Written by `benchmarks/bench_finetune.py` "
        f"({'quick mode, ' if args.quick else ''}{time.strftime('%Y-%m-%d')}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        "threads, CPU only). "
        + ("Every figure below was measured in that one run." if not any(
            r.get("reused") for r in rows) else "Every figure below was measured in that "
           "one run except the rows marked * (read back from an earlier run, see below)."),
        "",
        "Clicks: the *n* particles nearest a random particle of the first image (one "
        "region, all of it clicked). F1 and RMSE (px of the image as detected; 5 px "
        "gate, 40 full-resolution px on the real micrograph) are measured on the "
        "rest: the other frames and the first image outside the clicked region. "
        "*Before*: the bundled model at its calibrated threshold. *After*: fine-tuned "
        f"(training budget {args.budget:g} s, the flip/rotation copy of "
        f"{FinetuneSettings().consistency_patches} patches per step, then threshold "
        "recalibration from the "
        "clicks), at its new threshold: the trained weights whether or not the acceptance "
        "check on the held-out clicks kept them (*kept*; the correction-loop benchmark "
        "measures what the user keeps); *parent's count*: the same network at the "
        "threshold that keeps as many detections on the clicked frames as the parent "
        "made (`--calibration count`); *time* is the whole fine-tuning call. *LoG*: "
        "Laplacian of Gaussian with scale and threshold tuned on the clicked region "
        "taken as completely annotated. Pseudo-labels: share of the parent's surest "
        f"detections learnt as extra particles, {', '.join(f'{p:g}' for p in pseudo)}"
        + (f"; *clicks only*: the same case, clicks and budget without pseudo-labels, "
           f"read back from `{args.baseline.name}` (an earlier run of this script)"
           if baseline else "") + ".",
        "",
        "| case | clicks | region | F1 before | F1 after | ΔF1 | F1 after, parent's count "
        "| F1 after, best threshold | F1 threshold only "
        + ("| F1 after, clicks only " if baseline else "")
        + "| F1 LoG | RMSE before | RMSE after | RMSE threshold only | RMSE LoG | time (s) "
        "| steps | kept | time, threshold only (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        + ("---|" if baseline else ""),
    ]
    for r in rows:
        lines.append(
            f"| {r['case']}{' *' if r.get('reused') else ''} | {r['clicks']} | {r['draw'] + 1} "
            f"| {r['f1_before']:.3f} "
            f"| {r['f1_after']:.3f} | {r['f1_after'] - r['f1_before']:+.3f} "
            f"| {_f(r, 'f1_after_count', 3)} | {r['f1_after_best_threshold']:.3f} "
            f"| {_f(r, 'f1_threshold_only', 3)} "
            + (f"| {baseline[_key(r)]['f1_after']:.3f} " if _key(r) in baseline else
               "| – " if baseline else "")
            + f"| {r['f1_log']:.3f} "
            f"| {r['rmse_before']:.2f} | {r['rmse_after']:.2f} "
            f"| {_f(r, 'rmse_threshold_only', 2)} | {r['rmse_log']:.2f} "
            f"| {r['finetune_s']:.0f} | {r['steps']} | {kept_text(r.get('accepted'))} "
            f"| {_f(r, 'threshold_only_s', 1)} |")
    if any(r.get("reused") for r in rows):
        rounded = ("" if args.reuse.suffix == ".json" else
                   "; their figures are rounded to 3 decimals")
        lines += ["", "Rows marked * were measured by an earlier run of this script, with the "
                      "same code path and model for their case, and read back with "
                      f"`--reuse {args.reuse.name}`{rounded}"
                      + ("; where that run had no threshold-only column, this run measured "
                         "it (the parent's weights and clicks are the same)"
                         if any(r.get("threshold_added") for r in rows) else "")
                      + ("; this run measured their threshold-only columns again (the "
                         "parent's weights and the clicks are the same)"
                         if args.threshold_again else "")
                      + (f"; rows whose threshold after training was above "
                         f"{args.remeasure_above:g} in that run were measured again"
                         if args.remeasure_above is not None else "") + "."]
    calibrations = advised_calibrations(rows)
    lines += ["", "## Threshold after training advised per model", "",
              "Mean F1 from 10 clicks over the model's cases (each the mean of its "
              "regions), the trained network's threshold from the clicks and keeping the "
              "parent's count; the better is written into the bundled card and is what "
              "`--calibration auto` does (rows without the count column count as clicks):",
              ""]
    for model, (calibration, clicks, count) in calibrations.items():
        lines.append(f"- `{model}`: from the clicks {clicks:.3f}, parent's count "
                     + (f"{count:.3f}" if count is not None else "not measured")
                     + f": **{calibration}**.")
    modes = advised_modes(rows)
    lines += ["", "## Mode advised per model", "",
              "Mean F1 from 10 clicks over the model's cases (each the mean of its "
              "regions; weights at the advised threshold after training); the better mode "
              "is written into the bundled card "
              "(`scripts/card_benchmarks.py`) and is what `--mode auto` does:", ""]
    for model, (mode, weights, only) in modes.items():
        lines.append(f"- `{model}`: weights and threshold {weights:.3f}, threshold only "
                     + (f"{only:.3f}" if only is not None else "not measured")
                     + f": **{mode}**.")
    lines += _held_out(rows, calibrations)
    lines += ["", "## Targets (from 10 clicks, in the advised mode; mean over the click "
                  "regions drawn)", ""]
    for name in dict.fromkeys(r["case"] for r in rows):
        ten = [r for r in rows if r["case"] == name and r["clicks"] == 10]
        if not ten:
            continue
        mode = modes[model_of(ten[0])][0]
        calibration = calibrations[model_of(ten[0])][0]
        column = ("f1_threshold_only" if mode == "threshold" else
                  weights_column(calibration))
        how = mode if mode == "threshold" else f"weights, threshold by {calibration}"
        before, after, log = (float(np.mean([r[k] for r in ten]))
                              for k in ("f1_before", column, "f1_log"))
        seconds = max(r["threshold_only_s" if mode == "threshold" else "finetune_s"]
                      for r in ten)
        low = before < 0.7
        gain_ok = (after - before >= 0.2) if low else (after >= before)
        lines.append(
            f"- {name} ({how}): at most {seconds:.{0 if seconds >= 10 else 1}f} s "
            f"({'within' if seconds <= 60 else 'over'} 60 s); F1 {before:.3f} → {after:.3f} "
            + ("(starts below 0.7: needs +0.2, " if low else "(starts high: must not drop, ")
            + f"{'met' if gain_ok else 'not met'}); LoG tuned on the same clicks {log:.3f}: "
            f"{'beaten' if after > log else 'not beaten'}"
            f" (in {sum(r[column] > r['f1_log'] for r in ten)} of {len(ten)} regions).")
    lines += ["", "## Cases", ""]
    lines += [f"- **{c.name}**: {c.note}; starts from the bundled `{c.model}` model."
              for c in cases]
    return "\n".join(lines) + "\n"


def _held_out(rows: list[dict], calibrations: dict) -> list[str]:
    """The section comparing the regions the threshold-only mode was chosen on with the rest."""
    ten = [r for r in rows if r["clicks"] == 10 and r.get("f1_threshold_only") is not None]
    if not any(r["draw"] >= RULE_DRAWS for r in ten):
        return []
    lines = ["", "## Regions the threshold-only mode was not chosen on", "",
             f"The threshold-only mode's area rule was chosen on regions 1-{RULE_DRAWS} of "
             f"each case, and its blob score (weight and sigma) on regions 1-{BLOB_DRAWS} "
             f"(docs/models-history.md); regions {BLOB_DRAWS + 1} and on were drawn after both. "
             "(The rule's count over the frames, from the parent's detections, was chosen "
             "with every region in view.) "
             "Mean F1 from 10 clicks:", "",
             "| case | regions | F1 before | weights and threshold | threshold only "
             "| LoG |", "|---|---|---|---|---|---|"]
    groups = ((f"1-{RULE_DRAWS} (rule and blob score chosen)", lambda d: d < RULE_DRAWS),
              (f"{RULE_DRAWS + 1}-{BLOB_DRAWS} (blob score chosen)",
               lambda d: RULE_DRAWS <= d < BLOB_DRAWS),
              (f"{BLOB_DRAWS + 1}+ (held out)", lambda d: d >= BLOB_DRAWS))
    for name in dict.fromkeys(r["case"] for r in ten):
        weights = weights_column(calibrations[model_of(
            next(r for r in ten if r["case"] == name))][0])
        for label, part in groups:
            chosen = [r for r in ten if r["case"] == name and part(r["draw"])]
            if chosen:
                means = [float(np.mean([r[k] for r in chosen])) for k in
                         ("f1_before", weights, "f1_threshold_only", "f1_log")]
                lines.append(f"| {name} | {label}, {len(chosen)} "
                             + "".join(f"| {m:.3f} " for m in means) + "|")
    return lines


def _f(row: dict, key: str, digits: int) -> str:
    return f"{row[key]:.{digits}f}" if row.get(key) is not None else "–"


def _key(row: dict) -> tuple:
    return row["case"], row["clicks"], row["draw"]


def main() -> None:
    """Run the benchmark and write the markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clicks", type=int, nargs="+", default=[5, 10, 25])
    parser.add_argument("--budget", type=float, default=45.0,
                        help="training time budget per fine-tuning, seconds")
    parser.add_argument("--draws", type=int, default=3,
                        help="click regions drawn for 10 clicks (one for other counts); a "
                             "case read back with --reuse keeps the regions it had")
    parser.add_argument("--quick", action="store_true", help="small images, 10 clicks, 5 s")
    parser.add_argument("--reuse", type=Path, default=None, metavar="LOG",
                        help="rows of an earlier run (its .json, or the lines an interrupted "
                             "run printed on stderr): measured again only where missing")
    parser.add_argument("--remeasure", default=None, metavar="TEXT",
                        help="with --reuse: measure the cases whose name contains TEXT again")
    parser.add_argument("--remeasure-above", type=float, default=None, metavar="T",
                        help="with --reuse: measure again the rows whose threshold after "
                             "training was above T (after a change to thresholds above T)")
    parser.add_argument("--threshold-again", action="store_true",
                        help="with --reuse: measure the threshold-only columns of every "
                             "reused row again (after a change to that mode alone)")
    parser.add_argument("--pseudo-labels", type=float, default=None,
                        help="share of the parent's detections taken as pseudo-labels "
                             "(default: the fine-tuning default)")
    parser.add_argument("--baseline", type=Path, default=None, metavar="JSON",
                        help="rows of an earlier run (its .json) shown next to these")
    parser.add_argument("--only", default=None, metavar="TEXT",
                        help="run only the cases whose name contains TEXT (for probes)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "finetune.md")
    args = parser.parse_args()
    if args.quick:
        args.clicks, args.budget, args.draws = [10], 5.0, 1
        args.out = Path(tempfile.gettempdir()) / "benchmarks-finetune-quick.md"
    cases = [c for c in finetune_cases(args.quick) if args.only is None or args.only in c.name]
    earlier = {}
    if args.reuse:
        # The rows of an earlier report (.json), or the lines an interrupted run printed.
        text = args.reuse.read_text()
        found = (json.loads(text) if args.reuse.suffix == ".json" else
                 [json.loads(line) for line in text.splitlines() if line.startswith("{")])
        for row in found:
            if (args.remeasure is None or args.remeasure not in row["case"]) and (
                    args.remeasure_above is None
                    or row["threshold_after"] <= args.remeasure_above):
                earlier[_key(row)] = {k: v for k, v in row.items()
                                      if k not in ("reused", "threshold_added")}
    rows = []
    for case in cases:
        # A case read back keeps every region the earlier run drew (it may have drawn
        # more than --draws); a case measured now draws --draws.
        drawn = [d for (name, n, d) in earlier if name == case.name and n == 10]
        draws = max(args.draws, 1 + max(drawn, default=-1))
        for n in args.clicks:
            for draw in range(draws if n == 10 else 1):
                row = earlier.get((case.name, n, draw))
                if row and (args.threshold_again or "f1_threshold_only" not in row):
                    # An earlier run without the threshold-only mode, or before a change
                    # to it: measure that alone (the weights path is unchanged).
                    parent = load_model(case.model)
                    positives, centre, radius = click_region(case, n, draw)
                    row = dict(row, **_threshold_only(
                        case, parent, positives, network_points(parent, case.image), centre,
                        radius), threshold_added="f1_threshold_only" not in row)
                rows.append(dict(row, reused=True) if row else _measure(
                    case, n, args.budget, draw, args.pseudo_labels))
    baseline = ({_key(r): r for r in json.loads(args.baseline.read_text())}
                if args.baseline else None)
    args.out.write_text(_markdown(rows, cases, args, baseline))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
