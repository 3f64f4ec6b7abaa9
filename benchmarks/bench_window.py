"""Time-aware detection: a network that reads the frames around the one it detects in.

For every cell of the detection benchmark (vesicle / receptor / microtubule x SNR 1, 2,
4, 7 x low / mid density; same seeds as ``bench_detection.py``, first ``--frames``
frames of each stack, so the first and last frames, which see themselves in place of a
missing neighbour, count too), at the defaults of ``Model.detect`` (probabilities from
decoys, the threshold that maximises the expected F1; no truth) and at the best
threshold chosen on the test truth (the network's ceiling):

- the bundled single-frame model for the scenario (``microtubule`` on comets,
  ``fluorescence`` elsewhere) and ``fluorescence`` on every cell;
- the windowed model (``--window-model``, a bundled name or a ``.pt`` file);
- LoG and wavelet detectors tuned on the validation stack, and a LoG tuned the same way
  on the running mean of three frames (a classic detector that uses time).

Also: detection speed (engine only, frames per second on one 512 x 512 stack, median
of rounds taken in turn) and, with ``--data``, the real telomere time-lapse
(detections per frame, share found again in the next frame).

Writes ``docs/benchmarks/window.md`` and ``.json``. Usage::

    python benchmarks/bench_window.py --window-model timelapse --data FOLDER
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
    LOG_SIGMAS,
    SCENARIO_MODEL,
    SNRS,
    best_threshold,
    cell_index,
    condition_stacks,
    frames_per_second,
    tune_classic,
)
from scipy.ndimage import uniform_filter1d

from napari_denodet.core.choice import AUTO_ALTERNATIVES, AUTO_CANDIDATES, choose_model
from napari_denodet.core.classic import detect_classic
from napari_denodet.core.metrics import score_detections
from napari_denodet.core.models import load_model
from napari_denodet.core.predict import detect, run
from napari_denodet.core.simulate import simulate_timelapse

REPO = Path(__file__).resolve().parents[1]
#: Frames of the classic detector's running mean.
MEAN_FRAMES = 3


def network_scores(model, test) -> dict:
    """F1 at the defaults and at the best threshold on the truth, and the time taken."""
    started = time.perf_counter()
    found = run(model.detect(test.noisy))
    seconds = time.perf_counter() - started
    best, _ = best_threshold(found.candidates, test.truth)
    return {"auto": score_detections(found.points, test.truth).f1, "best": best,
            "seconds": seconds}


def running_mean(stack: np.ndarray) -> np.ndarray:
    """Each frame averaged with its neighbours (edges repeat), as float32."""
    return uniform_filter1d(stack.astype(np.float32), MEAN_FRAMES, axis=0, mode="nearest")


def score_cell(scenario, snr, density, frames, models, condition="plain") -> dict:
    val, test = condition_stacks(scenario, snr, density, frames,
                                 cell_index(scenario, snr, density), condition)
    row = {"scenario": scenario, "snr": snr, "density": density,
           "particles": len(test.truth)}
    for name, model in models.items():
        scores = network_scores(model, test)
        row.update({f"{name}_{k}": v for k, v in scores.items()})
    # What `--model auto` does: the candidate that expects the higher F1 on a few
    # frames, then a detection with it.
    started = time.perf_counter()
    choice = run(choose_model(test.noisy))
    found = run(choice.model.detect(test.noisy))
    row.update(auto_model=choice.name, auto_f1=score_detections(found.points, test.truth).f1,
               auto_seconds=time.perf_counter() - started, auto_expected=choice.expected_f1)
    for name, method, key, params in CLASSIC:
        _, param, t = tune_classic(val.noisy, val.truth, method, key, params)
        table = pd.DataFrame(detect_classic(test.noisy, method, **{key: param}))
        row[name] = score_detections(table[table.score >= t], test.truth).f1
    _, sigma, t = tune_classic(running_mean(val.noisy), val.truth, "log", "sigma", LOG_SIGMAS)
    table = pd.DataFrame(detect_classic(running_mean(test.noisy), "log", sigma=sigma))
    row["LoG_mean"] = score_detections(table[table.score >= t], test.truth).f1
    return row


def measure_speed(models: dict, repeats: int = 5, frames: int = 16) -> dict:
    """Engine frames per second of each model on one 512 x 512 stack (median of rounds)."""
    stack = simulate_timelapse("vesicle", snr=4, density="mid", frames=frames,
                               shape=(512, 512), seed=11).noisy
    runners = {name: (lambda m=m: run(detect(stack, m.network, **m.localisation)))
               for name, m in models.items()}
    return frames_per_second(runners, frames, repeats)


def telomeres(folder: Path, models: dict) -> dict:
    import tifffile

    path = folder / "timelapse_telomeres_2d.tif"
    if not path.is_file():
        return {}
    stack = tifffile.imread(path)
    out = {}
    for name, model in models.items():
        found = run(model.detect(stack))
        out[name] = {"median_per_frame": float(found.points.groupby("frame").size().median()),
                     "recurrence": found.recurrence, "summary": found.summary()}
    return out


def markdown(rows, speed, real, args, seconds) -> str:
    title = ("" if args.condition == "plain" else
             f" ({args.condition}: {CONDITIONS[args.condition]})")
    lines = [f"# Time-aware detection: a window of frames against one frame{title}", "",
             f"Made by `python benchmarks/bench_window.py --frames {args.frames} "
             f"--window-model {args.window_model_label}"
             + ("" if args.condition == "plain" else f" --condition {args.condition}")
             + f"{' --no-speed' if args.no_speed else ''}"
             f"{' --data DATA' if args.data else ''}` on "
             f"{platform.processor() or 'CPU'} ({time.strftime('%Y-%m-%d')}, "
             f"{seconds:.0f} s, torch threads {torch.get_num_threads()}).", "",
             f"F1 (gate 5 px) on the first {args.frames} frames of each test stack. "
             "`2D`: the bundled single-frame model for the scenario (`microtubule` on "
             "comets, `fluorescence` elsewhere); `window`: the model that reads frames "
             "t-1, t, t+1. `auto`: the defaults (probabilities from decoys, the threshold "
             "of highest expected F1); `best`: the best threshold chosen on the test truth. "
             "LoG and wavelet are tuned on the validation stack; `LoG 3-mean` is a LoG "
             "tuned the same way on the running mean of three frames.", "",
             f"`--model auto`: whichever of {', '.join(AUTO_CANDIDATES)} expects the "
             "higher F1 on 8 evenly spaced frames (no truth), and where "
             f"{AUTO_CANDIDATES[0]} wins, {', '.join(AUTO_ALTERNATIVES)} if it expects "
             "more there; then detection with the one chosen.", "",
             "| scenario | SNR | density | 2D auto | 2D best | window auto | window best | "
             "fluorescence auto | `--model auto` (chose) | LoG | wavelet | LoG 3-mean |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['snr']:g} | {r['density']} | {r['2D_auto']:.3f} | "
            f"{r['2D_best']:.3f} | {r['window_auto']:.3f} | {r['window_best']:.3f} | "
            f"{r['fluorescence_auto']:.3f} | {r['auto_f1']:.3f} ({r['auto_model']}) | "
            f"{r['LoG']:.3f} | {r['wavelet']:.3f} | {r['LoG_mean']:.3f} |")
    classic = np.array([max(r["LoG"], r["wavelet"]) for r in rows])
    window = np.array([r["window_auto"] for r in rows])
    flat = np.array([r["2D_auto"] for r in rows])
    low = [r for r in rows if r["snr"] in (1.0, 2.0)]
    lines += ["", "## Summary", ""]
    lines.append(
        f"- mean F1 over the SNR 1 and 2 cells, at the defaults: window "
        f"{np.mean([r['window_auto'] for r in low]):.3f}, 2D "
        f"{np.mean([r['2D_auto'] for r in low]):.3f}, better tuned classic "
        f"{np.mean([max(r['LoG'], r['wavelet']) for r in low]):.3f} (target: classic + "
        f"0.05), LoG on the 3-frame mean {np.mean([r['LoG_mean'] for r in low]):.3f};")
    for snr in SNRS:
        pick = [r for r in rows if r["snr"] == snr]
        lines.append(
            f"- SNR {snr:g}: window {np.mean([r['window_auto'] for r in pick]):.3f} (best "
            f"{np.mean([r['window_best'] for r in pick]):.3f}), 2D "
            f"{np.mean([r['2D_auto'] for r in pick]):.3f} (best "
            f"{np.mean([r['2D_best'] for r in pick]):.3f}), better classic "
            f"{np.mean([max(r['LoG'], r['wavelet']) for r in pick]):.3f};")
    worse = [r for r in rows if r["window_auto"] < r["2D_auto"] - 0.01]
    lines.append(
        f"- window at or above the better tuned classic detector in "
        f"{int((window >= classic - 1e-9).sum())} of {len(rows)} cells (2D: "
        f"{int((flat >= classic - 1e-9).sum())}); worse than 2D by more than 0.01 in "
        f"{len(worse)} cells"
        + (": " + ", ".join(f"{r['scenario']} SNR {r['snr']:g} {r['density']} "
                            f"({r['window_auto'] - r['2D_auto']:+.3f})" for r in worse)
           if worse else "") + ";")
    chosen = np.array([r["auto_f1"] for r in rows])
    right = sum(r["auto_f1"] >= max(r["fluorescence_auto"], r["window_auto"]) - 1e-9
                for r in rows)
    lines.append(
        "- `--model auto`: mean F1 at SNR 1 / 2 / 4 / 7 "
        + " / ".join(f"{np.mean([r['auto_f1'] for r in rows if r['snr'] == snr]):.3f}"
                     for snr in SNRS)
        + f"; over the SNR 1 and 2 cells {np.mean([r['auto_f1'] for r in low]):.3f}; at or "
        f"above the better tuned classic in {int((chosen >= classic - 1e-9).sum())} of "
        f"{len(rows)} cells; worse than the bundled single-frame model for the scenario "
        f"by more than 0.01 in {int((chosen < flat - 0.01).sum())} cells; it chose the "
        f"better of `fluorescence` and the window in "
        f"{right} of {len(rows)} cells; time with the choice against the single-frame model's "
        f"`Model.detect`: median ratio "
        f"{np.median([r['auto_seconds'] / r['2D_seconds'] for r in rows]):.2f};")
    gain = chosen - np.array([r["fluorescence_auto"] for r in rows])
    lines.append(
        f"- `--model auto` (the default of `detect`) against `fluorescence` alone (the "
        f"default before): mean {gain.mean():+.3f}, worst {gain.min():+.3f}; better by "
        f"more than 0.01 in {int((gain > 0.01).sum())} cells, worse by more than 0.01 in "
        f"{int((gain < -0.01).sum())};")
    comets = [r for r in rows if r["scenario"] == "microtubule"]
    lines.append(
        f"- comets (fast, elongated): window {np.mean([r['window_auto'] for r in comets]):.3f}"
        f" against `microtubule` {np.mean([r['2D_auto'] for r in comets]):.3f} and "
        f"`fluorescence` {np.mean([r['fluorescence_auto'] for r in comets]):.3f};")
    if speed:
        lines.append(
            f"- engine speed, 512 x 512 frames: window {speed['window']:.1f} frames/s, 2D "
            f"{speed['2D']:.1f} frames/s (ratio {speed['window'] / speed['2D']:.2f}; "
            f"target at least 0.80).")
    if real:
        lines += ["", "## Real telomere time-lapse", ""]
        for name, t in real.items():
            lines.append(f"- {name}: median {t['median_per_frame']:.0f} detections per "
                         f"frame, {t['recurrence']:.0%} found again in the next frame.")
        lines.append("")
        lines.append("A windowed network sees frame t+1 when it detects in frame t, so "
                     "a noise peak of one frame can raise detections in its neighbours "
                     "too: recurrence is a weaker self-check for it than for a "
                     "single-frame model.")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--window-model", default="timelapse")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--condition", choices=CONDITIONS, default="plain",
                        help="the detection benchmark's test conditions (camera-like "
                             "correlated noise, structured background...)")
    parser.add_argument("--no-speed", action="store_true",
                        help="skip the speed rounds (for a look while the machine is busy)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    suffix = "" if args.condition == "plain" else f"-{args.condition}"
    args.out = args.out or REPO / "docs" / "benchmarks" / f"window{suffix}.md"
    args.window_model_label = (Path(args.window_model).name
                               if args.window_model.endswith(".pt") else args.window_model)
    window = load_model(args.window_model)
    bundled = {name: load_model(name) for name in set(SCENARIO_MODEL.values())}
    started = time.perf_counter()
    rows = []
    for scenario, flat in SCENARIO_MODEL.items():
        models = {"2D": bundled[flat], "window": window,
                  "fluorescence": bundled["fluorescence"]}
        for snr in SNRS:
            for density in DENSITIES:
                rows.append(score_cell(scenario, snr, density, args.frames, models,
                                       args.condition))
                r = rows[-1]
                print(f"{scenario} {snr:g} {density}: 2D {r['2D_auto']:.3f} window "
                      f"{r['window_auto']:.3f} auto {r['auto_f1']:.3f} ({r['auto_model']}) "
                      f"LoG {r['LoG']:.3f} wavelet "
                      f"{r['wavelet']:.3f} LoG-mean {r['LoG_mean']:.3f}", flush=True)
    speed = ({} if args.no_speed else
             measure_speed({"2D": bundled["fluorescence"], "window": window}))
    real = (telomeres(args.data, {"2D (fluorescence)": bundled["fluorescence"],
                                  "window": window}) if args.data else {})
    seconds = time.perf_counter() - started
    args.out.write_text(markdown(rows, speed, real, args, seconds))
    args.out.with_suffix(".json").write_text(json.dumps(
        {"model": args.window_model_label, "rows": rows, "speed": speed, "real": real},
        indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
