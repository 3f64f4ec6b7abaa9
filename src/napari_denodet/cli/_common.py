"""What every ``napari-denodet`` command shares: the parser, argument types, progress."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from napari_denodet.core.errors import InputError

PROG = "napari-denodet"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _UsageError(Exception):
    """Bad command-line arguments (argparse's message, kept to one line)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D102 - argparse hook
        raise _UsageError(f"{self.prog}: {message} (see --help)")


# Argument types. argparse names a type in its messages ("invalid _positive_int value"),
# so these names are part of the command line's output.


def _path(text: str) -> Path:
    # An empty argument would be the current folder (Path("") == Path(".")).
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


def _axes(text: str) -> str:
    from napari_denodet.core.io import check_axes

    try:
        return check_axes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _step(text: str) -> float | str:
    # A largest displacement: px > 0, or 'auto' (estimated from the points).
    return "auto" if text == "auto" else _positive_float(text)


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


def _given(**values) -> dict:
    # The options given on the command line, as tuples; the others keep the core's default.
    return {name: tuple(value) for name, value in values.items() if value is not None}


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


def _bin_for(model, diameter: float) -> int:
    # The binning that brings particles of `diameter` px to the model's trained size.
    try:
        factor = model.bin_for_diameter(diameter)
    except ValueError as exc:
        raise InputError(None, f"--diameter: {exc}") from None
    print(f"binning {factor} x {factor}: {diameter:g} px particles become "
          f"{diameter / factor:.1f} px", file=sys.stderr)
    return factor


def _binning(args: argparse.Namespace, model) -> int:
    # --bin, else the bin --diameter asks for, else the model's (the binning a fine-tuned
    # model was fine-tuned at, said on stderr when it bins).
    if args.bin is not None:
        return args.bin
    if args.diameter is not None:
        return _bin_for(model, args.diameter)
    if model.binning > 1:
        print(f"binning {model.binning} x {model.binning}, as {model.name} was fine-tuned "
              "(--bin to change)", file=sys.stderr)
    return model.binning


def _model_out(out: Path, overwrite: bool) -> Path:
    # Where a train or finetune run writes its model: a .pt file, never replaced silently,
    # in a folder that exists and takes files: checked before the run, not after it.
    from napari_denodet.core.atomic import check_writable

    if out.suffix != ".pt":
        raise InputError(out, "model files end in .pt")
    if out.exists() and not overwrite:
        raise InputError(out, "already exists; use --overwrite or another --out")
    return check_writable(out, overwrite)
