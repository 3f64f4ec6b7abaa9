"""``napari-denodet finetune``: fine-tune a model from a few clicked particles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_denodet.cli._common import (
    PROG,
    _bin_for,
    _drain,
    _model_out,
    _positive_float,
    _positive_int,
    _share,
)
from napari_denodet.core.errors import InputError, about_file

NAME = "finetune"
HELP = "fine-tune a model from a few clicked particles"
DESCRIPTION = ("Fine-tune a model on IMAGE from clicked particle centres (weakly "
               "supervised: blind-spot denoising, positive-unlabelled detection) and save "
               "MODEL.pt with its card.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``finetune``."""
    from napari_denodet.core.batch import DetectSettings
    from napari_denodet.core.finetune import CALIBRATIONS, MODES, FinetuneSettings

    parser.add_argument("image", type=Path, metavar="IMAGE", help="TIFF, MRC, PNG or JPEG file")
    parser.add_argument("--points", type=Path, required=True, metavar="CLICKS",
                        help="clicked particle centres (.csv/.star/.box, full-resolution px)")
    parser.add_argument("--negatives", type=Path, default=None, metavar="NEG",
                        help="known false detections (same formats)")
    parser.add_argument("--model", default=DetectSettings.model,
                        help="bundled model name or a .pt file to start from")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL.pt")
    parser.add_argument("--steps", type=_positive_int, default=None,
                        help=f"most training steps (default {FinetuneSettings.steps})")
    parser.add_argument("--time-budget", type=_positive_float, default=None,
                        metavar="SECONDS", help="stop training after this many seconds")
    parser.add_argument("--particles-per-frame", type=_positive_float, default=None,
                        help="expected particles per frame (default: estimated)")
    binning = parser.add_mutually_exclusive_group()
    binning.add_argument("--bin", type=_positive_int, default=DetectSettings.binning,
                         metavar="N",
                         help="average N x N pixels first (use the same --bin for detect)")
    binning.add_argument("--diameter", type=_positive_float, default=None, metavar="PX",
                         help="particle diameter in full-resolution pixels: bin as the "
                              "model card asks for that size (replaces --bin)")
    parser.add_argument("--pseudo-labels", type=_share, default=FinetuneSettings.pseudo_labels,
                        metavar="SHARE",
                        help="share of the starting model's detections (surest first) learnt "
                             f"as particles too (default {FinetuneSettings.pseudo_labels:g}; "
                             f"0: the clicks alone)")
    parser.add_argument("--mode", choices=MODES, default=FinetuneSettings.mode,
                        help="weights: train the network, then recalibrate its threshold; "
                             "threshold: keep the weights and recalibrate the threshold from "
                             "the clicked area (every particle in it clicked); auto "
                             "(default): what the model card advises, else weights")
    parser.add_argument("--calibration", choices=CALIBRATIONS,
                        default=FinetuneSettings.calibration,
                        help="after training the weights, set the threshold from the clicks, "
                             "or keep as many detections as the starting model made (count); "
                             "auto (default): what the model card advises, else clicks")
    parser.add_argument("--complete-region", action="store_true",
                        help="every particle in the area the clicks cover is clicked: the "
                             "rest of that area is learnt as background")
    parser.add_argument("--axes", default=None, help="axes of IMAGE, e.g. TYX")
    parser.add_argument("--seed", type=int, default=FinetuneSettings.seed)
    parser.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Fine-tune the model on the clicks, save it with its card and report."""
    from dataclasses import replace

    from napari_denodet.core.finetune import FinetuneSettings, finetune
    from napari_denodet.core.io import read_image
    from napari_denodet.core.models import load_model, save_model
    from napari_denodet.core.resample import bin_image

    out = _model_out(args.out, args.overwrite)
    model = load_model(args.model)
    if args.diameter is not None:
        args.bin = _bin_for(model, args.diameter)
    image = read_image(args.image, axes=args.axes)
    if image.ndim == 3 and args.bin > 1:
        raise InputError(args.image, "--bin is for single micrographs, not stacks")
    clicks = _read_clicks(args, stack=image.ndim == 3)
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
    card["training"]["command"] = _command(args, card, settings.steps, out)
    save_model(out, result.model.network, card, overwrite=args.overwrite)
    print(f"wrote {out} and {out.with_suffix('.json')} ({result.steps_done} steps in "
          f"{result.wall_time:.0f} s, threshold {result.model.threshold:.2f})")
    return 0


def _read_clicks(args: argparse.Namespace, stack: bool) -> dict:
    # The clicked positives (and negatives, if given), binned as the image will be.
    from napari_denodet.core.io import read_points
    from napari_denodet.core.points import FRAME
    from napari_denodet.core.resample import bin_points

    clicks = {"positives": read_points(args.points)}
    if args.negatives is not None:
        clicks["negatives"] = read_points(args.negatives)
    for name, path in (("positives", args.points), ("negatives", args.negatives)):
        if name in clicks and (FRAME in clicks[name].columns) != stack:
            raise InputError(path, f"has {'a' if FRAME in clicks[name].columns else 'no'} "
                                   f"'frame' column but {args.image} is "
                                   f"{'a stack' if stack else 'a single image'}")
        if name in clicks:
            clicks[name] = bin_points(clicks[name], args.bin)
    return clicks


def _command(args: argparse.Namespace, card: dict, steps: int, out: Path) -> str:
    # The command that reproduces this fine-tuning, for the model card.
    import shlex

    return shlex.join([
        PROG, "finetune", str(args.image), "--points", str(args.points),
        *(["--negatives", str(args.negatives)] if args.negatives else []),
        "--model", str(args.model), "--steps", str(steps), "--bin", str(args.bin),
        "--seed", str(args.seed), "--pseudo-labels", f"{args.pseudo_labels:g}",
        "--mode", card["training"]["mode"],
        *(["--calibration", card["training"]["settings"]["calibration"]]
          if card["training"]["mode"] == "weights" else []),
        "--out", out.name,
        *(["--complete-region"] if args.complete_region else []),
        *(["--time-budget", f"{args.time_budget:g}"] if args.time_budget else []),
        *(["--particles-per-frame", f"{args.particles_per_frame:g}"]
          if args.particles_per_frame else [])])
