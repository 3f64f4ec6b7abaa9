"""Which binning suits the bundled micrograph model: a sweep on the real EMPIAR-10017 micrograph.

The 4096^2 micrograph is binned by each factor, the bundled ``micrograph`` model
detects particles, and the candidates are scored against the 629 expert picks (mapped
to binned pixels; gate 40 full-resolution px) at the model's calibrated threshold and at
the best threshold of a sweep. Also reported: the bin :meth:`Model.bin_for_diameter`
gives for the picks' 108 px diameter. Writes ``docs/benchmarks/binning.md``.

Usage::

    python benchmarks/bench_binning.py [--bins 4 5 6 7 8 10 12]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from napari_denodet.core.io import read_image
from napari_denodet.core.metrics import score_detections
from napari_denodet.core.models import load_model
from napari_denodet.core.points import SCORE, points_table
from napari_denodet.core.predict import detect, run
from napari_denodet.core.resample import bin_image, bin_points

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
GATE_FULL = 40.0


def main() -> None:
    """Run the sweep and write the markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bins", type=int, nargs="+", default=[4, 5, 6, 7, 8, 10, 12])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "binning.md")
    args = parser.parse_args()
    full = np.asarray(read_image(DATA / "empiar10017_micrograph.jpg"))
    picks = pd.read_csv(DATA / "empiar10017_coords.csv")
    diameter = float(picks["Diameter"].median())
    model = load_model("micrograph")
    chosen = model.bin_for_diameter(diameter)
    rows = []
    for factor in args.bins:
        image = bin_image(full, factor)
        truth = bin_points(points_table(picks["Y-Coordinate"], picks["X-Coordinate"]), factor)
        started = time.perf_counter()
        points = run(detect(image, model.network, invert=model.invert,
                            **model.localisation)).points
        seconds = time.perf_counter() - started
        gate = GATE_FULL / factor

        def f1(threshold, points=points, truth=truth, gate=gate):
            return score_detections(points[points[SCORE] >= threshold], truth, gate=gate)

        levels = np.union1d(np.arange(0.05, 0.951, 0.025),
                            np.quantile(points[SCORE], np.linspace(0, 0.995, 200)))
        best = max(levels, key=lambda t: f1(t).f1)
        default = f1(model.threshold)
        rows.append((factor, image.shape[0], diameter / factor, default, f1(best), best,
                     seconds))
        print(factor, round(default.f1, 3), round(f1(best).f1, 3), round(best, 3))
    lines = [
        "# Binning sweep: the bundled micrograph model on EMPIAR-10017",
        "",
        "Written by `benchmarks/bench_binning.py` "
        f"({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, CPU only). The 4096^2 micrograph binned "
        f"by each factor; F1 against all {len(picks)} expert picks (whole image, gate "
        f"{GATE_FULL:g} full-resolution px). The model was trained on particle radii of "
        f"{'-'.join(str(r) for r in model.card['particle_size']['radius_px'])} px; "
        f"`bin_for_diameter({diameter:g})` (`--diameter {diameter:g}`) gives **{chosen}**.",
        "",
        "| bin | binned size | particle diameter (binned px) | F1 at the model's threshold "
        f"({model.threshold:g}) | F1 at the best threshold | best threshold | detection (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for factor, size, d, default, best, threshold, seconds in rows:
        mark = " (chosen)" if factor == chosen else ""
        lines.append(f"| {factor}{mark} | {size}^2 | {d:.1f} | {default.f1:.3f} | "
                     f"{best.f1:.3f} | {threshold:.3f} | {seconds:.1f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
