"""``python -m napari_denodet.cli``: the same as the ``napari-denodet`` command."""

import sys

from napari_denodet.cli import main

sys.exit(main())
