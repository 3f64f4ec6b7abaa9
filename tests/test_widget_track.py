"""The Track widget in a real viewer (Xvfb): particles in, a Tracks layer out."""

import numpy as np
import pandas as pd
import pytest

from napari_denodet.core.simulate import simulate_timelapse

pytestmark = pytest.mark.usefixtures("no_worker_left_behind")


@pytest.fixture
def sim():
    return simulate_timelapse("vesicle", snr=4, density="low", frames=12, shape=(96, 96),
                              seed=5)


def _tracked(make_napari_viewer, qtbot, points):
    viewer = make_napari_viewer()
    layer = viewer.add_points(points, name="cells particles", scale=(1, 0.5, 0.5),
                              features={"score": np.linspace(0.5, 1, len(points))})
    _, widget = viewer.window.add_plugin_dock_widget("napari-denodet", "Track particles")
    assert widget._points.value is layer
    worker = widget.start(start_thread=False)
    with qtbot.waitSignal(worker.finished, timeout=60000):
        worker.start()
    return viewer, widget, layer


def test_track_adds_a_tracks_layer_and_track_ids(make_napari_viewer, qtbot, sim):
    truth = sim.truth
    viewer, widget, layer = _tracked(make_napari_viewer, qtbot,
                                     truth[["frame", "y", "x"]].to_numpy())
    tracks = viewer.layers["cells tracks"]
    assert "track_id" in layer.features
    assert layer.features["track_id"].nunique() == len(np.unique(tracks.data[:, 0]))
    np.testing.assert_array_equal(tracks.scale, (1, 0.5, 0.5))
    assert {"length", "mean_speed", "mean_score"} <= set(tracks.features.columns)
    # Each linked track is one simulated particle.
    joined = layer.features.assign(true=truth["track_id"].to_numpy())
    assert joined.groupby("track_id")["true"].nunique().max() == 1


def test_shortest_track_hides_short_tracks_and_their_particles(make_napari_viewer, qtbot):
    # One particle seen in 6 frames, one seen once.
    points = np.array([[f, 20.0 + f, 30.0] for f in range(6)] + [[2, 70.0, 70.0]])
    viewer, widget, layer = _tracked(make_napari_viewer, qtbot, points)
    assert layer.shown.all() and "2 of 2 tracks" in widget._summary.value
    widget._shortest.value = 3
    assert layer.shown.tolist() == [True] * 6 + [False]
    assert len(viewer.layers["cells tracks"].data) == 6
    assert "1 of 2 tracks, 6 of 7 particles" in widget._summary.value


def test_the_largest_step_is_estimated_unless_the_user_sets_it(make_napari_viewer, qtbot):
    from napari_denodet.core.tracks import estimate_max_distance

    # Five particles 40 px apart, each moving 8 px a frame: farther than the fallback 5 px.
    points = np.array([[f, 20.0 + 8 * f, 30.0 + 40 * i] for i in range(5) for f in range(8)])
    viewer, widget, layer = _tracked(make_napari_viewer, qtbot, points)
    step = estimate_max_distance(pd.DataFrame(points, columns=["frame", "y", "x"]))
    assert step > 8 and not widget._distance.enabled
    assert widget._distance.value == pytest.approx(step, abs=0.01)
    assert layer.features["track_id"].nunique() == 5
    assert f"(largest step {step:g} px)" in widget._summary.value
    # Unticked, the step typed in is used: 5 px cuts the tracks into single points.
    widget._estimate.value = False
    assert widget._distance.enabled
    widget._distance.value = 5.0
    worker = widget.start(start_thread=False)
    with qtbot.waitSignal(worker.finished, timeout=60000):
        worker.start()
    assert layer.features["track_id"].nunique() == len(points)
    assert "(largest step 5 px)" in widget._summary.value
