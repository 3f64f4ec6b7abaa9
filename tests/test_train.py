from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import drain
from napari_denodet.core.errors import InputError
from napari_denodet.core.train import (
    Sample,
    TrainSettings,
    augment,
    collate,
    draw_sample,
    model_card,
    train,
    validation_set,
)

TINY = dict(steps=4, batch_size=2, patch_size=32, eval_every=2, warmup_fraction=0.25,
            validation_patches=2)


@pytest.mark.parametrize("scenario", ["fluorescence", "microtubule", "micrograph"])
def test_draw_sample_is_normalised_with_truth_inside(scenario):
    s = TrainSettings(scenario=scenario, patch_size=48)
    sample = draw_sample(s, np.random.default_rng(1))
    assert sample.noisy.shape == sample.clean.shape == (48, 48)
    # Background at 0 after normalisation (integer photon counts: within the dither).
    assert abs(np.median(sample.noisy)) < 0.15
    assert sample.truth.shape[1] == 2
    assert np.all((sample.truth > -0.5) & (sample.truth < 47.5))


def test_correlated_noise_is_drawn_for_about_half_the_patches_only_when_asked():
    def neighbour_correlation(sample):
        noise = sample.noisy - sample.clean
        return np.corrcoef(noise[:-1].ravel(), noise[1:].ravel())[0, 1]

    plain = TrainSettings(patch_size=64, snr_range=(2.0, 2.0))
    camera = TrainSettings(patch_size=64, snr_range=(2.0, 2.0), correlated_noise=1.0)
    rng = np.random.default_rng(4)
    plain_rs = [neighbour_correlation(draw_sample(plain, rng)) for _ in range(24)]
    rng = np.random.default_rng(4)
    camera_rs = [neighbour_correlation(draw_sample(camera, rng)) for _ in range(24)]
    assert max(np.abs(plain_rs)) < 0.1
    correlated = sum(r > 0.2 for r in camera_rs)
    assert 6 <= correlated <= 18  # about half of 24
    # Without it, a run draws exactly what it drew before the option existed.
    rng_a, rng_b = np.random.default_rng(8), np.random.default_rng(8)
    a = draw_sample(plain, rng_a)
    b = draw_sample(TrainSettings(patch_size=64, snr_range=(2.0, 2.0)), rng_b)
    np.testing.assert_array_equal(a.noisy, b.noisy)


def test_micrograph_particles_are_inverted_to_bright():
    s = TrainSettings(scenario="micrograph", patch_size=64, snr_range=(5.0, 5.0))
    sample = draw_sample(s, np.random.default_rng(3))
    yx = np.rint(sample.truth).astype(int)
    assert np.median(sample.clean[yx[:, 0], yx[:, 1]]) > np.median(sample.clean)


@pytest.mark.parametrize("seed", range(8))
def test_augment_moves_points_with_the_image(seed):
    img = np.zeros((20, 30), np.float32)
    img[3, 17] = 1.0
    sample = Sample(img, img.copy(), np.array([[3.0, 17.0]]))
    out = augment(sample, np.random.default_rng(seed))
    peak = np.unravel_index(np.argmax(out.noisy), out.noisy.shape)
    assert tuple(out.truth[0]) == peak
    assert np.array_equal(out.noisy, out.clean)


def test_collate_gives_batch_indices():
    a = Sample(np.zeros((8, 8)), np.zeros((8, 8)), np.array([[1.0, 2.0]]))
    b = Sample(np.ones((8, 8)), np.ones((8, 8)), np.array([[3.0, 4.0], [5.0, 6.0]]))
    noisy, clean, centres = collate([a, b])
    assert noisy.shape == clean.shape == (2, 1, 8, 8) and noisy.dtype == torch.float32
    assert centres.tolist() == [[0, 1, 2], [1, 3, 4], [1, 5, 6]]


def test_validation_set_is_fixed_and_spans_the_snr_range():
    s = TrainSettings(patch_size=32)
    a, b = validation_set(s, count=3), validation_set(s, count=3)
    assert all(np.array_equal(x.noisy, y.noisy) for x, y in zip(a, b, strict=True))
    assert a[0].noisy.shape == (128, 128)


def test_training_reports_every_step_and_is_reproducible():
    s = TrainSettings(**TINY)
    result, reports = drain(train(s))
    steps = [r.step for r in reports if r.stage == "train"]
    assert steps == [1, 2, 3, 4]
    assert [r.step for r in reports if r.stage == "validate"] == [2, 4]
    assert {"loss", "detection", "denoising", "gamma", "lr"} <= set(reports[0].metrics)
    assert reports[0].metrics["gamma"] == 0.0  # detection-only warm-up
    assert reports[-2].metrics["gamma"] == 0.5
    assert 0.1 <= result.threshold <= 0.95
    assert not result.network.training
    again, _ = drain(train(s))
    for p, q in zip(result.network.parameters(), again.network.parameters(), strict=True):
        assert torch.equal(p, q)


def test_stopped_run_resumes_to_the_same_model(tmp_path):
    s = TrainSettings(**TINY)
    whole, _ = drain(train(s))
    ckpt = tmp_path / "run.ckpt"
    gen = train(s, checkpoint=ckpt, checkpoint_every=2)
    for report in gen:
        if report.step == 2:
            break
    gen.close()  # the user pressed stop after step 2
    assert ckpt.exists()
    resumed, _ = drain(train(s, checkpoint=ckpt, checkpoint_every=2, resume=True))
    for p, q in zip(whole.network.parameters(), resumed.network.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)
    other = TrainSettings(**{**TINY, "seed": 1})
    with pytest.raises(ValueError, match="other settings"):
        next(train(other, checkpoint=ckpt, resume=True))


def test_a_short_run_learns_to_detect():
    s = TrainSettings(steps=60, batch_size=4, patch_size=48, eval_every=20,
                      snr_range=(6.0, 10.0), scenario="vesicle", validation_patches=4)
    result, _ = drain(train(s))
    first, last = result.history[0], result.history[-1]
    assert last["val_loss"] < first["val_loss"]
    assert last["val_f1"] > 0.5


def test_settling_steps_freeze_the_normalisation_and_lower_the_learning_rate(tmp_path):
    s = TrainSettings(**{**TINY, "steps": 6, "settle_fraction": 0.5})
    assert s.settle_start == 3
    ckpt = tmp_path / "run.ckpt"
    gen = train(s, checkpoint=ckpt, checkpoint_every=3)
    reports = []
    for report in gen:
        reports.append(report)
        if report.stage == "train" and report.step == 3:
            break
    at_settle = torch.load(ckpt, weights_only=True)["network"]
    result, rest = drain(gen)
    lr = {r.step: r.metrics["lr"] for r in reports + rest if r.stage == "train"}
    assert lr[4] == pytest.approx(0.1 * lr[3]) and lr[6] == lr[4]
    final = result.network.state_dict()
    means = [k for k in final if k.endswith("running_mean")]
    assert means and all(at_settle[k].abs().sum() > 0 for k in means)  # batch stats moved
    assert all(torch.equal(final[k], at_settle[k]) for k in means)  # then stayed frozen
    weights = [k for k in final if k.endswith("weight")]
    assert any(not torch.equal(final[k], at_settle[k]) for k in weights)  # still training


def test_model_card_records_how_to_reproduce():
    s = TrainSettings(**TINY)
    result, _ = drain(train(s))
    card = model_card(result, "tiny", "napari-denodet train --steps 4")
    assert card["training"]["command"] == "napari-denodet train --steps 4"
    assert card["training"]["settings"]["steps"] == 4
    assert card["threshold"] == result.threshold
    assert card["invert"] is False and card["deviations"]


def test_a_warm_start_begins_at_the_models_weights_and_its_card_says_from_what():
    from napari_denodet.core.models import load_model

    start = load_model("fluorescence")
    s = TrainSettings(**{**TINY, "init": "fluorescence"})
    result, _ = drain(train(s))
    # Four small steps move the weights only a little from the bundled ones (batch-norm
    # statistics are re-estimated from the tiny batches: not compared).
    moved = [float((a - b).detach().abs().max()) for a, b in
             zip(result.network.parameters(), start.network.parameters(), strict=True)]
    assert max(moved) < 0.2
    card = model_card(result, "warm", "napari-denodet train --init fluorescence")
    assert card["training"]["init_training"]["command"] == start.card["training"]["command"]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown scenario"):
        TrainSettings(scenario="bacteria")
    with pytest.raises(ValueError, match="patch_size"):
        TrainSettings(patch_size=8)
    with pytest.raises(ValueError, match="settle_fraction"):
        TrainSettings(warmup_fraction=0.5, settle_fraction=0.6)
    with pytest.raises(ValueError, match="correlated_noise must be >= 0"):
        TrainSettings(correlated_noise=-0.5)
    with pytest.raises(ValueError, match="time-lapses only"):
        TrainSettings(scenario="micrograph", correlated_noise=0.8)


class _RunsCode:
    # A pickle that runs code when unpickled: what a hostile checkpoint would hold.
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_checkpoint_is_loaded_without_running_code_from_it(tmp_path):
    marker = tmp_path / "ran"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"settings": _RunsCode(marker)}, ckpt)
    with pytest.raises(InputError, match="not a readable training checkpoint"):
        next(train(TrainSettings(**TINY), checkpoint=ckpt, resume=True))
    assert not marker.exists()
    torch.save({"weight": torch.zeros(2)}, ckpt)  # plain, but not ours
    with pytest.raises(InputError, match="not a napari-denodet training checkpoint"):
        next(train(TrainSettings(**TINY), checkpoint=ckpt, resume=True))


def test_a_run_can_start_from_a_trained_models_weights():
    import torch

    from napari_denodet.core.models import load_model
    from napari_denodet.core.network import NetworkConfig, build_network
    from napari_denodet.core.train import _warm_start

    network = build_network(NetworkConfig())
    _warm_start(network, "fluorescence")
    start = load_model("fluorescence").network.state_dict()
    assert all(torch.equal(v, start[k]) for k, v in network.state_dict().items())
    with pytest.raises(ValueError, match="not the one asked for"):
        _warm_start(build_network(NetworkConfig(widths=(4, 8, 16))), "fluorescence")


def test_a_window_is_centred_and_repeats_the_centre_where_neighbours_are_missing():
    from napari_denodet.core.train import time_window

    assert time_window(5, 1) == [5]
    assert time_window(5, 3) == [4, 5, 6]
    assert time_window(2, 5, "first") == [2, 2, 2, 3, 4]
    assert time_window(2, 5, "last") == [0, 1, 2, 2, 2]
    assert time_window(1, 3, "single") == [1, 1, 1]
    # Inference follows the same rule: a missing neighbour is the centre frame.
    from napari_denodet.core.predict import window_indices

    assert window_indices(1, 5, 0, 9) == [1, 0, 1, 2, 3]
    assert window_indices(0, 3, 0, 0) == [0, 0, 0]


def test_a_windowed_sample_holds_its_frames_and_the_centre_frames_truth():
    s = TrainSettings(window=3, patch_size=64)
    assert s.network.in_channels == 3
    samples = [draw_sample(s, np.random.default_rng(seed)) for seed in range(40)]
    for sample in samples:
        assert sample.noisy.shape == (3, 64, 64) and sample.clean.shape == (64, 64)
        frames = sample.noisy
        # Each frame is normalised on its own, as the engine does.
        assert np.abs(np.median(frames, axis=(1, 2))).max() < 0.5  # not raw photons
        edge = sample.params["edge"]
        assert np.array_equal(frames[0], frames[1]) == (edge in ("first", "single"))
        assert np.array_equal(frames[2], frames[1]) == (edge in ("last", "single"))
    assert {s.params["edge"] for s in samples} >= {"inside", "first"}
    # The truth is the centre frame's: the clean target peaks on it.
    sample = next(s for s in samples if len(s.truth))
    yx = np.round(sample.truth).astype(int).clip(0, 63)
    assert np.median(sample.clean[yx[:, 0], yx[:, 1]]) > np.median(sample.clean)
    turned = augment(sample, np.random.default_rng(3))
    assert turned.noisy.shape == (3, 64, 64)
    noisy, clean, _ = collate([turned, turned])
    assert noisy.shape == (2, 3, 64, 64) and clean.shape == (2, 1, 64, 64)


def test_a_window_is_refused_where_it_cannot_be():
    from napari_denodet.core.network import NetworkConfig

    with pytest.raises(ValueError, match="odd number"):
        TrainSettings(window=2)
    with pytest.raises(ValueError, match="time-lapses only"):
        TrainSettings(scenario="micrograph", window=3)
    with pytest.raises(ValueError, match="needs 3"):
        TrainSettings(window=3, network=NetworkConfig(in_channels=5))


def test_a_single_frame_model_starts_a_windowed_one_that_detects_as_it_does():
    from napari_denodet.core.models import load_model
    from napari_denodet.core.network import build_network
    from napari_denodet.core.train import _warm_start

    network = build_network(TrainSettings(window=3).network)
    _warm_start(network, "fluorescence")
    start = load_model("fluorescence").network.eval()
    network.eval()
    frames = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        theirs, ours = start(frames[:, 1:2]), network(frames)
    for a, b in zip(theirs, ours, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    # The neighbours' weights start at zero but are trained.
    first = network.enc1.first[0].weight
    assert first.shape[1] == 3 and first[:, 0].abs().max() == 0 and first.requires_grad


def test_a_windowed_run_trains_and_its_model_reads_its_window(tmp_path):
    from napari_denodet.core.models import load_model, save_model

    s = TrainSettings(**{**TINY, "window": 3, "init": "fluorescence"})
    result, _ = drain(train(s))
    card = model_card(result, "t3", "napari-denodet train --window 3")
    assert card["training"]["settings"]["window"] == 3
    save_model(tmp_path / "t3.pt", result.network, card)
    model = load_model(tmp_path / "t3.pt")
    assert model.window == 3 and load_model("fluorescence").window == 1
    assert model.card.to_dict()["network"]["in_channels"] == 3


def test_a_sum_start_sees_a_still_scene_as_one_frame_of_higher_snr():
    from napari_denodet.core.models import load_model
    from napari_denodet.core.network import build_network
    from napari_denodet.core.train import _warm_start

    network = build_network(TrainSettings(window=3).network)
    _warm_start(network, "fluorescence", "sum")
    start = load_model("fluorescence").network.eval()
    network.eval()
    frame = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        theirs = start(frame * 3 ** 0.5)
        ours = network(frame.repeat(1, 3, 1, 1))
    for a, b in zip(theirs, ours, strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match="unknown window_init"):
        TrainSettings(window=3, window_init="mean")
