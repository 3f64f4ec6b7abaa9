"""Instant feedback: the probabilities and threshold refitted to clicks."""

import numpy as np
import pandas as pd
import pytest

from napari_denodet.core.feedback import (
    LABEL,
    NOT_PARTICLE,
    PARTICLE,
    refit_threshold,
    split_clicks,
)
from napari_denodet.core.metrics import GATE, score_detections
from napari_denodet.core.points import FRAME, SCORE, X, Y, points_table

SHAPE = (200, 200)


def _candidates(seed=0):
    # 60 particles with high raw peaks and 240 noise peaks with low ones, on two frames;
    # the probabilities overrate the noise (as a poor decoy estimate would).
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(12, 190, 24), np.arange(12, 190, 24)), -1)
    spots = grid.reshape(-1, 2)[:30].astype(float)
    rows = []
    for frame in (0, 1):
        for y, x in spots:
            rows.append((frame, y, x, rng.uniform(0.6, 0.95), True))
        noise = rng.uniform(0, SHAPE[0], (120, 2))
        far = np.min(np.hypot(*(noise[:, None] - spots[None]).transpose(2, 0, 1)), 1) > 8
        for y, x in noise[far]:
            rows.append((frame, y, x, rng.uniform(0.05, 0.65), False))
    table = pd.DataFrame(rows, columns=[FRAME, Y, X, "peak", "true"])
    table.insert(3, SCORE, np.clip(table["peak"] + 0.35, 0, 1))
    return table


def _f1(candidates, scores, threshold):
    truth = candidates[candidates["true"]]
    return score_detections(candidates[scores >= threshold], truth).f1


def test_no_click_changes_nothing():
    table = _candidates()
    refit = refit_threshold(table, table.iloc[:0], start=0.42, shape=SHAPE)
    assert refit.threshold == 0.42
    np.testing.assert_array_equal(refit.scores, table[SCORE])
    assert refit.kept == int((table[SCORE] >= 0.42).sum())


def test_a_completely_clicked_area_raises_a_threshold_that_keeps_noise():
    table = _candidates()
    start = 0.4  # keeps most of the noise
    truth = table[table["true"]]
    # Every particle of a corner of frame 0 clicked (slightly off centre, as a hand does).
    corner = truth[(truth[FRAME] == 0) & (truth[Y] < 80) & (truth[X] < 110)]
    clicks = corner.assign(**{Y: corner[Y] + 0.7, X: corner[X] - 0.5})[[FRAME, Y, X]]
    # The overrated noise looks like unclicked particles: the area is complete only when
    # the user says so.
    assert refit_threshold(table, clicks, start=start, shape=SHAPE).from_area == 0
    refit = refit_threshold(table, clicks, start=start, shape=SHAPE, complete=True)
    assert refit.from_area > 0 and refit.particles == len(clicks)
    assert refit.threshold != start
    before, after = _f1(table, table[SCORE], start), _f1(table, refit.scores, refit.threshold)
    assert after > before + 0.1
    # Away from the clicks (frame 1) the probabilities still follow the network's ranking.
    other = (table[FRAME] == 1).to_numpy()
    order = np.argsort(table["peak"].to_numpy()[other])
    assert np.all(np.diff(refit.scores[other][order]) > 0)


def test_a_few_obvious_particles_clicked_over_a_frame_do_not_label_the_rest_false():
    # The five surest particles, scattered: the image's own probabilities see many likely
    # particles unclicked between them, so the area is not taken as complete.
    table = _candidates()
    table[SCORE] = table["peak"]
    truth = table[table["true"] & (table[FRAME] == 0)]
    clicks = truth.nlargest(5, "peak")[[FRAME, Y, X]]
    refit = refit_threshold(table, clicks, start=0.62, shape=SHAPE)
    assert refit.from_area == 0
    assert _f1(table, refit.scores, refit.threshold) >= _f1(table, table[SCORE], 0.62)


def test_the_users_word_decides_the_clicked_candidates():
    table = _candidates()
    noise = table[~table["true"] & (table[FRAME] == 1)].nlargest(1, "peak")
    particle = table[table["true"] & (table[FRAME] == 1)].nsmallest(1, "peak")
    refit = refit_threshold(table, particle[[FRAME, Y, X]], noise[[FRAME, Y, X]],
                            start=0.5, shape=SHAPE)
    assert refit.scores[particle.index[0]] == 1.0 >= refit.threshold
    assert refit.scores[noise.index[0]] == 0.0 < refit.threshold
    assert refit.particles_kept == 1 and refit.particles == 1
    # Every candidate within the gate of the false click is dropped.
    near = np.hypot(table[Y] - noise[Y].iloc[0], table[X] - noise[X].iloc[0]) <= 5.0
    assert refit.false == int((near & (table[FRAME] == 1)).sum()) and refit.false_kept == 0


def test_clicks_on_another_frame_or_far_from_any_candidate_label_nothing():
    table = _candidates()
    lonely = points_table([100.0], [100.0], frame=[5])
    refit = refit_threshold(table, lonely, lonely, start=0.5, shape=SHAPE)
    assert refit.particles == refit.false == 0 and refit.threshold == 0.5


def test_split_clicks_by_label():
    clicks = pd.DataFrame({Y: [1.0, 2.0, 3.0], X: [4.0, 5.0, 6.0],
                           LABEL: [PARTICLE, NOT_PARTICLE, PARTICLE]})
    particles, false = split_clicks(clicks)
    assert particles[Y].tolist() == [1.0, 3.0] and false[Y].tolist() == [2.0]
    assert LABEL not in particles.columns
    plain, none = split_clicks(clicks.drop(columns=LABEL))
    assert len(plain) == 3 and none.empty
    with pytest.raises(ValueError, match="'maybe'"):
        split_clicks(clicks.assign(**{LABEL: ["maybe", PARTICLE, PARTICLE]}))


def test_clicks_that_agree_with_the_threshold_in_force_keep_it():
    # Probabilities that already rank right (the raw peak itself) and a threshold that
    # keeps every clicked particle and drops the clicked noise: nothing to improve.
    table = _candidates()
    table[SCORE] = table["peak"]
    truth = table[table["true"]]
    clicks = truth[(truth[FRAME] == 0)].nlargest(5, "peak")[[FRAME, Y, X]]
    noise = table[~table["true"] & (table[FRAME] == 0)].nsmallest(3, "peak")[[FRAME, Y, X]]
    refit = refit_threshold(table, clicks, noise, start=0.66, shape=SHAPE)  # above all noise
    assert refit.threshold == 0.66
    # Only the clicked candidates change (to the user's word).
    changed = np.flatnonzero(refit.scores != table[SCORE].to_numpy())
    assert refit.from_area == 0 and len(changed) == refit.particles + refit.false
    assert set(refit.scores[changed]) == {0.0, 1.0}


def test_a_threshold_fitted_to_clicks_gives_way_only_to_clear_evidence():
    table = _candidates()
    truth = table[table["true"] & (table[FRAME] == 0)]
    noise = table[~table["true"] & (table[FRAME] == 0)]
    particles = truth.nlargest(6, "peak")[[FRAME, Y, X]]
    false = noise.nlargest(5, "peak")

    def refit(start, fitted):
        return refit_threshold(table, particles, false[[FRAME, Y, X]], start=start,
                               shape=SHAPE, fitted=fitted)

    # A threshold that keeps every clicked particle and the top two clicked false
    # detections: a refit that drops them is better on the clicks by two.
    start = float(np.sort(false[SCORE])[-2]) - 1e-6
    plain = refit(start, fitted=False)
    assert plain.threshold != start and not plain.kept_fitted
    # Fitted to clicks already, a gain of two is what chance gives: the threshold stays
    # (the clicked false ones still go: a click is the user's word).
    held = refit(start, fitted=True)
    assert held.threshold == start and held.kept_fitted
    assert held.kept == int((table[SCORE] >= start).sum()) - 2 != plain.kept
    assert "fine-tuned threshold is kept" in held.summary()
    # A threshold that keeps all five clicked false detections: dropping them is five
    # put right and none wrong, clear enough even for a fitted threshold.
    low = refit(0.0, fitted=True)
    assert low.threshold > 0.0 and not low.kept_fitted and low.kept < len(table) - 5


def test_the_threshold_puts_right_as_many_clicked_candidates_as_any_can():
    # A noisy image whose own probabilities underrate every candidate (a decoy estimate
    # that under-counts, as on micrographs at SNR 0.05) and whose particles and noise
    # overlap in peak, with a completely clicked area.
    import napari_denodet.core.feedback as feedback

    for seed in range(4):
        rng = np.random.default_rng(seed)
        table = _candidates(seed=seed)
        true = table["true"].to_numpy()
        table["peak"] = np.where(true, rng.uniform(0.4, 0.6, len(table)),
                                 rng.uniform(0.25, 0.5, len(table)))
        table[SCORE] = 0.3 * table["peak"]
        truth = table[table["true"]]
        corner = truth[(truth[FRAME] == 0) & (truth[Y] < 80) & (truth[X] < 110)]
        clicks = corner[[FRAME, Y, X]]
        refit = refit_threshold(table, clicks, start=0.2, shape=SHAPE, complete=True)
        assert refit.particles == len(clicks) and refit.false >= 3
        # The refit is monotone in the raw peak: its threshold is a cut in peak. No cut
        # puts right more of the labelled candidates (the clicked particles' candidates
        # and the area's others) than the one chosen.
        peak = table["peak"].to_numpy()
        yes, no, _ = feedback._labelled(table, clicks, clicks.iloc[:0], SHAPE, GATE, True)
        labelled = np.zeros(len(table), bool)
        labelled[np.concatenate([yes, no])] = True
        # (Between the highest unlabelled candidate it drops and the lowest it keeps.)
        low = peak[~labelled & (refit.scores < refit.threshold)].max()
        high = peak[~labelled & (refit.scores >= refit.threshold)].min()
        cuts = [np.nextafter(low, 1), high, *peak[labelled & (peak > low) & (peak <= high)]]
        best = max(feedback._labelled_f1(peak, t, yes, no) for t in peak[labelled])
        assert max(feedback._labelled_f1(peak, t, yes, no) for t in cuts) == pytest.approx(best)


def test_the_image_estimate_decides_only_between_thresholds_the_clicks_cannot_separate():
    from napari_denodet.core.feedback import _agreeing

    # Six labelled candidates: particles at 0.9, 0.8, 0.7 and 0.4, false ones at 0.6
    # and 0.2. Keeping down to 0.7 gives F1 6/7, down to 0.4 gives 8/9: the clicks want
    # a threshold in (0.2, 0.4]; the unlabelled candidates do not count.
    probability = np.array([0.9, 0.8, 0.7, 0.4, 0.6, 0.2, 0.3, 0.35, 0.25, 0.5])
    yes, no = np.array([0, 1, 2, 3]), np.array([4, 5])
    assert _agreeing(probability, yes, no, 0.3) == 0.3  # inside: the image decides
    assert _agreeing(probability, yes, no, 0.65) == 0.4  # above: down to the interval
    # Below: up to the lowest probability that drops the false one at 0.2.
    assert _agreeing(probability, yes, no, 0.1) == 0.25
    # Nothing labelled: the image's choice stands.
    assert _agreeing(probability, yes[:0], no[:0], 0.65) == 0.65
