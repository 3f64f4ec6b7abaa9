"""The napari face: dock widgets that collect settings and run core functions in workers."""

#: Metadata key of a Detect particles layer: the model that detected, as the model boxes
#: list it (a session model's name, a bundled name, the one "auto" chose, or a file).
DETECTED_WITH = "detected_with"
#: Metadata key of a Detect denoised layer: the name of the image it was denoised from.
DENOISED_FROM = "denoised_from"


def image_layers(viewer) -> list:
    """Return the viewer's image layers, the ones Detect denoised listed last.

    A denoised layer lies below its raw image, so by layer order it would come first and
    be the widgets' default; detection and fine-tuning want the raw, noisy data.
    """
    from napari.layers import Image

    layers = [layer for layer in viewer.layers if isinstance(layer, Image)]
    return sorted(layers, key=lambda layer: DENOISED_FROM in layer.metadata)


#: Tooltip of the widgets' binning box (the rule of ``Model.bin_for_diameter``).
BINNING_TIP = ("Average N x N pixels first (micrographs; coordinates come back at full "
               "resolution). The bundled micrograph model wants particles of radius "
               "5-15 px, best near 9: binning = particle diameter in pixels / 17 "
               "(108 px particles: 6). Use the same binning to fine-tune and to detect.")
