"""The Track dock widget: link a time-lapse's particles into tracks.

The user picks a particles layer of a stack (the Detect widget's ``<name> particles``,
or any Points layer with ``frame, y, x`` points), sets the largest step between frames
(by default estimated from the points: **estimate step**) and the gap a particle may be
missed for, and presses **Track**. Linking
(:func:`napari_denodet.core.tracks.link`, laptrack's LAP linker) runs in a thread worker;
the result is a ``<name> tracks`` Tracks layer (per point: ``track_id`` and its track's
``length``, ``mean_speed`` and means of the particles' features) and a ``track_id``
feature on the particles layer. **shortest track** hides the tracks shorter than N
frames and their particles (short tracks are often noise), without linking again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error

from napari_denodet.core.points import FRAME, X, Y
from napari_denodet.core.tracks import (
    FALLBACK_MAX_DISTANCE,
    TRACK_ID,
    LinkSettings,
    link,
    track_features,
)

if TYPE_CHECKING:
    import napari

SUFFIX = " particles"


def tracks_name(points_name: str) -> str:
    """Return the name of the Tracks layer made from a particles layer."""
    return f"{points_name.removesuffix(SUFFIX)} tracks"


def link_and_summarise(table: pd.DataFrame, settings: LinkSettings
                       ) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Link the points and summarise the tracks: the work the worker does.

    Returns the linked points, the tracks' summary and the largest step used (px).
    """
    settings = settings.for_points(table)
    linked = link(table, settings)
    return linked, track_features(linked), float(settings.max_distance)


class TrackWidget(Container):
    """Dock widget: link particles into tracks, hide the short ones."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self._points = ComboBox(label="particles", choices=self._stack_points,
                                tooltip="A Points layer of a time-lapse (frame, y, x), "
                                        "e.g. Detect's '<image> particles'")
        self._estimate = CheckBox(
            text="estimate step", value=True,
            tooltip="Estimate the largest step from the particles: how much more often a "
                    "particle has a neighbour within a distance in the next frame than by "
                    "chance. Untick to set it yourself.")
        self._distance = FloatSpinBox(
            label="largest step (px)", min=0.1, max=10_000, step=0.5,
            value=FALLBACK_MAX_DISTANCE, enabled=False,
            tooltip="Largest displacement of a particle between linked detections, in the "
                    "layer's pixels (between two frames, or across a gap); shows the "
                    "estimate after Track while 'estimate step' is ticked")
        self._gap = SpinBox(label="gap (frames)", min=0, max=1000,
                            value=LinkSettings.gap_frames,
                            tooltip="Most frames a particle may be missed and still be "
                                    "linked across (0: none)")
        self._shortest = SpinBox(label="shortest track (frames)", min=1, max=100_000, value=1,
                                 tooltip="Hide tracks spanning fewer frames, and their "
                                         "particles: short tracks are often noise")
        self._run = PushButton(text="Track")
        self._summary = Label(label="tracks", value="")
        super().__init__(widgets=[self._points, self._estimate, self._distance, self._gap,
                                  self._run, self._shortest, self._summary])
        self.worker = None
        # Per particles layer: the linked points and their tracks' summary.
        self._linked: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
        self._steps: dict[str, float] = {}  # the largest step each layer was linked with
        self._run.clicked.connect(self.start)
        self._estimate.changed.connect(
            lambda estimate: setattr(self._distance, "enabled", not estimate))
        self._shortest.changed.connect(self._apply_shortest)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._points.reset_choices)

    def _stack_points(self, _widget=None) -> list:
        from napari.layers import Points

        return [layer for layer in self._viewer.layers
                if isinstance(layer, Points) and layer.ndim == 3]

    def start(self, _=None, start_thread: bool = True):
        """Copy the particles on the GUI thread, then link them in a worker."""
        layer = self._points.value
        if layer is None:
            show_error("Track: detect in a time-lapse first, or choose a particles layer "
                       "of frame, y, x points")
            return None
        data = np.array(layer.data, dtype=np.float64, copy=True)
        table = pd.DataFrame({FRAME: np.rint(data[:, 0]).astype(np.int64), Y: data[:, 1],
                              X: data[:, 2]})
        for column in ("score", "intensity"):
            if column in layer.features:
                table[column] = layer.features[column].to_numpy()
        step = None if self._estimate.value else float(self._distance.value)
        settings = LinkSettings(max_distance=step, gap_frames=int(self._gap.value))
        worker = create_worker(link_and_summarise, table, settings, _start_thread=False,
                               _progress={"desc": f"Track: {layer.name}"})
        worker.returned.connect(lambda out, lay=layer: self._show(lay, *out))
        worker.errored.connect(lambda exc: show_error(f"Track '{layer.name}' failed: {exc}"))
        worker.finished.connect(lambda: setattr(self._run, "enabled", True))
        self._run.enabled = False
        self.worker = worker
        if start_thread:
            worker.start()
        return worker

    def _show(self, layer, linked: pd.DataFrame, summary: pd.DataFrame, step: float) -> None:
        # On the GUI thread: the track ids onto the particles, the Tracks layer.
        if layer not in self._viewer.layers or len(layer.data) != len(linked):
            show_error(f"Track: '{layer.name}' changed while linking; press Track again")
            return
        if self._estimate.value:
            self._distance.value = round(step, 2)  # the estimate, shown
        self._steps[layer.name] = step
        features = layer.features.copy()
        features[TRACK_ID] = linked[TRACK_ID].to_numpy()
        layer.features = features
        self._linked[layer.name] = (linked, summary)
        self._apply_shortest(name=layer.name)

    def _apply_shortest(self, _value=None, name: str | None = None) -> None:
        for layer_name in [name] if name else list(self._linked):
            linked, summary = self._linked[layer_name]
            if layer_name not in self._viewer.layers:
                continue
            layer = self._viewer.layers[layer_name]
            long_enough = summary[TRACK_ID][summary["length"] >= self._shortest.value]
            keep = linked[TRACK_ID].isin(long_enough).to_numpy()
            if len(layer.data) == len(keep):
                layer.shown = keep
            self._put_tracks(layer, linked[keep], summary)
            self._summary.value = (f"{int(long_enough.size)} of {len(summary)} tracks, "
                                   f"{int(keep.sum())} of {len(linked)} particles "
                                   f"(largest step {self._steps[layer_name]:g} px)")

    def _put_tracks(self, layer, linked: pd.DataFrame, summary: pd.DataFrame) -> None:
        ordered = linked.sort_values([TRACK_ID, FRAME])
        data = ordered[[TRACK_ID, FRAME, Y, X]].to_numpy(np.float64)
        features = ordered[[TRACK_ID]].merge(summary, on=TRACK_ID, how="left")
        name = tracks_name(layer.name)
        if name in self._viewer.layers:
            tracks = self._viewer.layers[name]
            tracks.data = data if len(data) else np.zeros((0, 4))
            tracks.features = features
            return
        if not len(data):
            return
        self._viewer.add_tracks(data, features=features, name=name, scale=layer.scale,
                                translate=layer.translate, tail_length=10)
