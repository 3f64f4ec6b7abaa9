"""The ``napari-denodet`` command line: the same core as the napari plugin, headless.

Every subcommand turns a bad argument or a bad file into one line on stderr and a
non-zero exit status; a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from napari_denodet import __version__
from napari_denodet.core.errors import DenodetError, InputError

PROG = "napari-denodet"
EXIT_USAGE = 2
EXIT_FAILURE = 1


class _UsageError(Exception):
    """Bad command-line arguments (argparse's message, kept to one line)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D102 - argparse hook
        raise _UsageError(f"{self.prog}: {message} (see --help)")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _frame_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        size = tuple(int(p) for p in parts if p)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 8:
        raise argparse.ArgumentTypeError(f"expected N or HxW with sides >= 8, got {text!r}")
    return size  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``napari-denodet`` command."""
    from napari_denodet.core.simulate import ALL_SCENARIOS, DENSITIES

    parser = _Parser(prog=PROG, description="Joint denoising and particle detection "
                                            "(DENODET) for fluorescence time-lapses and "
                                            "cryo-EM micrographs.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback when something fails")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    sim = sub.add_parser("simulate", help="write a simulated stack or micrograph with truth",
                         description="Simulate particle data and write noisy.tif, clean.tif, "
                                     "truth.csv and simulation.json into --out.")
    sim.add_argument("--scenario", choices=ALL_SCENARIOS, default="vesicle")
    sim.add_argument("--snr", type=_positive_float, default=None,
                     help="signal-to-noise ratio (PTC definition for time-lapses, default 4; "
                          "power ratio for micrographs, default 0.1)")
    sim.add_argument("--density", choices=tuple(DENSITIES), default="mid")
    sim.add_argument("--frames", type=_positive_int, default=100,
                     help="time points (ignored for micrographs)")
    sim.add_argument("--size", type=_frame_size, default=None, metavar="N|HxW",
                     help="frame size (default 512 for time-lapses, 1024 for micrographs)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--out", type=Path, required=True, metavar="DIR",
                     help="output folder (created if missing)")
    sim.add_argument("--overwrite", action="store_true", help="replace existing files")
    sim.set_defaults(run=_run_simulate)

    ev = sub.add_parser("evaluate", help="score predicted points against a reference",
                        description="Match predicted to reference points frame by frame "
                                    "(Hungarian, distance gate) and print precision, "
                                    "recall, F1 and RMSE.")
    ev.add_argument("predicted", type=Path, metavar="PRED", help="points file (.csv/.star/.box)")
    ev.add_argument("reference", type=Path, metavar="TRUTH", help="points file (.csv/.star/.box)")
    ev.add_argument("--gate", type=_positive_float, default=5.0,
                    help="largest matching distance in pixels (default 5)")
    ev.add_argument("--threshold", type=float, default=None,
                    help="keep only predictions with score >= this")
    ev.add_argument("--json", action="store_true", help="print the scores as JSON")
    ev.set_defaults(run=_run_evaluate)
    return parser


def _run_simulate(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_denodet.core.io import write_points, write_tiff
    from napari_denodet.core.simulate import simulate

    out: Path = args.out
    targets = [out / n for n in ("noisy.tif", "clean.tif", "truth.csv", "simulation.json")]
    if not args.overwrite:
        taken = [p.name for p in targets if p.exists()]
        if taken:
            raise InputError(out, f"already holds {', '.join(taken)}; use --overwrite or "
                                  f"another --out")
    micrograph = args.scenario == "micrograph"
    snr = args.snr if args.snr is not None else (0.1 if micrograph else 4.0)
    size = args.size or ((1024, 1024) if micrograph else (512, 512))
    sim = simulate(args.scenario, snr=snr, density=args.density, frames=args.frames,
                   shape=size, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    # Photon counts are whole numbers: uint16 is what a camera would have written.
    noisy = sim.noisy if micrograph else np.clip(sim.noisy, 0, 65535).astype(np.uint16)
    write_tiff(targets[0], noisy, overwrite=args.overwrite)
    write_tiff(targets[1], sim.clean, overwrite=args.overwrite)
    write_points(targets[2], sim.truth, overwrite=args.overwrite)
    params = dict(sim.params, seed=args.seed, frames=None if micrograph else args.frames,
                  shape=list(size), density=args.density)
    targets[3].write_text(json.dumps(params, indent=2) + "\n")
    print(f"wrote {', '.join(str(p) for p in targets)} "
          f"({len(sim.truth)} particle positions)")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from napari_denodet.core.io import read_points
    from napari_denodet.core.metrics import score_detections
    from napari_denodet.core.points import FRAME, SCORE

    predicted = read_points(args.predicted)
    reference = read_points(args.reference)
    if (FRAME in predicted.columns) != (FRAME in reference.columns):
        raise InputError(None, f"{args.predicted} and {args.reference} disagree: one has a "
                               f"'frame' column and the other has not")
    if args.threshold is not None:
        if SCORE not in predicted.columns:
            raise InputError(args.predicted, "has no 'score' column to apply --threshold to")
        predicted = predicted[predicted[SCORE] >= args.threshold]
    scores = score_detections(predicted, reference, gate=args.gate)
    if args.json:
        print(json.dumps(dict(scores.as_dict(), gate=args.gate), indent=2))
    else:
        print(f"precision {scores.precision:.3f}\nrecall    {scores.recall:.3f}\n"
              f"F1        {scores.f1:.3f}\nRMSE      {scores.rmse:.3f} px\n"
              f"TP {scores.tp}  FP {scores.fp}  FN {scores.fn}  (gate {args.gate:g} px)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = parser.parse_args(argv)
        return args.run(args)
    except _UsageError as exc:
        print(f"{exc}", file=sys.stderr)
        return EXIT_USAGE
    except DenodetError as exc:
        if debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        if debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"{PROG}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc} "
              f"(rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
