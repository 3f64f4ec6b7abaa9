"""Is a real time-lapse a typical draw of the training domain?

Draws ``--draws`` two-frame stacks the way training draws its fluorescence patches
(``TrainSettings(domain="realistic")``: scenario, SNR 0.8-40, density, and the image
formation of :mod:`napari_denodet.core.simulate.formation`, a share of them in the
PTC-like world) and measures on each, after the per-frame normalisation the network
sees (median, 1.4826 x MAD):

- the correlation of the noise between neighbouring pixels along y and x (from the
  difference of two frames, which removes what does not move, on background pixels);
- the noise level over the MAD scale (integer cameras make the MAD coarse), on
  background pixels;
- the background structure: the spread of a 15 px median filter, in noise units;
- the brightest spots: the 99.9th percentile, in noise units.

The same on every pair of frames of the real telomere time-lapse (given with
``--data``), then where the real median falls among the draws (its percentile). A real
value between the 5th and 95th percentile is a typical draw. With ``--plain``, the
same for the PTC-like world alone (the old training domain), for comparison.

Also writes ``docs/img/domain_crops.png``: real crops beside simulated ones.

Usage::

    python benchmarks/bench_domain.py --data FOLDER_WITH_THE_REAL_IMAGES
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_denodet.core.io import read_image
from napari_denodet.core.normalize import frame_scale
from napari_denodet.core.simulate import SCENARIOS, simulate_timelapse
from napari_denodet.core.train import TrainSettings, patch_formation

REPO = Path(__file__).resolve().parents[1]
STATS = ("noise corr y", "noise corr x", "noise / MAD scale", "background spread",
         "brightest spots")


def statistics(pair: np.ndarray) -> np.ndarray:
    """The five statistics of a ``(2, y, x)`` pair of frames (see the module docstring).

    The noise statistics use background pixels only (both frames' 5 x 5 mean below its
    median), where the frame difference holds noise and no particle.
    """
    scale = frame_scale(pair[0])
    a = scale.forward(pair[0]).astype(np.float64)
    b = scale.forward(pair[1]).astype(np.float64)
    diff = (b - a) / np.sqrt(2.0)
    calm = ((ndimage.uniform_filter(a, 5) < np.median(ndimage.uniform_filter(a, 5)))
            & (ndimage.uniform_filter(b, 5) < np.median(ndimage.uniform_filter(b, 5))))
    noise = np.where(calm, diff - diff[calm].mean(), 0.0)

    def corr(x, y, mx, my):
        both = mx & my
        x, y = x[both], y[both]
        return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum() + 1e-12))

    return np.array([
        corr(noise[:-1], noise[1:], calm[:-1], calm[1:]),
        corr(noise[:, :-1], noise[:, 1:], calm[:, :-1], calm[:, 1:]),
        float(noise[calm].std()),
        float(ndimage.median_filter(a, 15).std()),
        float(np.percentile(a, 99.9)),
    ])


def simulated(draws: int, shape, plain: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """Statistics of ``draws`` training-like stacks, and a few of their first frames."""
    settings = TrainSettings(domain="ptc" if plain else "realistic")
    rng = np.random.default_rng(2026)
    lo, hi = settings.snr
    rows, frames = [], []
    for _ in range(draws):
        seed = int(rng.integers(2**31))
        snr = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        scenario = SCENARIOS[int(rng.integers(len(SCENARIOS)))]
        sim = simulate_timelapse(scenario, snr=snr, density=rng.uniform(30, 1200), frames=2,
                                 shape=shape, seed=seed,
                                 formation=patch_formation(settings, seed))
        rows.append(statistics(sim.noisy))
        frames.append(sim.noisy[0])
    return np.array(rows), frames


def percentile_of(value: float, sample: np.ndarray) -> float:
    """Share (%) of the draws below ``value`` (ties count half)."""
    return float(100.0 * ((sample < value).mean() + 0.5 * (sample == value).mean()))


def crops_figure(real: np.ndarray, frames: list[np.ndarray], path: Path) -> None:
    """Real crops on the top row, simulated ones below, each scaled to its 0.5-99.8 %."""
    import imageio.v3 as iio

    size = 96

    def tile(frame):
        frame = np.asarray(frame, np.float64)[:size, :size]
        low, high = np.percentile(frame, [0.5, 99.8])
        return (np.clip((frame - low) / (high - low + 1e-12), 0, 1) * 255).astype(np.uint8)

    top = [tile(real[t, 10:, 20:]) for t in (0, 60, 120, 180)]
    rest = [tile(f) for f in frames[:12]]
    gap = np.full((size, 4), 255, np.uint8)
    rows = [np.hstack([x for t in row for x in (t, gap)][:-1])
            for row in (top, rest[:4], rest[4:8], rest[8:12])]
    sep = np.full((4, rows[0].shape[1]), 255, np.uint8)
    image = np.vstack([x for r in rows for x in (r, sep)][:-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.kron(image, np.ones((2, 2), np.uint8)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="folder with timelapse_telomeres_2d.tif")
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "domain.md")
    args = parser.parse_args()
    started = time.perf_counter()
    real = np.asarray(read_image(args.data / "timelapse_telomeres_2d.tif").data)
    real_stats = np.median([statistics(real[t:t + 2]) for t in range(len(real) - 1)], axis=0)
    shape = real.shape[1:]
    wide, frames = simulated(args.draws, shape, plain=False)
    plain, _ = simulated(args.draws, shape, plain=True)
    rows = []
    for i, name in enumerate(STATS):
        rows.append({
            "statistic": name, "real": float(real_stats[i]),
            "realistic p5": float(np.percentile(wide[:, i], 5)),
            "realistic p95": float(np.percentile(wide[:, i], 95)),
            "realistic percentile": percentile_of(real_stats[i], wide[:, i]),
            "ptc p5": float(np.percentile(plain[:, i], 5)),
            "ptc p95": float(np.percentile(plain[:, i], 95)),
            "ptc percentile": percentile_of(real_stats[i], plain[:, i]),
        })
    crops_figure(real, frames, REPO / "docs" / "img" / "domain_crops.png")
    seconds = time.perf_counter() - started
    lines = [
        "# The training domain against a real time-lapse",
        "",
        f"Made by `python benchmarks/bench_domain.py --draws {args.draws} --data DATA` "
        f"({time.strftime('%Y-%m-%d')}, {seconds:.0f} s). {args.draws} two-frame stacks "
        f"of {shape[0]} x {shape[1]} px drawn as training draws its fluorescence patches, "
        "for the realistic domain (`--domain realistic`) and the PTC-like world alone "
        "(`--domain ptc`, the old training data); statistics after the network's "
        "per-frame normalisation, the real value being the median over the 199 frame "
        "pairs of the telomere time-lapse. A real value between the 5th and 95th "
        "percentile of the draws is a typical draw.",
        "",
        "| statistic | real | realistic 5-95 % | real's percentile | PTC-only 5-95 % "
        "| real's percentile |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['statistic']} | {r['real']:.3f} | {r['realistic p5']:.3f} - "
            f"{r['realistic p95']:.3f} | {r['realistic percentile']:.0f} | "
            f"{r['ptc p5']:.3f} - {r['ptc p95']:.3f} | {r['ptc percentile']:.0f} |")
    typical = sum(5 <= r["realistic percentile"] <= 95 for r in rows)
    typical_plain = sum(5 <= r["ptc percentile"] <= 95 for r in rows)
    lines += [
        "",
        f"The real stack is a typical draw in {typical} of {len(rows)} statistics of the "
        f"realistic domain, and in {typical_plain} of {len(rows)} of the PTC-like world.",
        "",
        "![Real crops of the telomere time-lapse (top row) beside simulated training "
        "draws of the realistic domain (three rows below), each scaled to its own "
        "0.5-99.8 % range.](../img/domain_crops.png)",
        "",
        "Top row: the real telomere time-lapse (frames 0, 60, 120, 180). Below: draws "
        "of the realistic domain.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(
        {"rows": rows, "draws": args.draws, "seconds": seconds}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
