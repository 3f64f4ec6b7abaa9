"""The ``napari-denodet`` command line: the same core as the napari plugin, headless.

Every subcommand turns a bad argument or a bad file into one line on stderr and a
non-zero exit status; a traceback is shown only with ``--debug``. The subcommands live
in :mod:`napari_denodet.cli.commands`, one module each; this module assembles them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from napari_denodet import __version__
from napari_denodet.cli._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    _Parser,
    _UsageError,
)
from napari_denodet.cli.commands import COMMANDS
from napari_denodet.cli.commands.train import train_settings
from napari_denodet.core.errors import DenodetError

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "PROG", "build_parser", "main", "train_settings"]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``napari-denodet`` command."""
    parser = _Parser(prog=PROG, description="Joint denoising and particle detection "
                                            "(DENODET) for fluorescence time-lapses and "
                                            "cryo-EM micrographs.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback when something fails")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for command in COMMANDS:
        command_parser = sub.add_parser(command.NAME, help=command.HELP,
                                        description=command.DESCRIPTION)
        command.add_arguments(command_parser)
        command_parser.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = parser.parse_args(argv)
        status = args.run(args)
        sys.stdout.flush()  # a closed pipe (`| head`) shows here, not at exit
        return status
    except BrokenPipeError:
        # Whoever read our output stopped reading: nothing to tell them. Python's own
        # advice: point stdout at devnull so the final flush at exit stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
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
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            raise
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc} "
              f"(rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILURE
