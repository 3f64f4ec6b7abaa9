"""``napari-denodet detect``: denoise and detect particles, in process or on dask."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path

from napari_denodet.cli._common import (
    EXIT_FAILURE,
    PROG,
    _axes,
    _binning,
    _drain,
    _path,
    _positive_float,
    _positive_int,
    _share,
    _step,
)

NAME = "detect"
HELP = "denoise and detect particles in images"
DESCRIPTION = ("Denoise and detect particles in each INPUT; write DIR/<stem>_points.csv and "
               "DIR/<stem>_denoised.tif. One file runs in this process; several run as one "
               "dask task each (a local cluster, or --scheduler), listed with their status "
               "in DIR/manifest.csv and DIR/manifest.json. Files whose outputs exist are "
               "skipped unless --overwrite; outputs that a stopped run left unwritten are "
               "written. A file in DIR that napari-denodet did not write is never skipped, "
               "resumed or replaced.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``detect``."""
    from napari_denodet.core.batch import DENOISED_FORMATS, DetectSettings
    from napari_denodet.core.choice import AUTO_ALTERNATIVES, AUTO_CANDIDATES
    from napari_denodet.core.detection import POLARITIES
    from napari_denodet.core.device import DEVICES, PRECISIONS

    parser.add_argument("inputs", nargs="+", type=_path, metavar="INPUT",
                        help="TIFF, MRC, PNG, JPEG files or .zarr folders; folders (their "
                             "images), glob patterns, or .txt list files (one path a line)")
    parser.add_argument("--model", default=DetectSettings.model,
                        help=f"bundled model name or a .pt file, or 'auto': on each "
                             f"time-lapse the one of {', '.join(AUTO_CANDIDATES)} that "
                             f"expects the higher F1 there, and where {AUTO_CANDIDATES[0]} "
                             f"wins, {', '.join(AUTO_ALTERNATIVES)} if it expects more "
                             f"(default: {DetectSettings.model})")
    parser.add_argument("--out", type=_path, required=True, metavar="DIR")
    parser.add_argument("--threshold", type=_share, default=None,
                        help="keep particles whose score (the probability of a true "
                             "particle) is at least this (default: chosen for each image, "
                             "the threshold that maximises the expected F1)")
    parser.add_argument("--all-candidates", action="store_true",
                        help="keep every candidate with its score instead of thresholding")
    parser.add_argument("--track", type=_step, nargs="?", default=None, const="auto",
                        metavar="PX",
                        help="also link each time-lapse's detections into tracks and write "
                             "DIR/<stem>_tracks.csv (largest step PX; default: estimated "
                             "from the detections; see the track command)")
    parser.add_argument("--polarity", choices=POLARITIES, default=None,
                        help="particles darker or brighter than the background (default: "
                             "the model's; micrograph models choose per image, 'auto')")
    parser.add_argument("--device", default=DetectSettings.device, choices=DEVICES)
    parser.add_argument("--precision", default=DetectSettings.precision, choices=PRECISIONS,
                        help="arithmetic of the network (default: bfloat16 on CPUs with "
                             "native bfloat16 instructions, about 1.7x faster with the same "
                             "detections; float32 elsewhere)")
    binning = parser.add_mutually_exclusive_group()
    binning.add_argument("--bin", type=_positive_int, default=None, metavar="N",
                         help="average N x N pixels before detection (micrographs); "
                              "coordinates are mapped back to full-resolution pixels "
                              "(default: the binning a fine-tuned model was fine-tuned "
                              "at, else 1)")
    binning.add_argument("--diameter", type=_positive_float, default=None, metavar="PX",
                         help="particle diameter in full-resolution pixels: bin so that "
                              "particles take the size the model was trained on "
                              "(micrograph models; replaces --bin)")
    parser.add_argument("--batch-size", type=_positive_int, default=None,
                        help="frames per forward pass (default: chosen for the device)")
    parser.add_argument("--axes", type=_axes, default=None,
                        help="axes of the inputs, e.g. TYX, when their metadata is missing "
                             "or wrong (T, Y, X; ending in YX: images are not transposed)")
    parser.add_argument("--denoised", choices=DENOISED_FORMATS,
                        default=DetectSettings.denoised,
                        help="denoised output: TIFF (default), OME-Zarr, or none")
    parser.add_argument("--scheduler", type=_address, default=None, metavar="ADDRESS",
                        help="run on this dask scheduler (e.g. tcp://host:8786) instead of "
                             "a local cluster; the workers must see the input and --out "
                             "paths")
    parser.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                        help="local dask workers (default: one per core, at most one per "
                             "file); given with a single INPUT, it also runs on dask")
    parser.add_argument("--star", action="store_true",
                        help="also write <stem>_points.star (single images only)")
    parser.add_argument("--box-size", type=_positive_int, default=None,
                        help="also write <stem>_points.box with this box size (full-res px)")
    parser.add_argument("--overwrite", action="store_true")


def _address(text: str) -> str:
    # A scheduler's address; an empty one would quietly mean a local cluster.
    if not text.strip():
        raise argparse.ArgumentTypeError("the address is empty (e.g. tcp://host:8786)")
    return text.strip()


def run(args: argparse.Namespace) -> int:
    """Detect in one file in this process, or in several on dask."""
    with _terminate_as_interrupt():
        return _run(args)


@contextlib.contextmanager
def _terminate_as_interrupt():
    # SIGTERM (kill, a job scheduler ending the job) stops the run like Ctrl-C: the
    # temporary files of unfinished outputs are removed and the exit status says so.
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    from napari_denodet.core.batch import DetectSettings, expand_inputs, without_outputs
    from napari_denodet.core.choice import AUTO, AUTO_CANDIDATES
    from napari_denodet.core.device import choose_device
    from napari_denodet.core.models import load_model

    # Fail before any work on a bad model ("auto" chooses per file, among bundled ones).
    model = load_model(AUTO_CANDIDATES[0] if args.model == AUTO else str(args.model))
    binning = _binning(args, model)
    settings = DetectSettings(model=str(args.model), threshold=args.threshold,
                              all_candidates=args.all_candidates, device=args.device,
                              precision=args.precision, binning=binning,
                              batch_size=args.batch_size, axes=args.axes,
                              star=args.star, box_size=args.box_size, denoised=args.denoised,
                              overwrite=args.overwrite, polarity=args.polarity,
                              track=args.track)
    if args.scheduler is None:  # a remote cluster may have devices that this machine lacks
        choose_device(settings.device)
    paths = without_outputs(expand_inputs(args.inputs), args.out)
    if len(paths) == 1 and args.scheduler is None and args.workers is None:
        return _detect_in_process(paths[0], args.out, settings)
    return _detect_on_dask(paths, args, settings)


def _detect_in_process(path: Path, out: Path, settings) -> int:
    from napari_denodet.core.batch import detect_and_record

    record = _drain(detect_and_record(path, out, settings),
                    lambda p: f"frame {p.frames_done}/{p.frames_total}", lambda p: p.total)
    print(_describe_record(record))
    return 0


def _describe_record(record: dict) -> str:
    return _printable(_describe(record))


def _describe(record: dict) -> str:
    if record["status"] == "skipped":
        return f"{record['file']}: skipped, its results exist (--overwrite to redo them)"
    if record["status"] == "failed":
        error = record["error"]
        return error if error.startswith(record["file"]) else f"{record['file']}: {error}"
    cut = "" if record["threshold"] is None else f" (score >= {record['threshold']:.2f})"
    note = f"; {record['note']}" if record.get("note") else ""
    return (f"{record['file']}: {record['n_points']} particles{cut} -> "
            f"{', '.join(record['outputs'])}{note}")


def _printable(text: str) -> str:
    # File names that are not UTF-8 carry surrogates; print their bytes as \xff.
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _detect_on_dask(paths: list[Path], args: argparse.Namespace, settings) -> int:
    from collections import Counter

    from tqdm import tqdm

    from napari_denodet.core.batch import run_batch

    generator = run_batch(paths, args.out, settings, scheduler=args.scheduler,
                          n_workers=args.workers)
    bar = tqdm(total=len(paths), file=sys.stderr, unit="file", dynamic_ncols=True,
               disable=None)
    try:
        while True:
            record = next(generator).record
            if record["status"] != "failed":
                bar.write(_describe_record(record), file=sys.stdout)
            bar.update(1)
    except StopIteration as stop:
        result = stop.value
    finally:
        generator.close()
        bar.close()
    for record in result.failed:
        print(f"{PROG}: error: {_describe_record(record)}", file=sys.stderr)
    counts = Counter(r["status"] for r in result.records)
    about = result.about
    workers = f"{about.get('workers')} worker{'s' if about.get('workers') != 1 else ''}"
    where = ("nothing to run" if "scheduler" not in about else
             f"local dask cluster of {workers}" if about["scheduler"] == "local" else
             f"dask scheduler {about['scheduler']}, {workers}")
    print(f"{counts['ok']} done, {counts['skipped']} skipped, {counts['failed']} failed of "
          f"{len(paths)} files ({where}); manifest: {result.manifest[0]}",
          file=sys.stderr if result.failed else sys.stdout)
    return EXIT_FAILURE if result.failed else 0
