"""The Detect dock widget: one click from an image layer to denoised image and particles.

The widget holds no algorithm. It collects settings, starts a thread worker around the
core generator :func:`napari_denodet.core.predict.detect` (model loading, reading and
binning happen in the worker too), and turns the result into layers on the GUI thread.
All candidates are kept, so the score slider filters the shown particles at once
without running the network again, and the image's clicks layer
(:mod:`napari_denodet._widgets.clicks`) refits the probabilities and the threshold to
the user's clicks as they click (:func:`napari_denodet.core.feedback.refit_threshold`,
debounced by :data:`REFIT_DELAY_MS`). Once the user moves the slider, "keep my
threshold" is ticked and later detections keep it.

A layer that is not an in-memory numpy array (a memory-mapped or Zarr stack opened
lazily), or whose denoised result would exceed :data:`IN_MEMORY_LIMIT`, gets its
denoised frames written to a temporary TIFF as they are computed and shown
memory-mapped, so a stack larger than memory can be processed and browsed.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer

from napari_denodet._reader import POINTS_STYLE
from napari_denodet._widgets import (
    BINNING_TIP,
    DENOISED_FROM,
    DETECTED_WITH,
    image_layers,
    session,
)
from napari_denodet._widgets.clicks import clicks_name, layer_points
from napari_denodet.core.choice import AUTO, AUTO_ALTERNATIVES, AUTO_CANDIDATES, choose_model
from napari_denodet.core.detection import POLARITIES
from napari_denodet.core.metrics import GATE
from napari_denodet.core.normalize import non_finite_note
from napari_denodet.core.points import SCORE, coordinates
from napari_denodet.core.progress import Stage

if TYPE_CHECKING:
    import napari

FROM_FILE = "from file..."
#: Denoised results larger than this (bytes) go to a temporary file instead of memory.
IN_MEMORY_LIMIT = 2**30
#: Quiet time (ms) after the last click before the threshold is refitted.
REFIT_DELAY_MS = 250


@dataclass
class DetectJob:
    """Plain settings handed to the worker (never layers or widgets)."""

    model: object  # a bundled name, a .pt path, or a Model made in this session
    device: str
    frames: tuple[int, int] | None
    binning: int
    polarity: str | None = None  # None: the model's default


def run_detection(data, job: DetectJob):
    """Load the model and detect: the generator the worker runs.

    Yields the core's progress messages and returns ``(detections, model)``
    (:class:`~napari_denodet.core.detection.Detections`, points in the input's
    full-resolution pixels). The denoised frames go to a temporary file, and come back
    memory-mapped, when the input is not in memory or the result is large
    (:func:`keeps_denoised_on_disk`).
    """
    from napari_denodet.core.models import Model, load_model
    from napari_denodet.core.resample import binned_shape

    choice = None
    if isinstance(job.model, Model):
        model = job.model
    elif job.model == AUTO:
        choice = yield from choose_model(data, frames=job.frames, device=job.device)
        model = choice.model
    else:
        model = load_model(job.model)
    shape = binned_shape(tuple(np.shape(data)), job.binning)
    if job.frames is not None:
        shape = (job.frames[1] - job.frames[0], *shape[1:])
    run = partial(model.detect, data, binning=job.binning, device=job.device,
                  frames=job.frames, polarity=job.polarity)
    if keeps_denoised_on_disk(data, shape):
        result = yield from _detect_to_disk(run, shape)
    else:
        result = yield from run()
    if choice is not None and choice.expected_f1:
        # Said when a choice was made (a single image always gets the first candidate).
        result.model_note = choice.note()
    return result, model


def keeps_denoised_on_disk(data, shape: tuple[int, ...]) -> bool:
    """Tell whether the denoised result of ``data`` should live on disk, not in memory.

    Parameters
    ----------
    data : array_like
        The layer's data.
    shape : tuple of int
        Shape of the denoised result.

    Returns
    -------
    bool
        True when ``data`` is not an in-memory numpy array (a memory map, a dask or
        Zarr array: the user opened it lazily) or the float32 result would be larger
        than :data:`IN_MEMORY_LIMIT`.
    """
    return type(data) is not np.ndarray or 4 * int(np.prod(shape)) > IN_MEMORY_LIMIT


def _detect_to_disk(run, shape: tuple[int, ...]):
    # Stream the denoised frames into a temporary TIFF, then map it read-only. The file's
    # name goes at once: on POSIX the mapping keeps the data until the layer drops it.
    from napari_denodet.core.io import open_denoised_output, read_image

    folder = Path(tempfile.mkdtemp(prefix="napari-denodet-"))
    try:
        with open_denoised_output(folder / "denoised.tif", shape) as out:
            result = yield from run(out=out)
        result.denoised = read_image(out.path)
    finally:
        _remove_folder(folder)
    return result


def particle_diameter(model, binning: int) -> float | None:
    """Return the particle diameter (full-resolution px) a micrograph model implies.

    A micrograph model (``scenario == "micrograph"`` or ``invert``) whose card records
    ``particle_size.radius_px = [low, high]`` was trained on particles of radius about
    ``sqrt(low x high)`` in binned pixels (the middle :meth:`Model.bin_for_diameter`
    aims at), so at ``binning`` N they are ``2 x sqrt(low x high) x N`` px across.
    None for other models (fluorescence spots keep the default point size).
    """
    import math

    if not (model.scenario == "micrograph" or model.invert):
        return None
    size = model.card.particle_size
    radii = None if size is None else size.radius_px
    if radii is None:
        return None
    return 2 * math.sqrt(radii[0] * radii[-1]) * max(1, int(binning))


def _remove_folder(folder: Path) -> None:
    try:
        shutil.rmtree(folder)
    except OSError:  # a mapped file cannot be deleted on Windows: at exit, then
        atexit.register(shutil.rmtree, folder, True)


class DetectWidget(Container):
    """Dock widget: choose an image layer and a model, detect, tune the threshold."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from napari_denodet.core.device import available_devices
        from napari_denodet.core.models import bundled_model_purposes, bundled_models

        self._viewer = viewer
        self._image = ComboBox(label="image", choices=self._image_layers)
        self._model = ComboBox(label="model", choices=lambda _w=None: [
            *session.names(), *bundled_models(), AUTO, FROM_FILE], tooltip="\n".join(
            [f"{name}: {purpose}" for name, purpose in bundled_model_purposes().items()]
            + [f"{AUTO}: on a time-lapse, whichever of {', '.join(AUTO_CANDIDATES)} "
               "expects the higher F1 on it (compared on a few frames first); where "
               f"{AUTO_CANDIDATES[0]} wins, {', '.join(AUTO_ALTERNATIVES)} is compared "
               "with it",
               f"{FROM_FILE} a model you trained or fine-tuned (.pt)"]), value=AUTO)
        self._model_file = FileEdit(label="model file", filter="*.pt", visible=False)
        self._device = ComboBox(label="device", choices=["auto", *available_devices()])
        self._first = SpinBox(label="first frame", min=0, max=10**7, value=0)
        self._last = SpinBox(label="last frame (0 = all)", min=0, max=10**7, value=0)
        self._binning = SpinBox(label="binning", min=1, max=16, value=1,
                                tooltip=BINNING_TIP)
        self._polarity = ComboBox(
            label="particles", choices=POLARITIES, value="auto",
            tooltip="auto: as the model was trained (bright spots for fluorescence "
                    "models), and for micrograph models chosen per image; dark or "
                    "bright to say which your particles are")
        self._threshold = FloatSlider(
            label="score threshold", min=0.0, max=1.0, step=0.001, value=0.5,
            tooltip="Scores are the probability that a detection is a particle. Detect "
                    "sets the threshold that maximises the expected F1 on the image; "
                    "move it to keep more or fewer particles.")
        self._found = Label(label="found", value="")
        self._keep_mine = CheckBox(
            text="keep my threshold", value=False,
            tooltip="Ticked when you move the slider: later detections keep your threshold "
                    "instead of choosing one per image. Clicks refit it and untick it.")
        self._clicked = Label(label="clicks", value="", visible=False)
        self._run = PushButton(text="Detect")
        self._cancel = PushButton(text="Cancel", enabled=False,
                                  tooltip="Stop the running detection; no layer is added")
        self._bar = ProgressBar(label="progress", min=0, max=1, value=0,
                                tooltip="Forward passes of the network done, out of all; "
                                        "the decoy pass (the same frames, contrast "
                                        "flipped) follows the detection pass")
        super().__init__(widgets=[self._image, self._model, self._model_file, self._device,
                                  self._first, self._last, self._binning, self._polarity,
                                  self._run, self._cancel, self._bar,
                                  self._threshold, self._keep_mine, self._found,
                                  self._clicked])
        self._candidates: dict[str, pd.DataFrame] = {}
        # Per image: its candidates, the threshold chosen, the click gate, and whether
        # that threshold was fitted to clicks (a fine-tuned model's).
        self._detected: dict[str, tuple[pd.DataFrame, float, float, bool]] = {}
        self._exact: float | None = None  # the threshold set, beyond the slider's precision
        self._watched_clicks: dict[str, object] = {}
        self._pending: set[str] = set()
        self._refit_timer = QTimer()
        self._refit_timer.setSingleShot(True)
        self._refit_timer.setInterval(REFIT_DELAY_MS)
        self._refit_timer.timeout.connect(self._refit_pending)
        self._diameters: dict[str, float | None] = {}
        self.worker = None
        self._model.changed.connect(
            lambda value: setattr(self._model_file, "visible", value == FROM_FILE))
        self._run.clicked.connect(self.start)
        self._cancel.clicked.connect(self.cancel)
        self._threshold.changed.connect(self._slider_moved)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._image.reset_choices)
            event.connect(self._watch_clicks)

    def select_model(self, name: str, binning: int | None = None) -> None:
        """Offer the models made in this session again and choose ``name`` (and binning)."""
        self._model.reset_choices()
        self._model.value = name
        if binning is not None:
            self._binning.value = binning

    def _image_layers(self, _widget=None) -> list:
        return image_layers(self._viewer)

    def _job(self, layer) -> DetectJob:
        model = str(self._model_file.value) if self._model.value == FROM_FILE \
            else session.get(self._model.value) or self._model.value
        frames = None
        if layer.ndim == 3 and (self._first.value or self._last.value):
            last = self._last.value or layer.data.shape[0]
            frames = (self._first.value, last)
        # "auto" here is the model's own default (None): chosen per image for micrograph
        # models, bright spots for fluorescence models.
        polarity = None if self._polarity.value == "auto" else self._polarity.value
        return DetectJob(model=model, device=self._device.value, frames=frames,
                         binning=self._binning.value, polarity=polarity)

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
        # A multiscale (pyramid) layer is detected at full resolution, its first level.
        data = layer.data[0] if layer.multiscale else layer.data
        worker = create_worker(run_detection, data, job, _start_thread=False,
                               _progress={"desc": f"DENODET: {layer.name}"})
        worker.returned.connect(lambda out, lay=layer: self._show(lay, *out))
        worker.errored.connect(
            lambda exc, name=layer.name: show_error(f"Detect '{name}' failed: {exc}"))
        worker.aborted.connect(lambda: show_info("Detect cancelled"))
        worker.yielded.connect(self._progressed)
        worker.finished.connect(self._finished)
        self._run.enabled = False
        self._cancel.enabled = True
        self._passes, self._last_step = 0, None
        self._bar.label = "progress"
        self._bar.max, self._bar.value = 1, 0
        self.worker = worker
        if start_thread:
            worker.start()
        return worker

    def cancel(self, _=None) -> None:
        """Ask the running detection to stop (after the current forward pass)."""
        if self.worker is not None:
            self._cancel.enabled = False
            self._bar.label = "cancelling"
            self.worker.quit()

    def _progressed(self, progress) -> None:
        # A run has a detection pass, then (unless the model is fine-tuned) a decoy pass;
        # each counts its forward passes from 1. With the model "auto", the candidate
        # models' passes on a few frames come first.
        step, total = getattr(progress, "step", None), getattr(progress, "total", None)
        if step is None or not total:
            return
        if getattr(progress, "stage", None) == Stage.CHOOSE:
            self._last_step = None
            self._bar.label = "choosing a model"
            self._bar.max, self._bar.value = total, min(step, total)
            return
        if self._last_step is None or step <= self._last_step or total != self._bar.max:
            self._passes += 1
        self._last_step = step
        self._bar.label = f"pass {self._passes}"
        self._bar.max = total
        self._bar.value = min(step, total)

    def _finished(self) -> None:
        self._run.enabled = True
        self._cancel.enabled = False
        self._bar.label = "progress"

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
        denoised_name = f"{name} denoised"
        new = denoised_name not in self._viewer.layers
        denoised = self._put(denoised_name, result.denoised, "image",
                             {"scale": scale, "translate": translate, "colormap": "gray"})
        denoised.metadata[DENOISED_FROM] = name
        if new and layer in self._viewer.layers:
            # Below the raw image, visible: the raw image stays in view as before; hide
            # it (its eye) to see the denoised one. A layer the user moved stays put.
            self._viewer.layers.move(self._viewer.layers.index(denoised),
                                     self._viewer.layers.index(layer))
        self._candidates[name] = result.candidates
        self._diameters[name] = particle_diameter(model, result.binning)
        diameter = self._diameters[name]
        gate = diameter / 2 if diameter else GATE * max(1, result.binning)
        self._detected[name] = (result.candidates, result.threshold, gate,
                                result.threshold_rule == "fine-tuned")
        if not self._keep_mine.value:
            self._set_threshold(result.threshold)
        self._apply_threshold(name=name)
        if f"{name} particles" in self._viewer.layers:
            # Which model detected: Fine-tune starts from it unless told otherwise.
            self._viewer.layers[f"{name} particles"].metadata[DETECTED_WITH] = (
                session.name_of(model) or model.source)
        self._watch_clicks()
        if name in self._watched_clicks:
            self.refit(name)
        for note in (result.model_note, result.warning(),
                     None if result.choice.supported else result.summary(),
                     non_finite_note(result.non_finite) if result.non_finite else None,
                     _micrograph_hint(layer, result, self._model.value)):
            if note:
                show_info(f"Detect '{name}': {note}")

    def _put(self, name: str, data, kind: str, kwargs: dict):
        if name in self._viewer.layers:
            existing = self._viewer.layers[name]
            existing.data = data
            for key, value in kwargs.items():
                if key not in ("colormap",):
                    setattr(existing, key, value)
            return existing
        return getattr(self._viewer, f"add_{kind}")(data, name=name, **kwargs)

    def _set_threshold(self, value: float) -> None:
        # Quietly: the slider's handler would redraw every image's particles and tick
        # "keep my threshold".
        self._exact = float(value)
        with self._threshold.changed.blocked():
            self._threshold.value = value

    def _slider_moved(self, _value=None) -> None:
        self._exact = None
        self._keep_mine.value = True
        self._apply_threshold()

    def _current_threshold(self) -> float:
        value = float(self._threshold.value)
        if self._exact is not None and abs(value - self._exact) < 1e-4:
            return self._exact  # the slider rounds; the candidates at it stay kept
        return value

    # ------------------------------------------------------------- clicks

    def _watch_clicks(self, _event=None) -> None:
        # Follow the clicks layer of every detected image (made or removed at any time).
        from napari.layers import Points

        for name in list(self._watched_clicks):
            layer = self._watched_clicks[name]
            if layer not in self._viewer.layers:
                del self._watched_clicks[name]
        for name in self._detected:
            layer_name = clicks_name(name)
            if name in self._watched_clicks or layer_name not in self._viewer.layers:
                continue
            layer = self._viewer.layers[layer_name]
            if isinstance(layer, Points):
                layer.events.data.connect(partial(self._clicks_changed, name))
                layer.events.features.connect(partial(self._clicks_changed, name))
                self._watched_clicks[name] = layer

    def _clicks_changed(self, name: str, _event=None) -> None:
        self._pending.add(name)
        self._refit_timer.start()

    def _refit_pending(self) -> None:
        pending, self._pending = self._pending, set()
        for name in pending:
            self.refit(name)

    def refit(self, name: str):
        """Refit the probabilities and threshold of image ``name`` to its clicks layer.

        Runs on the GUI thread in milliseconds (no network). Returns the
        :class:`~napari_denodet.core.feedback.Refit`, or None.
        """
        from napari_denodet.core.feedback import refit_threshold, split_clicks

        clicks = self._watched_clicks.get(name)
        image = next((layer for layer in self._viewer.layers if layer.name == name), None)
        if clicks is None or image is None or name not in self._detected:
            return None
        detected, start, gate, fitted = self._detected[name]
        try:
            particles, false = split_clicks(layer_points(clicks, image))
        except ValueError as exc:
            show_error(f"Detect '{name}': {exc}")
            return None
        result = refit_threshold(detected, particles, false, start=start, gate=gate,
                                 shape=tuple(image.data.shape[-2:]), fitted=fitted)
        self._candidates[name] = detected.assign(**{SCORE: result.scores})
        self._keep_mine.value = False
        self._set_threshold(result.threshold)
        self._apply_threshold(name=name)
        self._clicked.value = result.summary() if len(particles) + len(false) else ""
        self._clicked.visible = bool(self._clicked.value)
        return result

    def _apply_threshold(self, _value=None, name: str | None = None) -> None:
        threshold = self._current_threshold()
        names = [name] if name else list(self._candidates)
        for image_name in names:
            table = self._candidates.get(image_name)
            if table is None or image_name not in self._viewer.layers:
                continue
            image = self._viewer.layers[image_name]
            kept = table[table[SCORE] >= threshold].reset_index(drop=True)
            features = kept.drop(columns=["y", "x"])
            coords = coordinates(kept)
            kwargs = {"scale": image.scale[-coords.shape[1]:],
                      "translate": image.translate[-coords.shape[1]:]}
            layer_name = f"{image_name} particles"
            diameter = self._diameters.get(image_name)
            size = POINTS_STYLE["size"] if diameter is None else diameter
            if layer_name in self._viewer.layers:
                points = self._viewer.layers[layer_name]
                points.data = coords
                points.features = features
                points.size = size
            else:
                style = {**POINTS_STYLE, "face_color": "transparent", "size": size}
                points = self._viewer.add_points(coords, name=layer_name, features=features,
                                                 **kwargs, **style)
            points.current_size = size
            # A BOX file's box edge (the writer reads it): the particle diameter.
            if diameter is None:
                points.metadata.pop("box_size", None)
            else:
                points.metadata["box_size"] = max(1, round(diameter))
            if len(kept):
                points.border_color = "score"
                points.border_colormap = "plasma"
            self._found.value = _found_text(table, threshold)


def _micrograph_hint(layer, result, model_entry) -> str | None:
    # A single image opened from an MRC file and detected under "auto" (that is, with
    # the fluorescence model): most likely a cryo-EM micrograph.
    from napari_denodet.core.choice import looks_like_micrograph

    source = getattr(getattr(layer, "source", None), "path", None)
    if model_entry != AUTO or not looks_like_micrograph(source, result.denoised.ndim):
        return None
    return ("detected with the fluorescence model; for a cryo-EM micrograph choose the "
            "micrograph model and a binning (particle diameter in pixels / 17)")


#: Above this many kept detections the label skips the recurrence (the slider stays quick).
RECURRENCE_LIMIT = 200_000


def _found_text(candidates: pd.DataFrame, threshold: float) -> str:
    # What the slider keeps, what the probabilities expect of it and, on a time-lapse,
    # how many of the kept detections are found again in the next frame.
    from napari_denodet.core.calibration import expected_scores
    from napari_denodet.core.detection import recurrence

    expected = expected_scores(candidates[SCORE].to_numpy(), threshold)
    text = (f"{expected.kept} particles; expected precision "
            f"{expected.expected_precision:.0%}, recall {expected.expected_recall:.0%}")
    if "frame" in candidates and expected.kept <= RECURRENCE_LIMIT:
        again = recurrence(candidates[candidates[SCORE] >= threshold])
        if again is not None:
            text += f"; {again:.0%} found again in the next frame"
    return text
