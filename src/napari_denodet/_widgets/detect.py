"""The Detect dock widget: one click from an image layer to denoised image and particles.

The widget holds no algorithm. It collects settings, starts a thread worker around the
core generator :func:`napari_denodet.core.predict.detect` (model loading, reading and
binning happen in the worker too), and turns the result into layers on the GUI thread.
All candidates are kept, so the score slider filters the shown particles at once
without running the network again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSlider, PushButton, SpinBox
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info

from napari_denodet._reader import POINTS_STYLE
from napari_denodet.core.points import SCORE, coordinates

if TYPE_CHECKING:
    import napari

FROM_FILE = "from file..."


@dataclass
class DetectJob:
    """Plain settings handed to the worker (never layers or widgets)."""

    model: str
    device: str
    frames: tuple[int, int] | None
    binning: int


def run_detection(data, job: DetectJob):
    """Load the model, bin, and detect: the generator the worker runs.

    Yields the core's progress messages and returns ``(result, model)`` with the points
    in the input's full-resolution pixels.
    """
    from napari_denodet.core.models import load_model
    from napari_denodet.core.predict import detect
    from napari_denodet.core.resample import bin_image, unbin_points

    model = load_model(job.model)
    image = bin_image(np.asarray(data) if job.binning > 1 else data, job.binning)
    result = yield from detect(image, model.network, invert=model.invert, device=job.device,
                               frames=job.frames, **model.localisation)
    result.points = unbin_points(result.points, job.binning)
    return result, model


class DetectWidget(Container):
    """Dock widget: choose an image layer and a model, detect, tune the threshold."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from napari_denodet.core.models import bundled_models
        from napari_denodet.core.predict import available_devices

        self._viewer = viewer
        self._image = ComboBox(label="image", choices=self._image_layers)
        self._model = ComboBox(label="model", choices=[*bundled_models(), FROM_FILE])
        self._model_file = FileEdit(label="model file", filter="*.pt", visible=False)
        self._device = ComboBox(label="device", choices=["auto", *available_devices()])
        self._first = SpinBox(label="first frame", min=0, max=10**7, value=0)
        self._last = SpinBox(label="last frame (0 = all)", min=0, max=10**7, value=0)
        self._binning = SpinBox(label="binning", min=1, max=16, value=1)
        self._threshold = FloatSlider(label="score threshold", min=0.0, max=1.0, step=0.01,
                                      value=0.5)
        self._run = PushButton(text="Detect")
        super().__init__(widgets=[self._image, self._model, self._model_file, self._device,
                                  self._first, self._last, self._binning, self._run,
                                  self._threshold])
        self._candidates: dict[str, pd.DataFrame] = {}
        self.worker = None
        self._model.changed.connect(
            lambda value: setattr(self._model_file, "visible", value == FROM_FILE))
        self._run.clicked.connect(self.start)
        self._threshold.changed.connect(self._apply_threshold)
        viewer.layers.events.inserted.connect(self._image.reset_choices)
        viewer.layers.events.removed.connect(self._image.reset_choices)

    def _image_layers(self, _widget=None) -> list:
        from napari.layers import Image

        return [layer for layer in self._viewer.layers if isinstance(layer, Image)]

    def _job(self, layer) -> DetectJob:
        model = str(self._model_file.value) if self._model.value == FROM_FILE \
            else self._model.value
        frames = None
        if layer.ndim == 3 and (self._first.value or self._last.value):
            last = self._last.value or layer.data.shape[0]
            frames = (self._first.value, last)
        return DetectJob(model=model, device=self._device.value, frames=frames,
                         binning=self._binning.value)

    def start(self, _=None, start_thread: bool = True):
        """Check the inputs on the GUI thread, then detect in a worker."""
        layer = self._image.value
        if layer is None:
            show_error("Detect: open or select an image layer first")
            return None
        if layer.rgb or layer.ndim not in (2, 3):
            show_error(f"Detect: layer '{layer.name}' is "
                       f"{'an RGB image' if layer.rgb else f'{layer.ndim}D'}; "
                       "napari-denodet needs a 2D image or a 2D+t stack")
            return None
        job = self._job(layer)
        worker = create_worker(run_detection, layer.data, job, _start_thread=False,
                               _progress={"desc": f"DENODET: {layer.name}"})
        worker.returned.connect(lambda out, lay=layer: self._show(lay, *out))
        worker.errored.connect(lambda exc: show_error(f"Detect failed: {exc}"))
        worker.aborted.connect(lambda: show_info("Detect cancelled"))
        worker.finished.connect(lambda: setattr(self._run, "enabled", True))
        self._run.enabled = False
        self.worker = worker
        if start_thread:
            worker.start()
        return worker

    def _show(self, layer, result, model) -> None:
        # On the GUI thread: replace this image's previous results, never stack copies.
        name = layer.name
        scale = layer.scale[-result.denoised.ndim:]
        translate = np.array(layer.translate[-result.denoised.ndim:], dtype=float)
        binning = self._binning.value
        if result.denoised.ndim == 3 and result.first_frame:
            translate[0] += result.first_frame * scale[0]
        if binning > 1:
            scale = np.array(scale, dtype=float)
            scale[-2:] *= binning
            translate[-2:] += (binning - 1) / 2 * np.asarray(layer.scale[-2:])
        self._put(f"{name} denoised", result.denoised, "image",
                  {"scale": scale, "translate": translate, "colormap": "gray"})
        self._candidates[name] = result.points
        # Set the model's threshold quietly: the slider's handler would redraw every
        # image's particles, and only this image's are new.
        with self._threshold.changed.blocked():
            self._threshold.value = model.threshold
        self._apply_threshold(name=name)

    def _put(self, name: str, data, kind: str, kwargs: dict):
        if name in self._viewer.layers:
            existing = self._viewer.layers[name]
            existing.data = data
            for key, value in kwargs.items():
                if key not in ("colormap",):
                    setattr(existing, key, value)
            return existing
        return getattr(self._viewer, f"add_{kind}")(data, name=name, **kwargs)

    def _apply_threshold(self, _value=None, name: str | None = None) -> None:
        names = [name] if name else list(self._candidates)
        for image_name in names:
            table = self._candidates.get(image_name)
            if table is None or image_name not in self._viewer.layers:
                continue
            image = self._viewer.layers[image_name]
            kept = table[table[SCORE] >= self._threshold.value].reset_index(drop=True)
            features = kept.drop(columns=["y", "x"])
            coords = coordinates(kept)
            kwargs = {"scale": image.scale[-coords.shape[1]:],
                      "translate": image.translate[-coords.shape[1]:]}
            layer_name = f"{image_name} particles"
            if layer_name in self._viewer.layers:
                points = self._viewer.layers[layer_name]
                points.data = coords
                points.features = features
            else:
                style = {**POINTS_STYLE, "face_color": "transparent"}
                points = self._viewer.add_points(coords, name=layer_name, features=features,
                                                 **kwargs, **style)
            if len(kept):
                points.border_color = "score"
                points.border_colormap = "plasma"
