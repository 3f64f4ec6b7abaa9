"""Micrograph models at their defaults: the real EMPIAR-10017 micrograph and simulations.

For each model given (``--models NAME=PATH ...``; default the bundled ``micrograph``),
in one run:

- the real EMPIAR-10017 micrograph (4096^2 JPEG, 629 expert picks of 108 px particles),
  binned as the model card asks for 108 px particles, as is and contrast-inverted, F1 at
  a gate of half the diameter (54 px);
- simulated 1024^2 micrographs at SNR 0.05, 0.1 and 0.2, plain (the world the first
  micrograph model was trained in) and with a contrast transfer function (rings and
  fringes, ``ctf=(0.5, 1.0)``) and detector artefacts, two seeds each, F1 at 5 px.

Per case: F1 at the defaults (the polarity and threshold chosen per image), the best
F1 over thresholds (chosen on the truth: what a perfect threshold would give) and the
detections kept. Writes ``docs/benchmarks/micrograph.md`` and ``.json``.

Usage::

    python benchmarks/bench_micrograph.py [--models micrograph=PATH ...] [--data DIR]
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
from common import DATA

from napari_denodet.core.metrics import f1_by_threshold, score_detections
from napari_denodet.core.models import load_model
from napari_denodet.core.points import SCORE
from napari_denodet.core.predict import run
from napari_denodet.core.simulate import simulate_micrograph

REPO = Path(__file__).resolve().parents[1]
SNRS = (0.05, 0.1, 0.2)
SEEDS = (11, 12)
KINDS = {"plain": {}, "CTF + artefacts": {"ctf": (0.5, 1.0), "artefacts": True}}
DIAMETER = 108.0


def _scores(found, truth, gate) -> dict:
    levels = np.unique(np.quantile(found.candidates[SCORE], np.linspace(0, 0.999, 300)))
    best = float(f1_by_threshold(found.candidates, truth, levels, gate=gate).max())
    return {"f1": score_detections(found.points, truth, gate=gate).f1, "best": best,
            "kept": len(found.points), "polarity": found.polarity}


def _cases(folder: Path):
    # (name, image, truth, gate, binning for 108 px particles or None)
    import imageio.v3 as iio

    jpg, coords = folder / "empiar10017_micrograph.jpg", folder / "empiar10017_coords.csv"
    if jpg.is_file() and coords.is_file():
        image = iio.imread(jpg).astype(np.float32)
        picks = pd.read_csv(coords)
        truth = pd.DataFrame({"y": picks["Y-Coordinate"], "x": picks["X-Coordinate"]})
        yield "EMPIAR-10017 as is", image, truth, DIAMETER / 2, True
        yield "EMPIAR-10017 inverted", image.max() - image, truth, DIAMETER / 2, True
    for kind, options in KINDS.items():
        for snr in SNRS:
            for seed in SEEDS:
                sim = simulate_micrograph(shape=(1024, 1024), snr=snr, seed=seed, **options)
                yield (f"simulated {kind}, SNR {snr:g}, seed {seed}", sim.noisy,
                       sim.truth[["y", "x"]], 5.0, False)


def _markdown(rows: list[dict], models: dict[str, str]) -> str:
    names = list(models)
    lines = ["# Micrograph models at their defaults", "",
             "Produced by `python benchmarks/bench_micrograph.py --models "
             + " ".join(f"{n}={p}" for n, p in models.items()) + "` on "
             f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads. F1 at the defaults (polarity and "
             "threshold chosen per image) / best F1 over thresholds (chosen on the truth); "
             "EMPIAR-10017 binned as each card asks for 108 px particles, gate 54 px; "
             "simulations 1024^2, gate 5 px.", "",
             "| case | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for case in dict.fromkeys(r["case"] for r in rows):
        cells = []
        for name in names:
            r = next(r for r in rows if r["case"] == case and r["model"] == name)
            cells.append(f"{r['f1']:.3f} / {r['best']:.3f}")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    lines += ["", "Means over the simulated cases (F1 at the defaults / best):", "",
              "| cases | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for kind in KINDS:
        cells = []
        for name in names:
            mine = [r for r in rows if r["model"] == name and f"simulated {kind}," in r["case"]]
            cells.append(f"{np.mean([r['f1'] for r in mine]):.3f} / "
                         f"{np.mean([r['best'] for r in mine]):.3f}")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["micrograph=micrograph"],
                        metavar="NAME=PATH")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path,
                        default=REPO / "docs" / "benchmarks" / "micrograph")
    args = parser.parse_args()
    models = dict(item.split("=", 1) for item in args.models)
    rows = []
    for case, image, truth, gate, binned in _cases(args.data):
        for name, path in models.items():
            model = load_model(path)
            binning = model.bin_for_diameter(DIAMETER) if binned else 1
            found = run(model.detect(image, binning=binning))
            row = {"case": case, "model": name, "binning": binning, "gate": gate,
                   **_scores(found, truth, gate)}
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"models": models, "rows": rows}, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(rows, models))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
