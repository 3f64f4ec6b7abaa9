"""The Fine-tune dock widget: teach a model the user's particles from a few clicks.

The user picks an image layer and a clicks layer (a button makes one, in add mode,
over the image; :mod:`napari_denodet._widgets.clicks`), clicks a handful of particle
centres and, with "click as: not a particle", false detections, and presses Start. As
they click, the Detect widget refits its threshold to the clicks at once. The widget copies the
clicks (the user's layers are never modified), runs the core generator
:func:`napari_denodet.core.finetune.finetune` in a thread worker, draws the loss as it
falls, and offers the result to the Detect widget and to a file. Stop ends training
after the current step and keeps the model trained so far; the progress bar's cancel
abandons it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_denodet._widgets import BINNING_TIP, DETECTED_WITH, image_layers, session
from napari_denodet._widgets.clicks import layer_points, new_clicks_layer, set_kind
from napari_denodet.core.feedback import LABELS, PARTICLE, split_clicks

if TYPE_CHECKING:
    import napari

FROM_FILE = "from file..."
AUTO = "as the model advises"
#: The "learn" box: what the user reads, and the core's fine-tuning mode.
MODE_CHOICES = {AUTO: "auto", "weights and threshold": "weights",
                "threshold only (every particle in the clicked area clicked)": "threshold"}
MODE_TIP = ("Weights and threshold: train the network on your clicks, then set its "
            "threshold. Threshold only: keep the network and set its threshold from the "
            "area you clicked (click every particle there); takes seconds. As the model "
            "advises: what its card says was measured better from 10 clicks, else "
            "weights and threshold.")
NONE = "(none)"


@dataclass
class FinetuneJob:
    """Plain settings handed to the worker (never layers or widgets)."""

    model: object  # a bundled name, a path, or a loaded Model
    steps: int
    time_budget: float | None
    binning: int
    pseudo_labels: float = 0.5
    mode: str = "auto"
    polarity: str | None = None  # None: the model's (micrograph models: from the clicks)


def run_finetuning(data, positives: pd.DataFrame, negatives: pd.DataFrame | None,
                   job: FinetuneJob, stop: threading.Event):
    """Load the model and fine-tune (binning included): the generator the worker runs."""
    from napari_denodet.core.finetune import FinetuneSettings
    from napari_denodet.core.models import Model, load_model

    model = job.model if isinstance(job.model, Model) else load_model(job.model)
    settings = FinetuneSettings(steps=job.steps, time_budget=job.time_budget,
                                pseudo_labels=job.pseudo_labels, mode=job.mode,
                                polarity=job.polarity)
    # Only the clicked frames are read.
    return (yield from model.finetune(data, positives, negatives, settings,
                                      binning=job.binning, stop=stop))


#: Longest notification text (characters): napari's notification cuts longer ones off.
NOTIFY_LIMIT = 80
_MORE = " … (see the Fine-tune widget)"


def one_line(text: str, limit: int = NOTIFY_LIMIT) -> str:
    """Return ``text`` on one line, shortened at a word to at most ``limit`` characters.

    A shortened text ends in a pointer to the widget's note, which holds it in full.
    """
    line = " ".join(str(text).split())
    if len(line) <= limit:
        return line
    cut = line[:limit - len(_MORE)]
    if cut.rfind(" ") > len(cut) // 2:  # at a word, unless a long one (a path) ends it
        cut = cut[:cut.rfind(" ")]
    return cut.rstrip(",;:. ") + _MORE


class LossPlot(QWidget):
    """A small line plot of the loss per step (drawn with QPainter; no plotting library)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.values: list[float] = []
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def clear(self) -> None:
        """Forget every value."""
        self.values = []
        self.update()

    def add(self, value: float) -> None:
        """Append a value and redraw."""
        if np.isfinite(value):
            self.values.append(float(value))
            self.update()

    #: Axis labels, and what the empty plot says will appear.
    X_LABEL, Y_LABEL = "step", "loss"
    EMPTY_TEXT = "the training loss per step appears here after Start"

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        """Draw the axes' labels and the values scaled to the plot, the last one as text.

        Before any value, the plot says what will appear in it.
        """
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h = self.width(), self.height()
        left, bottom = 18, 16  # room for the "loss" and "step" labels
        painter.setPen(QPen(Qt.GlobalColor.gray))
        painter.drawRect(left, 0, w - 1 - left, h - 1 - bottom)
        painter.drawText(QRectF(left, h - bottom, w - left, bottom),
                         int(Qt.AlignmentFlag.AlignCenter), self.X_LABEL)
        painter.save()
        painter.translate(0, (h - bottom) / 2)
        painter.rotate(-90)
        painter.drawText(QRectF(-(h - bottom) / 2, 0, h - bottom, left),
                         int(Qt.AlignmentFlag.AlignCenter), self.Y_LABEL)
        painter.restore()
        if not self.values:
            painter.drawText(QRectF(left + 6, 0, w - left - 12, h - bottom),
                             int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap),
                             self.EMPTY_TEXT)
        if len(self.values) >= 2:
            values = np.asarray(self.values)
            # A running median keeps the noisy per-step loss readable.
            k = max(1, len(values) // 50)
            smooth = np.array([np.median(values[max(0, i - k):i + 1])
                               for i in range(len(values))])
            lo, hi = float(smooth.min()), float(smooth.max())
            span = hi - lo or 1.0
            xs = np.linspace(left + 4, w - 4, len(smooth))
            ys = h - bottom - 4 - (smooth - lo) / span * (h - bottom - 20)
            painter.setPen(QPen(Qt.GlobalColor.cyan, 1.5))
            painter.drawPolyline(QPolygonF([QPointF(x, y) for x, y in zip(xs, ys,
                                                                         strict=True)]))
        if self.values:
            painter.setPen(QPen(Qt.GlobalColor.white))
            painter.drawText(left + 6, 14,
                             f"loss {self.values[-1]:.3f}  ({len(self.values)} steps)")
        painter.end()


class FinetuneWidget(Container):
    """Dock widget: fine-tune a model from clicked particle centres."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from napari_denodet.core.models import bundled_models

        self._viewer = viewer
        self._image = ComboBox(label="image", choices=self._image_layers)
        # Never preselected: a detections layer is not the user's clicks.
        self._clicks = ComboBox(label="clicks", value=NONE,
                                choices=lambda _w=None: [NONE, *self._points_layers()],
                                tooltip="Your clicks: particle centres, and false detections "
                                        "clicked as 'not a particle'")
        self._new_clicks = PushButton(text="New clicks layer")
        self._kind = ComboBox(label="click as", choices=list(LABELS), value=PARTICLE,
                              tooltip="What the next click on the clicks layer marks: a "
                                      "particle centre, or a false detection (Detect's "
                                      "threshold follows your clicks at once)")
        self._negatives = ComboBox(label="more false detections",
                                   choices=lambda _w=None: [NONE, *self._points_layers()],
                                   tooltip="Optional: a separate Points layer of false "
                                           "detections")
        self._counts = Label(value="")
        self._model = ComboBox(label="start from",
                               choices=lambda _w=None: [*session.names(), *bundled_models(),
                                                        FROM_FILE])
        self._model_file = FileEdit(label="model file", filter="*.pt", visible=False)
        self._binning = SpinBox(label="binning", min=1, max=16, value=1,
                                tooltip=BINNING_TIP)
        self._steps = SpinBox(label="steps", min=1, max=100_000, value=300)
        self._budget = FloatSpinBox(label="time budget (s, 0 = none)", min=0, max=36_000,
                                    value=60)
        self._keep = CheckBox(text="keep the model's surest detections", value=True,
                              tooltip="Learn the starting model's surest half of detections "
                                      "as particles too, so that it does not forget the ones "
                                      "you did not click. Untick when its detections are "
                                      "mostly wrong.")
        self._polarity = ComboBox(
            label="particles", choices=["auto", "dark", "bright"], value="auto",
            tooltip="auto: as the model was trained (bright spots for fluorescence "
                    "models); for micrograph models read from your clicks")
        self._mode = ComboBox(label="learn", choices=list(MODE_CHOICES), value=AUTO,
                              tooltip=MODE_TIP)
        self._start = PushButton(text="Start")
        self._stop = PushButton(text="Stop", enabled=False)
        self._status = Label(value="")
        self._note = Label(value="", visible=False)
        self._note.native.setWordWrap(True)
        self._save_path = FileEdit(label="save as", mode="w", filter="*.pt")
        self._save = PushButton(text="Save model", enabled=False)
        self._use = PushButton(text="Use for Detect", enabled=False)
        self.plot = LossPlot()
        super().__init__(widgets=[
            self._image, self._clicks, self._new_clicks, self._kind, self._negatives,
            self._counts,
            self._model, self._model_file, self._binning, self._steps, self._budget,
            self._keep, self._polarity, self._mode, self._start, self._stop, self._status,
            self._note, self._save_path,
            self._save, self._use])
        self.native.layout().addWidget(self.plot)
        self.worker = None
        self.result = None
        self._stop_event = threading.Event()
        self._model.changed.connect(
            lambda value: setattr(self._model_file, "visible", value == FROM_FILE))
        # "start from" follows the model that detected on the image until the user
        # chooses one (`_follow_detect`).
        self._model_chosen = self._following = False
        self._model.changed.connect(self._model_changed)
        self._model_file.changed.connect(self._model_changed)
        self._image.changed.connect(self._follow_detect)
        self._new_clicks.clicked.connect(self.new_annotation_layer)
        self._kind.changed.connect(self._set_kind)
        self._start.clicked.connect(self.start)
        self._stop.clicked.connect(self.stop)
        self._save.clicked.connect(self.save)
        self._use.clicked.connect(self.use_for_detect)
        for box in (self._clicks, self._negatives):
            box.changed.connect(self._watch)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._reset_choices)
        self._watched: list = []
        self._watch()

    # ----------------------------------------------------------------- layers

    def _image_layers(self, _widget=None) -> list:
        return image_layers(self._viewer)

    def _points_layers(self, _widget=None) -> list:
        from napari.layers import Points

        return [layer for layer in self._viewer.layers if isinstance(layer, Points)]

    def _reset_choices(self, _event=None) -> None:
        for box in (self._image, self._clicks, self._negatives, self._model):
            box.reset_choices()
        self._watch()

    def _negative_layer(self):
        value = self._negatives.value
        return None if value in (None, NONE) else value

    def _clicks_layer(self):
        value = self._clicks.value
        return None if value in (None, NONE) else value

    def _set_kind(self, kind=None) -> None:
        layer = self._clicks_layer()
        if layer is not None:
            set_kind(layer, kind or self._kind.value)

    def _watch(self, _value=None) -> None:
        # Keep the click counts current as the user adds and deletes points.
        for layer in self._watched:
            layer.events.data.disconnect(self._count)
        self._watched = [layer for layer in (self._clicks_layer(), self._negative_layer())
                         if layer is not None]
        for layer in self._watched:
            layer.events.data.connect(self._count)
        self._count()

    def _count(self, _event=None) -> None:
        from napari_denodet.core.feedback import LABEL, NOT_PARTICLE

        clicks, negatives = self._clicks_layer(), self._negative_layer()
        n_pos = n_neg = 0
        if clicks is not None:
            labels = (clicks.features[LABEL].astype(str) if LABEL in clicks.features
                      else None)
            n_neg = int((labels == NOT_PARTICLE).sum()) if labels is not None else 0
            n_pos = len(clicks.data) - n_neg
        n_neg += len(negatives.data) if negatives is not None else 0
        self._counts.value = f"{n_pos} particles clicked, {n_neg} false detections marked"

    def _tell(self, text: str, show=None) -> None:
        # The full text stays in the widget's note (this run's notes, one per line); the
        # notification gets one short line.
        self._note.value = f"{self._note.value}\n{text}" if self._note.value else text
        self._note.visible = True
        (show or show_info)(one_line(text))

    def _error(self, text: str) -> None:
        self._tell(text, show_error)

    def new_annotation_layer(self, _=None):
        """Add an empty clicks layer over the chosen image, in add mode, and pick it."""
        image = self._image.value
        if image is None:
            self._error("Fine-tune: open or select an image layer first")
            return None
        layer = new_clicks_layer(self._viewer, image)
        self._clicks.value = layer
        self._set_kind()
        return layer

    def _model_changed(self, _=None) -> None:
        if not self._following:
            self._model_chosen = True

    def _follow_detect(self, _=None) -> str | None:
        # Start from the model whose detections the user sees on this image (the one
        # "auto" chose, a session model...), as long as the user has not chosen one.
        image = self._image.value
        if self._model_chosen or image is None:
            return None
        name = f"{image.name} particles"
        used = (self._viewer.layers[name].metadata.get(DETECTED_WITH)
                if name in self._viewer.layers else None)
        if not used or used == self._model.value:
            return None
        self._following = True
        try:
            self._model.reset_choices()
            if used in self._model.choices:
                self._model.value = used
            elif str(used).endswith(".pt") and Path(used).is_file():
                self._model.value = FROM_FILE
                self._model_file.value = used
            else:
                return None
        finally:
            self._following = False
        return used

    # ----------------------------------------------------------------- run

    def _job(self) -> FinetuneJob:
        if self._model.value == FROM_FILE:
            model = str(self._model_file.value)
        else:
            model = session.get(self._model.value) or self._model.value
        budget = float(self._budget.value) or None
        return FinetuneJob(model=model, steps=int(self._steps.value), time_budget=budget,
                           binning=int(self._binning.value),
                           pseudo_labels=0.5 if self._keep.value else 0.0,
                           mode=MODE_CHOICES[self._mode.value],
                           polarity=None if self._polarity.value == "auto"
                           else self._polarity.value)

    def start(self, _=None, start_thread: bool = True):
        """Check the inputs on the GUI thread, copy the clicks, then fine-tune in a worker."""
        image, clicks = self._image.value, self._clicks_layer()
        if image is None or clicks is None:
            self._error("Fine-tune: choose an image layer and a layer of clicked particles")
            return None
        if image.rgb or image.ndim not in (2, 3):
            self._error(f"Fine-tune: layer '{image.name}' must be a 2D image or a 2D+t stack")
            return None
        try:
            positives, negatives = split_clicks(layer_points(clicks, image))
            if self._negative_layer() is not None:
                more = split_clicks(layer_points(self._negative_layer(), image))[0]
                negatives = pd.concat([negatives, more], ignore_index=True)
            negatives = negatives if len(negatives) else None
        except ValueError as exc:
            self._error(f"Fine-tune: {exc}")
            return None
        if len(positives) < 2:
            self._error(f"Fine-tune: click at least 2 particle centres in "
                       f"'{clicks.name}' (it has {len(positives)})")
            return None
        self._stop_event = threading.Event()
        followed = self._follow_detect()
        job = self._job()
        # With a time budget the steps are a ceiling: napari's bar then shows activity.
        total = 0 if job.time_budget else job.steps
        worker = create_worker(run_finetuning, image.data, positives, negatives, job,
                               self._stop_event, _start_thread=False,
                               _progress={"total": total,
                                          "desc": f"Fine-tune: {image.name}"})
        worker.yielded.connect(self._progress)
        worker.returned.connect(self._finished)
        worker.errored.connect(lambda exc: self._error(f"Fine-tune failed: {exc}"))
        worker.aborted.connect(lambda: self._tell("Fine-tuning cancelled; no model kept"))
        worker.finished.connect(self._idle)
        self.plot.clear()
        self._status.value = "starting..."
        self._note.value, self._note.visible = "", False
        if followed:
            self._tell(f"Fine-tune: starting from {followed}, the model that detected on "
                       f"'{image.name}' (choose another under 'start from')")
        self._start.enabled, self._stop.enabled = False, True
        self._image_name = image.name
        self.worker = worker
        if start_thread:
            worker.start()
        return worker

    def stop(self, _=None) -> None:
        """End training after the current step; the model trained so far is kept."""
        self._stop_event.set()
        self._status.value = "stopping after this step..."

    def _progress(self, progress) -> None:
        from napari_denodet.core.progress import Stage

        if progress.stage == Stage.NOTE:
            self._tell(f"'{self._image_name}': {progress.metrics['message']}")
        elif progress.stage == Stage.CALIBRATE:
            self._status.value = progress.metrics["message"]
        elif progress.stage == Stage.ACCEPT:
            self._status.value = "checked on the clicks held out"
        elif progress.stage == Stage.TRAIN:
            self.plot.add(progress.metrics["loss"])
            # Time against the budget: the steps asked for are a ceiling seldom reached.
            self._status.value = (f"{progress.elapsed:.0f} s of {progress.budget:g} s, "
                                  f"step {progress.step}" if progress.budget else
                                  f"step {progress.step}/{progress.total}, "
                                  f"{progress.elapsed:.0f} s")
        else:
            self._status.value = (f"step {progress.step}: held-out clicks found "
                                  f"{progress.metrics['heldout_recall']:.0%}")

    def _finished(self, result) -> None:
        self.result = result
        self._save.enabled = self._use.enabled = True
        done = (f"{result.steps_done} steps" if result.steps_done else "weights kept")
        self._status.value = (f"done: {done} in {result.wall_time:.0f} s, "
                              f"threshold {result.model.threshold:.2f}")
        what = (f"{result.steps_done} steps" if result.steps_done else
                "threshold recalibrated, weights kept")
        if result.message:
            what = result.message
        self._tell(f"Fine-tuned on '{self._image_name}': {what}; use it for Detect or save it")

    def _idle(self) -> None:
        self._start.enabled, self._stop.enabled = True, False

    # ----------------------------------------------------------------- results

    def save(self, _=None):
        """Save the fine-tuned model (weights and card) to the chosen .pt file."""
        from napari_denodet.core.errors import InputError
        from napari_denodet.core.models import save_model

        if self.result is None:
            return None
        path = self._save_path.value
        if not str(path) or path.suffix != ".pt":
            self._error("Fine-tune: choose a file name ending in .pt to save the model")
            return None
        try:
            saved = save_model(path, self.result.model.network, self.result.model.card,
                               name=path.stem)
        except (InputError, OSError) as exc:
            self._error(f"Fine-tune: could not save: {exc}")
            return None
        self._tell(f"Saved {saved} and its model card")
        return saved

    def use_for_detect(self, _=None) -> str | None:
        """Offer the fine-tuned model in the Detect widget (opened if needed)."""
        if self.result is None:
            return None
        name = session.add(self.result.model)
        _, detect = self._viewer.window.add_plugin_dock_widget("napari-denodet",
                                                               "Detect particles")
        binning = self.result.model.binning
        detect.select_model(name, binning=binning)
        self._tell(f"Detect now uses '{name}'" + (f" with binning {binning}" if binning > 1
                                                 else ""))
        return name
