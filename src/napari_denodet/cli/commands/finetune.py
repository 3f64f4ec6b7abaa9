"""``napari-denodet finetune``: fine-tune a model from a few clicked particles."""

from __future__ import annotations

import argparse
import sys

from napari_denodet.cli._common import (
    _axes,
    _binning,
    _drain,
    _model_out,
    _non_negative_float,
    _path,
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
    from napari_denodet.core.choice import AUTO, AUTO_CANDIDATES
    from napari_denodet.core.finetune import CALIBRATIONS, MODES, FinetuneSettings

    parser.add_argument("image", type=_path, metavar="IMAGE", help="TIFF, MRC, PNG or JPEG file")
    parser.add_argument("--points", type=_path, required=True, metavar="CLICKS",
                        help="clicked particle centres (.csv/.star/.box, full-resolution px)")
    parser.add_argument("--negatives", type=_path, default=None, metavar="NEG",
                        help="known false detections (same formats)")
    parser.add_argument("--model", default=AUTO,
                        help="bundled model name or a .pt file to start from, or 'auto' "
                             "(default): on a time-lapse the model detect's 'auto' "
                             f"chooses there, on a single image {AUTO_CANDIDATES[0]}")
    parser.add_argument("--out", type=_path, required=True, metavar="MODEL.pt")
    parser.add_argument("--steps", type=_positive_int, default=None,
                        help=f"most training steps (default {FinetuneSettings.steps})")
    parser.add_argument("--time-budget", type=_non_negative_float,
                        default=FinetuneSettings.time_budget, metavar="SECONDS",
                        help="seconds for the whole run: training stops in time for the "
                             "calibration and the acceptance check to end within it "
                             f"(default {FinetuneSettings.time_budget:g}; 0: no limit, "
                             "the steps decide)")
    parser.add_argument("--particles-per-frame", type=_positive_float, default=None,
                        help="expected particles per frame (default: estimated)")
    binning = parser.add_mutually_exclusive_group()
    binning.add_argument("--bin", type=_positive_int, default=None, metavar="N",
                         help="average N x N pixels first (the model records it: detect "
                              "with it bins alike; default: the binning the starting "
                              "model was fine-tuned at, else 1)")
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
    parser.add_argument("--polarity", choices=("dark", "bright"), default=None,
                        help="the particles' polarity on IMAGE (default: the model's; for "
                             "micrograph models read from the clicks); the model records it")
    parser.add_argument("--axes", type=_axes, default=None,
                        help="axes of IMAGE, e.g. TYX (ending in YX)")
    parser.add_argument("--seed", type=int, default=FinetuneSettings.seed)
    parser.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Fine-tune the model on the clicks, save it with its card and report."""
    from dataclasses import replace

    from napari_denodet.core.choice import AUTO, AUTO_CANDIDATES, choose_model
    from napari_denodet.core.finetune import FinetuneFiles, FinetuneSettings
    from napari_denodet.core.io import read_image
    from napari_denodet.core.models import load_model, save_model
    from napari_denodet.core.predict import run as run_steps
    from napari_denodet.core.progress import Stage

    out = _model_out(args.out, args.overwrite)
    auto = args.model == AUTO
    model = load_model(AUTO_CANDIDATES[0] if auto else args.model)
    args.bin = _binning(args, model)
    image = read_image(args.image, axes=args.axes)
    if auto:
        # The model detect's default chooses on this image: the one whose detections
        # the clicks correct.
        with about_file(args.image):
            choice = run_steps(choose_model(image))
        model, args.model = choice.model, choice.name
        print(f"{args.image}: {choice.note()}", file=sys.stderr)
    if image.ndim == 3 and args.bin > 1:
        raise InputError(args.image, "--bin is for single micrographs, not stacks")
    clicks = _read_clicks(args, stack=image.ndim == 3)
    settings = FinetuneSettings(seed=args.seed, time_budget=args.time_budget or None,
                                particles_per_frame=args.particles_per_frame,
                                complete_region=args.complete_region,
                                pseudo_labels=args.pseudo_labels, mode=args.mode,
                                calibration=args.calibration, polarity=args.polarity)
    if args.steps:
        settings = replace(settings, steps=args.steps)
    files = FinetuneFiles(image=args.image, points=args.points, model=args.model, out=out,
                          negatives=args.negatives)

    def describe(progress):
        if progress.stage == Stage.NOTE:
            print(f"{args.image}: {progress.metrics['message']}", file=sys.stderr)
            return None
        if progress.stage == Stage.CALIBRATE or progress.stage == Stage.ACCEPT:
            print(progress.metrics["message"], file=sys.stderr)
            return None
        if progress.stage == Stage.CHECK:
            print(f"step {progress.step}: held-out recall "
                  f"{progress.metrics['heldout_recall']:.2f} at threshold "
                  f"{progress.metrics['threshold']:.2f}", file=sys.stderr)
            return None
        budget = f", {progress.elapsed:.0f}/{progress.budget:g} s" if progress.budget else ""
        return f"loss {progress.metrics['loss']:.3f}{budget}"

    print(f"{args.image}: {len(clicks['positives'])} clicked centres"
          + (f", {len(clicks['negatives'])} negatives" if "negatives" in clicks else "")
          + f"; fine-tuning {model.card.name or args.model}", file=sys.stderr)
    with about_file(args.image):
        result = _drain(model.finetune(image, clicks["positives"], clicks.get("negatives"),
                                       settings, binning=args.bin, name=out.stem,
                                       files=files),
                        describe, lambda p: p.total)
    save_model(out, result.model.network, result.model.card, overwrite=args.overwrite)
    kept = ("; the starting model's weights, the adapted ones were not measurably better"
            if result.accepted is False else "")
    print(f"wrote {out} and {out.with_suffix('.json')} ({result.steps_done} steps in "
          f"{result.wall_time:.0f} s, threshold {result.model.threshold:.2f}{kept})")
    return 0


def _read_clicks(args: argparse.Namespace, stack: bool) -> dict:
    # The clicked positives (and negatives, if given), in full-resolution pixels.
    from napari_denodet.core.io import read_points
    from napari_denodet.core.points import FRAME

    clicks = {"positives": read_points(args.points)}
    if args.negatives is not None:
        clicks["negatives"] = read_points(args.negatives)
    for name, path in (("positives", args.points), ("negatives", args.negatives)):
        if name in clicks and (FRAME in clicks[name].columns) != stack:
            raise InputError(path, f"has {'a' if FRAME in clicks[name].columns else 'no'} "
                                   f"'frame' column but {args.image} is "
                                   f"{'a stack' if stack else 'a single image'}")
    return clicks
