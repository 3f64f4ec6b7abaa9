"""The subcommands of ``napari-denodet``, one module each.

Each module defines ``NAME``, ``HELP`` and ``DESCRIPTION``, ``add_arguments(parser)``
and ``run(args)``, which calls the core and returns the exit status. Modules import the
core (and torch) inside their functions, so that importing the command line stays cheap.
"""

from napari_denodet.cli.commands import detect, evaluate, finetune, simulate, track, train

#: The subcommands in the order ``--help`` lists them.
COMMANDS = (simulate, evaluate, detect, track, train, finetune)
