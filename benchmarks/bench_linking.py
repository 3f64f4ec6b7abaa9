"""How long linking takes: 200 frames of 100 particles, with and without the step estimate.

The issue's target: linking 200 frames x 100 particles in under 10 s on 2 cores. The
points are the truth of a simulated vesicle stack (mid density, 200 frames of 512 x 512:
about 100 particles a frame, diffusing) and of a comet stack (directed, fast). Timed per
stack, medians of ``--repeats`` turns taken round robin:

- the step estimate alone (:func:`napari_denodet.core.tracks.estimate_max_distance`);
- :func:`~napari_denodet.core.tracks.link` with the estimated step (the default);
- ``link`` with the step given (5 px, the default before), for comparison.

Writes ``docs/benchmarks/linking.md`` and ``.json``. Usage::

    python benchmarks/bench_linking.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from napari_denodet.core.simulate import simulate_timelapse
from napari_denodet.core.tracks import LinkSettings, estimate_max_distance, link

REPO = Path(__file__).resolve().parents[1]
SEED = 7_200_000_000
FRAMES = 200


def _points(scenario: str, particles: int):
    # The truth of a simulated stack, whole tracks dropped at random until about
    # ``particles`` remain per frame.
    sim = simulate_timelapse(scenario, snr=4, density="mid", frames=FRAMES, shape=(512, 512),
                             seed=SEED)
    truth = sim.truth
    ids = np.unique(truth["track_id"])
    share = min(1.0, particles / (len(truth) / FRAMES))
    keep = np.random.default_rng(SEED).choice(ids, size=round(share * len(ids)),
                                              replace=False)
    return truth[truth["track_id"].isin(keep)][["frame", "y", "x"]].reset_index(drop=True)


def measure(points, repeats: int) -> dict:
    runners = {
        "estimate": lambda: estimate_max_distance(points),
        "link, step estimated": lambda: link(points),
        "link, step 5 px": lambda: link(points, LinkSettings(max_distance=5.0)),
    }
    for runner in runners.values():  # warm-up
        runner()
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            started = time.perf_counter()
            runner()
            times[name].append(time.perf_counter() - started)
    return {"points": len(points), "per_frame": len(points) / FRAMES,
            "step": estimate_max_distance(points),
            **{name: statistics.median(t) for name, t in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "linking")
    args = parser.parse_args()
    rows = []
    for scenario in ("vesicle", "microtubule"):
        row = {"scenario": scenario, **measure(_points(scenario, 100), args.repeats)}
        print(json.dumps(row))
        rows.append(row)
    args.out.with_suffix(".json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    lines = ["# Linking time", "",
             f"Produced by `python benchmarks/bench_linking.py --repeats {args.repeats}` on "
             f"{platform.processor() or platform.machine()} (laptrack's LAP linker, gap 2 "
             f"frames). The truth of simulated stacks of {FRAMES} frames thinned to about 100 "
             "particles a frame; seconds, medians of round-robin turns. Target: under 10 s.",
             "", "| stack | points per frame | estimated step (px) | estimate (s) | link, step "
             "estimated (s) | link, step 5 px (s) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['per_frame']:.0f} | {r['step']:g} | "
                     f"{r['estimate']:.3f} | {r['link, step estimated']:.2f} | "
                     f"{r['link, step 5 px']:.2f} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
