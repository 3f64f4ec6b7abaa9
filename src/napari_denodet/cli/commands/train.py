"""``napari-denodet train``: train a model on simulated data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_denodet.cli._common import (
    PROG,
    _drain,
    _given,
    _model_out,
    _non_negative_float,
    _path,
    _positive_float,
    _positive_int,
    _share,
    _UsageError,
)
from napari_denodet.core.errors import InputError

NAME = "train"
HELP = "train a model on simulated data"
DESCRIPTION = ("Train the joint network on freshly simulated patches and save MODEL.pt with "
               "its model card MODEL.json.")
#: Patch edge of micrograph runs when --patch-size is not given (other scenarios take
#: the core's default).
MICROGRAPH_PATCH_SIZE = 128


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``train``."""
    from napari_denodet.core.losses import DENOISING_LOSSES
    from napari_denodet.core.network import NORMS, VARIANTS, NetworkConfig
    from napari_denodet.core.train import DOMAINS, TRAIN_SCENARIOS, WINDOW_INITS, TrainSettings

    default = TrainSettings()
    network = NetworkConfig()
    micrograph_snr = TrainSettings(scenario="micrograph").snr
    parser.add_argument("--scenario", choices=TRAIN_SCENARIOS, default=default.scenario)
    parser.add_argument("--steps", type=_positive_int, default=default.steps)
    parser.add_argument("--batch-size", type=_positive_int, default=default.batch_size)
    parser.add_argument("--patch-size", type=_positive_int, default=None,
                        help=f"patch edge in pixels (default {default.patch_size}; "
                             f"{MICROGRAPH_PATCH_SIZE} for micrographs)")
    parser.add_argument("--learning-rate", type=_positive_float,
                        default=default.learning_rate)
    parser.add_argument("--gamma", type=float, default=default.gamma,
                        help="weight of the denoising loss (0 = detection only)")
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument("--snr-range", type=_positive_float, nargs=2, default=None,
                        metavar=("LOW", "HIGH"),
                        help=f"SNRs drawn log-uniformly (default {_numbers(default.snr)}; "
                             f"micrographs {_numbers(micrograph_snr)})")
    parser.add_argument("--variant", choices=VARIANTS, default=network.variant,
                        help="joint DENODET (default) or the cascaded cDENODET baseline")
    parser.add_argument("--denoising-loss", choices=DENOISING_LOSSES,
                        default=default.denoising_loss,
                        help="l1 to the clean patch (default) or the paper's soft Dice + "
                             "balanced BCE")
    parser.add_argument("--norm", choices=NORMS, default=network.norm,
                        help="normalisation after each convolution: batch (default; folds "
                             "into the convolutions, tiles agree) or instance (the paper's)")
    parser.add_argument("--widths", type=_positive_int, nargs=3, default=None,
                        metavar=("W1", "W2", "W3"),
                        help=f"feature maps of the three encoder levels (default "
                             f"{_numbers(network.widths)}, the paper's)")
    parser.add_argument("--settle-fraction", type=_share, default=default.settle_fraction,
                        metavar="SHARE",
                        help="last share of the steps trained with batch-norm statistics "
                             "frozen at a tenth of the learning rate (default "
                             f"{default.settle_fraction:g})")
    parser.add_argument("--eval-every", type=_positive_int, default=default.eval_every)
    parser.add_argument("--halo-range", type=_non_negative_float, nargs=2, default=None,
                        metavar=("LOW", "HIGH"),
                        help="micrographs: strength of the bright phase-contrast fringe "
                             "around particles, drawn per patch (default "
                             f"{_numbers(default.halo_range)}: none)")
    parser.add_argument("--blur-range", type=_non_negative_float, nargs=2, default=None,
                        metavar=("LOW", "HIGH"),
                        help="micrographs: width (px) of a Gaussian low-pass of the image, "
                             "as in filtered exports, drawn per patch (default "
                             f"{_numbers(default.blur_range)}: none)")
    parser.add_argument("--correlated-noise", type=_non_negative_float,
                        default=default.correlated_noise, metavar="WIDTH",
                        help="time-lapses: give half the patches noise correlated between "
                             "neighbouring pixels, as many cameras have, with Gaussian "
                             "widths (px) drawn per axis up to WIDTH; with --domain "
                             "realistic, in its PTC-like share only (default "
                             f"{default.correlated_noise:g}: white noise only)")
    parser.add_argument("--domain", choices=DOMAINS, default=default.domain,
                        help="'realistic' draws most patches through a randomised image "
                             "formation (time-lapses: camera noise of several kinds, "
                             "structured backgrounds, PSF 0.7-3.5 px, intensity spread, "
                             "clusters; micrographs: radii 4-20 px, fringes, low-pass, "
                             "contrast transfer, detector artefacts); 'ptc' the plain "
                             f"simulated world alone (default {default.domain})")
    parser.add_argument("--ptc-share", type=_share, default=default.ptc_share,
                        metavar="SHARE",
                        help="with --domain realistic: share of the patches drawn from the "
                             f"plain simulated world (default {default.ptc_share:g})")
    parser.add_argument("--init", default=None, metavar="MODEL",
                        help="start from this model's weights (bundled name or .pt path) "
                             "instead of a random initialisation")
    parser.add_argument("--window", type=_positive_int, default=default.window,
                        metavar="FRAMES",
                        help="time-lapses: frames the network sees, centred on the one "
                             "it detects in (odd; default 1: frame by frame)")
    parser.add_argument("--window-init", choices=WINDOW_INITS, default=default.window_init,
                        help="with --init of a single-frame model: start the window's "
                             "neighbours at zero ('centre') or give every frame the "
                             "model's weights over the square root of the window ('sum'; "
                             f"default {default.window_init})")
    parser.add_argument("--name", default=None,
                        help="model name in the card (default: file stem)")
    parser.add_argument("--checkpoint", type=_path, default=None,
                        help="training state file, written every --eval-every steps")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--out", type=_path, required=True, metavar="MODEL.pt")
    parser.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Train, save the model with its card and report the validation F1."""
    from napari_denodet.core.models import save_model
    from napari_denodet.core.progress import Stage
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
        if progress.stage == Stage.VALIDATE:
            print(f"step {progress.step}: validation F1 {progress.metrics['val_f1']:.3f} "
                  f"RMSE {progress.metrics['val_rmse']:.3f} px (threshold "
                  f"{progress.metrics['threshold']:.2f})", file=sys.stderr)
        return f"loss {last.get('loss', float('nan')):.3f}"

    result = _drain(train(settings, checkpoint=args.checkpoint, resume=args.resume,
                          checkpoint_every=args.eval_every),
                    describe, lambda p: p.total)
    card = model_card(result, args.name or out.stem, _command(args, settings, out))
    save_model(out, result.network, card, overwrite=args.overwrite)
    print(f"wrote {out} and {out.with_suffix('.json')} (validation F1 "
          f"{card['training']['validation']['val_f1']:.3f}, threshold {result.threshold:.2f}, "
          f"{result.wall_time:.0f} s)")
    return 0


def train_settings(args: argparse.Namespace):
    """Return the :class:`TrainSettings` of parsed ``train`` arguments."""
    from napari_denodet.core.network import NetworkConfig
    from napari_denodet.core.train import TrainSettings

    patch = args.patch_size or (MICROGRAPH_PATCH_SIZE if args.scenario == "micrograph"
                                else TrainSettings.patch_size)
    return TrainSettings(scenario=args.scenario, steps=args.steps,
                         batch_size=args.batch_size, patch_size=patch,
                         learning_rate=args.learning_rate, gamma=args.gamma,
                         seed=args.seed, eval_every=args.eval_every,
                         settle_fraction=args.settle_fraction,
                         snr_range=tuple(args.snr_range) if args.snr_range else None,
                         network=NetworkConfig(variant=args.variant, norm=args.norm,
                                               **_given(widths=args.widths)),
                         denoising_loss=args.denoising_loss,
                         correlated_noise=args.correlated_noise, domain=args.domain,
                         ptc_share=args.ptc_share,
                         init=args.init, window=args.window,
                         window_init=args.window_init,
                         **_given(halo_range=args.halo_range, blur_range=args.blur_range))


def _command(args: argparse.Namespace, settings, out: Path) -> str:
    # The command that reproduces this model (checkpointing does not change the result).
    import shlex

    from napari_denodet.core.network import NetworkConfig
    from napari_denodet.core.train import TrainSettings

    return shlex.join([
        PROG, "train", "--scenario", settings.scenario, "--steps", str(settings.steps),
        "--batch-size", str(settings.batch_size), "--patch-size", str(settings.patch_size),
        "--learning-rate", f"{settings.learning_rate:g}", "--gamma", f"{settings.gamma:g}",
        "--seed", str(settings.seed), "--eval-every", str(settings.eval_every),
        "--settle-fraction", f"{settings.settle_fraction:g}",
        "--snr-range", *(f"{v:g}" for v in settings.snr),
        *(["--variant", args.variant] if args.variant != NetworkConfig.variant else []),
        *(["--norm", settings.network.norm]
          if settings.network.norm != NetworkConfig.norm else []),
        *_repeated("--widths", args.widths),
        *(["--denoising-loss", settings.denoising_loss]
          if settings.denoising_loss != TrainSettings.denoising_loss else []),
        *_repeated("--halo-range", args.halo_range),
        *_repeated("--blur-range", args.blur_range),
        *(["--correlated-noise", f"{settings.correlated_noise:g}"]
          if settings.correlated_noise > 0 else []),
        *(["--domain", settings.domain] if settings.domain != TrainSettings.domain else []),
        *(["--ptc-share", f"{settings.ptc_share:g}"]
          if settings.ptc_share != TrainSettings.ptc_share else []),
        *(["--init", settings.init] if settings.init else []),
        *(["--window", str(settings.window)] if settings.window != 1 else []),
        *(["--window-init", settings.window_init]
          if settings.window_init != TrainSettings.window_init else []),
        "--out", out.name])


def _repeated(flag: str, values) -> list[str]:
    # A multi-value option as it was given, for the command a card records; [] if not.
    return [] if values is None else [flag, *(f"{v:g}" for v in values)]


def _numbers(values) -> str:
    # A default of a multi-value option as it would be typed, e.g. "0.8 40".
    return " ".join(f"{v:g}" for v in values)
