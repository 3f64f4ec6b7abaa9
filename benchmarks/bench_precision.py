"""Precision benchmark: the engine's bfloat16 arithmetic against float32.

On a CPU with native bfloat16 instructions (AVX512-BF16 or AMX) the detection engine
runs the network in bfloat16 by default (``precision="auto"``,
:func:`napari_denodet.core.predict.choose_precision`). This script measures, in one run,
what that changes and what it buys:

- accuracy: on every cell of the detection benchmark (same stacks, same tuning rule,
  :mod:`bench_detection`), F1 at the threshold tuned on the validation stack, F1 at the
  model's own threshold, RMSE and PSNR of the bundled model a user picks for the
  scenario, in float32 and in bfloat16;
- the real time-lapse (``timelapse_telomeres_2d.tif``, frames 0-19): detections at the
  model's threshold both ways and how well they agree (0.5 px gate);
- speed: frames/s of 512 x 512 detection plus denoising in float32, in bfloat16 and at
  ``auto`` (what this machine picks), beside LoG and the wavelet detector, interleaved
  in the same run (:func:`bench_detection.measure_speed`).

Writes ``docs/benchmarks/precision.md`` and ``.json``.

Usage::

    python benchmarks/bench_precision.py [--frames 6] [--repeats 9] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import (
    DENSITIES,
    SNRS,
    cell_index,
    cell_stacks,
    measure_speed,
    score_network,
)

from napari_denodet.core.device import choose_precision, native_bfloat16
from napari_denodet.core.io import read_image
from napari_denodet.core.metrics import score_detections
from napari_denodet.core.models import bundled_models, load_model
from napari_denodet.core.predict import detect, run
from napari_denodet.core.simulate import SCENARIOS

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("float32", "bfloat16")
METRICS = ("f1", "f1_default", "rmse", "psnr")
TELOMERES = REPO.parent / "shared" / "data" / "timelapse_telomeres_2d.tif"


def accuracy_rows(frames: int, scenarios, snrs) -> list[dict]:
    """Both precisions on every cell, with the model a user picks for the scenario."""
    bundled = bundled_models()
    rows = []
    for scenario in scenarios:
        name = scenario if scenario in bundled else "fluorescence"
        model = load_model(name)
        for snr in snrs:
            for density in DENSITIES:
                val, test = cell_stacks(scenario, snr, density, frames,
                                        cell_index(scenario, snr, density))
                row = {"scenario": scenario, "snr": snr, "density": density,
                       "model": name}
                for precision in PRECISIONS:
                    scores, _ = score_network(model, val, test, precision)
                    row[precision] = {k: float(scores[k]) for k in METRICS}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def real_agreement(model) -> dict | None:
    """Detections on the real time-lapse in both precisions, and how well they agree."""
    if not TELOMERES.exists():
        return None
    stack = read_image(TELOMERES)
    points = {}
    for precision in PRECISIONS:
        result = run(detect(stack, model.network, invert=model.invert, frames=(0, 20),
                            precision=precision, **model.localisation))
        points[precision] = result.points[result.points.score >= model.threshold]
    a, b = points["float32"], points["bfloat16"]
    same = score_detections(b, a, gate=0.5)
    return {"file": TELOMERES.name, "frames": "0-19", "float32": len(a),
            "bfloat16": len(b), "f1_between": same.f1, "rmse_between_px": same.rmse}


def summary(rows: list[dict]) -> dict:
    """Largest and mean differences (bfloat16 minus float32) over the cells."""
    out = {}
    for k in METRICS:
        d = np.array([r["bfloat16"][k] - r["float32"][k] for r in rows])
        out[k] = {"mean": float(d.mean()), "min": float(d.min()), "max": float(d.max())}
    return out


def write_markdown(path: Path, report: dict, command: str) -> None:
    speed, rows, diff = report["speed"], report["rows"], report["summary"]
    auto = report["auto_precision"]
    lines = [
        "# Precision: bfloat16 against float32",
        "",
        "Written by `benchmarks/bench_precision.py`; every figure below was measured in "
        f"one run on this machine's CPU ({platform.machine()}, {torch.get_num_threads()} "
        f"torch threads, torch {torch.__version__}; native bfloat16 instructions: "
        f"{'yes' if report['native_bfloat16'] else 'no'}, so `precision=\"auto\"` runs "
        f"in {auto} here). Total time {report['seconds'] / 60:.1f} min.",
        "",
        f"Command: `{command}`",
        "",
        "The engine casts the network's weights and its normalised input to bfloat16; "
        "oneDNN accumulates in float32, and the outputs (denoised frame, heatmap logits) "
        "come back as float32 before peaks, local DSNT and scores are computed. GPUs and "
        "CPUs without native bfloat16 keep float32 under `auto`.",
        "",
        "## Speed on 512 x 512 frames (detection + denoising; median of "
        f"{report['repeats']} interleaved runs)",
        "",
        "| method | frames/s | ratio to LoG | ratio to float32 |",
        "|---|---|---|---|",
    ]
    base = speed["DENODET float32"]
    for name, fps in speed.items():
        lines.append(f"| {name} | {fps:.1f} | {fps / speed['LoG']:.2f} | "
                     f"{fps / base:.2f} |")
    lines += [
        "",
        "Speed target, at least 10 frames/s: "
        f"{speed['DENODET auto']:.1f} frames/s at the engine's default "
        f"({'met' if speed['DENODET auto'] >= 10 else 'not met'}); float32 alone "
        f"{base:.1f} frames/s.",
        "",
        "## Accuracy on the detection benchmark's cells",
        "",
        f"Same stacks ({report['frames']} frames of 512 x 512 per validation and test "
        "stack), same rule (threshold from 150 levels of the validation scores), same 5 px "
        "gate as `docs/benchmarks/detection.md`; the model is the one bundled for the scenario. "
        "Differences are bfloat16 minus float32.",
        "",
        "| measure | mean difference | smallest | largest |",
        "|---|---|---|---|",
    ]
    names = {"f1": "F1 (tuned threshold)", "f1_default": "F1 (model's threshold)",
             "rmse": "RMSE (px)", "psnr": "PSNR (dB)"}
    for k, label in names.items():
        d = diff[k]
        lines.append(f"| {label} | {d['mean']:+.4f} | {d['min']:+.4f} | {d['max']:+.4f} |")
    lines += ["", "| scenario | SNR | density | model | F1 float32 | F1 bfloat16 | "
              "F1 default float32 | F1 default bfloat16 | RMSE float32 | RMSE bfloat16 | "
              "PSNR float32 | PSNR bfloat16 |", "|" + "---|" * 12]
    for r in rows:
        a, b = r["float32"], r["bfloat16"]
        lines.append(
            f"| {r['scenario']} | {r['snr']:g} | {r['density']} | {r['model']} | "
            f"{a['f1']:.3f} | {b['f1']:.3f} | {a['f1_default']:.3f} | {b['f1_default']:.3f} "
            f"| {a['rmse']:.3f} | {b['rmse']:.3f} | {a['psnr']:.2f} | {b['psnr']:.2f} |")
    real = report["real"]
    if real:
        lines += ["", "## Real time-lapse", "",
                  f"`{real['file']}`, frames {real['frames']}, at the model's threshold: "
                  f"{real['float32']} detections in float32, {real['bfloat16']} in bfloat16; "
                  f"matched within 0.5 px: F1 {real['f1_between']:.4f} between the two, "
                  f"RMSE {real['rmse_between_px']:.4f} px."]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true",
                        help="one scenario at SNR 2, written to the temporary folder")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    scenarios = ("vesicle",) if args.quick else SCENARIOS
    snrs = (2.0,) if args.quick else SNRS
    out = args.out or (Path("/tmp") / "benchmarks-precision.md" if args.quick else
                       REPO / "docs" / "benchmarks" / "precision.md")
    model = load_model("fluorescence")
    # Speed first, on a machine not yet warmed by the accuracy runs' allocations.
    speed = measure_speed(
        {f"DENODET {p}": model for p in ("float32", "bfloat16", "auto")},
        repeats=args.repeats, precisions={f"DENODET {p}": p for p in ("float32", "bfloat16")})
    rows = accuracy_rows(args.frames, scenarios, snrs)
    report = {
        "native_bfloat16": native_bfloat16(),
        "auto_precision": str(choose_precision("auto", torch.device("cpu"))).split(".")[-1],
        "speed": speed, "repeats": args.repeats, "frames": args.frames, "rows": rows,
        "summary": summary(rows), "real": real_agreement(model),
    }
    report["seconds"] = time.perf_counter() - started
    command = "benchmarks/bench_precision.py " + " ".join(sys.argv[1:])
    write_markdown(out, report, command.strip())
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
