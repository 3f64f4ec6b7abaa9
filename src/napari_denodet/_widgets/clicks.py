"""The clicks layer both widgets share: particles and false detections, in one layer.

An image's clicks live in a Points layer named ``"<image> clicks"`` whose ``label``
feature says, per point, :data:`~napari_denodet.core.feedback.PARTICLE` or
:data:`~napari_denodet.core.feedback.NOT_PARTICLE` (lime and red rings). The Fine-tune
widget makes it and chooses which kind the next click is; the Detect widget refits the
threshold of that image's detections to it as the user clicks; fine-tuning learns from
both kinds. The user's layer is only ever read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_denodet.core.feedback import LABEL, LABELS, NOT_PARTICLE, PARTICLE
from napari_denodet.core.points import points_table

#: Ring colours of the two kinds of click.
COLOURS = {PARTICLE: "lime", NOT_PARTICLE: "red"}
SUFFIX = " clicks"


def clicks_name(image_name: str) -> str:
    """Return the name of an image's clicks layer."""
    return f"{image_name}{SUFFIX}"


def new_clicks_layer(viewer, image, name: str | None = None):
    """Add an empty clicks layer over ``image``, in add mode, clicking particles."""
    features = pd.DataFrame({LABEL: pd.Categorical([], categories=list(LABELS))})
    layer = viewer.add_points(
        np.empty((0, image.ndim)), ndim=image.ndim, name=name or clicks_name(image.name),
        scale=image.scale, translate=image.translate, size=8, face_color="transparent",
        features=features, border_color=LABEL,
        border_color_cycle=[COLOURS[label] for label in LABELS])
    set_kind(layer, PARTICLE)
    layer.mode = "add"
    return layer


def set_kind(layer, kind: str) -> None:
    """Make the next clicks on ``layer`` of ``kind`` (particle or not a particle)."""
    if kind not in LABELS:
        raise ValueError(f"a click is {PARTICLE!r} or {NOT_PARTICLE!r}, not {kind!r}")
    if LABEL in layer.features.columns:
        layer.feature_defaults[LABEL] = kind


def layer_points(points_layer, image_layer) -> pd.DataFrame:
    """Copy a Points layer's coordinates into the image's pixels as a points table.

    The ``label`` feature, if any, comes along.
    """
    coords = np.array(points_layer.data, dtype=np.float64, copy=True)
    ndim = image_layer.ndim
    if len(coords) and coords.shape[1] != ndim:
        raise ValueError(f"layer '{points_layer.name}' has {coords.shape[1]}D points but "
                         f"image '{image_layer.name}' is {ndim}D")
    coords = coords.reshape(-1, ndim)
    # Layer coordinates to world, then to the image's pixels.
    world = coords * np.asarray(points_layer.scale) + np.asarray(points_layer.translate)
    pixels = (world - np.asarray(image_layer.translate)) / np.asarray(image_layer.scale)
    if ndim == 3:
        table = points_table(pixels[:, 1], pixels[:, 2], frame=np.rint(pixels[:, 0]))
    else:
        table = points_table(pixels[:, 0], pixels[:, 1])
    if LABEL in points_layer.features.columns and len(points_layer.features) == len(table):
        table[LABEL] = points_layer.features[LABEL].astype(str).to_numpy()
    return table
