"""Correction-loop benchmark: clicks refit the threshold at once, then the weights adapt.

The fine-tuning benchmark's cases and clicks (the ``n`` particles nearest a random
particle of the first image, every particle in that region clicked; F1 on everything
else: the other frames and the first image outside the clicked disk plus 5 px).
Per case and draw, with the bundled model detecting at its per-image threshold:

- *before*: that threshold;
- *10 clicks*: :func:`napari_denodet.core.feedback.refit_threshold` from the 10 clicked
  particles;
- *10 + 5*: the same and 5 clicked false detections: the most probable kept
  detections of the clicked region farther than the gate from every true particle (a
  user clicks the false detections they see);
- *best*: the best threshold chosen on the scored truth (the ceiling of any threshold);
- *LoG*: a Laplacian of Gaussian whose scale and threshold are tuned on the clicked
  region (taken as completely annotated).

- *adapted*: fine-tuning with its defaults (a 60 s budget for the whole run, 30 % of the
  clicks held out for the acceptance check, the starting model kept when the adapted one
  is not better there by more than the check's uncertainty), then detection with the
  result; *adapted + clicks*: that detection's threshold refitted to the same clicks, as
  the Detect widget does when the user detects again with the clicks layer in place. Run
  for the first ``--adapt-draws`` regions of each case.

The refit time is one refit (the user's wait after a click; the detection is done once,
before); the adaptation time is the whole fine-tuning call.

With ``--data``, the real telomere time-lapse too: detections per frame and the share
found again in the next frame, before and after 10 clicks on the surest spots of frame 0
that are found again in frames 1 and 2 (a user clicks the spots that stay), with 5 more
clicks on the surest kept detections of frame 0 found again in neither neighbour, and
after adaptation from each.

Writes ``docs/benchmarks/feedback.md`` and ``.json``.

Usage::

    python benchmarks/bench_feedback.py [--draws 3] [--adapt-draws 1] [--quick] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import (
    DATA,
    Case,
    annotated,
    click_region,
    finetune_cases,
    inside_region,
    kept_text,
    log_on_clicks,
    score_outside,
)
from scipy.spatial import cKDTree

from napari_denodet.core.detection import recurrence
from napari_denodet.core.feedback import refit_threshold
from napari_denodet.core.models import load_model
from napari_denodet.core.points import FRAME, SCORE, X, Y
from napari_denodet.core.predict import run

REPO = Path(__file__).resolve().parents[1]
CLICKS, FALSE_CLICKS = 10, 5


def _timed_refit(candidates, positives, negatives, start, shape,
                 fitted: bool = False) -> tuple[object, float]:
    started = time.perf_counter()
    refit = refit_threshold(candidates, positives, negatives, start=start, shape=shape,
                            fitted=fitted)
    return refit, time.perf_counter() - started


def _scored(candidates, refit):
    return candidates.assign(**{SCORE: refit.scores})


def _false_clicks(case: Case, candidates, threshold, centre, radius) -> pd.DataFrame:
    # The most probable kept detections of the clicked disk far from every true particle.
    region = inside_region(candidates[candidates[SCORE] >= threshold], centre, radius - 5.0)
    truth = case.truth[case.truth[FRAME] == 0][[Y, X]].to_numpy(float)
    far = cKDTree(truth).query(region[[Y, X]].to_numpy(float))[0] > case.gate
    return region[far].sort_values(SCORE, ascending=False).iloc[:FALSE_CLICKS]


def _adapt(case: Case, model, positives, negatives, centre, radius) -> dict:
    # Fine-tuning at its defaults, detection with the result, and that detection refitted
    # to the same clicks.
    image = case.image if len(case.image) > 1 else case.image[0]
    clicks = positives if len(case.image) > 1 else positives[[Y, X]]
    wrong = None
    if negatives is not None and len(negatives):
        wrong = negatives[[FRAME, Y, X]] if len(case.image) > 1 else negatives[[Y, X]]
    started = time.perf_counter()
    result = run(model.finetune(image, clicks, wrong))
    seconds = time.perf_counter() - started
    found = run(result.model.detect(case.image))
    refit, _ = _timed_refit(found.candidates, positives, negatives, found.threshold,
                            case.image.shape[-2:], found.threshold_rule == "fine-tuned")
    return {"f1": score_outside(case, found.candidates, found.threshold, centre, radius).f1,
            "f1_clicks": score_outside(case, _scored(found.candidates, refit), refit.threshold,
                                       centre, radius).f1,
            "seconds": seconds, "accepted": result.accepted, "steps": result.steps_done,
            "heldout": result.heldout}


def _measure(case: Case, draw: int, adapt: bool) -> dict:
    model = load_model(case.model)
    found = run(model.detect(case.image))
    candidates = found.candidates
    positives, centre, radius = click_region(case, CLICKS, draw)
    positives = positives.assign(frame=0) if FRAME not in positives else positives
    shape = case.image.shape[-2:]
    start = found.threshold
    before = score_outside(case, candidates, start, centre, radius)
    clicks, clicks_s = _timed_refit(candidates, positives, None, start, shape)
    negatives = _false_clicks(case, candidates, start, centre, radius)
    both, both_s = _timed_refit(candidates, positives, negatives, start, shape)
    levels = np.unique(np.quantile(candidates[SCORE], np.linspace(0, 0.999, 300)))
    best = max(score_outside(case, candidates, t, centre, radius).f1 for t in levels)
    log, _, _ = log_on_clicks(case, found.polarity == "dark", centre, radius, case.model)
    row = {"case": case.name, "draw": draw,
           "evaluated": int(before.tp + before.fn), "f1_before": before.f1,
           "threshold_before": start,
           "f1_clicks": score_outside(case, _scored(candidates, clicks), clicks.threshold, centre,
                                      radius).f1,
           "threshold_clicks": clicks.threshold, "refit_clicks_s": clicks_s,
           "false_clicks": len(negatives),
           "f1_clicks_false": score_outside(case, _scored(candidates, both), both.threshold,
                                            centre, radius).f1,
           "threshold_clicks_false": both.threshold, "refit_clicks_false_s": both_s,
           "from_area": both.from_area, "f1_best": best, "f1_log": log.f1,
           "in_area": len(annotated(case, inside_region(case.truth, centre, radius)))}
    if adapt:
        for key, wrong in (("adapt", None), ("adapt_false", negatives)):
            for name, value in _adapt(case, model, positives, wrong, centre, radius).items():
                row[f"{key}_{name}"] = value
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
          file=sys.stderr)
    return row


def _per_frame(points: pd.DataFrame) -> float:
    return float(points.groupby(FRAME).size().median()) if len(points) else 0.0


def _telomeres(folder: Path) -> dict | None:
    import tifffile

    path = folder / "timelapse_telomeres_2d.tif"
    if not path.is_file():
        return None
    stack = tifffile.imread(path)
    found = run(load_model("fluorescence").detect(stack))
    candidates, start = found.candidates, found.threshold
    kept = found.points

    def frame(f):
        return kept[kept[FRAME] == f]

    def again(points, other):
        if other.empty:
            return np.zeros(len(points), bool)
        return cKDTree(other[[Y, X]].to_numpy(float)).query(
            points[[Y, X]].to_numpy(float))[0] <= 1.5

    first = frame(0).sort_values(SCORE, ascending=False)
    stays = again(first, frame(1)) & again(first, frame(2))
    positives = first[stays].iloc[:CLICKS]
    negatives = first[~again(first, frame(1))].iloc[:FALSE_CLICKS]
    out = {"frames": int(stack.shape[0]), "shape": list(stack.shape[1:]),
           "before": {"threshold": start, "per_frame": _per_frame(kept),
                      "recurrence": recurrence(kept)}}
    model = load_model("fluorescence")
    for key, negative in (("clicks", None), ("clicks_false", negatives)):
        refit, seconds = _timed_refit(candidates, positives, negative, start,
                                      stack.shape[1:])
        now = candidates[refit.scores >= refit.threshold]
        out[key] = {"threshold": refit.threshold, "per_frame": _per_frame(now),
                    "recurrence": recurrence(now), "seconds": seconds,
                    "summary": refit.summary()}
        started = time.perf_counter()
        wrong = None if negative is None else negative[[FRAME, Y, X]]
        result = run(model.finetune(stack, positives[[FRAME, Y, X]], wrong))
        seconds = time.perf_counter() - started
        adapted = run(result.model.detect(stack))
        again, _ = _timed_refit(adapted.candidates, positives, negative, adapted.threshold,
                                stack.shape[1:], adapted.threshold_rule == "fine-tuned")
        final = adapted.candidates[again.scores >= again.threshold]
        out[f"adapt_{key}"] = {"threshold": again.threshold, "per_frame": _per_frame(final),
                               "recurrence": recurrence(final), "seconds": seconds,
                               "accepted": result.accepted, "message": result.message}
    return out


def _adaptation_table(rows: list[dict]) -> list[str]:
    adapted = [r for r in rows if "adapt_f1" in r]
    if not adapted:
        return []
    regions = len({(r["case"], r["draw"]) for r in adapted})
    lines = ["", f"Adaptation (fine-tuning at its defaults) on {regions} regions (the first "
                 "ones of each case): F1 outside the clicked region; *kept* says whether "
                 "the adapted weights passed the acceptance check (a held-out F1 gain larger "
                 "than the check's uncertainty, ±; else the starting model is kept); the "
                 "time is the whole fine-tuning call.", "",
             "| case | clicks | F1 before | instant | adapted | adapted + clicks | kept "
             "| held-out F1 before → after | time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in adapted:
        for key, clicks, instant in (("adapt", "10", "f1_clicks"),
                                     ("adapt_false", "10 + 5", "f1_clicks_false")):
            held = r[f"{key}_heldout"]
            check = (f"{held['f1_before']:.2f} → {held['f1_after']:.2f} "
                     f"(± {held['margin']:.2f})" if held else "")
            lines.append(
                f"| {r['case']} | {clicks} | {r['f1_before']:.3f} | {r[instant]:.3f} "
                f"| {r[f'{key}_f1']:.3f} | {r[f'{key}_f1_clicks']:.3f} "
                f"| {kept_text(r[f'{key}_accepted'], 'threshold only')} | {check} "
                f"| {r[f'{key}_seconds']:.0f} |")
    return lines


def _markdown(rows: list[dict], telomeres: dict | None, args) -> str:
    cases = list(dict.fromkeys(r["case"] for r in rows))
    lines = [
        "# The correction loop: clicks refit the threshold at once, then the weights adapt",
        "",
        f"Produced by `python benchmarks/bench_feedback.py --draws {args.draws} "
        f"--adapt-draws {args.adapt_draws}" + (" --quick" if args.quick else "") + "` on "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. Per case, the mean over {args.draws} clicked "
        "regions; F1 is measured outside the clicked region (see the script's docstring).",
        "",
        "| case | F1 before | 10 clicks | 10 + 5 false | best threshold | LoG on clicks "
        "| refit time (ms, median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        mine = [r for r in rows if r["case"] == case]

        def mean(key, mine=mine):
            return float(np.mean([r[key] for r in mine]))

        ms = 1000 * float(np.median([r[k] for r in mine
                                     for k in ("refit_clicks_s", "refit_clicks_false_s")]))
        lines.append(f"| {case} | {mean('f1_before'):.3f} | {mean('f1_clicks'):.3f} "
                     f"| {mean('f1_clicks_false'):.3f} | {mean('f1_best'):.3f} "
                     f"| {mean('f1_log'):.3f} | {ms:.0f} |")
    worst = min(r["f1_clicks"] - r["f1_before"] for r in rows)
    worst_both = min(r["f1_clicks_false"] - r["f1_before"] for r in rows)
    lines += ["", f"Largest loss against *before* over every region: {worst:+.3f} (10 "
                  f"clicks), {worst_both:+.3f} (10 + 5)."]
    lines += _adaptation_table(rows)
    if telomeres:
        t = telomeres
        lines += ["", f"Real telomere time-lapse ({t['frames']} frames of "
                      f"{t['shape'][0]} x {t['shape'][1]}): detections per frame (median) "
                      "and the share found again in the next frame within 1.5 px.", "",
                  "| | threshold | per frame | found again | time (s) | kept |",
                  "|---|---|---|---|---|---|"]
        for key, label in (("before", "before"), ("clicks", "10 clicks, instant"),
                           ("clicks_false", "10 + 5 false, instant"),
                           ("adapt_clicks", "10 clicks, adapted + clicks"),
                           ("adapt_clicks_false", "10 + 5 false, adapted + clicks")):
            v = t.get(key)
            if v is None:
                continue
            seconds = f"{v['seconds']:.3f}" if "seconds" in v else ""
            kept = kept_text(v["accepted"], "threshold only") if "accepted" in v else ""
            lines.append(f"| {label} | {v['threshold']:.3f} | {v['per_frame']:.0f} "
                         f"| {v['recurrence']:.0%} | {seconds} | {kept} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--adapt-draws", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "feedback")
    args = parser.parse_args()
    rows = [_measure(case, draw, draw < args.adapt_draws)
            for case in finetune_cases(args.quick) for draw in range(args.draws)]
    telomeres = _telomeres(args.data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"rows": rows, "telomeres": telomeres}, indent=1, default=float) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(rows, telomeres, args))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
