"""Topaz's pretrained picker next to the bundled micrograph model on EMPIAR-10017.

Topaz (Bepler et al. 2019; ``topaz-em`` on PyPI) ships pretrained particle pickers.
Here its general ``resnet16`` picker (64 units, the ``topaz extract`` default) runs as
``topaz preprocess -s S`` + ``topaz extract -r R`` would: the micrograph is Fourier-
downsampled by S and normalised with Topaz's own GMM fit, scored by the model, and
local maxima are taken by Topaz's non-maximum suppression with radius R = the particle
radius / S. The bundled ``micrograph`` model detects on the same micrograph binned as
its card asks for the 108 px particles (``--diameter 108``). Nothing is fine-tuned and
no click is used: both are pretrained pickers.

Both are scored against the 629 expert picks at full resolution (gate 40 px) inside the
area the expert annotated (nothing within one particle diameter of the edge): F1 at the
threshold a user would start from (Topaz: log-likelihood ratio 0, i.e. p = 0.5; ours:
the card's calibrated threshold) and at the best threshold of a sweep (an upper bound
neither user can know). Writes ``docs/benchmarks/topaz.md``.

Topaz is not a dependency of napari-denodet. To run this script, install it next to
napari-denodet; its picker needs neither torchvision nor a GPU::

    python -m pip install --no-deps topaz-em==0.3.20
    python -m pip install h5py scikit-learn psutil tqdm future
    python benchmarks/bench_topaz.py [--scales 4 6 8]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import away_from_edge

from napari_denodet.core.io import read_image
from napari_denodet.core.metrics import score_detections
from napari_denodet.core.models import load_model
from napari_denodet.core.points import SCORE, points_table
from napari_denodet.core.predict import detect, run
from napari_denodet.core.resample import bin_image, unbin_points

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
GATE = 40.0  # full-resolution px


def _f1(points, truth, threshold, shape, margin):
    kept = away_from_edge(points[points[SCORE] >= threshold], shape, margin)
    return score_detections(kept, truth, gate=GATE)


def _best(points, truth, shape, margin):
    levels = np.quantile(points[SCORE], np.linspace(0, 0.995, 300))
    threshold = max(levels, key=lambda t: _f1(points, truth, t, shape, margin).f1)
    return _f1(points, truth, threshold, shape, margin), float(threshold)


def _topaz(full: np.ndarray, scale: int, radius_px: float):
    from topaz.algorithms import non_maximum_suppression
    from topaz.model.factory import load_model as topaz_model
    from topaz.stats import normalize
    from topaz.utils.image import downsample

    model = topaz_model("resnet16")
    model.eval()
    model.fill()
    started = time.perf_counter()
    small = downsample(full.astype(np.float32), scale)
    small, _ = normalize(small, alpha=900, beta=1, num_iters=100, sample=10)
    with torch.no_grad():
        logits = model(torch.from_numpy(small)[None, None].float())[0, 0].numpy()
    radius = max(1, int(round(radius_px / scale)))
    scores, coords = non_maximum_suppression(logits, radius, threshold=-6.0)
    seconds = time.perf_counter() - started
    # Topaz writes coordinates as (x, y) in downsampled pixels, up-scaled by multiplying.
    table = points_table(coords[:, 1] * float(scale), coords[:, 0] * float(scale),
                         score=scores)
    return table, radius, seconds


def main() -> None:
    """Run both pickers and write the markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[4, 6, 8])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "topaz.md")
    args = parser.parse_args()
    import topaz

    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 -- Topaz samples pixels from the global generator
    full = np.asarray(read_image(DATA / "empiar10017_micrograph.jpg"), dtype=np.float32)
    picks = pd.read_csv(DATA / "empiar10017_coords.csv")
    truth = points_table(picks["Y-Coordinate"], picks["X-Coordinate"])
    diameter = float(picks["Diameter"].median())
    margin = diameter
    truth = away_from_edge(truth, full.shape, margin)
    rows = []

    model = load_model("micrograph")
    factor = model.bin_for_diameter(diameter)
    started = time.perf_counter()
    ours = run(detect(bin_image(full, factor), model.network, invert=model.invert,
                      **model.localisation)).points
    seconds = time.perf_counter() - started
    ours = unbin_points(ours, factor)
    best, threshold = _best(ours, truth, full.shape, margin)
    rows.append((f"napari-denodet `micrograph` (bundled), bin {factor}",
                 f"{model.threshold:g}", _f1(ours, truth, model.threshold, full.shape, margin),
                 best, threshold, seconds))
    print(rows[-1][0], rows[-1][2].f1, best.f1)

    for scale in args.scales:
        table, radius, seconds = _topaz(full, scale, diameter / 2)
        best, threshold = _best(table, truth, full.shape, margin)
        rows.append((f"Topaz {topaz.__version__} pretrained `resnet16`, downsample {scale}, "
                     f"radius {radius}", "0", _f1(table, truth, 0.0, full.shape, margin),
                     best, threshold, seconds))
        print(rows[-1][0], rows[-1][2].f1, best.f1)

    lines = [
        "# Pretrained pickers on EMPIAR-10017: Topaz and napari-denodet",
        "",
        "Written by `benchmarks/bench_topaz.py` "
        f"({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, CPU only). One 4096^2 micrograph, "
        f"{len(truth)} expert picks ({diameter:g} px particles) inside the annotated area "
        f"(more than {margin:g} px from the edge, where detections are scored too); gate "
        f"{GATE:g} px. No fine-tuning and no clicks: both models as shipped. The time "
        "covers downsampling, normalisation, the network and peak finding.",
        "",
        "| picker | starting threshold | precision | recall | F1 | F1 at the best threshold "
        "| best threshold | RMSE (px) | time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, start, at_start, best, threshold, seconds in rows:
        lines.append(f"| {name} | {start} | {at_start.precision:.3f} | {at_start.recall:.3f} "
                     f"| {at_start.f1:.3f} | {best.f1:.3f} | {threshold:.3g} "
                     f"| {at_start.rmse:.1f} | {seconds:.1f} |")
    lines += ["", "Topaz's starting threshold is the log-likelihood ratio 0 (p = 0.5); "
                  "`topaz extract` itself keeps everything above -6 and leaves the cut to "
                  "the user. Fine-tuned figures of napari-denodet on this micrograph, from "
                  "10 clicks, are in [finetune.md](finetune.md)."]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
