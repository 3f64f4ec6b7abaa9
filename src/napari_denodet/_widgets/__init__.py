"""The napari face: dock widgets that collect settings and run core functions in workers."""

#: Tooltip of the widgets' binning box (the rule of ``Model.bin_for_diameter``).
BINNING_TIP = ("Average N x N pixels first (micrographs; coordinates come back at full "
               "resolution). The bundled micrograph model wants particles of radius "
               "5-15 px, best near 9: binning = particle diameter in pixels / 17 "
               "(108 px particles: 6). Use the same binning to fine-tune and to detect.")
