"""``napari-denodet simulate``: a simulated stack or micrograph with its truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_denodet.cli._common import (
    _frame_size,
    _given,
    _non_negative_float,
    _path,
    _positive_float,
    _positive_int,
)
from napari_denodet.core.errors import InputError

NAME = "simulate"
HELP = "write a simulated stack or micrograph with truth"
DESCRIPTION = ("Simulate particle data and write noisy.tif, clean.tif, truth.csv and "
               "simulation.json into --out.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``simulate``."""
    from napari_denodet.core.simulate import (
        ALL_SCENARIOS,
        DEFAULT_DENSITY,
        DEFAULT_FRAMES,
        DEFAULT_MICROGRAPH_SHAPE,
        DEFAULT_MICROGRAPH_SNR,
        DEFAULT_SCENARIO,
        DEFAULT_TIMELAPSE_SHAPE,
        DEFAULT_TIMELAPSE_SNR,
        DENSITIES,
    )

    parser.add_argument("--scenario", choices=ALL_SCENARIOS, default=DEFAULT_SCENARIO)
    parser.add_argument("--snr", type=_positive_float, default=None,
                        help=f"signal-to-noise ratio (PTC definition for time-lapses, default "
                             f"{DEFAULT_TIMELAPSE_SNR:g}; power ratio for micrographs, "
                             f"default {DEFAULT_MICROGRAPH_SNR:g})")
    parser.add_argument("--density", choices=tuple(DENSITIES), default=DEFAULT_DENSITY)
    parser.add_argument("--frames", type=_positive_int, default=DEFAULT_FRAMES,
                        help="time points (ignored for micrographs)")
    parser.add_argument("--size", type=_frame_size, default=None, metavar="N|HxW",
                        help=f"frame size (default {_size_text(DEFAULT_TIMELAPSE_SHAPE)} for "
                             f"time-lapses, {_size_text(DEFAULT_MICROGRAPH_SHAPE)} for "
                             f"micrographs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-correlation", type=_non_negative_float, nargs=2,
                        default=None, metavar=("WY", "WX"),
                        help="time-lapses: correlate the noise between neighbouring pixels "
                             "with a Gaussian of these widths (px) along y and x, as many "
                             "cameras do (default 0 0: white)")
    parser.add_argument("--out", type=_path, required=True, metavar="DIR",
                        help="output folder (created if missing)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")


def run(args: argparse.Namespace) -> int:
    """Simulate, write the four files and say what was written."""
    import numpy as np

    from napari_denodet.core.atomic import all_or_nothing
    from napari_denodet.core.io import atomic_write, write_points, write_tiff
    from napari_denodet.core.simulate import (
        DEFAULT_MICROGRAPH_SHAPE,
        DEFAULT_MICROGRAPH_SNR,
        DEFAULT_TIMELAPSE_SHAPE,
        DEFAULT_TIMELAPSE_SNR,
        simulate,
    )

    out: Path = args.out
    targets = [out / n for n in ("noisy.tif", "clean.tif", "truth.csv", "simulation.json")]
    if not args.overwrite:
        taken = [p.name for p in targets if p.exists()]
        if taken:
            raise InputError(out, f"already holds {', '.join(taken)}; use --overwrite or "
                                  f"another --out")
    micrograph = args.scenario == "micrograph"
    snr = args.snr if args.snr is not None else (
        DEFAULT_MICROGRAPH_SNR if micrograph else DEFAULT_TIMELAPSE_SNR)
    size = args.size or (DEFAULT_MICROGRAPH_SHAPE if micrograph else DEFAULT_TIMELAPSE_SHAPE)
    if micrograph and args.noise_correlation is not None:
        raise InputError(None, "--noise-correlation applies to time-lapse scenarios only")
    sim = simulate(args.scenario, snr=snr, density=args.density, frames=args.frames,
                   shape=size, seed=args.seed,
                   **_given(noise_correlation=args.noise_correlation))
    out.mkdir(parents=True, exist_ok=True)
    # Photon counts are whole numbers: uint16 is what a camera would have written
    # (correlated noise is not whole, so it is rounded rather than truncated).
    noisy = sim.noisy if micrograph else np.clip(np.rint(sim.noisy), 0, 65535).astype(np.uint16)
    params = dict(sim.params, seed=args.seed, frames=None if micrograph else args.frames,
                  shape=list(size), density=args.density)
    text = json.dumps(params, indent=2) + "\n"
    # The four files appear together or not at all (a full disk leaves nothing behind).
    with all_or_nothing(out, [p.name for p in targets], overwrite=args.overwrite) as staged:
        write_tiff(staged["noisy.tif"], noisy)
        write_tiff(staged["clean.tif"], sim.clean)
        write_points(staged["truth.csv"], sim.truth)
        atomic_write(staged["simulation.json"], lambda tmp: tmp.write_text(text))
    print(f"wrote {', '.join(str(p) for p in targets)} "
          f"({len(sim.truth)} particle positions)")
    return 0


def _size_text(shape: tuple[int, int]) -> str:
    # A frame size as --size takes it: N for a square, else HxW.
    height, width = shape
    return str(height) if height == width else f"{height}x{width}"
