"""What a user gets at the defaults: probabilities and the threshold chosen per image.

For every cell of the detection benchmark (vesicle / receptor / microtubule x SNR 1, 2,
4, 7 x low / mid density; same seeds and test stacks as ``bench_detection.py``, first
``--frames`` frames), with the bundled model for the scenario:

- F1 at the defaults of ``Model.detect`` (probabilities from decoy frames, threshold
  that maximises the expected F1, no truth), against the model's old fixed threshold
  on raw peak scores, the best threshold chosen on the test truth (a ceiling), and LoG
  and wavelet detectors tuned on the validation stack;
- calibration: over candidates with a probability of at least 0.1, the expected
  calibration error (10 bins) against "matched to a true particle within 5 px";
- expected F1 (from the probabilities) against the measured F1.

On the real data in the project's data folder (given with ``--data``, skipped when
absent): the telomere time-lapse (detections per frame and how many are found again
in the next frame, no truth) and the EMPIAR-10017 micrograph with its expert picks (F1
at a gate of half the 108 px diameter), as it is and contrast-inverted.

``--condition`` changes the test and validation stacks of every cell: ``correlated``
gives the noise the neighbour correlations of a real camera (0.45 along y, 0.17 along x,
as the telomere time-lapse measures), ``structured`` adds a static structured background
as high as the background itself (blobs and ridges at 6 and 20 px, a texture the
training data never holds), and ``wide-structured`` does the same with PSFs twice as
wide (sigma 1.8-3.2 px). ``--models`` replaces the bundled models by files (to measure
a candidate before it is bundled), e.g. ``--models fluorescence=runs/f.pt``.

Writes ``docs/benchmarks/default-threshold.md`` and ``.json`` (with a condition,
``docs/benchmarks/default-threshold-CONDITION.md``). Usage::

    python benchmarks/bench_default_threshold.py --data FOLDER_WITH_THE_REAL_IMAGES
    python benchmarks/bench_default_threshold.py --condition structured
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import (
    CLASSIC,
    CONDITIONS,
    DENSITIES,
    SCENARIO_MODEL,
    SNRS,
    best_threshold,
    cell_index,
    condition_stacks,
    tune_classic,
)
from scipy.spatial import cKDTree

from napari_denodet.core.classic import detect_classic
from napari_denodet.core.detection import recurrence
from napari_denodet.core.metrics import score_detections
from napari_denodet.core.models import load_model
from napari_denodet.core.predict import detect, run

REPO = Path(__file__).resolve().parents[1]
GATE = 5.0
#: Bundled model name -> what to load instead (``--models``).
MODELS: dict[str, str] = {}


def _model(name):
    return load_model(MODELS.get(name, name))


def matched(points: pd.DataFrame, truth: pd.DataFrame, gate: float = GATE) -> np.ndarray:
    """Whether each point lies within ``gate`` px of a true particle of its frame."""
    hit = np.zeros(len(points), bool)
    for frame, rows in points.groupby("frame"):
        here = truth[truth.frame == frame][["y", "x"]].to_numpy()
        if len(here):
            d, _ = cKDTree(here).query(rows[["y", "x"]].to_numpy())
            hit[points.index.get_indexer(rows.index)] = d <= gate
    return hit


def calibration_error(p: np.ndarray, true: np.ndarray, low: float = 0.1, bins: int = 10):
    """Expected calibration error over probabilities >= ``low``, and the bins."""
    keep = p >= low
    p, true = p[keep], true[keep]
    edges = np.linspace(low, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap = abs(p[inside].mean() - true[inside].mean())
            ece += inside.sum() / max(len(p), 1) * gap
            table.append([float(edges[b]), int(inside.sum()), float(p[inside].mean()),
                          float(true[inside].mean())])
    return float(ece), table


def score_cell(scenario, snr, density, frames, condition="plain"):
    model = _model(SCENARIO_MODEL[scenario])
    val, test = condition_stacks(scenario, snr, density, frames,
                                 cell_index(scenario, snr, density), condition)
    row = {"scenario": scenario, "snr": snr, "density": density,
           "particles": len(test.truth)}
    started = time.perf_counter()
    found = run(model.detect(test.noisy))
    row["seconds_auto"] = time.perf_counter() - started
    row["auto"] = score_detections(found.points, test.truth).f1
    row["expected_f1"] = found.choice.expected_f1
    row["kept"] = found.choice.kept
    started = time.perf_counter()
    raw = run(detect(test.noisy, model.network, **model.localisation)).points
    row["seconds_engine"] = time.perf_counter() - started
    row["old_default"] = score_detections(raw[raw.score >= model.threshold], test.truth).f1
    row["best_on_truth"], _ = best_threshold(raw, test.truth)
    candidates = found.candidates
    row["ece"], row["reliability"] = calibration_error(
        candidates.score.to_numpy(), matched(candidates, test.truth))
    for name, method, key, params in CLASSIC:
        _, param, t = tune_classic(val.noisy, val.truth, method, key, params)
        c = detect_classic(test.noisy, method, **{key: param})
        table = pd.DataFrame(c)
        row[name] = score_detections(table[table.score >= t], test.truth).f1
    return row


def real_data(folder: Path) -> dict:
    import imageio.v3 as iio
    import tifffile

    out = {}
    telomeres = folder / "timelapse_telomeres_2d.tif"
    if telomeres.is_file():
        stack = tifffile.imread(telomeres)
        model = _model("fluorescence")
        found = run(model.detect(stack))
        raw = run(detect(stack, model.network, **model.localisation)).points
        old = raw[raw.score >= model.threshold]
        out["telomeres"] = {
            "median_per_frame": float(found.points.groupby("frame").size().median()),
            "recurrence": found.recurrence,
            "old_median_per_frame": float(old.groupby("frame").size().median()),
            "old_recurrence": recurrence(old), "threshold": found.threshold,
            "summary": found.summary()}
    micrograph = folder / "empiar10017_micrograph.jpg"
    if micrograph.is_file():
        image = iio.imread(micrograph).astype(np.float32)
        picks = pd.read_csv(folder / "empiar10017_coords.csv")
        truth = pd.DataFrame({"y": picks["Y-Coordinate"], "x": picks["X-Coordinate"]})
        model = _model("micrograph")
        binning = model.bin_for_diameter(108)
        out["empiar10017"] = {"binning": binning, "gate": 54}
        for name, data in (("as is", image), ("inverted", image.max() - image)):
            found = run(model.detect(data, binning=binning))
            s = score_detections(found.points, truth, gate=54)
            out["empiar10017"][name] = {"f1": s.f1, "kept": len(found.points),
                                        "polarity": found.polarity,
                                        "expected_f1": found.choice.expected_f1}
    return out


def reliability(rows) -> list[str]:
    """Reliability diagrams as tables: per SNR, every cell's candidates pooled by bin."""
    lines = ["", "## Reliability", "",
             "Candidates with a probability of at least 0.1, pooled over the cells of each "
             "SNR and binned by probability: how many, their mean probability and the "
             "share that lies within 5 px of a true particle. Calibrated scores have the "
             "two close.", "",
             "| SNR | " + " | ".join(f"{0.1 + 0.09 * b:.2f}-{0.1 + 0.09 * (b + 1):.2f}"
                                     for b in range(10)) + " |",
             "|---|" + "---|" * 10]
    for snr in SNRS:
        pooled = np.zeros((10, 3))
        for r in rows:
            if r["snr"] != snr:
                continue
            for edge, count, mean_p, share in r["reliability"]:
                b = int(round((edge - 0.1) / 0.09))
                pooled[b] += [count, count * mean_p, count * share]
        cells = [f"{int(n)}: {sp / n:.2f} / {st / n:.2f}" if n else "-"
                 for n, sp, st in pooled]
        lines.append(f"| {snr:g} | " + " | ".join(cells) + " |")
    lines += ["", "Each entry: candidates: mean probability / share true."]
    return lines


def markdown(rows, real, args, seconds) -> str:
    options = "".join(f" --{k} {v}" for k, v in (
        ("condition", args.condition if args.condition != "plain" else None),
        ("models", ",".join(f"{k}={v}" for k, v in MODELS.items()) or None),
        ("data", "DATA" if args.data else None)) if v)
    title = ("" if args.condition == "plain" else
             f" ({args.condition}: {CONDITIONS[args.condition]})")
    lines = [f"# Defaults: scores as probabilities, a threshold chosen per image{title}", "",
             "Made by `python benchmarks/bench_default_threshold.py "
             f"--frames {args.frames}{options}` on {platform.processor() or 'CPU'} "
             f"({time.strftime('%Y-%m-%d')}, {seconds:.0f} s, torch threads "
             f"{torch.get_num_threads()}).", "",
             "`auto` is what `napari-denodet detect` and the Detect widget do with no "
             "option: probabilities from decoy frames, the threshold that maximises the "
             "expected F1. `old default` is the model's fixed threshold on raw peak "
             "scores (the behaviour before). `best` is the best threshold chosen on the "
             "test truth (a ceiling for the network). LoG and wavelet are tuned on the "
             "validation stack. ECE: expected calibration error over candidates with a "
             "probability of at least 0.1.", "",
             "| scenario | SNR | density | auto | expected | old default | best | LoG | "
             "wavelet | ECE |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['snr']:g} | {r['density']} | {r['auto']:.3f} | "
                     f"{r['expected_f1']:.3f} | {r['old_default']:.3f} | "
                     f"{r['best_on_truth']:.3f} | {r['LoG']:.3f} | {r['wavelet']:.3f} | "
                     f"{r['ece']:.3f} |")
    auto = np.array([r["auto"] for r in rows])
    classic = np.array([max(r["LoG"], r["wavelet"]) for r in rows])
    best = np.array([r["best_on_truth"] for r in rows])
    old = np.array([r["old_default"] for r in rows])
    lines += ["", "## Summary", "",
              f"- auto at or above the better tuned classic detector in "
              f"{int((auto >= classic - 1e-9).sum())} of {len(rows)} cells "
              f"(old default: {int((old >= classic - 1e-9).sum())}; the best threshold on "
              f"the truth, the ceiling of any threshold rule with this network: "
              f"{int((best >= classic - 1e-9).sum())});",
              f"- auto within 0.03 F1 of the best threshold on the truth in "
              f"{int((auto >= best - 0.03).sum())} of {len(rows)} cells "
              f"(old default: {int((old >= best - 0.03).sum())});"]
    for snr in SNRS:
        pick = [r for r in rows if r["snr"] == snr]
        lines.append(f"- SNR {snr:g}: mean F1 auto {np.mean([r['auto'] for r in pick]):.3f}, "
                     f"old default {np.mean([r['old_default'] for r in pick]):.3f}, best "
                     f"{np.mean([r['best_on_truth'] for r in pick]):.3f}, better classic "
                     f"{np.mean([max(r['LoG'], r['wavelet']) for r in pick]):.3f};")
    lines.append(f"- ECE median {np.median([r['ece'] for r in rows]):.3f}, worst "
                 f"{max(r['ece'] for r in rows):.3f} (target 0.05);")
    ratio = np.median([r["seconds_auto"] / r["seconds_engine"] for r in rows])
    lines.append(f"- time of `Model.detect` against the engine alone (same stack): median "
                 f"ratio {ratio:.2f} (the decoy pass on up to 8 frames).")
    lines += reliability(rows)
    if real:
        lines += ["", "## Real data", ""]
        t = real.get("telomeres")
        if t:
            lines.append(f"- telomere time-lapse: median {t['median_per_frame']:.0f} "
                         f"detections per frame, {t['recurrence']:.0%} found again in the "
                         f"next frame (old default: {t['old_median_per_frame']:.0f}, "
                         f"{t['old_recurrence']:.0%}); {t['summary']}.")
        e = real.get("empiar10017")
        if e:
            lines.append(f"- EMPIAR-10017 (bin {e['binning']}, gate {e['gate']} px): F1 "
                         f"{e['as is']['f1']:.3f} as is ({e['as is']['kept']} kept, polarity "
                         f"{e['as is']['polarity']}), {e['inverted']['f1']:.3f} inverted "
                         f"(polarity {e['inverted']['polarity']}).")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--condition", choices=CONDITIONS, default="plain")
    parser.add_argument("--models", default="",
                        help="NAME=PATH[,NAME=PATH]: load PATH where the bundled NAME is used")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    MODELS.update(dict(item.split("=", 1) for item in args.models.split(",") if item))
    suffix = "" if args.condition == "plain" else f"-{args.condition}"
    args.out = args.out or REPO / "docs" / "benchmarks" / f"default-threshold{suffix}.md"
    started = time.perf_counter()
    rows = []
    for scenario in SCENARIO_MODEL:
        for snr in SNRS:
            for density in DENSITIES:
                rows.append(score_cell(scenario, snr, density, args.frames, args.condition))
                r = rows[-1]
                print(f"{scenario} {snr:g} {density}: auto {r['auto']:.3f} old "
                      f"{r['old_default']:.3f} best {r['best_on_truth']:.3f} LoG "
                      f"{r['LoG']:.3f} ECE {r['ece']:.3f}", flush=True)
    real = real_data(args.data) if args.data and args.data.is_dir() else {}
    seconds = time.perf_counter() - started
    args.out.write_text(markdown(rows, real, args, seconds))
    args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "real": real},
                                                        indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
