"""What the default model, ``auto``, costs: the choice before the detection.

On a time-lapse, ``napari-denodet detect`` and the Detect widget first run the
``fluorescence`` and ``timelapse`` models on a few evenly spaced frames
(:func:`napari_denodet.core.choice.choose_model`), then detect with the one whose
probabilities expect the higher F1. This measures that comparison's share of the time,
against ``Model.detect`` with one model on the same stack (the default before):

- simulated vesicle stacks of 512 x 512 frames, 10, 50 and 200 frames long (SNR 2, mid
  density);
- the real telomere time-lapse (200 frames of 133 x 162) when ``--data`` holds it.

Per stack: seconds of ``fluorescence`` alone, of ``auto`` (the choice, then the chosen
model's detection), their ratio and the chosen model; medians of ``--repeats`` turns
taken round robin, so a slow spell of the machine hits both alike.

Writes ``docs/benchmarks/auto-cost.md`` and ``.json``. Usage::

    python benchmarks/bench_auto_cost.py [--repeats 3] [--data FOLDER]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from napari_denodet.core.choice import SAMPLE_FRAMES, choose_model
from napari_denodet.core.models import load_model
from napari_denodet.core.predict import run
from napari_denodet.core.simulate import simulate_timelapse

REPO = Path(__file__).resolve().parents[1]
SEED = 7_100_000_000
LENGTHS = (10, 50, 200)


def _auto(stack) -> str:
    choice = run(choose_model(stack))
    run(choice.model.detect(stack))
    return choice.name


def measure(stack, repeats: int) -> dict:
    single = load_model("fluorescence")
    runners = {"fluorescence": lambda: run(single.detect(stack)), "auto": lambda: _auto(stack)}
    times = {name: [] for name in runners}
    chosen = _auto(stack)  # warm-up of both paths
    runners["fluorescence"]()
    for _ in range(repeats):
        for name, runner in runners.items():
            started = time.perf_counter()
            runner()
            times[name].append(time.perf_counter() - started)
    alone, auto = (statistics.median(times[k]) for k in ("fluorescence", "auto"))
    return {"frames": int(stack.shape[0]), "shape": list(stack.shape[1:]),
            "fluorescence_s": alone, "auto_s": auto, "ratio": auto / alone, "chosen": chosen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "auto-cost")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = {}
    for frames in LENGTHS:
        sim = simulate_timelapse("vesicle", snr=2.0, density="mid", frames=frames,
                                 shape=(512, 512), seed=SEED + frames)
        rows[f"vesicles, {frames} x 512^2"] = measure(sim.noisy, args.repeats)
        print(rows, flush=True)
    telomeres = args.data / "timelapse_telomeres_2d.tif" if args.data else None
    if telomeres is not None and telomeres.is_file():
        import tifffile

        rows["real telomere time-lapse"] = measure(tifffile.imread(telomeres), args.repeats)
    seconds = time.perf_counter() - started
    options = f" --repeats {args.repeats}" + (" --data DATA" if args.data else "")
    lines = ["# The cost of the default model, `auto`", "",
             f"Made by `python benchmarks/bench_auto_cost.py{options}` on "
             f"{platform.processor() or 'CPU'} ({time.strftime('%Y-%m-%d')}, {seconds:.0f} s, "
             f"torch threads {torch.get_num_threads()}).", "",
             "`fluorescence`: `Model.detect` with that model alone (the default before "
             "`auto`). `auto`: the choice (both candidate models on "
             f"{SAMPLE_FRAMES} evenly spaced frames, each with its decoy pass, and the "
             "comet model too where `fluorescence` wins), then "
             "`Model.detect` with the chosen one. Median seconds of "
             f"{args.repeats} turns each, taken round robin.", "",
             "| stack | `fluorescence` (s) | `auto` (s) | ratio | chosen |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['fluorescence_s']:.1f} | {r['auto_s']:.1f} | "
                     f"{r['ratio']:.2f} | {r['chosen']} |")
    lines += ["", "Single images get `fluorescence` without a choice: no cost.", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
