"""Clicks act at once: the Detect widget refits its threshold as the user clicks."""

import numpy as np
import pytest

from napari_denodet._widgets.clicks import COLOURS, new_clicks_layer, set_kind
from napari_denodet.core.feedback import LABEL, NOT_PARTICLE, PARTICLE
from napari_denodet.core.simulate import simulate_timelapse

pytestmark = pytest.mark.usefixtures("no_worker_left_behind")


@pytest.fixture
def sim():
    return simulate_timelapse("vesicle", snr=3, density="mid", frames=2, shape=(128, 128),
                              seed=77)


def _detected(make_napari_viewer, qtbot, sim):
    viewer = make_napari_viewer()
    viewer.add_image(sim.noisy, name="cells", scale=(1, 0.5, 0.5), translate=(0, 2, 3))
    _, widget = viewer.window.add_plugin_dock_widget("napari-denodet", "Detect particles")
    worker = widget.start(start_thread=False)
    with qtbot.waitSignal(worker.finished, timeout=120000):
        worker.start()
    return viewer, widget


def _kept(viewer):
    points = viewer.layers["cells particles"]
    return points.data, points.features


def test_a_not_a_particle_click_drops_that_detection_at_once(make_napari_viewer, qtbot, sim):
    viewer, widget = _detected(make_napari_viewer, qtbot, sim)
    data, features = _kept(viewer)
    surest = data[int(np.argmax(features["score"]))]
    clicks = new_clicks_layer(viewer, viewer.layers["cells"])
    set_kind(clicks, NOT_PARTICLE)
    clicks.add(surest + [0, 0.2, -0.2])  # a hand is never exact (layer = image pixels)
    assert clicks.features[LABEL].tolist() == [NOT_PARTICLE]
    np.testing.assert_allclose(clicks.border_color[0][:3], [1, 0, 0])  # red
    qtbot.waitUntil(lambda: len(_kept(viewer)[0]) < len(data), timeout=5000)
    remaining = _kept(viewer)[0]
    assert not np.any(np.all(np.isclose(remaining, surest), axis=1))
    assert "false ones dropped" in widget._clicked.value
    # A particle click on a weak candidate keeps it, whatever the threshold.
    candidates = widget._candidates["cells"]
    weakest = candidates.nsmallest(1, "score").iloc[0]
    set_kind(clicks, PARTICLE)
    clicks.add([weakest["frame"], weakest["y"], weakest["x"]])
    qtbot.waitUntil(lambda: "clicked particles kept" in widget._clicked.value, timeout=5000)
    assert "1 of 1 clicked particles kept" in widget._clicked.value
    assert COLOURS[PARTICLE] == "lime"


def test_removing_the_clicks_restores_the_detection(make_napari_viewer, qtbot, sim):
    viewer, widget = _detected(make_napari_viewer, qtbot, sim)
    data, features = _kept(viewer)
    threshold = widget._threshold.value
    clicks = new_clicks_layer(viewer, viewer.layers["cells"])
    set_kind(clicks, NOT_PARTICLE)
    clicks.add(data[int(np.argmax(features["score"]))])
    qtbot.waitUntil(lambda: len(_kept(viewer)[0]) < len(data), timeout=5000)
    clicks.data = np.empty((0, 3))
    qtbot.waitUntil(lambda: len(_kept(viewer)[0]) == len(data), timeout=5000)
    assert widget._threshold.value == pytest.approx(threshold)
    assert not widget._clicked.visible


def test_the_users_threshold_survives_the_next_detection(make_napari_viewer, qtbot, sim):
    viewer, widget = _detected(make_napari_viewer, qtbot, sim)
    assert not widget._keep_mine.value
    widget._threshold.value = 0.93
    assert widget._keep_mine.value
    kept = len(_kept(viewer)[0])
    worker = widget.start(start_thread=False)
    with qtbot.waitSignal(worker.finished, timeout=120000):
        worker.start()
    assert widget._threshold.value == pytest.approx(0.93)
    assert len(_kept(viewer)[0]) == kept
    widget._keep_mine.value = False
    worker = widget.start(start_thread=False)
    with qtbot.waitSignal(worker.finished, timeout=120000):
        worker.start()
    assert widget._threshold.value != pytest.approx(0.93)


def test_clicks_act_on_a_single_image_too(make_napari_viewer, qtbot, sim):
    viewer = make_napari_viewer()
    viewer.add_image(sim.noisy[0], name="cells")
    _, widget = viewer.window.add_plugin_dock_widget("napari-denodet", "Detect particles")
    worker = widget.start(start_thread=False)
    with qtbot.waitSignal(worker.finished, timeout=120000):
        worker.start()
    data, features = _kept(viewer)
    assert data.shape[1] == 2
    clicks = new_clicks_layer(viewer, viewer.layers["cells"])
    assert clicks.ndim == 2
    set_kind(clicks, NOT_PARTICLE)
    clicks.add(data[int(np.argmax(features["score"]))])
    qtbot.waitUntil(lambda: len(_kept(viewer)[0]) == len(data) - 1, timeout=5000)


def test_the_refit_knows_when_the_threshold_was_fitted_to_clicks(make_napari_viewer, qtbot,
                                                                sim, monkeypatch):
    import napari_denodet.core.feedback as feedback

    viewer, widget = _detected(make_napari_viewer, qtbot, sim)
    seen = []
    real = feedback.refit_threshold
    monkeypatch.setattr(feedback, "refit_threshold",
                        lambda *a, **k: seen.append(k["fitted"]) or real(*a, **k))
    clicks = new_clicks_layer(viewer, viewer.layers["cells"])
    clicks.add(_kept(viewer)[0][0])
    qtbot.waitUntil(lambda: len(seen) == 1, timeout=5000)
    assert seen == [False]  # a bundled model's threshold was chosen per image
    # A fine-tuned model's detection (threshold rule "fine-tuned") passes it on.
    candidates, start, gate, _ = widget._detected["cells"]
    widget._detected["cells"] = (candidates, start, gate, True)
    widget.refit("cells")
    assert seen == [False, True]
