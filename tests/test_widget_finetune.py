"""The Fine-tune widget in a real viewer (Xvfb): clicks in, a usable model out."""

import numpy as np
import pytest

from helpers import scattered
from napari_denodet._widgets import finetune as finetune_module
from napari_denodet.core.models import load_model
from napari_denodet.core.simulate import simulate_timelapse

pytestmark = pytest.mark.usefixtures("no_worker_left_behind")


@pytest.fixture
def sim():
    return simulate_timelapse("vesicle", snr=5, density=400, frames=2, shape=(96, 96),
                              seed=11)


def _widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-denodet", "Fine-tune")
    return widget


def _clicked(viewer, widget, sim, n=6):
    viewer.add_image(sim.noisy, name="cells", scale=(1, 0.5, 0.5), translate=(0, 2, 3))
    layer = widget.new_annotation_layer()
    truth = sim.truth[sim.truth.frame == 0].iloc[:n]
    for row in truth.itertuples():
        layer.add([row.frame, row.y, row.x])  # in the layer's own (= image) pixels
    return layer


def _run(qtbot, widget, steps=3):
    widget._steps.value = steps
    worker = widget.start(start_thread=False)
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=120000):
        worker.start()
    return worker


def test_annotation_layer_is_made_over_the_image_in_add_mode(make_napari_viewer, sim):
    viewer = make_napari_viewer()
    widget = _widget(viewer)
    layer = _clicked(viewer, widget, sim, n=3)
    assert layer.mode == "add" and layer.name == "cells clicks"
    np.testing.assert_array_equal(layer.scale, (1, 0.5, 0.5))
    assert widget._clicks.value.name == layer.name
    assert widget._counts.value.startswith("3 particles clicked")


def test_fine_tune_then_save_and_detect(make_napari_viewer, qtbot, sim, tmp_path):
    viewer = make_napari_viewer()
    widget = _widget(viewer)
    layer = _clicked(viewer, widget, sim)
    clicks_before = layer.data.copy()
    widget._binning.value = 2  # the clicks are binned with the image
    _run(qtbot, widget)
    assert widget.result is not None and widget.result.steps_done == 3
    assert len(widget.plot.values) == 3
    np.testing.assert_array_equal(layer.data, clicks_before)  # the user's clicks untouched
    assert "cells clicks" in viewer.layers

    widget._save_path.value = tmp_path / "mine.pt"
    saved = widget.save()
    assert saved == tmp_path / "mine.pt"
    card = load_model(saved).card
    assert card["parent"]["name"] == "fluorescence" and card["training"]["binning"] == 2
    assert card["training"]["settings"]["pseudo_labels"] == 0.5  # the box is ticked
    widget._keep.value = False
    assert widget._job().pseudo_labels == 0.0
    assert widget._job().mode == "auto"
    widget._mode.value = next(k for k, v in finetune_module.MODE_CHOICES.items()
                              if v == "threshold")
    assert widget._job().mode == "threshold"

    name = widget.use_for_detect()
    _, detect = viewer.window.add_plugin_dock_widget("napari-denodet", "Detect particles")
    assert detect._model.value == name and detect._binning.value == 2
    worker = detect.start(start_thread=False)
    with qtbot.waitSignal(worker.finished, timeout=120000):
        worker.start()
    assert "cells particles" in viewer.layers


def test_threshold_only_keeps_the_weights_and_reports_the_threshold(make_napari_viewer,
                                                                    qtbot, sim):
    viewer = make_napari_viewer()
    widget = _widget(viewer)
    _clicked(viewer, widget, sim)
    widget._mode.value = next(k for k, v in finetune_module.MODE_CHOICES.items()
                              if v == "threshold")
    _run(qtbot, widget)
    assert widget.result is not None and widget.result.steps_done == 0
    assert widget.plot.values == []  # no training, no loss
    assert widget._status.value.startswith("done: weights kept")
    assert widget.result.model.card["training"]["mode"] == "threshold"


def test_stop_keeps_the_model_trained_so_far(make_napari_viewer, qtbot, sim):
    viewer = make_napari_viewer()
    widget = _widget(viewer)
    layer = _clicked(viewer, widget, sim)
    before = layer.data.copy()
    widget._steps.value = 100_000
    worker = widget.start(start_thread=False)
    worker.yielded.connect(lambda progress: widget.stop())
    with qtbot.waitSignal(worker.finished, timeout=120000):
        worker.start()
    assert widget.result is not None and widget.result.steps_done < 10
    np.testing.assert_array_equal(layer.data, before)
    assert widget._start.enabled and not widget._stop.enabled


def test_too_few_clicks_is_a_notification(make_napari_viewer, sim, monkeypatch):
    shown = []
    monkeypatch.setattr(finetune_module, "show_error", shown.append)
    viewer = make_napari_viewer()
    widget = _widget(viewer)
    _clicked(viewer, widget, sim, n=1)
    assert widget.start(start_thread=False) is None
    assert "click at least 2 particle centres" in shown[-1]


def test_a_failed_run_leaves_the_clicks_alone(make_napari_viewer, qtbot, sim, monkeypatch):
    shown = []
    monkeypatch.setattr(finetune_module, "show_error", shown.append)
    viewer = make_napari_viewer()
    widget = _widget(viewer)
    layer = _clicked(viewer, widget, sim)
    before = layer.data.copy()
    widget._model.value = finetune_module.FROM_FILE
    widget._model_file.value = "/nonexistent/model.pt"
    worker = widget.start(start_thread=False)
    with qtbot.capture_exceptions(), qtbot.waitSignal(worker.finished, timeout=60000):
        worker.start()
    assert shown and "Fine-tune failed" in shown[-1] and "no such model file" in shown[-1]
    np.testing.assert_array_equal(layer.data, before)
    assert widget.result is None


def test_scattered_clicks_are_not_taken_as_a_complete_area(make_napari_viewer, qtbot,
                                                           monkeypatch):
    shown = []
    monkeypatch.setattr(finetune_module, "show_info", shown.append)
    sim = simulate_timelapse("vesicle", snr=5, density=2000, frames=1, shape=(128, 128),
                             seed=12)
    viewer = make_napari_viewer()
    widget = _widget(viewer)
    viewer.add_image(sim.noisy[0], name="cells")
    layer = widget.new_annotation_layer()
    for row in scattered(sim.truth, 8).itertuples():
        layer.add([row.y, row.x])  # here and there over the whole image
    widget._mode.value = next(k for k, v in finetune_module.MODE_CHOICES.items()
                              if v == "threshold")
    _run(qtbot, widget)
    # The note is long: the widget keeps it in full, the notification gets one short line.
    assert "does not look completely clicked" in widget._note.value
    assert not widget._note.native.isHidden()
    assert shown and all(len(m) <= finetune_module.NOTIFY_LIMIT and "\n" not in m
                         for m in shown), shown
    assert widget.result.model.card["training"]["unclicked_in_area"] > 2


def test_long_notifications_become_one_short_line_and_the_widget_keeps_the_full_text(
        make_napari_viewer, monkeypatch):
    shown = []
    monkeypatch.setattr(finetune_module, "show_error", shown.append)
    widget = _widget(make_napari_viewer())
    long = ("Fine-tune failed: /a/very/long/path/to/some/folder/of/models/mine.pt: bad "
            "model card: localisation.radius must be between 1 and 10, got 12\nsecond line")
    widget._error(long)
    assert len(shown[-1]) <= finetune_module.NOTIFY_LIMIT and "\n" not in shown[-1]
    assert shown[-1].startswith("Fine-tune failed:")
    assert shown[-1].endswith("(see the Fine-tune widget)")
    assert widget._note.value == long and not widget._note.native.isHidden()
    widget._error("Fine-tune: short")
    assert shown[-1] == "Fine-tune: short"
    assert widget._note.value == f"{long}\nFine-tune: short"  # the run's notes, in order


def test_the_empty_loss_plot_has_labelled_axes_and_says_what_will_appear(
        make_napari_viewer):
    from qtpy.QtGui import QColor

    widget = _widget(make_napari_viewer())
    plot = widget.plot
    assert (plot.X_LABEL, plot.Y_LABEL) == ("step", "loss")
    assert "loss" in plot.EMPTY_TEXT and "Start" in plot.EMPTY_TEXT
    plot.resize(300, 120)
    image = plot.grab().toImage()
    background = image.pixelColor(plot.width() // 2, 2).rgb()

    def drawn(x0, x1, y0, y1):
        return sum(image.pixelColor(x, y).rgb() != background
                   for x in range(x0, x1) for y in range(y0, y1))

    assert isinstance(image.pixelColor(0, 0), QColor)
    # text in the middle of the empty plot, under it ("step") and left of it ("loss")
    assert drawn(40, 260, 30, 80) > 20
    assert drawn(120, 180, 106, 119) > 5
    assert drawn(1, 16, 30, 80) > 5


def test_clicks_are_never_preselected_and_false_clicks_are_negatives(make_napari_viewer, sim,
                                                                     monkeypatch):
    from unittest.mock import MagicMock

    from napari_denodet.core.feedback import LABEL, NOT_PARTICLE

    shown, started = [], []
    monkeypatch.setattr(finetune_module, "show_error", shown.append)
    monkeypatch.setattr(finetune_module, "create_worker",
                        lambda *args, **kwargs: started.append(args) or MagicMock())
    viewer = make_napari_viewer()
    viewer.add_image(sim.noisy, name="cells")
    viewer.add_points(np.zeros((50, 3)), name="cells particles")  # Detect's output
    widget = _widget(viewer)
    assert widget._clicks.value == finetune_module.NONE
    assert widget.start(start_thread=False) is None and "clicked particles" in shown[-1]
    layer = widget.new_annotation_layer()
    for row in sim.truth[sim.truth.frame == 0].iloc[:3].itertuples():
        layer.add([row.frame, row.y, row.x])
    widget._kind.value = NOT_PARTICLE
    layer.add([0, 5.0, 7.0])
    assert layer.features[LABEL].tolist()[-1] == NOT_PARTICLE
    assert widget._counts.value == "3 particles clicked, 1 false detections marked"
    assert widget.start(start_thread=False) is not None
    _, _, positives, negatives, *_ = started[-1]
    assert len(positives) == 3 and LABEL not in positives.columns
    assert negatives[["frame", "y", "x"]].values.tolist() == [[0, 5.0, 7.0]]


def test_the_particles_polarity_reaches_the_run(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = _widget(viewer)
    assert widget._job().polarity is None
    widget._polarity.value = "bright"
    assert widget._job().polarity == "bright"


def test_start_from_follows_the_model_that_detected_until_the_user_chooses(
        make_napari_viewer, qtbot, monkeypatch):
    from napari_denodet._widgets import DETECTED_WITH
    from napari_denodet._widgets import detect as detect_module

    told = []
    monkeypatch.setattr(finetune_module, "show_info", told.append)
    monkeypatch.setattr(detect_module, "show_info", lambda _: None)
    dim = simulate_timelapse("vesicle", snr=1.2, density="mid", frames=12, shape=(128, 128),
                             seed=3)
    viewer = make_napari_viewer()
    viewer.add_image(dim.noisy, name="dim")
    _, detect = viewer.window.add_plugin_dock_widget("napari-denodet", "Detect particles")
    worker = detect.start(start_thread=False)  # the default model, auto
    with qtbot.waitSignal(worker.finished, timeout=120000):
        worker.start()
    assert viewer.layers["dim particles"].metadata[DETECTED_WITH] == "timelapse"
    widget = _widget(viewer)
    assert widget._model.value == "fluorescence"  # nothing followed before Start
    assert widget._image.value.name == "dim"  # the raw image, not its denoised layer
    layer = widget.new_annotation_layer()
    for row in dim.truth[dim.truth.frame == 5].iloc[:6].itertuples():
        layer.add([row.frame, row.y, row.x])
    _run(qtbot, widget, steps=1)
    # Fine-tuning started from the model whose detections the user saw, and said so.
    assert widget._model.value == "timelapse"
    assert widget.result.model.card["parent"]["name"] == "timelapse"
    assert "starting from timelapse, the model that detected on 'dim'" in widget._note.value
    assert any("starting from timelapse" in t for t in told)
    # A model the user chose stays chosen.
    widget._model.value = "fluorescence"
    assert widget._follow_detect() is None and widget._model.value == "fluorescence"
