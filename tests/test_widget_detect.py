"""The Detect widget in a real viewer (Xvfb), with the bundled model."""

import numpy as np
import pytest

from napari_denodet._widgets import detect as detect_module
from napari_denodet.core.metrics import score_detections
from napari_denodet.core.points import table_from_coordinates
from napari_denodet.core.simulate import simulate_timelapse

pytestmark = pytest.mark.usefixtures("no_worker_left_behind")


@pytest.fixture
def sim():
    return simulate_timelapse("vesicle", snr=7, density="low", frames=4, shape=(128, 128),
                              seed=4_300_000_000)


def _widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-denodet", "Detect particles")
    return widget


def _run(qtbot, widget):
    worker = widget.start(start_thread=False)
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=120000):
        worker.start()
    return worker


def test_detect_adds_denoised_and_particles_that_match_the_truth(make_napari_viewer, qtbot,
                                                                  sim):
    viewer = make_napari_viewer()
    viewer.add_image(sim.noisy, name="cells", scale=(1, 0.5, 0.5), translate=(0, 3, 4))
    widget = _widget(viewer)
    _run(qtbot, widget)
    denoised = viewer.layers["cells denoised"]
    points = viewer.layers["cells particles"]
    assert denoised.data.shape == sim.noisy.shape
    np.testing.assert_array_equal(denoised.scale, (1, 0.5, 0.5))
    np.testing.assert_array_equal(points.translate, (0, 3, 4))
    assert points.data.shape[1] == 3
    assert {"frame", "score", "intensity"} <= set(points.features.columns)
    found = table_from_coordinates(points.data, points.features)
    assert score_detections(found, sim.truth).f1 > 0.9


def test_threshold_filters_without_running_the_network_again(make_napari_viewer, qtbot, sim,
                                                             monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(sim.noisy, name="cells")
    widget = _widget(viewer)
    _run(qtbot, widget)
    calls = []
    monkeypatch.setattr(detect_module, "run_detection",
                        lambda *a, **k: calls.append(a))
    points = viewer.layers["cells particles"]
    before = len(points.data)
    # Scores are probabilities: the unlikely candidates sit at 0 and come back at 0.
    assert widget._found.value.startswith(f"{before} particles; expected precision")
    widget._threshold.value = 0.0
    assert len(points.data) > before
    assert widget._found.value.startswith(f"{len(points.data)} particles")
    widget._threshold.value = 0.95
    candidates = widget._candidates["cells"]
    assert len(points.data) == (candidates.score >= 0.95).sum() <= before
    assert calls == []
    assert points.features["score"].min() >= 0.95 if len(points.data) else True


def test_running_again_replaces_the_results(make_napari_viewer, qtbot, sim):
    viewer = make_napari_viewer()
    viewer.add_image(sim.noisy, name="cells")
    widget = _widget(viewer)
    _run(qtbot, widget)
    _run(qtbot, widget)
    names = [layer.name for layer in viewer.layers]
    assert names.count("cells particles") == 1 and names.count("cells denoised") == 1


def _long_run(make_napari_viewer):
    # A viewer with a stack long enough to cancel mid-run, and the widget on the CPU.
    long = simulate_timelapse("vesicle", snr=4, density="low", frames=40, shape=(256, 256),
                              seed=1).noisy
    viewer = make_napari_viewer()
    viewer.add_image(long, name="long")
    widget = _widget(viewer)
    widget._device.value = "cpu"
    widget._model.value = "fluorescence"  # the engine's passes from the first progress
    return viewer, widget


def test_cancel_stops_promptly_and_leaves_the_viewer_usable(make_napari_viewer, qtbot):
    viewer, widget = _long_run(make_napari_viewer)
    worker = widget.start(start_thread=False)
    steps = []

    def stop(progress):
        steps.append(progress.step)
        worker.quit()

    worker.yielded.connect(stop)
    with qtbot.waitSignal(worker.finished, timeout=60000):
        worker.start()
    assert steps and max(steps) < 4  # stopped after the first batch or so, not 40 frames
    assert "long particles" not in viewer.layers
    assert widget._run.enabled
    viewer.add_points(np.zeros((1, 3)))  # still usable


def test_bad_layers_become_notifications(make_napari_viewer, monkeypatch):
    shown = []
    monkeypatch.setattr(detect_module, "show_error", shown.append)
    viewer = make_napari_viewer()
    widget = _widget(viewer)
    assert widget.start(start_thread=False) is None
    viewer.add_image(np.zeros((16, 16, 3), np.uint8), name="photo", rgb=True)
    widget._image.reset_choices()
    assert widget.start(start_thread=False) is None
    assert "open or select an image layer" in shown[0]
    assert "RGB" in shown[1]


def test_a_failing_run_is_reported_not_raised(make_napari_viewer, qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr(detect_module, "show_error", shown.append)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    widget = _widget(viewer)
    widget._model.value = detect_module.FROM_FILE
    widget._model_file.value = "/nonexistent/model.pt"
    with qtbot.capture_exceptions():
        worker = widget.start(start_thread=False)
        with qtbot.waitSignal(worker.finished, timeout=60000):
            worker.start()
    assert shown and "no such model file" in shown[0]
    assert "img particles" not in viewer.layers


def test_detect_on_the_sample_data_finds_its_truth(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-denodet", "vesicles")
    widget = _widget(viewer)
    widget._image.value = viewer.layers["vesicles (simulated)"]
    _run(qtbot, widget)
    truth_layer = viewer.layers["vesicles truth"]
    truth = table_from_coordinates(truth_layer.data)
    points = viewer.layers["vesicles (simulated) particles"]
    found = table_from_coordinates(points.data, points.features)
    assert score_detections(found, truth).f1 > 0.9


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_a_lazily_opened_stack_is_denoised_to_disk_and_shown_memory_mapped(
        make_napari_viewer, qtbot, sim, tmp_path, monkeypatch, suffix):
    import tempfile

    import dask.array as da

    from napari_denodet.core.io import open_denoised_output
    from napari_denodet.core.predict import run

    with open_denoised_output(tmp_path / f"cells{suffix}", sim.noisy.shape) as out:
        out[0 : len(sim.noisy)] = sim.noisy
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / f"cells{suffix}"), plugin="napari-denodet")
    lazy = {".tif": np.memmap, ".zarr": da.Array}[suffix]
    assert isinstance(viewer.layers["cells"].data, lazy)
    widget = _widget(viewer)
    widget._model.value = "fluorescence"  # the model the in-memory run below uses
    _run(qtbot, widget)
    denoised = viewer.layers["cells denoised"].data
    assert isinstance(denoised, np.memmap)
    job = detect_module.DetectJob(model="fluorescence", device="auto", frames=None,
                                  binning=1)
    in_memory, _ = run(detect_module.run_detection(np.asarray(sim.noisy), job))
    assert isinstance(in_memory.denoised, np.ndarray)
    np.testing.assert_array_equal(denoised, in_memory.denoised)
    assert list(scratch.iterdir()) == []  # the temporary file is mapped, not left behind


@pytest.mark.parametrize(("data", "limit", "on_disk"), [
    (np.zeros((2, 8, 8), np.float32), 2**30, False),
    (np.zeros((2, 8, 8), np.float32), 100, True),
    (np.memmap, 2**30, True),
])
def test_which_results_go_to_disk(monkeypatch, tmp_path, data, limit, on_disk):
    if data is np.memmap:
        data = np.memmap(tmp_path / "raw", dtype=np.float32, mode="w+", shape=(2, 8, 8))
    monkeypatch.setattr(detect_module, "IN_MEMORY_LIMIT", limit)
    assert detect_module.keeps_denoised_on_disk(data, data.shape) is on_disk


def test_model_choice_says_what_each_bundled_model_is_for(make_napari_viewer):
    from napari_denodet.core.models import bundled_model_purposes, bundled_models

    widget = _widget(make_napari_viewer())
    tip = widget._model.tooltip
    purposes = bundled_model_purposes()
    assert set(purposes) == set(bundled_models())
    assert "cryo-EM" in purposes["micrograph"] and "microtubule" in purposes["microtubule"]
    for name, purpose in purposes.items():
        assert f"{name}: {purpose}" in tip


def test_nan_pixels_in_a_layer_are_background_and_the_user_is_told(make_napari_viewer, qtbot,
                                                                   sim, monkeypatch):
    told = []
    monkeypatch.setattr(detect_module, "show_info", told.append)
    viewer = make_napari_viewer()
    data = sim.noisy.astype(np.float32)
    data[1, 3, 3] = np.nan
    viewer.add_image(data, name="cells")
    _run(qtbot, _widget(viewer))
    assert np.isfinite(viewer.layers["cells denoised"].data).all()
    # The default model, auto, says which model it chose for the stack.
    assert told[-1] == "Detect 'cells': 1 pixel NaN or infinite, treated as background"
    assert len(told) == 2 and told[0].startswith("Detect 'cells': model ")
    assert "chosen for this image" in told[0]


def test_noise_alone_gets_no_particles_and_a_notification_saying_why(make_napari_viewer,
                                                                    qtbot, monkeypatch):
    told = []
    monkeypatch.setattr(detect_module, "show_info", told.append)
    viewer = make_napari_viewer()
    noise = np.random.default_rng(7).normal(100.0, 10.0, (4, 192, 192)).astype(np.float32)
    viewer.add_image(noise, name="empty")
    widget = _widget(viewer)
    widget._model.value = "fluorescence"
    _run(qtbot, widget)
    assert len(viewer.layers["empty particles"].data) == 0
    assert any(note.startswith("Detect 'empty': no particle stands out from the noise")
               for note in told)
    # The candidates are kept for the slider: lowered, it shows the likeliest.
    widget._threshold.value = widget._threshold.min
    assert len(viewer.layers["empty particles"].data) > 0


def test_the_label_says_how_many_detections_recur_and_the_polarity_reaches_the_core(
        make_napari_viewer, qtbot, sim, monkeypatch):
    from napari_denodet.core.detection import recurrence

    viewer = make_napari_viewer()
    viewer.add_image(sim.noisy, name="cells")
    widget = _widget(viewer)
    assert widget._polarity.value == "auto"
    # "auto" is the model's own default, as the CLI without --polarity.
    assert widget._job(viewer.layers["cells"]).polarity is None
    _run(qtbot, widget)
    candidates = widget._candidates["cells"]
    kept = candidates[candidates.score >= widget._threshold.value]
    assert widget._found.value.endswith(
        f"; {recurrence(kept):.0%} found again in the next frame")
    # A single image has no next frame: nothing said about it.
    assert "found again" not in detect_module._found_text(
        candidates.drop(columns="frame"), 0.5)
    seen = []

    real = detect_module.run_detection

    def record(data, job):
        seen.append(job.polarity)
        return (yield from real(data, job))

    monkeypatch.setattr(detect_module, "run_detection", record)
    widget._polarity.value = "dark"
    worker = widget.start(start_thread=False)
    with qtbot.waitSignal(worker.finished, timeout=60000):
        worker.start()
    assert seen == ["dark"]


def test_the_widget_shows_progress_and_its_cancel_button_stops_the_run(make_napari_viewer,
                                                                       qtbot):
    viewer, widget = _long_run(make_napari_viewer)
    assert not widget._cancel.enabled
    worker = widget.start(start_thread=False)
    assert widget._cancel.enabled and not widget._run.enabled
    seen = []

    def cancel_after_two(progress):
        # the widget's own handler ran first: the bar shows this step
        seen.append((widget._bar.value, widget._bar.max, progress.step, progress.total))
        if len(seen) == 2:
            widget._cancel.native.click()

    worker.yielded.connect(cancel_after_two)
    with qtbot.waitSignal(worker.finished, timeout=60000):
        worker.start()
    assert seen[0][:2] == seen[0][2:] and seen[0][1] > 1  # determinate: step of total
    assert 2 <= len(seen) < 5
    assert "long particles" not in viewer.layers
    assert widget._run.enabled and not widget._cancel.enabled


def test_the_denoised_layer_goes_below_the_raw_image_and_stays_visible(make_napari_viewer,
                                                                       qtbot, sim):
    viewer = make_napari_viewer()
    viewer.add_image(sim.noisy, name="cells")
    viewer.add_points(np.zeros((1, 3)), name="clicks")
    _run(qtbot, _widget(viewer))
    names = [layer.name for layer in viewer.layers]
    assert names.index("cells denoised") == names.index("cells") - 1
    assert viewer.layers["cells denoised"].visible and viewer.layers["cells"].visible
    assert names[-1] == "cells particles"


def test_micrograph_points_are_particle_sized_and_box_files_use_the_diameter(
        make_napari_viewer, qtbot, tmp_path):
    from napari_denodet.core.models import load_model
    from napari_denodet.core.simulate import simulate_micrograph

    sim = simulate_micrograph(shape=(256, 256), snr=0.5, density="mid", radius=10.0, seed=3)
    viewer = make_napari_viewer()
    viewer.add_image(sim.noisy, name="mic")
    widget = _widget(viewer)
    widget._model.value = "micrograph"
    widget._binning.value = 2
    _run(qtbot, widget)
    low, high = load_model("micrograph").card.particle_size.radius_px
    diameter = 2 * np.sqrt(low * high) * 2
    assert diameter > 20  # far from the 6 px default
    points = viewer.layers["mic particles"]
    assert len(points.data)
    np.testing.assert_allclose(points.size, diameter)
    assert points.metadata["box_size"] == round(diameter)
    out = tmp_path / "mic.box"
    viewer.layers.selection = {points}
    viewer.layers.save(str(out), selected=True, plugin="napari-denodet")
    boxes = np.loadtxt(out, ndmin=2)
    assert (boxes[:, 2:4] == round(diameter)).all()
    # The threshold slider rebuilds the layer: the size stays.
    widget._threshold.value = 0.0
    np.testing.assert_allclose(points.size, diameter)


def test_fluorescence_points_keep_the_default_size(make_napari_viewer, qtbot, sim):
    viewer = make_napari_viewer()
    viewer.add_image(sim.noisy, name="cells")
    _run(qtbot, _widget(viewer))
    points = viewer.layers["cells particles"]
    np.testing.assert_allclose(points.size, 6)
    assert "box_size" not in points.metadata


def test_auto_chooses_a_model_per_stack_and_the_user_is_told_which(make_napari_viewer, qtbot,
                                                                   monkeypatch):
    from napari_denodet.core.choice import AUTO

    told = []
    monkeypatch.setattr(detect_module, "show_info", told.append)
    dim = simulate_timelapse("vesicle", snr=1.2, density="mid", frames=12, shape=(128, 128),
                             seed=3)
    viewer = make_napari_viewer()
    viewer.add_image(dim.noisy, name="dim")
    widget = _widget(viewer)
    assert AUTO in widget._model.choices
    assert widget._model.value == AUTO  # the default
    labels = []
    worker = widget.start(start_thread=False)
    worker.yielded.connect(lambda _: labels.append(widget._bar.label))
    with qtbot.waitSignal(worker.finished, timeout=120000):
        worker.start()
    assert len(viewer.layers["dim particles"].data) > 0
    (note,) = [t for t in told if "chosen for this image" in t]
    assert note.startswith("Detect 'dim': model timelapse chosen")
    # The bar says what runs: the candidates on a few frames, then the passes.
    first_pass = next(i for i, label in enumerate(labels) if label.startswith("pass "))
    assert first_pass > 0 and set(labels[:first_pass]) == {"choosing a model"}
    assert all(label.startswith("pass ") for label in labels[first_pass:])
    # A single image has nothing to choose: fluorescence, and no note about it.
    told.clear()
    viewer.add_image(dim.noisy[0], name="one")
    widget._image.value = viewer.layers["one"]
    _run(qtbot, widget)
    assert not [t for t in told if "model" in t]


def test_a_micrograph_opened_from_mrc_under_auto_gets_a_hint(make_napari_viewer, qtbot,
                                                              tmp_path, monkeypatch):
    import mrcfile

    from napari_denodet.core.simulate import simulate_micrograph

    told = []
    monkeypatch.setattr(detect_module, "show_info", told.append)
    with mrcfile.new(tmp_path / "grid.mrc") as mrc:
        mrc.set_data(simulate_micrograph(shape=(128, 128), snr=0.2, seed=1).noisy
                     .astype(np.float32))
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "grid.mrc"), plugin="napari-denodet")
    widget = _widget(viewer)
    _run(qtbot, widget)  # the default model, auto
    (hint,) = [t for t in told if "cryo-EM micrograph" in t]
    assert hint.startswith("Detect 'grid': detected with the fluorescence model")
    # With the micrograph model chosen, no hint.
    told.clear()
    widget._model.value = "micrograph"
    _run(qtbot, widget)
    assert not [t for t in told if "cryo-EM micrograph" in t]
