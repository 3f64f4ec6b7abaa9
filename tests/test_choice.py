"""Model ``auto``: the candidate that expects the higher F1 on the image."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import drain
from napari_denodet.core.choice import (
    AUTO,
    AUTO_ALTERNATIVES,
    AUTO_CANDIDATES,
    SAMPLE_FRAMES,
    choose_model,
)
from napari_denodet.core.models import Model
from napari_denodet.core.predict import run
from napari_denodet.core.simulate import simulate


@pytest.fixture(scope="module")
def dim():
    """Dim vesicles that move little: the frames around each one help."""
    return simulate("vesicle", snr=1.2, frames=12, shape=(128, 128), seed=3, density="mid")


def test_the_window_model_is_chosen_where_it_expects_more(dim):
    choice = run(choose_model(dim.noisy))
    assert set(choice.expected_f1) == set(AUTO_CANDIDATES)
    assert choice.name == max(choice.expected_f1, key=choice.expected_f1.get)
    assert choice.name == "timelapse" and choice.model.window == 3
    assert "timelapse chosen" in choice.note() and "fluorescence 0." in choice.note()


def test_the_candidates_are_compared_on_a_few_frames_each_in_its_window(dim, monkeypatch):
    seen = []
    original = Model.detect

    def spy(self, image, **kwargs):
        seen.append((self.window, np.shape(image)))
        return original(self, image, **kwargs)

    monkeypatch.setattr(Model, "detect", spy)
    stack = np.concatenate([dim.noisy, dim.noisy])  # 24 frames
    run(choose_model(stack, frames=(2, 20)))
    assert seen == [(1, (SAMPLE_FRAMES, 128, 128)), (3, (SAMPLE_FRAMES, 3, 128, 128))]


def test_where_the_single_frame_model_wins_the_comet_model_is_asked_too():
    # Comets at SNR 2: time does not help (they move), and their shape is the comet
    # model's.
    comets = simulate("microtubule", snr=2.0, frames=6, shape=(192, 192), seed=4,
                      density="low")
    choice = run(choose_model(comets.noisy))
    assert set(choice.expected_f1) == {*AUTO_CANDIDATES, *AUTO_ALTERNATIVES}
    assert choice.expected_f1["fluorescence"] > choice.expected_f1["timelapse"]
    assert choice.name == "microtubule"
    assert choice.expected_f1["microtubule"] > choice.expected_f1["fluorescence"]
    assert "microtubule chosen" in choice.note() and "timelapse 0." in choice.note()
    # Without alternatives the two candidates alone decide.
    assert run(choose_model(comets.noisy, alternatives=())).name == "fluorescence"


@pytest.mark.parametrize("frames", [None, (4, 6)])
def test_nothing_is_chosen_for_a_single_image_or_two_frames(dim, frames):
    image = dim.noisy[0] if frames is None else dim.noisy
    choice, progress = drain(choose_model(image, frames=frames))
    assert choice.name == AUTO_CANDIDATES[0] and choice.expected_f1 == {} and not progress
    assert "no choice" in choice.note()


def test_the_cli_and_the_widgets_worker_say_which_model_detected(dim, tmp_path):
    import tifffile

    from napari_denodet._widgets.detect import DetectJob, run_detection
    from napari_denodet.cli import main
    from napari_denodet.core.manifest import read_manifest

    path = tmp_path / "dim.tif"
    tifffile.imwrite(path, dim.noisy.astype(np.uint16))
    assert main(["detect", str(path), "--model", AUTO, "--out", str(tmp_path / "out")]) == 0
    (record,) = read_manifest(tmp_path / "out")["files"]
    assert "model timelapse chosen" in record["note"]
    assert (tmp_path / "out" / "dim_points.csv").is_file()
    job = DetectJob(model=AUTO, device="cpu", frames=None, binning=1)
    found, model = run(run_detection(dim.noisy, job))
    assert model.window == 3 and "timelapse chosen" in found.summary()


def test_a_frame_without_a_finite_pixel_is_named_by_its_place_in_the_stack():
    from napari_denodet.core.errors import InputError

    stack = simulate("vesicle", snr=3, density="low", frames=12, shape=(64, 64),
                     seed=4).noisy.astype(np.float32)
    stack[5] = np.nan  # the 4th of the 8 frames compared
    with pytest.raises(InputError, match="frame 5 holds no finite pixel"):
        run(choose_model(stack))
