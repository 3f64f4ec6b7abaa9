"""Track-length filtering: how much dropping short tracks improves detection.

For each detection benchmark cell (vesicle / receptor / microtubule x SNR 1, 2, 4, 7 x
low / mid density; a 20-frame 512 x 512 test stack each), the bundled model detects at
its per-image threshold, the detections are linked (:func:`napari_denodet.core.tracks.link`,
largest step estimated from the detections, gap 2 frames) and the tracks shorter than N
frames are dropped, for N = 1 (all), 2, 3 and 5. Precision, recall and F1 against the
simulation's truth (3 px gate) for each N. With ``--data``, the real telomere
time-lapse too: detections per frame and the share found again in the next frame for
each N.

Writes ``docs/benchmarks/tracks.md`` and ``.json``.

Usage::

    python benchmarks/bench_tracks.py [--frames 20] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from common import (
    DATA,
    DENSITIES,
    SCENARIO_MODEL,
    SCENARIOS,
    SNRS,
    cell_index,
    cell_stacks,
)

from napari_denodet.core.detection import recurrence
from napari_denodet.core.metrics import score_detections
from napari_denodet.core.models import load_model
from napari_denodet.core.points import FRAME
from napari_denodet.core.predict import run
from napari_denodet.core.tracks import LinkSettings, link, tracks_longer

REPO = Path(__file__).resolve().parents[1]
LENGTHS = (1, 2, 3, 5)


def _cell(scenario: str, snr: float, density: str, frames: int) -> dict:
    _, test = cell_stacks(scenario, snr, density, frames, cell_index(scenario, snr, density))
    model = load_model(SCENARIO_MODEL[scenario])
    found = run(model.detect(test.noisy)).points
    linked = link(found, LinkSettings())
    row = {"scenario": scenario, "snr": snr, "density": density}
    for n in LENGTHS:
        s = score_detections(tracks_longer(linked, n), test.truth)
        row[f"precision_{n}"], row[f"recall_{n}"], row[f"f1_{n}"] = s.precision, s.recall, s.f1
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
          file=sys.stderr)
    return row


def _telomeres(folder: Path) -> dict | None:
    import tifffile

    path = folder / "timelapse_telomeres_2d.tif"
    if not path.is_file():
        return None
    found = run(load_model("fluorescence").detect(tifffile.imread(path))).points
    linked = link(found, LinkSettings())
    out = {}
    for n in LENGTHS:
        kept = tracks_longer(linked, n)
        out[n] = {"per_frame": float(kept.groupby(FRAME).size().median()),
                  "recurrence": recurrence(kept)}
    return out


def _markdown(rows: list[dict], telomeres: dict | None, args) -> str:
    lines = ["# Track-length filtering", "",
             f"Produced by `python benchmarks/bench_tracks.py --frames {args.frames}` on "
             f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads: the bundled models at their per-image "
             "threshold, linked (largest step estimated from the detections, gap 2 "
             "frames), tracks shorter than N "
             "frames dropped. Precision / recall / F1 against the truth (3 px gate).", "",
             "| cell | " + " | ".join(f"N = {n}" for n in LENGTHS) + " |",
             "|---|" + "---|" * len(LENGTHS)]
    for r in rows:
        cells = [f"{r[f'precision_{n}']:.2f} / {r[f'recall_{n}']:.2f} / {r[f'f1_{n}']:.3f}"
                 for n in LENGTHS]
        lines.append(f"| {r['scenario']} SNR {r['snr']:g} {r['density']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Mean over the cells, per SNR (F1):", "",
              "| SNR | " + " | ".join(f"N = {n}" for n in LENGTHS) + " |",
              "|---|" + "---|" * len(LENGTHS)]
    for snr in SNRS:
        mine = [r for r in rows if r["snr"] == snr]
        lines.append(f"| {snr:g} | " + " | ".join(
            f"{np.mean([r[f'f1_{n}'] for r in mine]):.3f}" for n in LENGTHS) + " |")
    if telomeres:
        lines += ["", "Real telomere time-lapse: detections per frame (median) and the share "
                      "found again in the next frame within 1.5 px.", "",
                  "| N | per frame | found again |", "|---|---|---|"]
        for n, v in telomeres.items():
            lines.append(f"| {n} | {v['per_frame']:.0f} | {v['recurrence']:.0%} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "tracks")
    args = parser.parse_args()
    rows = [_cell(scenario, snr, density, args.frames) for scenario in SCENARIOS
            for snr in SNRS for density in DENSITIES]
    telomeres = _telomeres(args.data)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"rows": rows, "telomeres": telomeres}, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(rows, telomeres, args))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
