"""Scores as probabilities from target and decoy candidates; the per-image threshold."""

import numpy as np
import pytest

from napari_denodet.core.calibration import (
    EVIDENCE_LEVEL,
    TIE_BREAK,
    choose_threshold,
    decoy_frame,
    decoy_frames,
    expected_scores,
    fit_calibration,
    surplus_pvalues,
)


def test_probabilities_follow_the_share_of_targets_over_decoys():
    rng = np.random.default_rng(0)
    noise = rng.uniform(0.05, 0.6, 4000)
    decoys = rng.uniform(0.05, 0.6, 4000)  # the same noise, flipped
    particles = rng.uniform(0.7, 0.95, 300)
    calibration = fit_calibration(np.concatenate([noise, particles]), decoys)
    p = calibration(np.array([0.1, 0.3, 0.5, 0.8, 0.9]))
    assert np.all(p[:3] < 0.1)  # as many decoys as targets: false
    assert np.all(p[3:] >= 1.0 - TIE_BREAK)  # no decoy reaches them: true
    # Strictly rising with the raw score (a tie-break of at most TIE_BREAK), so a
    # threshold can fall between any two candidates.
    assert np.all(np.diff(calibration(np.linspace(0, 1, 101))) > 0)
    assert p[4] > p[3]
    assert calibration.decoys == 4000


def test_decoy_weight_stands_for_the_frames_without_a_decoy():
    # Half the targets at 0.5 are noise when one decoy frame stands for four frames.
    targets = np.concatenate([np.full(400, 0.5), np.full(100, 0.9)])
    decoys = np.full(50, 0.5)
    assert fit_calibration(targets, decoys, decoy_weight=4.0)([0.5])[0] == pytest.approx(
        0.5, abs=TIE_BREAK)
    assert fit_calibration(targets, decoys, decoy_weight=1.0)([0.5])[0] == pytest.approx(
        0.875, abs=TIE_BREAK)


def test_without_decoys_every_candidate_is_kept_and_without_targets_nothing():
    assert fit_calibration([0.2, 0.9], [])([0.2, 0.9]) == pytest.approx([1.0, 1.0],
                                                                        abs=TIE_BREAK)
    assert fit_calibration([], [0.3])([0.3]) == pytest.approx([1.0], abs=TIE_BREAK)


@pytest.mark.parametrize("seed", range(5))
def test_the_chosen_threshold_maximises_the_expected_f1(seed):
    p = np.random.default_rng(seed).beta(0.5, 0.5, 300)
    choice = choose_threshold(p)
    levels = np.unique(p)
    best = max(expected_scores(p, t).expected_f1 for t in levels if t >= 0.05)
    assert choice.expected_f1 == pytest.approx(best)
    assert choice.kept == int((p >= choice.threshold).sum())
    expected = expected_scores(p, choice.threshold)
    assert expected.expected_precision == pytest.approx(p[p >= choice.threshold].mean())
    assert expected.expected_recall == pytest.approx(p[p >= choice.threshold].sum() / p.sum())


def test_certain_particles_and_certain_noise_are_split_exactly():
    p = np.array([1.0] * 20 + [0.0] * 200)
    choice = choose_threshold(p)
    assert choice.kept == 20 and choice.expected_f1 == 1.0


def test_decoy_frames_are_all_frames_of_short_stacks_and_spread_over_long_ones():
    assert decoy_frames(5) == [0, 1, 2, 3, 4]
    spread = decoy_frames(200)
    assert len(spread) == 8 and spread[0] == 0 and spread[-1] == 199


@pytest.mark.parametrize("photons", [10.0, 100.0])
def test_a_decoy_has_the_frames_bright_noise_tail_and_dark_particles(photons):
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:256, :256]
    spots = 200.0 * (np.exp(-((yy - 64) ** 2 + (xx - 64) ** 2) / 4.0)
                     + np.exp(-((yy - 192) ** 2 + (xx - 128) ** 2) / 4.0))
    frame = 100.0 + 2.0 * rng.poisson(photons + spots).astype(np.float64)
    decoy = decoy_frame(frame)
    assert decoy[64, 64] < np.median(decoy) < frame[64, 64]
    # Away from the spots the decoy's bright tail is the frame's: as many bright noise
    # peaks. The plain flip turns Poisson's bright skew round and has fewer.
    flat = (slice(100, 180), slice(0, 80))
    for q, within in ((95, 0.25), (99, 0.25), (99.9, 0.4)):  # 99.9 %: 6 of 6,400 px
        assert np.percentile(decoy[flat], q) == pytest.approx(
            np.percentile(frame[flat], q), abs=max(within * np.std(frame[flat]), 2.0))
        # (2.0: one photon is two grey values here)
    plain = 2 * np.median(frame) - frame
    if photons == 10.0:
        assert np.percentile(plain[flat], 99.9) < np.percentile(frame[flat], 99.9) - 2.0
    # Symmetric noise keeps the plain flip.
    gaussian = np.random.default_rng(3).normal(50.0, 4.0, (256, 256))
    inside = np.abs(gaussian - 50.0) < 12.0  # within 3 sigma: the tails are few pixels
    np.testing.assert_allclose(decoy_frame(gaussian)[inside],
                               (2 * np.median(gaussian) - gaussian)[inside], atol=1.0)


@pytest.mark.parametrize("photons", [2.0, 10.0])
def test_a_decoy_of_whole_numbers_keeps_the_noise_spread(photons):
    # Many pixels tie on one value: a shared rank per value narrowed the decoy's noise
    # (22 % less variance at 2 photons), so decoys held too few noise peaks.
    frame = np.random.default_rng(5).poisson(photons, (256, 256)).astype(np.float64)
    decoy = np.rint(decoy_frame(frame))
    assert decoy.var() == pytest.approx(frame.var(), rel=0.03)
    skew = lambda v: np.mean((v - v.mean()) ** 3) / v.std() ** 3  # noqa: E731
    assert skew(decoy) == pytest.approx(skew(frame), abs=0.05)


def _chosen(targets, decoys, weight=1.0):
    probability = fit_calibration(targets, decoys, weight)(targets)
    return choose_threshold(probability, pvalues=surplus_pvalues(targets, decoys, weight))


def test_noise_alone_keeps_nothing_where_the_expected_f1_alone_keeps_a_chance_surplus():
    # Targets and decoys of one and the same noise: somewhere the targets outnumber the
    # decoys by chance, and the expected F1 alone keeps them as particles.
    rng = np.random.default_rng(3)
    kept_by_f1, kept_by_test = [], []
    for _ in range(20):
        targets, decoys = rng.beta(2, 6, 3000), rng.beta(2, 6, 3000)
        probability = fit_calibration(targets, decoys)(targets)
        kept_by_f1.append(choose_threshold(probability).kept)
        choice = _chosen(targets, decoys)
        kept_by_test.append(choice.kept)
        assert choice.supported or choice.kept == 0
    assert sum(k > 0 for k in kept_by_f1) >= 15
    assert sum(k > 0 for k in kept_by_test) <= 2  # the test's level, and its scan


def test_a_few_particles_far_above_every_decoy_are_kept():
    # Three candidates in one image cannot outnumber the decoys beyond chance by their
    # ranks alone (1 in 8); far above the decoys' tail they do.
    rng = np.random.default_rng(4)
    decoys, noise = rng.beta(2, 6, 3000), rng.beta(2, 6, 3000)
    particles = np.array([0.97, 0.98, 0.99])
    targets = np.concatenate([noise, particles])
    pvalues = surplus_pvalues(targets, decoys)
    assert np.all(pvalues[-3:] <= EVIDENCE_LEVEL)
    choice = _chosen(targets, decoys)
    assert choice.supported and choice.kept >= 3
    # Just above the highest decoy, three are what noise gives.
    near = np.concatenate([noise, decoys.max() + np.array([0.001, 0.002, 0.003])])
    assert np.all(surplus_pvalues(near, decoys)[-3:] > EVIDENCE_LEVEL)


def test_the_count_test_uses_the_frames_each_decoy_stands_for():
    # 40 targets and 10 decoys above a score: chance when each decoy frame stands for
    # four frames, a clear surplus when it stands for one.
    targets = np.concatenate([np.full(40, 0.5), np.full(1000, 0.1)])
    decoys = np.concatenate([np.full(10, 0.5), np.full(250, 0.1)])
    assert surplus_pvalues(targets, decoys, 4.0)[0] > 0.3
    assert surplus_pvalues(targets, decoys, 1.0)[0] < 1e-4
