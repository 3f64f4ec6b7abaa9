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
from napari_denodet.core.errors import DenodetError, InputError, about_file

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


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
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
    sim.add_argument("--noise-correlation", type=_non_negative_float, nargs=2, default=None,
                     metavar=("WY", "WX"),
                     help="time-lapses: correlate the noise between neighbouring pixels "
                          "with a Gaussian of these widths (px) along y and x, as many "
                          "cameras do (default 0 0: white)")
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

    det = sub.add_parser("detect", help="denoise and detect particles in images",
                         description="Denoise and detect particles in each INPUT; write "
                                     "DIR/<stem>_points.csv and DIR/<stem>_denoised.tif. "
                                     "One file runs in this process; several run as one "
                                     "dask task each (a local cluster, or --scheduler), "
                                     "listed with their status in DIR/manifest.csv and "
                                     "DIR/manifest.json. Files whose outputs exist are "
                                     "skipped unless --overwrite.")
    det.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                     help="TIFF, MRC, PNG, JPEG files or .zarr folders; folders (their "
                          "images), glob patterns, or .txt list files (one path a line)")
    det.add_argument("--model", default="fluorescence",
                     help="bundled model name or a .pt file (default: fluorescence)")
    det.add_argument("--out", type=Path, required=True, metavar="DIR")
    det.add_argument("--threshold", type=float, default=None,
                     help="score threshold (default: the model's calibrated threshold)")
    det.add_argument("--all-candidates", action="store_true",
                     help="keep every candidate with its score instead of thresholding")
    det.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    det.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"),
                     help="arithmetic of the network (default: bfloat16 on CPUs with "
                          "native bfloat16 instructions, about 1.7x faster with the same "
                          "detections; float32 elsewhere)")
    det_bin = det.add_mutually_exclusive_group()
    det_bin.add_argument("--bin", type=_positive_int, default=1, metavar="N",
                         help="average N x N pixels before detection (micrographs); "
                              "coordinates are mapped back to full-resolution pixels")
    det_bin.add_argument("--diameter", type=_positive_float, default=None, metavar="PX",
                         help="particle diameter in full-resolution pixels: bin so that "
                              "particles take the size the model was trained on "
                              "(micrograph models; replaces --bin)")
    det.add_argument("--batch-size", type=_positive_int, default=None,
                     help="frames per forward pass (default: chosen for the device)")
    det.add_argument("--axes", default=None, help="axes of the inputs, e.g. TYX, when their "
                                                  "metadata is missing or wrong")
    det.add_argument("--denoised", choices=("tif", "zarr", "none"), default="tif",
                     help="denoised output: TIFF (default), OME-Zarr, or none")
    det.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="run on this dask scheduler (e.g. tcp://host:8786) instead of "
                          "a local cluster; the workers must see the input and --out paths")
    det.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                     help="local dask workers (default: one per core, at most one per "
                          "file); given with a single INPUT, it also runs on dask")
    det.add_argument("--star", action="store_true",
                     help="also write <stem>_points.star (single images only)")
    det.add_argument("--box-size", type=_positive_int, default=None,
                     help="also write <stem>_points.box with this box size (full-res px)")
    det.add_argument("--overwrite", action="store_true")
    det.set_defaults(run=_run_detect)

    from napari_denodet.core.losses import DENOISING_LOSSES
    from napari_denodet.core.network import NORMS
    from napari_denodet.core.train import TRAIN_SCENARIOS

    tr = sub.add_parser("train", help="train a model on simulated data",
                        description="Train the joint network on freshly simulated patches and "
                                    "save MODEL.pt with its model card MODEL.json.")
    tr.add_argument("--scenario", choices=TRAIN_SCENARIOS, default="fluorescence")
    tr.add_argument("--steps", type=_positive_int, default=2000)
    tr.add_argument("--batch-size", type=_positive_int, default=8)
    tr.add_argument("--patch-size", type=_positive_int, default=None,
                    help="patch edge in pixels (default 96; 128 for micrographs)")
    tr.add_argument("--learning-rate", type=_positive_float, default=1e-3)
    tr.add_argument("--gamma", type=float, default=0.5,
                    help="weight of the denoising loss (0 = detection only)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--snr-range", type=_positive_float, nargs=2, default=None,
                    metavar=("LOW", "HIGH"),
                    help="SNRs drawn log-uniformly (default 0.8 40; micrographs 0.03 0.6)")
    tr.add_argument("--variant", choices=("joint", "cascaded"), default="joint",
                    help="joint DENODET (default) or the cascaded cDENODET baseline")
    tr.add_argument("--denoising-loss", choices=DENOISING_LOSSES, default="l1",
                    help="l1 to the clean patch (default) or the paper's soft Dice + "
                         "balanced BCE")
    tr.add_argument("--norm", choices=NORMS, default="batch",
                    help="normalisation after each convolution: batch (default; folds "
                         "into the convolutions, tiles agree) or instance (the paper's)")
    tr.add_argument("--widths", type=_positive_int, nargs=3, default=None,
                    metavar=("W1", "W2", "W3"),
                    help="feature maps of the three encoder levels (default 8 16 32, the "
                         "paper's)")
    tr.add_argument("--settle-fraction", type=_share, default=0.2, metavar="SHARE",
                    help="last share of the steps trained with batch-norm statistics frozen "
                         "at a tenth of the learning rate (default 0.2)")
    tr.add_argument("--eval-every", type=_positive_int, default=250)
    tr.add_argument("--halo-range", type=_non_negative_float, nargs=2, default=None,
                    metavar=("LOW", "HIGH"),
                    help="micrographs: strength of the bright phase-contrast fringe around "
                         "particles, drawn per patch (default 0 0: none)")
    tr.add_argument("--blur-range", type=_non_negative_float, nargs=2, default=None,
                    metavar=("LOW", "HIGH"),
                    help="micrographs: width (px) of a Gaussian low-pass of the image, as in "
                         "filtered exports, drawn per patch (default 0 0: none)")
    tr.add_argument("--correlated-noise", type=_non_negative_float, default=0.0,
                    metavar="WIDTH",
                    help="time-lapses: give half the patches noise correlated between "
                         "neighbouring pixels, as many cameras have, with Gaussian widths "
                         "(px) drawn per axis up to WIDTH (default 0: white noise only)")
    tr.add_argument("--name", default=None, help="model name in the card (default: file stem)")
    tr.add_argument("--checkpoint", type=Path, default=None,
                    help="training state file, written every --eval-every steps")
    tr.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    tr.add_argument("--out", type=Path, required=True, metavar="MODEL.pt")
    tr.add_argument("--overwrite", action="store_true")
    tr.set_defaults(run=_run_train)

    ft = sub.add_parser("finetune", help="fine-tune a model from a few clicked particles",
                        description="Fine-tune a model on IMAGE from clicked particle centres "
                                    "(weakly supervised: blind-spot denoising, "
                                    "positive-unlabelled detection) and save MODEL.pt with "
                                    "its card.")
    ft.add_argument("image", type=Path, metavar="IMAGE", help="TIFF, MRC, PNG or JPEG file")
    ft.add_argument("--points", type=Path, required=True, metavar="CLICKS",
                    help="clicked particle centres (.csv/.star/.box, full-resolution px)")
    ft.add_argument("--negatives", type=Path, default=None, metavar="NEG",
                    help="known false detections (same formats)")
    ft.add_argument("--model", default="fluorescence",
                    help="bundled model name or a .pt file to start from")
    ft.add_argument("--out", type=Path, required=True, metavar="MODEL.pt")
    ft.add_argument("--steps", type=_positive_int, default=None,
                    help="most training steps (default 300)")
    ft.add_argument("--time-budget", type=_positive_float, default=None, metavar="SECONDS",
                    help="stop training after this many seconds")
    ft.add_argument("--particles-per-frame", type=_positive_float, default=None,
                    help="expected particles per frame (default: estimated)")
    ft_bin = ft.add_mutually_exclusive_group()
    ft_bin.add_argument("--bin", type=_positive_int, default=1, metavar="N",
                        help="average N x N pixels first (use the same --bin for detect)")
    ft_bin.add_argument("--diameter", type=_positive_float, default=None, metavar="PX",
                        help="particle diameter in full-resolution pixels: bin as the model "
                             "card asks for that size (replaces --bin)")
    ft.add_argument("--pseudo-labels", type=_share, default=0.5, metavar="SHARE",
                    help="share of the starting model's detections (surest first) learnt "
                         "as particles too (default 0.5; 0: the clicks alone)")
    ft.add_argument("--mode", choices=("auto", "weights", "threshold"), default="auto",
                    help="weights: train the network, then recalibrate its threshold; "
                         "threshold: keep the weights and recalibrate the threshold from "
                         "the clicked area (every particle in it clicked); auto (default): "
                         "what the model card advises, else weights")
    ft.add_argument("--calibration", choices=("auto", "clicks", "count"), default="auto",
                    help="after training the weights, set the threshold from the clicks, "
                         "or keep as many detections as the starting model made (count); "
                         "auto (default): what the model card advises, else clicks")
    ft.add_argument("--complete-region", action="store_true",
                    help="every particle in the area the clicks cover is clicked: the rest "
                         "of that area is learnt as background")
    ft.add_argument("--axes", default=None, help="axes of IMAGE, e.g. TYX")
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--overwrite", action="store_true")
    ft.set_defaults(run=_run_finetune)
    return parser


def _drain(generator, describe, total_of):
    """Run a core generator under a progress bar on stderr; return its result."""
    from tqdm import tqdm

    bar = None
    try:
        while True:
            progress = next(generator)
            if bar is None:
                bar = tqdm(total=total_of(progress), file=sys.stderr, unit="step",
                           dynamic_ncols=True, disable=None)
            text = describe(progress)
            if text is not None:
                bar.set_postfix_str(text, refresh=False)
            bar.n = progress.step
            bar.refresh()
    except StopIteration as stop:
        return stop.value
    finally:
        generator.close()
        if bar is not None:
            bar.close()


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
    if micrograph and args.noise_correlation is not None:
        raise InputError(None, "--noise-correlation applies to time-lapse scenarios only")
    sim = simulate(args.scenario, snr=snr, density=args.density, frames=args.frames,
                   shape=size, seed=args.seed,
                   **_given(noise_correlation=args.noise_correlation))
    out.mkdir(parents=True, exist_ok=True)
    # Photon counts are whole numbers: uint16 is what a camera would have written
    # (correlated noise is not whole, so it is rounded rather than truncated).
    noisy = sim.noisy if micrograph else np.clip(np.rint(sim.noisy), 0, 65535).astype(np.uint16)
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


def _bin_for(model, diameter: float) -> int:
    # The binning that brings particles of `diameter` px to the model's trained size.
    try:
        factor = model.bin_for_diameter(diameter)
    except ValueError as exc:
        raise InputError(None, f"--diameter: {exc}") from None
    print(f"binning {factor} x {factor}: {diameter:g} px particles become "
          f"{diameter / factor:.1f} px", file=sys.stderr)
    return factor


def _run_detect(args: argparse.Namespace) -> int:
    from napari_denodet.core.batch import DetectSettings, expand_inputs, without_outputs
    from napari_denodet.core.models import load_model
    from napari_denodet.core.predict import choose_device

    model = load_model(str(args.model))  # fail before any work on a bad model
    binning = args.bin if args.diameter is None else _bin_for(model, args.diameter)
    settings = DetectSettings(model=str(args.model), threshold=args.threshold,
                              all_candidates=args.all_candidates, device=args.device,
                              precision=args.precision, binning=binning,
                              batch_size=args.batch_size, axes=args.axes,
                              star=args.star, box_size=args.box_size, denoised=args.denoised,
                              overwrite=args.overwrite)
    if args.scheduler is None:  # a remote cluster may have devices that this machine lacks
        choose_device(settings.device)
    paths = without_outputs(expand_inputs(args.inputs), args.out)
    if len(paths) == 1 and args.scheduler is None and args.workers is None:
        return _detect_in_process(paths[0], args.out, settings)
    return _detect_on_dask(paths, args, settings)


def _detect_in_process(path: Path, out: Path, settings) -> int:
    from napari_denodet.core.batch import detect_file_steps

    record = _drain(detect_file_steps(path, out, settings),
                    lambda p: f"frame {p.frames_done}/{p.frames_total}", lambda p: p.total)
    print(_describe_record(record))
    return 0


def _describe_record(record: dict) -> str:
    if record["status"] == "skipped":
        return f"{record['file']}: skipped, its results exist (--overwrite to redo them)"
    if record["status"] == "failed":
        error = record["error"]
        return error if error.startswith(record["file"]) else f"{record['file']}: {error}"
    cut = "" if record["threshold"] is None else f" (score >= {record['threshold']:.2f})"
    note = f"; {record['note']}" if record.get("note") else ""
    return (f"{record['file']}: {record['n_points']} particles{cut} -> "
            f"{', '.join(record['outputs'])}{note}")


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


def _model_out(out: Path, overwrite: bool) -> Path:
    # Where a train or finetune run writes its model: a .pt file, never replaced silently.
    if out.suffix != ".pt":
        raise InputError(out, "model files end in .pt")
    if out.exists() and not overwrite:
        raise InputError(out, "already exists; use --overwrite or another --out")
    return out


def _run_train(args: argparse.Namespace) -> int:
    import shlex

    from napari_denodet.core.models import save_model
    from napari_denodet.core.train import model_card, train

    out = _model_out(args.out, args.overwrite)
    if args.resume and args.checkpoint is None:
        raise InputError(None, "--resume needs --checkpoint")
    try:
        settings = train_settings(args)
    except ValueError as exc:  # settings that do not fit together, e.g. a reversed range
        raise _UsageError(f"{PROG} train: {exc} (see --help)") from None
    last = {}

    def describe(progress):
        last.update(progress.metrics)
        if progress.stage == "validate":
            print(f"step {progress.step}: validation F1 {progress.metrics['val_f1']:.3f} "
                  f"RMSE {progress.metrics['val_rmse']:.3f} px (threshold "
                  f"{progress.metrics['threshold']:.2f})", file=sys.stderr)
        return f"loss {last.get('loss', float('nan')):.3f}"

    result = _drain(train(settings, checkpoint=args.checkpoint, resume=args.resume,
                          checkpoint_every=args.eval_every),
                    describe, lambda p: p.total)
    # The command that reproduces this model (checkpointing does not change the result).
    command = shlex.join([
        PROG, "train", "--scenario", settings.scenario, "--steps", str(settings.steps),
        "--batch-size", str(settings.batch_size), "--patch-size", str(settings.patch_size),
        "--learning-rate", f"{settings.learning_rate:g}", "--gamma", f"{settings.gamma:g}",
        "--seed", str(settings.seed), "--eval-every", str(settings.eval_every),
        "--settle-fraction", f"{settings.settle_fraction:g}",
        "--snr-range", *(f"{v:g}" for v in settings.snr),
        *(["--variant", args.variant] if args.variant != "joint" else []),
        *(["--norm", settings.network.norm] if settings.network.norm != "batch" else []),
        *_repeated("--widths", args.widths),
        *(["--denoising-loss", settings.denoising_loss]
          if settings.denoising_loss != "l1" else []),
        *_repeated("--halo-range", args.halo_range),
        *_repeated("--blur-range", args.blur_range),
        *(["--correlated-noise", f"{settings.correlated_noise:g}"]
          if settings.correlated_noise > 0 else []), "--out", out.name])
    card = model_card(result, args.name or out.stem, command)
    save_model(out, result.network, card, overwrite=args.overwrite)
    print(f"wrote {out} and {out.with_suffix('.json')} (validation F1 "
          f"{card['training']['validation']['val_f1']:.3f}, threshold {result.threshold:.2f}, "
          f"{result.wall_time:.0f} s)")
    return 0


def _run_finetune(args: argparse.Namespace) -> int:
    import shlex
    from dataclasses import replace

    from napari_denodet.core.finetune import FinetuneSettings, finetune
    from napari_denodet.core.io import read_image, read_points
    from napari_denodet.core.models import load_model, save_model
    from napari_denodet.core.points import FRAME
    from napari_denodet.core.resample import bin_image, bin_points

    out = _model_out(args.out, args.overwrite)
    model = load_model(args.model)
    if args.diameter is not None:
        args.bin = _bin_for(model, args.diameter)
    image = read_image(args.image, axes=args.axes)
    if image.ndim == 3 and args.bin > 1:
        raise InputError(args.image, "--bin is for single micrographs, not stacks")
    clicks = {"positives": read_points(args.points)}
    if args.negatives is not None:
        clicks["negatives"] = read_points(args.negatives)
    for name, path in (("positives", args.points), ("negatives", args.negatives)):
        if name in clicks and (FRAME in clicks[name].columns) != (image.ndim == 3):
            raise InputError(path, f"has {'a' if FRAME in clicks[name].columns else 'no'} "
                                   f"'frame' column but {args.image} is "
                                   f"{'a stack' if image.ndim == 3 else 'a single image'}")
        if name in clicks:
            clicks[name] = bin_points(clicks[name], args.bin)
    settings = FinetuneSettings(seed=args.seed, time_budget=args.time_budget,
                                particles_per_frame=args.particles_per_frame,
                                complete_region=args.complete_region,
                                pseudo_labels=args.pseudo_labels, mode=args.mode,
                                calibration=args.calibration)
    if args.steps:
        settings = replace(settings, steps=args.steps)
    binned = bin_image(image, args.bin)

    def describe(progress):
        if progress.stage == "note":
            print(f"{args.image}: {progress.metrics['message']}", file=sys.stderr)
            return None
        if progress.stage == "calibrate":
            print(progress.metrics["message"], file=sys.stderr)
            return None
        if progress.stage == "check":
            print(f"step {progress.step}: held-out recall "
                  f"{progress.metrics['heldout_recall']:.2f} at threshold "
                  f"{progress.metrics['threshold']:.2f}", file=sys.stderr)
            return None
        return f"loss {progress.metrics['loss']:.3f}"

    print(f"{args.image}: {len(clicks['positives'])} clicked centres"
          + (f", {len(clicks['negatives'])} negatives" if "negatives" in clicks else "")
          + f"; fine-tuning {model.card.get('name') or args.model}", file=sys.stderr)
    with about_file(args.image):
        result = _drain(finetune(model, binned, clicks["positives"], clicks.get("negatives"),
                                 settings), describe, lambda p: p.total)
    card = result.model.card
    card["name"] = out.stem
    card["training"]["binning"] = args.bin
    card["training"]["command"] = shlex.join([
        PROG, "finetune", str(args.image), "--points", str(args.points),
        *(["--negatives", str(args.negatives)] if args.negatives else []),
        "--model", str(args.model), "--steps", str(settings.steps), "--bin", str(args.bin),
        "--seed", str(args.seed), "--pseudo-labels", f"{args.pseudo_labels:g}",
        "--mode", card["training"]["mode"],
        *(["--calibration", card["training"]["settings"]["calibration"]]
          if card["training"]["mode"] == "weights" else []),
        "--out", out.name,
        *(["--complete-region"] if args.complete_region else []),
        *(["--time-budget", f"{args.time_budget:g}"] if args.time_budget else []),
        *(["--particles-per-frame", f"{args.particles_per_frame:g}"]
          if args.particles_per_frame else [])])
    save_model(out, result.model.network, card, overwrite=args.overwrite)
    print(f"wrote {out} and {out.with_suffix('.json')} ({result.steps_done} steps in "
          f"{result.wall_time:.0f} s, threshold {result.model.threshold:.2f})")
    return 0


def train_settings(args: argparse.Namespace):
    """Return the :class:`TrainSettings` of parsed ``train`` arguments."""
    from napari_denodet.core.network import NetworkConfig
    from napari_denodet.core.train import TrainSettings

    patch = args.patch_size or (128 if args.scenario == "micrograph" else 96)
    return TrainSettings(scenario=args.scenario, steps=args.steps,
                         batch_size=args.batch_size, patch_size=patch,
                         learning_rate=args.learning_rate, gamma=args.gamma,
                         seed=args.seed, eval_every=args.eval_every,
                         settle_fraction=args.settle_fraction,
                         snr_range=tuple(args.snr_range) if args.snr_range else None,
                         network=NetworkConfig(variant=args.variant, norm=args.norm,
                                               **_given(widths=args.widths)),
                         denoising_loss=args.denoising_loss,
                         correlated_noise=args.correlated_noise,
                         **_given(halo_range=args.halo_range, blur_range=args.blur_range))


def _repeated(flag: str, values) -> list[str]:
    # A multi-value option as it was given, for the command a card records; [] if not.
    return [] if values is None else [flag, *(f"{v:g}" for v in values)]


def _given(**values) -> dict:
    # The options given on the command line, as tuples; the others keep the core's default.
    return {name: tuple(value) for name, value in values.items() if value is not None}


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
