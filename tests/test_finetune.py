"""Fine-tuning from a few clicks: the losses, the calibration and the whole run."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import drain, scattered
from napari_denodet.core.errors import InputError
from napari_denodet.core.finetune import (
    FinetuneSettings,
    area_is_incomplete,
    calibrate_from_area,
    calibrate_threshold,
    finetune,
    threshold_for_count,
    unclicked_in_area,
)
from napari_denodet.core.metrics import score_detections
from napari_denodet.core.models import load_model
from napari_denodet.core.points import points_table
from napari_denodet.core.predict import detect, run
from napari_denodet.core.simulate import simulate_timelapse


@pytest.fixture(scope="module")
def shifted():
    """Spots twice as wide as the bundled model knows, on a structured background."""
    return simulate_timelapse("vesicle", snr=2, density="mid", frames=2, shape=(192, 192),
                              seed=4, psf_scale=2.0, texture=0.5)


def clicks_of(truth: pd.DataFrame, n: int) -> pd.DataFrame:
    """The n particles of frame 0 nearest its first one: a region, all clicked."""
    first = truth[truth.frame == 0]
    y, x = first.iloc[0][["y", "x"]]
    order = np.argsort(np.hypot(first.y - y, first.x - x).to_numpy())
    return first.iloc[order[:n]][["frame", "y", "x"]].reset_index(drop=True)


def f1_on_second_frame(model, image, truth, threshold=None):
    found = run(detect(image, model.network, invert=model.invert, **model.localisation))
    points = found.points[found.points.score >= (threshold or model.threshold)]
    return score_detections(points[points.frame == 1], truth[truth.frame == 1]).f1


def test_fine_tuning_from_clicks_beats_the_starting_model(shifted):
    parent = load_model("fluorescence")
    before = [p.detach().clone() for p in parent.network.parameters()]
    clicks = clicks_of(shifted.truth, 10)
    # No time budget: the 100 steps run however busy the machine is.
    settings = FinetuneSettings(steps=100, seed=0, time_budget=None)
    result, progress = drain(finetune(parent, shifted.noisy, clicks, settings=settings))
    # Measured on the frame that holds no click, at the threshold from the clicks
    # (training on 7 of the 10 clicks, 3 held out for the acceptance check; with the
    # PTC-like model 0.835 -> 0.887; the realistic-domain one starts at 0.568).
    f1_parent = f1_on_second_frame(parent, shifted.noisy, shifted.truth)
    adapted = result.adapted
    thresholds = adapted.card["training"]["calibration"]
    f1_clicks = f1_on_second_frame(adapted, shifted.noisy, shifted.truth,
                                   thresholds["threshold_from_clicks"])
    assert f1_clicks >= f1_parent + 0.04, (f1_parent, f1_clicks)
    # The threshold keeping the parent's count is no gain on this image with the
    # realistic-domain model (0.568 -> 0.518); which of the two a card advises is the
    # fine-tuning benchmark's to say.
    stages = [p.stage for p in progress if p.stage != "check"]
    assert result.steps_done == 100 and stages == ["train"] * 100 + ["calibrate", "accept"]
    # The adapted model is kept exactly when it does better on the 3 clicks it did not
    # train on by more than the check's uncertainty; else the starting weights.
    held = result.heldout
    assert held["clicks"] == 3 and held["margin"] > 0
    assert result.accepted == (held["f1_after"] - held["f1_before"] > held["margin"])
    assert result.message.startswith("adapted model kept" if result.accepted
                                     else "previous model kept")
    kept = adapted if result.accepted else parent
    assert all(torch.equal(a, b) for a, b in zip(result.model.network.parameters(),
                                                 kept.network.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before, parent.network.parameters(),
                                                 strict=True)), "the parent was modified"
    card = adapted.card
    assert card["parent"]["name"] == "fluorescence"
    assert card["training"]["clicks"] == 10 and card["training"]["steps"] == 100
    assert 0.1 <= card["threshold"] <= 0.9
    # The threshold after training is the one the parent's card advises.
    calibration = card["training"]["calibration"]
    advised = parent.card["finetune"]["calibration"]
    assert card["training"]["settings"]["calibration"] == advised
    assert card["threshold"] == calibration[
        "threshold_keeping_count" if advised == "count" else "threshold_from_clicks"]
    calibrated = next(p for p in progress if p.stage == "calibrate")
    assert calibrated.metrics["threshold"] == card["threshold"]


def test_stop_returns_promptly_with_a_usable_model(shifted):
    stop = threading.Event()
    generator = finetune(load_model("fluorescence"), shifted.noisy,
                         clicks_of(shifted.truth, 5), settings=FinetuneSettings(steps=10_000),
                         stop=stop)
    for progress in generator:
        if progress.step == 3:
            stop.set()
            break
    result, rest = drain(generator)
    assert [p.stage for p in rest] == ["calibrate"] and result.steps_done == 3
    assert result.model.card["training"]["steps"] == 3
    found = run(detect(shifted.noisy[0], result.model.network, **result.model.localisation))
    assert len(found.points) > 0


def test_time_budget_ends_training(shifted):
    settings = FinetuneSettings(steps=10_000, time_budget=0.5)
    result, _ = drain(finetune(load_model("fluorescence"), shifted.noisy,
                               clicks_of(shifted.truth, 5), settings=settings))
    assert 1 <= result.steps_done < 10_000


def test_weight_averaging_returns_the_average_not_the_last_step(shifted):
    parent = load_model("fluorescence")
    clicks = clicks_of(shifted.truth, 5)

    def tuned(average):
        settings = FinetuneSettings(steps=5, average=average, seed=0)
        return drain(finetune(parent, shifted.noisy, clicks, settings=settings))[0].model

    def distance(model):
        return sum(float((a - b).detach().abs().sum()) for a, b in zip(
            model.network.parameters(), parent.network.parameters(), strict=True))

    last, averaged, frozen = tuned(0.0), tuned(0.5), tuned(1.0 - 1e-9)
    assert distance(last) > 0
    # Same seed, same steps: the average lags behind the last step, and an average that
    # barely moves is the parent.
    assert distance(frozen) < 1e-3 * distance(last) < distance(averaged) < distance(last)


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_clicks_is_a_clear_error(shifted, n):
    with pytest.raises(InputError, match="at least 2 clicked particle centres, got"):
        next(finetune(load_model("fluorescence"), shifted.noisy, clicks_of(shifted.truth, n)))


def test_clicks_outside_the_image_are_refused(shifted):
    clicks = pd.DataFrame({"frame": [0, 0, 5], "y": [10.0, 20.0, 30.0], "x": [5.0, 6.0, 7.0]})
    with pytest.raises(InputError, match="1 clicked point"):
        next(finetune(load_model("fluorescence"), shifted.noisy, clicks))


def test_single_images_take_plain_coordinates():
    sim = simulate_timelapse("vesicle", snr=6, density=250, frames=1, shape=(96, 96), seed=1)
    clicks = sim.truth[["y", "x"]].to_numpy()[:4]
    result, _ = drain(finetune(load_model("fluorescence"), sim.noisy[0], clicks,
                               settings=FinetuneSettings(steps=2)))
    assert result.model.card["training"]["frames"] == [0]


def test_held_out_clicks_are_checked_when_there_are_enough(shifted):
    settings = FinetuneSettings(steps=4, check_every=2)
    _, progress = drain(finetune(load_model("fluorescence"), shifted.noisy,
                                 clicks_of(shifted.truth, 15), settings=settings))
    checks = [p for p in progress if p.stage == "check"]
    assert [c.step for c in checks] == [2, 4]
    assert all(0.0 <= c.metrics["heldout_recall"] <= 1.0 for c in checks)


def _scattered_scores(rng, n: int, low: float, high: float) -> pd.DataFrame:
    # n candidates anywhere on a 3000 px square, scores uniform in [low, high).
    return points_table(rng.uniform(0, 3000, n), rng.uniform(0, 3000, n),
                        score=rng.uniform(low, high, n))


def test_calibration_splits_the_scores_and_keeps_the_clicks():
    rng = np.random.default_rng(0)
    noise = _scattered_scores(rng, 300, 0.05, 0.3)
    particles = _scattered_scores(rng, 50, 0.7, 1.0)
    candidates = pd.concat([noise, particles], ignore_index=True)
    clicks = particles.iloc[:10][["y", "x"]]
    threshold, facts = calibrate_threshold(candidates, clicks)
    # Every click is found above Otsu's split: the threshold rises to the least sure one.
    assert facts["otsu"] < 0.7 and facts["click_recall"] == 1.0
    assert threshold == pytest.approx(particles.score.iloc[:10].min())
    assert (noise.score >= threshold).sum() == 0
    # Raising stops where fewer than RAISE_KEEPS of the expected particles remain.
    from napari_denodet.core.finetune import RAISE_KEEPS

    keep = int(np.ceil(RAISE_KEEPS * 50))
    assert 10 < keep < 50
    surest = particles.sort_values("score", ascending=False)
    capped, facts = calibrate_threshold(candidates, surest.iloc[:10][["y", "x"]],
                                        expected=50)
    assert facts["all_clicks"] == pytest.approx(surest.score.iloc[9])
    assert capped == pytest.approx(surest.score.iloc[keep - 1])
    assert (candidates.score >= capped).sum() == keep
    # Clicks on faint particles pull the threshold down until half of them are kept.
    faint = noise.iloc[:10][["y", "x"]]
    low, facts = calibrate_threshold(candidates, faint)
    assert low < facts["otsu"] and facts["click_recall"] >= 0.5


def test_calibration_is_not_raised_above_the_highest_threshold():
    from napari_denodet.core.finetune import HIGHEST_THRESHOLD

    # A network that learnt the clicks: they score 0.97-0.99, their unclicked
    # neighbours 0.91-0.96; all of them are particles.
    rng = np.random.default_rng(1)
    noise = _scattered_scores(rng, 300, 0.05, 0.3)
    learnt = _scattered_scores(rng, 10, 0.97, 0.99)
    others = _scattered_scores(rng, 40, 0.91, 0.96)
    candidates = pd.concat([noise, learnt, others], ignore_index=True)
    threshold, facts = calibrate_threshold(candidates, learnt[["y", "x"]], expected=50)
    assert facts["all_clicks"] > 0.97 and threshold == HIGHEST_THRESHOLD == 0.9
    assert (candidates.score >= threshold).sum() == 50


def test_pseudo_labels_are_the_parents_surest_detections_away_from_clicks():
    from napari_denodet.core.finetune.clicks import _add_pseudo_labels, _Frame

    # Frame 0 holds a click at (50, 50); the parent found six particles over two frames.
    frames = [_Frame(index=i, image=np.zeros((100, 100), np.float32),
                     positives=np.array([[50.0, 50.0]]) if i == 0 else np.zeros((0, 2)),
                     negatives=np.zeros((0, 2)), heldout=np.zeros((0, 2)),
                     region=np.zeros((100, 100), bool)) for i in range(2)]
    candidates = points_table([51, 10, 20, 30, 40, 60, 70], [50, 10, 20, 30, 40, 60, 70],
                              frame=[0, 0, 0, 1, 1, 1, 0],
                              score=[0.99, 0.95, 0.9, 0.85, 0.6, 0.5, 0.2])
    # Above the threshold 0.4: six; the surest half is the first three, of which the one
    # on the click is already labelled.
    _add_pseudo_labels(frames, candidates, threshold=0.4, share=0.5)
    assert frames[0].pseudo.tolist() == [[10.0, 10.0], [20.0, 20.0]]
    assert len(frames[1].pseudo) == 0
    _add_pseudo_labels(frames, candidates, threshold=0.4, share=1.0)
    assert frames[1].pseudo.tolist() == [[30.0, 30.0], [40.0, 40.0], [60.0, 60.0]]


def test_clicked_area_covers_the_clicks_and_their_spacing():
    from napari_denodet.core.finetune import clicked_area

    # A 3 x 3 grid of clicks 10 px apart: the area is the 20 x 20 square grown by 5 px.
    points = np.array([(y, x) for y in (20, 30, 40) for x in (50, 60, 70)], float)
    area = clicked_area(points, (100, 120))
    assert area[20, 50] and area[30, 60] and area[15, 60] and area[30, 75]
    assert not area[10, 60] and not area[30, 80] and not area[0, 0]
    assert area.sum() == pytest.approx(20 * 20 + 4 * 20 * 5 + np.pi * 25, rel=0.1)
    assert not clicked_area(points[:2], (100, 120)).any()  # two clicks cover no area


def test_complete_region_teaches_the_unclicked_area_as_background(shifted, monkeypatch):
    # The training step looks the loss up in its own module: spy on it there.
    from napari_denodet.core.finetune import run as module

    seen = []
    original = module.positive_unlabelled_loss

    def spy(logits, positive, negative, prior):
        seen.append(int(negative.sum()))
        return original(logits, positive, negative, prior)

    monkeypatch.setattr(module, "positive_unlabelled_loss", spy)
    for complete in (False, True):
        seen.clear()
        settings = FinetuneSettings(steps=3, complete_region=complete, seed=1)
        drain(finetune(load_model("fluorescence"), shifted.noisy, clicks_of(shifted.truth, 8),
                       settings=settings))
        # No false detections were given: known background comes only from the area.
        assert (sum(seen) > 0) == complete, (complete, seen)



def _field(rng, n_true=400, n_noise=1200, size=400):
    # Particles everywhere at one density (scores 0.6-0.95) among noise peaks (0.05-0.7).
    true = rng.uniform(0, size, (n_true, 2))
    noise = rng.uniform(0, size, (n_noise, 2))
    points = np.concatenate([true, noise])
    score = np.concatenate([rng.uniform(0.6, 0.95, n_true), rng.uniform(0.05, 0.7, n_noise)])
    return true, points_table(points[:, 0], points[:, 1], frame=np.zeros(len(points)),
                              score=score)


def test_area_calibration_counts_the_particles_of_the_clicked_area():
    rng = np.random.default_rng(3)
    true, candidates = _field(rng)
    centre = np.array([200.0, 200.0])
    clicks = true[np.argsort(np.hypot(*(true - centre).T))[:25]]  # a region, all clicked
    threshold, facts = calibrate_from_area(candidates, [clicks], [(400, 400)])
    assert facts["expected"] == pytest.approx(400, rel=0.35)  # the density of the clicks
    assert threshold == pytest.approx((facts["in_area"] + facts["over_frames"]) / 2)
    truth = points_table(true[:, 0], true[:, 1], frame=np.zeros(len(true)))

    def f1(t):
        return score_detections(candidates[candidates.score >= t], truth).f1

    best = max(f1(t) for t in np.linspace(0.05, 0.95, 91))  # about 0.83 here
    assert f1(threshold) >= best - 0.03, (threshold, f1(threshold), best)
    # Otsu's split of these scores (0.5) keeps every noise peak above it.
    assert f1(0.5) < f1(threshold) - 0.1


def test_area_calibration_scales_the_detections_where_particles_cluster():
    # 100 particles in a 100 px square cluster, 300 over the rest of a 400 px frame. The
    # clicks cover the cluster, so their density predicts four times too many particles;
    # the model's detections (70 % of the particles, and 20 noise peaks) scaled by the
    # clicks per detection in the area do not.
    rng = np.random.default_rng(5)
    cluster = rng.uniform(150, 250, (100, 2))
    rest = rng.uniform(0, 400, (600, 2))
    rest = rest[~np.all((rest > 150) & (rest < 250), axis=1)][:300]
    true = np.concatenate([cluster, rest])
    noise = rng.uniform(0, 400, (1200, 2))
    points = np.concatenate([true, noise])
    candidates = points_table(points[:, 0], points[:, 1], frame=np.zeros(len(points)),
                              score=np.concatenate([rng.uniform(0.6, 0.95, len(true)),
                                                    rng.uniform(0.05, 0.7, len(noise))]))
    found = candidates.iloc[np.concatenate([rng.permutation(len(true))[:280],
                                            len(true) + np.arange(20)])]
    clicks = cluster[np.argsort(np.hypot(*(cluster - 200.0).T))[:25]]
    _, by_density = calibrate_from_area(candidates, [clicks], [(400, 400)])
    threshold, facts = calibrate_from_area(candidates, [clicks], [(400, 400)],
                                           detections=found)
    assert by_density["expected_from"] == "density" and by_density["expected"] > 1000
    assert facts["expected_from"] == "detections"
    assert facts["expected"] == pytest.approx(len(true), rel=0.2)
    assert facts["over_frames"] == threshold_for_count(candidates, facts["expected"])
    assert threshold == pytest.approx((facts["in_area"] + facts["over_frames"]) / 2)
    # None of the detections in the area: the density is all there is.
    _, empty = calibrate_from_area(candidates, [clicks], [(400, 400)],
                                   detections=found.iloc[:0])
    assert empty["expected_from"] == "density"


def test_threshold_for_count_keeps_that_many_candidates():
    candidates = points_table([1, 2, 3, 4], [1, 2, 3, 4], score=[0.9, 0.2, 0.7, 0.4])
    assert threshold_for_count(candidates, 2) == 0.7
    assert threshold_for_count(candidates, 2.4) == 0.7
    assert threshold_for_count(candidates, 0) == 0.9  # at least one
    assert threshold_for_count(candidates, 99) == 0.2  # at most all


@pytest.mark.parametrize("advised", [False, True])
def test_count_calibration_keeps_the_parents_number_of_detections(shifted, advised):
    parent = load_model("fluorescence")
    if advised:
        parent.card = parent.card.updated(finetune={"mode": "weights",
                                                    "calibration": "count"})
    settings = FinetuneSettings(steps=3, calibration="auto" if advised else "count")
    # 5 clicks: too few to hold some out, so the adapted model is returned unchecked.
    result, progress = drain(finetune(parent, shifted.noisy, clicks_of(shifted.truth, 5),
                                      settings=settings))
    assert result.accepted is None
    training = result.model.card["training"]
    assert training["settings"]["calibration"] == "count"
    calibrated = next(p for p in progress if p.stage == "calibrate")
    assert "as many detections" in calibrated.metrics["message"]

    def detections(model):
        # On the clicked frame, as the model's card scores them.
        found = run(detect(shifted.noisy[:1], model.network, invert=model.invert,
                           **model.localisation)).points
        return found[found.score >= model.threshold]

    count = len(detections(parent))
    assert training["calibration"]["parent_count"] == count > 10
    assert result.model.threshold == training["calibration"]["threshold_keeping_count"]
    assert result.model.threshold != training["calibration"]["threshold_from_clicks"]
    assert len(detections(result.model)) == count


def test_unknown_calibration_is_refused():
    with pytest.raises(InputError, match="calibration must be one of auto, clicks, count"):
        FinetuneSettings(calibration="best")


def test_area_calibration_needs_an_area():
    _, candidates = _field(np.random.default_rng(0))
    assert calibrate_from_area(candidates, [np.array([[10.0, 10], [20, 20]])],
                               [(400, 400)]) == (None, {})


def test_threshold_mode_keeps_the_weights_and_moves_the_threshold(shifted):
    parent = load_model("fluorescence")
    clicks = clicks_of(shifted.truth, 10)
    result, progress = drain(finetune(parent, shifted.noisy, clicks,
                                      settings=FinetuneSettings(mode="threshold")))
    assert [p.stage for p in progress] == ["calibrate"]
    assert result.steps_done == 0
    tuned = dict(result.model.network.state_dict())
    assert all(torch.equal(v, tuned[k]) for k, v in parent.network.state_dict().items())
    card = result.model.card
    assert card["training"]["mode"] == "threshold" and card["training"]["steps"] == 0
    assert card["threshold"] == pytest.approx(progress[0].metrics["threshold"])
    assert card["threshold"] != parent.threshold
    assert card["parent"]["name"] == "fluorescence"


def test_auto_mode_follows_the_card(shifted):
    parent = load_model("fluorescence")
    clicks = clicks_of(shifted.truth, 5)
    advised = load_model("fluorescence")
    advised.card = advised.card.updated(finetune={"mode": "threshold"})
    result, _ = drain(finetune(advised, shifted.noisy, clicks))
    assert result.steps_done == 0 and result.model.card["training"]["mode"] == "threshold"
    parent.card = parent.card.updated(finetune=None)
    result, _ = drain(finetune(parent, shifted.noisy, clicks,
                               settings=FinetuneSettings(steps=2)))
    assert result.steps_done == 2 and result.model.card["training"]["mode"] == "weights"


def test_unclicked_particles_tell_a_complete_area_from_scattered_clicks():
    rng = np.random.default_rng(3)
    true, candidates = _field(rng)
    region = true[np.argsort(np.hypot(*(true - 200.0).T))[:25]]  # all clicked
    scattered = true[rng.choice(len(true), 25, replace=False)]
    complete = unclicked_in_area(candidates, [region], [(400, 400)])
    spread = unclicked_in_area(candidates, [scattered], [(400, 400)])
    assert not area_is_incomplete(complete, 25), complete
    # About half the unclicked particles of the hull score above the median click: 93.
    assert area_is_incomplete(spread, 25) and spread > 50, spread
    # No area (two clicks): nothing to count.
    assert unclicked_in_area(candidates, [region[:2]], [(400, 400)]) == 0


def test_auto_mode_trains_when_the_area_is_not_completely_clicked(shifted):
    advised = load_model("fluorescence")
    advised.card = advised.card.updated(finetune={"mode": "threshold"})
    clicks = scattered(shifted.truth, 10)[["frame", "y", "x"]]
    result, progress = drain(finetune(advised, shifted.noisy, clicks,
                                      settings=FinetuneSettings(steps=2)))
    assert progress[0].stage == "note" and "training the network" in progress[0].metrics[
        "message"]
    assert result.steps_done == 2
    training = result.model.card["training"]
    assert training["mode"] == "weights"
    assert training["unclicked_in_area"] == progress[0].metrics["unclicked"] > 2
    # Asked for explicitly, threshold only still runs, after the same warning.
    result, progress = drain(finetune(advised, shifted.noisy, clicks,
                                      settings=FinetuneSettings(mode="threshold")))
    assert [p.stage for p in progress] == ["note", "calibrate"]
    assert "may come out too high" in progress[0].metrics["message"]
    assert result.steps_done == 0
    # A completely clicked region gives no note and keeps the advice.
    result, progress = drain(finetune(advised, shifted.noisy, clicks_of(shifted.truth, 10)))
    assert [p.stage for p in progress] == ["calibrate"]
    assert result.model.card["training"]["unclicked_in_area"] <= 2


def test_unknown_mode_is_refused():
    with pytest.raises(InputError, match="mode must be one of auto, weights, threshold"):
        FinetuneSettings(mode="everything")


def test_threshold_mode_fits_a_blob_score_that_detection_applies(shifted, tmp_path):
    from napari_denodet.core.models import save_model

    parent = load_model("fluorescence")
    clicks = clicks_of(shifted.truth, 10)
    result, progress = drain(finetune(parent, shifted.noisy, clicks,
                                      settings=FinetuneSettings(mode="threshold")))
    assert progress[-1].metrics["blob_score"] is True
    assert progress[-1].metrics["message"].startswith(
        "weights kept; threshold recalibrated from the clicked area: ")
    assert progress[-1].metrics["message"].endswith(", ties broken by the denoised image")
    blob = result.model.card["localisation"]["blob"]
    assert blob["weight"] == 0.1 and blob["sigma"] == 2.0 and blob["scale"] > 0
    # Saved and loaded, the model scores with it: same points, other scores.
    path = save_model(tmp_path / "tuned.pt", result.model.network, result.model.card)
    tuned = load_model(path)
    assert tuned.localisation["blob"] == blob
    found = run(detect(shifted.noisy[:1], tuned.network, **tuned.localisation)).points
    plain = run(detect(shifted.noisy[:1], parent.network, **parent.localisation)).points
    np.testing.assert_allclose(found[["y", "x"]], plain[["y", "x"]])
    moved = np.abs(found["score"] - plain["score"])
    assert moved.max() > 0.05 and moved.max() <= 0.1 + 1e-9
    # Weight 0 keeps the peak probability; training the weights drops a parent's term.
    plain_card = run(finetune(parent, shifted.noisy, clicks, settings=FinetuneSettings(
        mode="threshold", blob_weight=0.0))).model.card
    assert "blob" not in plain_card["localisation"]
    # (The trained model, whether or not the acceptance check keeps it over the parent.)
    trained = run(finetune(tuned, shifted.noisy, clicks,
                           settings=FinetuneSettings(mode="weights", steps=2))).adapted
    assert "blob" not in trained.localisation
    assert trained.localisation["radius"] == parent.localisation["radius"]


def test_bad_blob_settings_are_refused():
    with pytest.raises(InputError, match="blob weight must be in"):
        FinetuneSettings(blob_weight=-0.1)


def test_model_finetune_bins_and_the_card_records_it(shifted):
    from napari_denodet.core.progress import Stage
    from napari_denodet.core.resample import unbin_points

    parent = load_model("fluorescence")
    clicks = unbin_points(clicks_of(shifted.truth, 10), 2)  # in 2x "full-res" pixels
    full = np.repeat(np.repeat(shifted.noisy, 2, axis=1), 2, axis=2)
    result, progress = drain(parent.finetune(full, clicks,
                                             settings=FinetuneSettings(mode="threshold"),
                                             binning=2, name="mine"))
    assert [p.stage for p in progress] == [Stage.CALIBRATE]
    assert all(type(p.stage) is Stage for p in progress)
    card = result.model.card
    assert card.name == "mine" and card.binning == 2 and result.model.binning == 2
    assert card.training["clicks"] == 10 and "command" not in card.training
    assert card.parent["name"] == "fluorescence" and parent.binning == 1
    with pytest.raises(InputError, match="binning must be an integer >= 1"):
        drain(parent.finetune(full, clicks, binning=0))


def test_the_settings_write_the_command_that_repeats_the_run(tmp_path):
    import shlex

    from napari_denodet.cli import build_parser

    settings = FinetuneSettings(steps=20, mode="weights", calibration="count",
                                time_budget=30.0, complete_region=True, pseudo_labels=0.0,
                                particles_per_frame=12.5, seed=3)
    command = settings.command("my cells.tif", "clicks.csv", "micrograph",
                               tmp_path / "mine.pt", negatives="wrong.csv", binning=3)
    words = shlex.split(command)
    assert words[:3] == ["napari-denodet", "finetune", "my cells.tif"]
    args = build_parser().parse_args(words[1:])
    assert (args.points.name, args.negatives.name, args.model) == (
        "clicks.csv", "wrong.csv", "micrograph")
    assert (args.steps, args.bin, args.seed, args.pseudo_labels) == (20, 3, 3, 0.0)
    assert (args.mode, args.calibration, args.complete_region) == ("weights", "count", True)
    assert (args.time_budget, args.particles_per_frame) == (30.0, 12.5)
    assert str(args.out) == "mine.pt"  # without its folder
    # The threshold mode does not calibrate after training: no --calibration.
    assert "--calibration" not in FinetuneSettings(mode="threshold").command(
        "a.tif", "b.csv", "fluorescence", "c.pt")


def test_a_gain_the_held_out_clicks_cannot_resolve_does_not_count():
    from napari_denodet.core.finetune.run import _gain_margin, _Held

    every = np.ones(3, dtype=bool)
    # Three held-out clicks found before and after, the precision estimated from 40
    # detections: 0.94 -> 0.96 is within the check's uncertainty (a case the benchmark
    # met: the adapted model was worse on the truth).
    before = _Held(every, 0.94, 0.94 * 0.06 / 40)
    after = _Held(every, 0.96, 0.96 * 0.04 / 40)
    assert after.f1 > before.f1
    assert after.f1 - before.f1 < _gain_margin(before, after)
    # Two more of the three clicks found, at the same precision, is a gain it resolves.
    one = np.array([True, False, False])
    before = _Held(one, 0.9, 0.9 * 0.1 / 40)
    after = _Held(every, 0.9, 0.9 * 0.1 / 40)
    assert after.f1 - before.f1 > _gain_margin(before, after)
    # More held-out clicks resolve a smaller gain.
    few = _gain_margin(_Held(every, 0.8, 0.0), _Held(every, 0.9, 0.0))
    many = _gain_margin(_Held(np.ones(30, bool), 0.8, 0.0), _Held(np.ones(30, bool), 0.9, 0.0))
    assert many < few / 3


def test_an_adaptation_worse_on_the_held_out_clicks_is_not_kept(shifted):
    # A learning rate far too high ruins the weights: the acceptance check on the clicks
    # held out keeps the starting model, and says so.
    parent = load_model("fluorescence")
    settings = FinetuneSettings(steps=20, learning_rate=0.05, seed=0, mode="weights")
    result, progress = drain(finetune(parent, shifted.noisy, clicks_of(shifted.truth, 10),
                                      settings=settings))
    assert result.accepted is False and result.heldout["clicks"] == 3
    assert result.heldout["f1_after"] <= result.heldout["f1_before"]
    assert result.message.startswith("previous model kept")
    assert progress[-1].stage == "accept" and progress[-1].metrics["accepted"] is False
    assert all(torch.equal(a, b) for a, b in zip(result.model.network.parameters(),
                                                 parent.network.parameters(), strict=True))
    card = result.model.card
    assert card["training"]["accepted"] is False and not card.fitted_threshold
    # It detects as the starting model does: the threshold chosen for the image.
    mine, theirs = run(result.model.detect(shifted.noisy)), run(parent.detect(shifted.noisy))
    assert mine.threshold_rule == theirs.threshold_rule == "expected F1"
    pd.testing.assert_frame_equal(mine.points, theirs.points)


def test_the_time_budget_covers_the_whole_run(shifted):
    import time

    settings = FinetuneSettings(steps=100_000, time_budget=8.0, seed=0)
    started = time.perf_counter()
    result, progress = drain(finetune(load_model("fluorescence"), shifted.noisy,
                                      clicks_of(shifted.truth, 10), settings=settings))
    wall = time.perf_counter() - started
    assert result.steps_done >= 1 and result.accepted is not None
    # Training stops early enough for calibration and the acceptance check to fit.
    trained = [p for p in progress if p.stage == "train"]
    assert trained[-1].elapsed <= 8.0 and wall <= 2 * 8.0, wall
    assert all(p.budget == 8.0 and p.elapsed <= wall for p in trained)


def test_the_polarity_comes_from_the_clicks_and_goes_into_the_card():
    from napari_denodet.core.finetune import clicks_polarity
    from napari_denodet.core.simulate import simulate_micrograph

    sim = simulate_micrograph(shape=(256, 256), snr=0.5, seed=3)
    dark = sim.noisy
    bright = dark.max() - dark
    clicks = sim.truth[["y", "x"]].iloc[:8].reset_index(drop=True)
    assert clicks_polarity(dark, clicks) == "dark"
    assert clicks_polarity(bright, clicks) == "bright"
    parent = load_model("micrograph")
    assert parent.invert
    result = run(finetune(parent, bright, clicks, settings=FinetuneSettings(mode="threshold")))
    assert result.model.card["invert"] is False and not result.model.invert
    told = run(finetune(parent, bright, clicks,
                        settings=FinetuneSettings(mode="threshold", polarity="dark")))
    assert told.model.invert
    assert told.model.card["training"]["settings"]["polarity"] == "dark"


def test_a_parent_kept_by_the_check_keeps_its_own_blob_term(shifted):
    # A recalibrated parent scores with a blob term; the adapted card drops it, and the
    # starting model, kept when training does no better, must keep it.
    clicks = clicks_of(shifted.truth, 10)
    tuned = run(finetune(load_model("fluorescence"), shifted.noisy, clicks,
                         settings=FinetuneSettings(mode="threshold"))).model
    assert "blob" in tuned.localisation
    result = run(finetune(tuned, shifted.noisy, clicks, settings=FinetuneSettings(
        mode="weights", steps=20, learning_rate=0.05, seed=0)))
    assert result.accepted is False and "blob" not in result.adapted.localisation
    assert result.model.localisation == tuned.localisation
    assert result.model.threshold == tuned.threshold
