"""``napari-denodet evaluate``: score predicted points against a reference."""

from __future__ import annotations

import argparse
import json

from napari_denodet.cli._common import _finite_float, _path, _positive_float
from napari_denodet.core.errors import InputError

NAME = "evaluate"
HELP = "score predicted points against a reference"
DESCRIPTION = ("Match predicted to reference points frame by frame (Hungarian, distance "
               "gate) and print precision, recall, F1 and RMSE.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``evaluate``."""
    from napari_denodet.core.metrics import GATE

    parser.add_argument("predicted", type=_path, metavar="PRED",
                        help="points file (.csv/.star/.box)")
    parser.add_argument("reference", type=_path, metavar="TRUTH",
                        help="points file (.csv/.star/.box)")
    parser.add_argument("--gate", type=_positive_float, default=GATE,
                        help=f"largest matching distance in pixels (default {GATE:g})")
    parser.add_argument("--threshold", type=_finite_float, default=None,
                        help="keep only predictions with score >= this")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")


def run(args: argparse.Namespace) -> int:
    """Read both points files, match them and print the scores."""
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
    try:
        scores = score_detections(predicted, reference, gate=args.gate)
    except InputError as error:  # about both files (points too dense to match)
        if error.path is not None:
            raise
        raise InputError(None, f"{args.predicted} against {args.reference}: "
                               f"{error.reason}") from None
    if args.json:
        print(json.dumps(dict(scores.as_dict(), gate=args.gate), indent=2))
    else:
        print(f"precision {scores.precision:.3f}\nrecall    {scores.recall:.3f}\n"
              f"F1        {scores.f1:.3f}\nRMSE      {scores.rmse:.3f} px\n"
              f"TP {scores.tp}  FP {scores.fp}  FN {scores.fn}  (gate {args.gate:g} px)")
    return 0
