"""Performance benchmark: throughput, peak memory, seams and scaling on this machine.

Measures in one run, against the performance targets:

- frames/s of the network (denoising + detection), the LoG detector and
  ``trackpy.locate`` on 512², 1024² and 2048² frames, and the network's
  arithmetic (multiply-adds per frame) against what these cores reach on a plain
  matrix product;
- how the cost grows with the number of frames and with the frame size;
- peak resident memory (the child process's ``VmHWM``) of ``napari-denodet
  detect`` on a 2,000-frame 512 x 512 uint16 stack (1 GB on disk) and on a 4096 x 4096
  micrograph (and an 8192 x 8192 field), against the cost of Python, torch and the
  model alone;
- a seam check: tiled against untiled detection on one large frame;
- batch throughput of many files on a local dask cluster of 1 and of 2 workers;
- the GUI path (the Detect widget's worker generator) against the CLI path per frame.

Writes ``docs/benchmarks/performance.md`` and ``docs/benchmarks/performance.json``.
``--quick`` runs the same code on tiny sizes (well under a minute) and writes to the
temporary folder instead.

Usage::

    python benchmarks/bench_performance.py [--quick] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from napari_denodet.core.batch import DetectSettings, detect_file_steps, run_batch
from napari_denodet.core.classic import detect_classic
from napari_denodet.core.io import read_image, write_tiff
from napari_denodet.core.models import load_model
from napari_denodet.core.network import count_conv_macs, count_parameters
from napari_denodet.core.predict import detect, run
from napari_denodet.core.simulate import simulate_micrograph, simulate_timelapse

REPO = Path(__file__).resolve().parents[1]
SEED = 4_600_000_000

FULL = dict(
    speed_frames={512: 16, 1024: 4, 2048: 2},
    repeats=2,
    count_size=512, counts=(4, 8, 16, 32),
    seam_size=2048, seam_tile=1024,
    stack_frames=2000, stack_size=512, micrograph_sizes=(4096, 8192),
    batch_files=16, batch_frames=8, batch_size=512,
    gui_frames=16, gui_size=512,
)
QUICK = dict(
    speed_frames={128: 4, 256: 2},
    repeats=1,
    count_size=128, counts=(2, 4, 8),
    seam_size=256, seam_tile=64,
    stack_frames=60, stack_size=128, micrograph_sizes=(512,),
    batch_files=4, batch_frames=2, batch_size=128,
    gui_frames=8, gui_size=128,
)
TARGETS = {"stack_peak_gb": 1.5, "micrograph_peak_gb": 2.0, "seam_px": 0.01,
           # Per-pixel cost at the largest size over the smallest: 1.0 is linear; tiling
           # adds a constant ~1.2 (overlap context) once frames exceed the tile size.
           "pixel_cost_ratio": 1.3,
           # "No slower": the GUI's time per frame within 10 % (timer noise) of the CLI's.
           "gui_over_cli": 1.10}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _best_time(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def _timelapse(frames: int, size: int, seed: int = 0) -> np.ndarray:
    sim = simulate_timelapse("vesicle", snr=4, density="mid", frames=frames,
                             shape=(size, size), seed=SEED + seed)
    return np.clip(sim.noisy, 0, 65535).astype(np.uint16)


# ----------------------------------------------------------------------- machine, FLOPs


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    mhz = None
    flags = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("cpu MHz") and mhz is None:
                mhz = float(line.split(":", 1)[1])
            elif line.startswith("flags") and not flags:
                flags = line
    cores = len(os.sched_getaffinity(0))
    # Two 256-bit FMA units per core: 2 x 8 x 2 = 32 float32 FLOP per cycle (AVX2/FMA;
    # AVX-512 on these cores is executed as two 256-bit halves).
    per_cycle = 32 if " fma" in flags else 8
    return {"cpu": cpu, "cores": cores, "mhz": mhz, "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "peak_gflops": cores * (mhz or 0) * 1e6 * per_cycle / 1e9}


def gemm_gflops(n: int = 2048, repeats: int = 5) -> dict:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    seconds = _best_time(lambda: a @ b, repeats)
    return {"n": n, "gflops": 2 * n**3 / seconds / 1e9}


def arithmetic(model, sizes) -> dict:
    config = model.network.config
    return {"parameters": count_parameters(model.network), "widths": list(config.widths),
            "macs": {s: count_conv_macs(model.network, s, s) for s in sizes}}


# --------------------------------------------------------------------------------- speed


def _trackpy_locate():
    try:
        import trackpy
    except ImportError:
        return None
    trackpy.quiet()

    def locate(stack):
        for frame in stack:
            trackpy.locate(frame, diameter=7, engine="python")

    return locate


def speed_by_size(model, frames_by_size: dict, repeats: int) -> list[dict]:
    trackpy_locate = _trackpy_locate()
    rows = []
    for size, frames in frames_by_size.items():
        stack = _timelapse(frames, size)
        # Warm up: the first pass of each batch shape sets up the convolutions (slow).
        run(detect(stack, model.network, **model.localisation))
        methods = {
            "network": lambda s=stack: run(detect(s, model.network, **model.localisation)),
            "LoG": lambda s=stack: detect_classic(s, "log"),
        }
        if trackpy_locate is not None:
            methods["trackpy.locate"] = lambda s=stack: trackpy_locate(s.astype(np.float32))
        row = {"size": size, "frames": frames}
        for name, work in methods.items():
            seconds = _best_time(work, repeats)
            row[name] = frames / seconds
        row.setdefault("trackpy.locate", None)
        rows.append(row)
        log(f"speed {size}²: " + ", ".join(f"{k} {v:.2f} frames/s" for k, v in row.items()
                                           if k not in ("size", "frames") and v))
    return rows


def growth_with_frames(model, size: int, counts) -> list[dict]:
    stack = _timelapse(max(counts), size, seed=1)
    run(detect(stack[:1], model.network, **model.localisation))
    rows = []
    for n in counts:
        seconds = _best_time(lambda n=n: run(detect(stack[:n], model.network,
                                                    **model.localisation)), 2)
        rows.append({"frames": n, "seconds": seconds})
    slope, intercept = np.polyfit([r["frames"] for r in rows], [r["seconds"] for r in rows], 1)
    for r in rows:
        r["fit"] = intercept + slope * r["frames"]
    log(f"growth with frames at {size}²: {slope * 1000:.1f} ms/frame + {intercept:.3f} s")
    return rows


# --------------------------------------------------------------------------------- seams


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.array([np.inf])
    return cKDTree(b).query(a)[0]


def seam_check(model, size: int, tile: int) -> dict:
    image = simulate_micrograph(shape=(size, size), seed=SEED).noisy
    runs = {}
    for name, tile_size in (("untiled", size), ("tiled", tile)):
        start = time.perf_counter()
        result = run(detect(image, model.network, invert=model.invert, tile_size=tile_size,
                            **model.localisation))
        runs[name] = (result.points, time.perf_counter() - start)
    out = {"size": size, "tile_size": tile, "overlap": 48}
    for label, cut in (("threshold", model.threshold), ("all candidates", 0.0)):
        a, b = (runs[k][0][runs[k][0].score >= cut] for k in ("untiled", "tiled"))
        ya, yb = a[["y", "x"]].to_numpy(), b[["y", "x"]].to_numpy()
        worst = float(max(_nearest(ya, yb).max(), _nearest(yb, ya).max()))
        out[label] = {"untiled": len(a), "tiled": len(b), "max_difference_px": worst}
    out["seconds"] = {k: v[1] for k, v in runs.items()}
    log(f"seams at {size}² (tile {tile}): {out['threshold']}")
    return out


# ---------------------------------------------------------------------------- peak memory


def measured(argv: list[str], log_path: Path) -> dict:
    """Run a child process; its peak resident memory and wall time.

    The peak is the child's own high-water mark (``VmHWM`` in ``/proc/PID/status``),
    polled every 20 ms. ``ru_maxrss`` from ``wait4`` cannot be used: Linux carries the
    parent's high-water mark over ``fork`` and ``exec``, so a child of this (large)
    benchmark process would report at least the benchmark's own peak.
    """
    start = time.perf_counter()
    peak_kb = 0
    with log_path.open("w") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
        status_file = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                for line in status_file.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{log_path.read_text()[-2000:]}")
    return {"peak_rss_mb": peak_kb / 1024, "seconds": seconds}


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "napari_denodet.cli", *map(str, args)]


def write_long_stack(path: Path, frames: int, size: int) -> None:
    """A uint16 (frames, size, size) TIFF written in chunks: never whole in memory."""
    import tifffile

    distinct = _timelapse(min(frames, 100), size, seed=2)
    stack = tifffile.memmap(path, shape=(frames, size, size), dtype=np.uint16,
                            imagej=True, metadata={"axes": "TYX"})
    for first in range(0, frames, len(distinct)):
        n = min(len(distinct), frames - first)
        stack[first : first + n] = distinct[:n]
    stack.flush()
    del stack


BASELINE = ("import numpy as np; from napari_denodet.core.models import load_model; "
            "from napari_denodet.core.predict import detect, run; "
            "m = load_model('fluorescence'); "
            "run(detect(np.zeros((64, 64), np.float32), m.network))")


def peak_memory(workdir: Path, frames: int, size: int, micrograph_sizes) -> dict:
    out = {"baseline": measured([sys.executable, "-c", BASELINE], workdir / "baseline.log")}
    log(f"baseline (Python, torch, model): {out['baseline']['peak_rss_mb']:.0f} MB")
    stack = workdir / "long_stack.tif"
    write_long_stack(stack, frames, size)
    run_ = measured(_cli("detect", stack, "--out", workdir / "long_out", "--overwrite"),
                    workdir / "long.log")
    out["stack"] = {"frames": frames, "size": size, "file_gb": stack.stat().st_size / 1e9,
                    **run_, "frames_per_s": frames / run_["seconds"]}
    log(f"stack {frames} x {size}²: {out['stack']}")
    stack.unlink()
    shutil.rmtree(workdir / "long_out")
    out["micrographs"] = []
    base = simulate_micrograph(shape=(micrograph_sizes[0],) * 2, seed=SEED + 3).noisy
    for size_ in micrograph_sizes:
        repeat = size_ // base.shape[0]
        path = workdir / f"micrograph_{size_}.tif"
        write_tiff(path, np.tile(base, (repeat, repeat)), overwrite=True)
        run_ = measured(_cli("detect", path, "--model", "micrograph", "--out",
                             workdir / "mic_out", "--overwrite"), workdir / "mic.log")
        out["micrographs"].append({"size": size_, "stitched_from": repeat**2, **run_})
        log(f"micrograph {size_}²: {run_}")
        path.unlink()
    shutil.rmtree(workdir / "mic_out", ignore_errors=True)
    return out


# --------------------------------------------------------------------------------- batch


def batch_throughput(workdir: Path, n_files: int, frames: int, size: int) -> list[dict]:
    folder = workdir / "batch_in"
    folder.mkdir()
    for i in range(n_files):
        write_tiff(folder / f"movie{i:03d}.tif", _timelapse(frames, size, seed=10 + i))
    paths = sorted(folder.glob("*.tif"))
    rows = []
    for workers in (1, 2):
        start = time.perf_counter()
        generator = run_batch(paths, workdir / f"batch_out{workers}", DetectSettings(),
                              n_workers=workers)
        finished = []  # when each file finished
        while True:
            try:
                next(generator)
            except StopIteration as stop:
                result = stop.value
                break
            finished.append(time.perf_counter() - start)
        wall = time.perf_counter() - start
        failed = [r for r in result.records if r["status"] != "ok"]
        if failed:
            raise RuntimeError(f"batch failures: {failed}")
        # Steady state: files after the first, between the first and the last finishing
        # (leaves out starting the cluster and each worker's first imports).
        steady = (n_files - 1) * frames / max(finished[-1] - finished[0], 1e-9)
        rows.append({"workers": workers, "torch_threads": result.about["torch_threads"],
                     "files": n_files, "frames": n_files * frames, "wall_s": wall,
                     "first_file_s": finished[0], "files_per_s": n_files / wall,
                     "frames_per_s": n_files * frames / wall, "steady_frames_per_s": steady})
        log(f"batch, {workers} worker(s): {rows[-1]}")
    shutil.rmtree(folder)
    return rows


# ------------------------------------------------------------------------------ GUI vs CLI


def gui_versus_cli(workdir: Path, frames: int, size: int, repeats: int) -> dict:
    from napari_denodet._widgets.detect import DetectJob, run_detection

    stack = _timelapse(frames, size, seed=3)
    path = workdir / "gui_cli.tif"
    write_tiff(path, stack, overwrite=True)
    job = DetectJob(model="fluorescence", device="auto", frames=None, binning=1)
    settings = DetectSettings(overwrite=True)
    paths = {
        "CLI (napari-denodet detect, file to files)":
            lambda: run(detect_file_steps(path, workdir / "cli_out", settings)),
        "GUI (Detect widget worker, layer in memory)":
            lambda: run(run_detection(stack, job)),
        "GUI (Detect widget worker, memory-mapped layer, result to disk)":
            lambda: run(run_detection(read_image(path), job)),
    }
    for work in paths.values():  # warm up: the first pass of a batch shape is slow
        work()
    out = {name: _best_time(work, max(3, repeats)) / frames * 1000 for name, work in paths.items()}
    log(f"ms per frame: {out}")
    path.unlink()
    return {"frames": frames, "size": size, "ms_per_frame": out}


# -------------------------------------------------------------------------------- report


def _fmt(value, digits=1, unit=""):
    return "not measured" if value is None else f"{value:.{digits}f}{unit}"


def _verdict(ok: bool) -> str:
    return "yes" if ok else "no"


def targets(r: dict) -> list[str]:
    mem = r["memory"]
    stack_gb = mem["stack"]["peak_rss_mb"] / 1024
    mic = mem["micrographs"][0]
    mic_gb = mic["peak_rss_mb"] / 1024
    seam = r["seams"]["threshold"]
    seam_all = r["seams"]["all candidates"]
    seam_worst = max(seam["max_difference_px"], seam_all["max_difference_px"])
    speed = r["speed"]
    per_pixel = [1 / (row["network"] * row["size"] ** 2) for row in speed]  # s per pixel
    ratio = per_pixel[-1] / per_pixel[0]
    growth = r["growth"]
    # Curvature shows as a deviation from the straight line, relative to the longest run.
    residual = max(abs(g["seconds"] - g["fit"]) for g in growth) / growth[-1]["seconds"]
    gui = r["gui_cli"]["ms_per_frame"]
    cli_ms = next(v for k, v in gui.items() if k.startswith("CLI"))
    gui_ms = max(v for k, v in gui.items() if k.startswith("GUI"))
    t = TARGETS
    return [
        "| target | measured | met |", "|---|---|---|",
        f"| peak memory, {mem['stack']['frames']}-frame {mem['stack']['size']}² uint16 stack "
        f"< {t['stack_peak_gb']} GB | {stack_gb:.2f} GB | "
        f"{_verdict(stack_gb < t['stack_peak_gb'])} |",
        f"| peak memory, {mic['size']}² micrograph < {t['micrograph_peak_gb']} GB | "
        f"{mic_gb:.2f} GB | {_verdict(mic_gb < t['micrograph_peak_gb'])} |",
        f"| tiled = untiled: same particles (model threshold) | {seam['tiled']} vs "
        f"{seam['untiled']} | {_verdict(seam['tiled'] == seam['untiled'])} |",
        f"| tiled = untiled: coordinates within {t['seam_px']} px | max "
        f"{seam['max_difference_px']:.1e} px (all {seam_all['untiled']} candidates: "
        f"{seam_all['max_difference_px']:.1e} px) | "
        f"{_verdict(seam_worst <= t['seam_px'])} |",
        f"| cost linear in pixels (network time per pixel, largest / smallest frame, ≤ "
        f"{t['pixel_cost_ratio']}) | {ratio:.2f} | {_verdict(ratio <= t['pixel_cost_ratio'])} |",
        f"| cost linear in frames (largest deviation from a straight line, share of "
        f"the longest run) | "
        f"{100 * residual:.1f} % | {_verdict(residual < 0.10)} |",
        f"| GUI no slower per frame than CLI (within {int(100 * (t['gui_over_cli'] - 1))} %) "
        f"| GUI {gui_ms:.1f} ms vs CLI {cli_ms:.1f} ms | "
        f"{_verdict(gui_ms <= t['gui_over_cli'] * cli_ms)} |",
        "",
    ]


def arithmetic_section(r: dict) -> list[str]:
    m = r["machine"]
    macs = r["arithmetic"]["macs"]
    lines = ["## The numbers against the network's arithmetic", "",
             f"The bundled network has {r['arithmetic']['parameters']:,} parameters. Its "
             "convolutions cost, per frame (multiply-adds; FLOPs are twice that):", "",
             "| frame | GMAC | GFLOP | measured frames/s | achieved GFLOP/s |",
             "|---|---|---|---|---|"]
    for row in r["speed"]:
        gmac = macs[row["size"]] / 1e9
        lines.append(f"| {row['size']}² | {gmac:.2f} | {2 * gmac:.2f} | "
                     f"{row['network']:.2f} | {2 * gmac * row['network']:.1f} |")
    best = max(2 * macs[row["size"]] / 1e9 * row["network"] for row in r["speed"])
    gemm = r["gemm"]
    widths = r["arithmetic"]["widths"]
    lines += ["", f"These {m['cores']} cores ({m['cpu']}, {m['mhz']:.0f} MHz) have a "
              f"float32 peak of about {m['peak_gflops']:.0f} GFLOP/s at that nominal clock "
              f"(two 256-bit FMA units per core); a plain {gemm['n']} x {gemm['n']} matrix "
              f"product in torch reaches {gemm['gflops']:.0f} GFLOP/s (more than that when "
              "the cores boost above the nominal clock): that is the practical ceiling. The "
              f"network reaches at best {best:.0f} GFLOP/s, "
              f"{100 * best / gemm['gflops']:.0f} % of the matrix product: its convolutions "
              f"are narrow ({widths[0]} to {widths[-1]} channels), so each "
              "pixel is loaded and stored for few multiply-adds and the run is bound by "
              "memory traffic, not arithmetic; the peak finding, the local DSNT and the "
              "normalisation around it add a fixed cost per pixel. With the frame cost "
              "linear in pixels, frames/s falls by 4x for every doubling of the side, as "
              "measured; the classic detectors are cheaper per pixel by the ratio shown "
              "in the speed table.", ""]
    return lines


def write_markdown(path: Path, r: dict, quick: bool) -> None:
    m = r["machine"]
    mem = r["memory"]
    lines = ["# Performance", "",
             "Written by `benchmarks/bench_performance.py`" + (" --quick (tiny sizes: a "
             "smoke run, not the report)" if quick else "") + "; every figure was measured "
             f"in one run on this machine: {m['cpu']}, {m['cores']} cores, torch "
             f"{m['torch']} ({m['torch_threads']} threads), Python {m['python']}.", "",
             f"Command: `{' '.join(sys.argv)}`; total time {r['seconds'] / 60:.1f} min.", "",
             "## Targets", "", *targets(r),
             "## Speed per frame size (frames/s, best of repeated runs)", "",
             "The network column is denoising and detection together (the whole engine: "
             "normalisation, forward pass, peaks and local DSNT). Frames larger than 1024 "
             "px are tiled. trackpy runs its pure-Python engine here (no numba).", "",
             "| frame | frames | network | LoG | trackpy.locate | network ms per Mpx |",
             "|---|---|---|---|---|---|"]
    for row in r["speed"]:
        per_mpx = 1000 / row["network"] / (row["size"] ** 2 / 1e6)
        lines.append(f"| {row['size']}² | {row['frames']} | {_fmt(row['network'], 2)} | "
                     f"{_fmt(row['LoG'], 2)} | {_fmt(row['trackpy.locate'], 2)} | "
                     f"{per_mpx:.0f} |")
    lines += ["", f"## Cost against the number of frames ({r['growth_size']}², one process)",
              "", "| frames | seconds | straight-line fit | ms per frame |", "|---|---|---|---|"]
    lines += [f"| {g['frames']} | {g['seconds']:.3f} | {g['fit']:.3f} | "
              f"{1000 * g['seconds'] / g['frames']:.0f} |" for g in r["growth"]]
    s = mem["stack"]
    lines += ["", "## Peak resident memory (whole `napari-denodet detect` process)", "",
              "Peak resident set size (`VmHWM`, polled every 20 ms) of the child process, "
              "which reads the input memory-mapped batch by batch and streams the denoised "
              "float32 frames to a TIFF on disk.", "",
              "| run | input | peak memory | wall time |", "|---|---|---|---|",
              f"| Python + torch + model, one tiny frame | – | "
              f"{mem['baseline']['peak_rss_mb']:.0f} MB | {mem['baseline']['seconds']:.1f} s |",
              f"| {s['frames']}-frame {s['size']}² uint16 stack | {s['file_gb'] * 1000:.0f} MB | "
              f"{s['peak_rss_mb']:.0f} MB | {s['seconds']:.0f} s ({s['frames_per_s']:.1f} "
              "frames/s, output written) |"]
    for mic in mem["micrographs"]:
        lines.append(f"| {mic['size']}² float32 micrograph"
                     + (f" (a field stitched from {mic['stitched_from']} micrographs)"
                        if mic["stitched_from"] > 1 else "")
                     + f" | {mic['size'] ** 2 * 4 / 1e6:.0f} MB | {mic['peak_rss_mb']:.0f} MB "
                     f"| {mic['seconds']:.1f} s |")
    seams = r["seams"]
    lines += ["", f"## Seams: tiled against untiled on one {seams['size']}² micrograph", "",
              f"Tiles of {seams['tile_size']} px with {seams['overlap']} px of context; "
              "the untiled run passes the whole frame through the network at once.", "",
              "| detections | untiled | tiled | largest coordinate difference |",
              "|---|---|---|---|"]
    for label in ("threshold", "all candidates"):
        c = seams[label]
        lines.append(f"| {label} | {c['untiled']} | {c['tiled']} | "
                     f"{c['max_difference_px']:.1e} px |")
    lines += ["", "## Many files on a local dask cluster", "",
              "One task per file (`run_batch`, the path of `napari-denodet detect` with "
              "several inputs); each worker gets its share of the cores for torch. Wall "
              "time includes starting the cluster; the first file finishes after the "
              "start-up and the workers' first imports; the steady rate counts the files "
              "after the first, between the first and the last finishing.", "",
              "| workers | torch threads each | files | frames | wall time | first file done "
              "| files/s | frames/s | steady frames/s |", "|---" * 9 + "|"]
    for b in r["batch"]:
        lines.append(f"| {b['workers']} | {b['torch_threads']} | {b['files']} | {b['frames']} "
                     f"| {b['wall_s']:.1f} s | {b['first_file_s']:.1f} s | "
                     f"{b['files_per_s']:.2f} | {b['frames_per_s']:.1f} | "
                     f"{b['steady_frames_per_s']:.1f} |")
    g = r["gui_cli"]
    lines += ["", f"## GUI path against CLI path ({g['frames']} frames of {g['size']}²)", "",
              "| path | ms per frame |", "|---|---|"]
    lines += [f"| {name} | {ms:.1f} |" for name, ms in g["ms_per_frame"].items()]
    lines += ["", *arithmetic_section(r), *USAGE]
    path.write_text("\n".join(lines) + "\n")


USAGE = """## Running at scale

```bash
# One file runs in this process; the denoised stack is streamed to disk frame by frame.
napari-denodet detect movie.tif --out results/
# Many files (folders, quoted globs, or a .txt list with one path a line): one dask task
# per file on a local cluster sized to this machine; results/manifest.csv and .json list
# every file's status, time, particle count and error. Finished files are skipped on a
# rerun unless --overwrite; the exit status is 1 if any file failed.
napari-denodet detect raw/ 'more/**/*.tif' todo.txt --out results/ [--workers 2]
# An existing dask cluster (dask scheduler + dask worker processes, dask-jobqueue,
# Coiled...): workers need napari-denodet installed and must see the same paths.
napari-denodet detect raw/ --out /shared/results --scheduler tcp://scheduler:8786
# Zarr / OME-Zarr in and out (chunked, lazy in napari); or no denoised output at all.
napari-denodet detect plate.ome.zarr --out results/ --denoised zarr   # or --denoised none
```

In napari, a stack opened lazily (memory-mapped TIFF/MRC, Zarr) or a result larger than
1 GB is denoised into a temporary file on disk and shown memory-mapped.
""".splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, under a minute")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch folder for the generated files (default: a temporary "
                             "folder; the full run needs about 4 GB)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown report (default docs/benchmarks/performance.md; "
                             "with --quick, in the temporary folder)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    out = args.out or (Path(tempfile.gettempdir()) / "performance-quick.md" if args.quick
                       else REPO / "docs" / "benchmarks" / "performance.md")
    if args.workdir is not None:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="denodet-perf-", dir=args.workdir))
    started = time.perf_counter()
    try:
        fluo = load_model("fluorescence")
        mic = load_model("micrograph")
        r = {"machine": machine(), "gemm": gemm_gflops(1024 if args.quick else 2048)}
        r["arithmetic"] = arithmetic(fluo, list(plan["speed_frames"]))
        r["speed"] = speed_by_size(fluo, plan["speed_frames"], plan["repeats"])
        r["growth_size"] = plan["count_size"]
        r["growth"] = growth_with_frames(fluo, plan["count_size"], plan["counts"])
        r["seams"] = seam_check(mic, plan["seam_size"], plan["seam_tile"])
        r["memory"] = peak_memory(workdir, plan["stack_frames"], plan["stack_size"],
                                  plan["micrograph_sizes"])
        r["batch"] = batch_throughput(workdir, plan["batch_files"], plan["batch_frames"],
                                      plan["batch_size"])
        r["gui_cli"] = gui_versus_cli(workdir, plan["gui_frames"], plan["gui_size"],
                                      plan["repeats"])
        r["seconds"] = time.perf_counter() - started
        r["quick"] = args.quick
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    write_markdown(out, r, args.quick)
    out.with_suffix(".json").write_text(json.dumps(r, indent=1, default=float) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')} in {r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
