"""Networks that read a window of neighbouring frames, through the engine and a model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_denodet.core.network import NetworkConfig
from napari_denodet.core.predict import detect, run
from napari_denodet.core.simulate import simulate
from test_predict import _calibrated

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def windowed():
    # Random weights on all three frames: each neighbour changes the output.
    return _calibrated(NetworkConfig(in_channels=3), seed=1)


@pytest.fixture(scope="module")
def stack():
    return simulate("vesicle", snr=3, frames=5, shape=(64, 80), seed=2).noisy


def _window_of(stack, indices):
    return np.stack([stack[i] for i in indices])


def _single_frame_result(network, frames):
    # The engine on a hand-made 3-frame stack, detecting in its middle frame only.
    return run(detect(frames, network, frames=(1, 2)))


def test_each_frame_is_detected_among_its_neighbours_and_edges_repeat_the_frame(windowed,
                                                                             stack):
    whole = run(detect(stack, windowed))
    # Frame 2 among frames 1 and 3; frame 0 with itself before it; frame 4 after it.
    for index, around in ((2, [1, 2, 3]), (0, [0, 0, 1]), (4, [3, 4, 4])):
        alone = _single_frame_result(windowed, _window_of(stack, around))
        np.testing.assert_allclose(whole.denoised[index], alone.denoised[0], atol=1e-4)
        mine = whole.points[whole.points["frame"] == index]
        assert len(mine) == len(alone.points) > 0
        np.testing.assert_allclose(np.sort(mine["y"]), np.sort(alone.points["y"]), atol=1e-3)
    # A different neighbour changes the result: the window is really read.
    other = _single_frame_result(windowed, _window_of(stack, [0, 2, 3]))
    assert np.abs(other.denoised[0] - whole.denoised[2]).max() > 1e-3


def test_a_frame_range_batches_and_tiles_read_the_same_neighbours(windowed, stack):
    whole = run(detect(stack, windowed))
    part = run(detect(stack, windowed, frames=(1, 4), batch_size=2))
    np.testing.assert_allclose(part.denoised, whole.denoised[1:4], atol=1e-4)
    tiled = run(detect(stack, windowed, tile_size=32, overlap=48))
    np.testing.assert_allclose(tiled.denoised, whole.denoised, atol=1e-4)
    assert len(tiled.points) == len(whole.points)


def test_a_single_image_is_its_own_neighbours(windowed, stack):
    single = run(detect(stack[3], windowed))
    repeated = _single_frame_result(windowed, _window_of(stack, [3, 3, 3]))
    np.testing.assert_allclose(single.denoised, repeated.denoised[0], atol=1e-4)


def test_non_finite_pixels_are_counted_once_per_frame(windowed, stack):
    bad = stack.astype(np.float32).copy()
    bad[2, 5, 5] = np.nan
    assert run(detect(bad, windowed)).non_finite == 1
    assert run(detect(bad, windowed, frames=(3, 5))).non_finite == 0


def test_a_network_with_an_even_number_of_channels_is_refused(stack):
    from napari_denodet.core.errors import InputError

    with pytest.raises(InputError, match="expects 2 channels"):
        run(detect(stack, _calibrated(NetworkConfig(in_channels=2))))


def _inflated_model(tmp_path, neighbours: float = 0.0):
    # The bundled fluorescence model grown to a 3-frame window; with zero neighbour
    # weights it detects exactly as the bundled model.
    from napari_denodet.core.models import load_model, save_model
    from napari_denodet.core.network import build_network
    from napari_denodet.core.train import TrainSettings, _warm_start

    start = load_model("fluorescence")
    network = build_network(TrainSettings(window=3).network)
    _warm_start(network, "fluorescence")
    if neighbours:
        with torch.no_grad():
            weight = network.enc1.first[0].weight
            weight[:, 0] = neighbours * weight[:, 1]
            weight[:, 2] = neighbours * weight[:, 1]
    network.eval()
    card = start.card.to_dict()
    card["name"] = "t3"
    save_model(tmp_path / "t3.pt", network, card)
    return load_model(tmp_path / "t3.pt"), start


def test_a_windowed_model_calibrates_on_decoys_of_whole_windows(tmp_path):
    model, start = _inflated_model(tmp_path)
    sim = simulate("vesicle", snr=2, frames=12, shape=(96, 96), seed=5)
    theirs, ours = run(start.detect(sim.noisy)), run(model.detect(sim.noisy))
    # Same network in effect: same candidates, same decoys, so the same probabilities
    # and threshold (the decoy frames are read with their flipped neighbours).
    assert ours.threshold == pytest.approx(theirs.threshold)
    np.testing.assert_allclose(ours.candidates["score"], theirs.candidates["score"],
                               atol=1e-6)
    assert len(ours.points) == len(theirs.points) > 0


def test_the_decoy_pass_flips_the_neighbours_too(tmp_path, monkeypatch):
    from napari_denodet.core import detection

    model, _ = _inflated_model(tmp_path, neighbours=0.5)
    sim = simulate("vesicle", snr=2, frames=12, shape=(64, 64), seed=6)
    flipped = []
    original = detection.decoy_frame

    def spy(frame):
        # Which frame of the stack this is (each frame differs from every other).
        flipped.append(next(i for i, f in enumerate(sim.noisy) if np.array_equal(f, frame)))
        return original(frame)

    monkeypatch.setattr(detection, "decoy_frame", spy)
    found = run(model.detect(sim.noisy))
    assert found.threshold > 0
    # Each decoy frame was flipped with the frames on either side of it (the first and
    # last with themselves in place of the missing one), in one batched pass; a frame
    # two windows share is flipped once.
    picked = detection.decoy_frames(12)
    needed = [min(max(j, 0), 11) for i in picked for j in (i - 1, i, i + 1)]
    assert flipped == list(dict.fromkeys(needed)) and len(flipped) < len(needed)


def test_windows_given_whole_detect_as_in_their_stack(windowed, stack):
    whole = run(detect(stack, windowed))
    windows = np.stack([_window_of(stack, [0, 0, 1]), _window_of(stack, [2, 3, 4])])
    given = run(detect(windows, windowed))
    np.testing.assert_allclose(given.denoised, whole.denoised[[0, 3]], atol=1e-4)
    assert len(given.points) == (whole.points["frame"].isin([0, 3])).sum()


def test_fine_tuning_a_windowed_model_reads_each_clicked_frame_in_its_window(tmp_path):
    from helpers import drain
    from napari_denodet.core.finetune import FinetuneSettings, finetune
    from napari_denodet.core.finetune.clicks import _frames
    from napari_denodet.core.points import FRAME

    model, _ = _inflated_model(tmp_path, neighbours=0.3)
    sim = simulate("vesicle", snr=3, frames=6, shape=(96, 96), seed=7)
    truth = sim.truth
    clicks = pd_clicks(truth, {0: 4, 3: 4})
    frames, _ = _frames(sim.noisy, clicks, clicks.iloc[:0], False,
                        np.zeros(len(clicks), bool), window=3)
    assert [f.index for f in frames] == [0, 3]
    assert frames[0].image.shape == (3, 96, 96) and frames[0].shape == (96, 96)
    np.testing.assert_array_equal(frames[0].raw[0], frames[0].raw[1])  # repeated
    np.testing.assert_array_equal(frames[1].raw, sim.noisy[2:5].astype(np.float32))
    result, _ = drain(finetune(model, sim.noisy, clicks,
                               settings=FinetuneSettings(steps=3, seed=0, time_budget=None)))
    assert result.adapted.window == 3 and result.model.window == 3
    found = run(result.model.detect(sim.noisy))
    assert set(found.points[FRAME]) <= set(range(6)) and len(found.points) > 0


def pd_clicks(truth, per_frame):
    import pandas as pd

    parts = [truth[truth.frame == f].iloc[:n] for f, n in per_frame.items()]
    return pd.concat(parts)[["frame", "y", "x"]].reset_index(drop=True)
