"""Copy the measured benchmark figures into the bundled models' cards.

Usage::

    .venv/bin/python scripts/card_benchmarks.py

A card's ``benchmark`` field holds the figures of the committed benchmark runs, so a
user who opens the card sees what the model measured and where: for the fluorescence
model, ``docs/benchmarks/detection.json`` (``benchmarks/bench_detection.py``): F1, RMSE and PSNR
per SNR, averaged over the scenarios and densities; for the micrograph model,
``docs/benchmarks/finetune.json`` (``benchmarks/bench_finetune.py``): F1 and RMSE before
fine-tuning on each micrograph case; for the model that reads a window of frames,
``docs/benchmarks/window.json`` (``benchmarks/bench_window.py``). The fluorescence
cards' ``deviations`` are set to :data:`napari_denodet.core.train.DEVIATIONS`, whose
figures come from the recipe comparison (``docs/benchmarks/detection-recipe.md``). Run
it after any of these benchmarks; a test checks that the cards agree with the committed
reports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean

REPO = Path(__file__).resolve().parents[1]
# The benchmarks' shared helpers (benchmarks/common.py), the one module imported from there.
sys.path.insert(0, str(REPO / "benchmarks"))

from common import BUNDLED, advised_calibrations, advised_modes  # noqa: E402

from napari_denodet.core.models import load_model, resolve_model_path, save_model  # noqa: E402
from napari_denodet.core.train import DEVIATIONS  # noqa: E402

DETECTION = REPO / "docs" / "benchmarks" / "detection.json"
FINETUNE = REPO / "docs" / "benchmarks" / "finetune.json"
WINDOW = REPO / "docs" / "benchmarks" / "window.json"
#: What a card's ``source`` says: the report (markdown beside the .json) and its script.
DETECTION_SOURCE = (f"{DETECTION.with_suffix('.md').relative_to(REPO).as_posix()} "
                    "(benchmarks/bench_detection.py)")
FINETUNE_SOURCE = (f"{FINETUNE.with_suffix('.md').relative_to(REPO).as_posix()} "
                   "(benchmarks/bench_finetune.py)")


def _r(value: float) -> float:
    return round(float(value), 3)


def detection_figures(report: dict, model: str = "fluorescence") -> dict:
    """Per-SNR means of one bundled model's rows of the detection benchmark.

    The general ``fluorescence`` model is the benchmark's ``DENODET`` on every cell; a
    scenario's own model (``microtubule``, ...) is the ``bundled for the scenario`` entry
    of that scenario's cells.
    """
    if model == "fluorescence":
        cells = [(r, r["DENODET"]) for r in report["rows"]]
    else:
        cells = [(r, r[BUNDLED]) for r in report["rows"]
                 if r.get(BUNDLED, {}).get("model") == model]
    per_snr = {}
    for snr in sorted({r["snr"] for r, _ in cells}):
        mine = [c for c in cells if c[0]["snr"] == snr]
        per_snr[f"{snr:g}"] = {
            "f1": _r(mean(e["f1"] for _, e in mine)),
            "f1_default_threshold": _r(mean(e["f1_default"] for _, e in mine)),
            "rmse_px": _r(mean(e["rmse"] for _, e in mine)),
            "psnr_db": _r(mean(e["psnr"] for _, e in mine)),
            "f1_log": _r(mean(r["LoG"]["f1"] for r, _ in mine)),
            "cells": len(mine),
        }
    return {
        "source": DETECTION_SOURCE,
        "protocol": "simulated 512 x 512 stacks of unseen seeds; mean over the "
                    "cells of its scenarios (all three for fluorescence) at low and mid "
                    "density; 5 px gate; f1 at "
                    "the threshold tuned on validation stacks, f1_default_threshold at "
                    "the card's threshold; f1_log: Laplacian of Gaussian tuned alike",
        "per_snr": per_snr,
    }


def window_figures(report: dict) -> dict:
    """Per-SNR means of the windowed model's rows of the time-window benchmark."""
    per_snr = {}
    for snr in sorted({r["snr"] for r in report["rows"]}):
        mine = [r for r in report["rows"] if r["snr"] == snr]
        per_snr[f"{snr:g}"] = {
            "f1_default_threshold": _r(mean(r["window_auto"] for r in mine)),
            "f1_best_threshold": _r(mean(r["window_best"] for r in mine)),
            "f1_single_frame_model": _r(mean(r["2D_auto"] for r in mine)),
            "f1_classic": _r(mean(max(r["LoG"], r["wavelet"]) for r in mine)),
            "cells": len(mine),
        }
    return {
        "source": (f"{WINDOW.with_suffix('.md').relative_to(REPO).as_posix()} "
                   "(benchmarks/bench_window.py)"),
        "protocol": "simulated 512 x 512 stacks of unseen seeds (the detection "
                    "benchmark's), first frames of each; mean over the three scenarios at "
                    "low and mid density; 5 px gate; f1 at the defaults (threshold of "
                    "highest expected F1) and at the best threshold on the truth; "
                    "f1_single_frame_model: the bundled single-frame model for the "
                    "scenario at its defaults; f1_classic: the better of LoG and "
                    "wavelet, tuned on validation stacks",
        "per_snr": per_snr,
    }


def finetune_before_figures(rows: list[dict], model_cases: list[str]) -> dict:
    """F1 and RMSE before fine-tuning, per case of the fine-tuning benchmark."""
    per_case = {}
    for case in model_cases:
        mine = [r for r in rows if r["case"] == case]
        per_case[case] = {"f1": _r(mean(r["f1_before"] for r in mine)),
                          "rmse_px": _r(mean(r["rmse_before"] for r in mine)),
                          "evaluations": len(mine)}
    return {
        "source": FINETUNE_SOURCE,
        "protocol": "at the card's threshold, before fine-tuning, on the particles "
                    "outside each clicked region; real micrograph binned as "
                    "bin_for_diameter gives, gate 40 full-resolution px",
        "per_case": per_case,
    }


def card_figures() -> dict[str, dict]:
    """Return the ``benchmark`` field of each bundled model, from the committed reports."""
    figures = {}
    if DETECTION.is_file():
        report = json.loads(DETECTION.read_text())
        scenario_models = {r[BUNDLED]["model"] for r in report["rows"] if BUNDLED in r}
        for name in ["fluorescence", *sorted(scenario_models - {"DENODET"})]:
            figures[name] = detection_figures(report, name)
    if WINDOW.is_file():
        report = json.loads(WINDOW.read_text())
        figures[report["model"]] = window_figures(report)
    if FINETUNE.is_file():
        rows = json.loads(FINETUNE.read_text())
        cases = list(dict.fromkeys(r["case"] for r in rows if "micrograph" in r["case"]))
        figures["micrograph"] = finetune_before_figures(rows, cases)
    return figures


def finetune_advice() -> dict[str, dict]:
    """Return the ``finetune`` field of each model the fine-tuning benchmark started from."""
    if not FINETUNE.is_file():
        return {}
    advice = {}
    rows = json.loads(FINETUNE.read_text())
    calibrations = advised_calibrations(rows)
    for name, (mode, weights, only) in advised_modes(rows).items():
        calibration, clicks, count = calibrations[name]
        advice[name] = {
            "mode": mode,
            "calibration": calibration,
            "source": FINETUNE_SOURCE,
            "f1_10_clicks": {"weights": _r(weights),
                             "threshold": None if only is None else _r(only),
                             "weights_threshold_from_clicks": _r(clicks),
                             "weights_keeping_parent_count": (None if count is None
                                                              else _r(count))},
            "protocol": "mean F1 from 10 clicks (one completely clicked region) over the "
                        "benchmark's domain-shift cases for this model; the higher mode is "
                        "what fine-tuning does under mode 'auto', and the higher threshold "
                        "after training (from the clicks, or keeping the parent's count of "
                        "detections) what it does under calibration 'auto'",
        }
    return advice


def main() -> None:
    """Write the figures (and the fine-tuning advice) into the bundled cards."""
    figures, advice = card_figures(), finetune_advice()
    for name in dict.fromkeys([*figures, *advice]):
        model = load_model(name)
        card = dict(model.card)
        if name in figures:
            card["benchmark"] = figures[name]
        if name in figures and card.get("scenario") != "micrograph":
            # The fluorescence cards share the recipe and its measured departures.
            card["deviations"] = DEVIATIONS
        if name in advice:
            card["finetune"] = advice[name]
        save_model(resolve_model_path(name), model.network, card, overwrite=True)
        print(f"{name}: benchmark figures"
              + (f" and fine-tuning advice ({advice[name]['mode']}, "
                 f"{advice[name]['calibration']})" if name in advice else "")
              + " written to its card")


if __name__ == "__main__":
    main()
