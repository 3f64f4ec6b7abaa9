import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from napari_denodet.core.metrics import (
    DetectionScores,
    f1_by_threshold,
    match_points,
    psnr,
    score_detections,
)
from napari_denodet.core.points import points_table


def _table(yx, frame=None, score=None):
    yx = np.asarray(yx, dtype=float).reshape(-1, 2)
    return points_table(yx[:, 0], yx[:, 1], frame=frame, score=score)


@pytest.mark.parametrize(
    ("pred", "ref", "tp", "fp", "fn", "f1"),
    [
        ([], [], 0, 0, 0, 1.0),  # both empty: nothing to find, nothing wrong
        ([], [[1, 1], [5, 5]], 0, 0, 2, 0.0),  # empty prediction
        ([[1, 1]], [], 0, 1, 0, 0.0),  # empty reference
        ([[1, 1], [20, 20]], [[1, 1], [20, 20]], 2, 0, 0, 1.0),  # exact match
        ([[0, 0]], [[3, 4]], 1, 0, 0, 1.0),  # exactly at the 5 px gate: matches
        ([[0, 0]], [[3, 4.000001]], 0, 1, 1, 0.0),  # just beyond: never matches
    ],
)
def test_edge_cases(pred, ref, tp, fp, fn, f1):
    s = score_detections(_table(pred), _table(ref))
    assert (s.tp, s.fp, s.fn) == (tp, fp, fn)
    assert s.f1 == pytest.approx(f1)


def test_exact_match_has_zero_rmse_and_unit_scores():
    pts = np.random.default_rng(0).uniform(0, 100, (50, 2))
    s = score_detections(_table(pts), _table(pts))
    assert s.rmse == 0.0
    assert s.precision == s.recall == s.f1 == 1.0


def test_empty_sides_give_nan_rmse_and_sensible_precision_recall():
    s = score_detections(_table([]), _table([[1, 1]]))
    assert np.isnan(s.rmse)
    assert s.precision == 1.0 and s.recall == 0.0


def test_matching_maximises_pairs_where_greedy_nearest_would_not():
    # Greedy nearest-first pairs p0 with r0 (0.5 px) and leaves p1 alone; the optimal
    # one-to-one matching pairs p0-r1 and p1-r0, both within the gate.
    pred = [[0, 0], [0, 4.5]]
    ref = [[0, 0.5], [0, -4.0]]
    p, r, d = match_points(np.array(pred), np.array(ref), gate=5.0)
    assert len(p) == 2
    assert sorted(zip(p.tolist(), r.tolist(), strict=True)) == [(0, 1), (1, 0)]
    np.testing.assert_allclose(sorted(d), [4.0, 4.0])


def test_among_maximal_matchings_the_closest_is_chosen():
    pred = [[0, 0], [0, 3]]
    ref = [[0, 0.2], [0, 3.1]]
    _, r, d = match_points(np.array(pred), np.array(ref))
    assert r.tolist() == [0, 1]
    assert d.sum() == pytest.approx(0.3)


def test_points_in_different_frames_never_match():
    pred = _table([[10, 10]], frame=[0])
    ref = _table([[10, 10]], frame=[1])
    s = score_detections(pred, ref)
    assert (s.tp, s.fp, s.fn) == (0, 1, 1)


def test_counts_and_rmse_aggregate_over_frames():
    pred = _table([[0, 0], [0, 1], [50, 50]], frame=[0, 1, 1])
    ref = _table([[0, 3], [0, 0], [9, 9]], frame=[0, 1, 1])
    s = score_detections(pred, ref)
    assert (s.tp, s.fp, s.fn) == (2, 1, 1)
    assert s.rmse == pytest.approx(np.sqrt((9 + 1) / 2))
    assert s.f1 == pytest.approx(4 / 6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_matching_equals_a_dense_hungarian_solution(seed):
    rng = np.random.default_rng(seed)
    pred = rng.uniform(0, 60, (150, 2))
    ref = rng.uniform(0, 60, (170, 2))
    p, r, d = match_points(pred, ref, gate=5.0)
    # Reference: one dense problem with forbidden pairs priced out.
    dist = np.hypot(*(pred[:, None, :] - ref[None, :, :]).transpose(2, 0, 1))
    big = 1e6
    cost = np.where(dist <= 5.0, dist, big)
    ri, ci = linear_sum_assignment(cost)
    ok = cost[ri, ci] < big
    assert len(p) == ok.sum()
    assert d.sum() == pytest.approx(cost[ri[ok], ci[ok]].sum())
    assert len(set(p.tolist())) == len(p) and len(set(r.tolist())) == len(r)
    np.testing.assert_allclose(d, dist[p, r])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_by_threshold_equals_scoring_each_threshold(seed):
    # Crowded frames, so that a greedy or per-pair count would differ from the matching.
    rng = np.random.default_rng(seed)
    ref_yx = rng.uniform(0, 60, (240, 2))
    ref = _table(ref_yx, frame=np.repeat([0, 1, 3], 80))
    pred_yx = np.concatenate([ref_yx[:200] + rng.normal(0, 2.0, (200, 2)),
                              rng.uniform(0, 60, (100, 2))])
    pred = _table(pred_yx, frame=rng.choice([0, 1, 2, 3], 300), score=rng.uniform(0, 1, 300))
    levels = np.concatenate([[-1.0, 0.0], np.sort(pred.score.to_numpy())[::7], [1.5]])
    expected = [score_detections(pred[pred.score >= t], ref).f1 for t in levels]
    np.testing.assert_allclose(f1_by_threshold(pred, ref, levels), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(f1_by_threshold(pred, ref, levels, gate=1.5),
                               [score_detections(pred[pred.score >= t], ref, gate=1.5).f1
                                for t in levels], rtol=0, atol=1e-12)


def test_f1_by_threshold_edge_cases():
    pred = _table([[0, 0], [10, 10]], score=[0.2, 0.8])
    # Exactly at the gate matches; nothing kept against something to find gives 0;
    # both sides empty give 1, as score_detections says.
    np.testing.assert_allclose(f1_by_threshold(pred, _table([[3, 4]]), [0.1, 0.5, 0.9]),
                               [2 / 3, 0.0, 0.0])
    np.testing.assert_allclose(f1_by_threshold(pred, _table([]), [0.5, 0.9]), [0.0, 1.0])
    np.testing.assert_allclose(f1_by_threshold(_table([], score=[]), _table([]), [0.5]), [1.0])


def test_scores_as_dict_for_json():
    s = DetectionScores(tp=3, fp=1, fn=2, rmse=0.5)
    out = s.as_dict()
    assert out == {"tp": 3, "fp": 1, "fn": 2, "rmse": 0.5, "precision": 0.75,
                   "recall": 0.6, "f1": pytest.approx(6 / 9)}


def test_psnr_known_value_and_identity():
    ref = np.zeros((8, 8))
    ref[0, 0] = 10.0  # range 10
    est = ref + 1.0  # MSE 1
    assert psnr(ref, est) == pytest.approx(20.0)
    assert psnr(ref, ref) == float("inf")
    assert psnr(ref, est, data_range=100.0) == pytest.approx(40.0)


def test_psnr_of_a_stack_is_the_mean_over_frames():
    ref = np.stack([np.linspace(0, 10, 64).reshape(8, 8), np.linspace(0, 1, 64).reshape(8, 8)])
    est = ref + 0.1
    expected = np.mean([psnr(ref[0], est[0]), psnr(ref[1], est[1])])
    assert psnr(ref, est) == pytest.approx(expected)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(ref, est[0])


def test_large_groups_are_solved_sparsely_with_the_same_answer(monkeypatch):
    # A frame whose candidate pairs form one large group was solved as a dense N x M
    # matrix; large groups now go through a sparse minimum-weight matching that keeps
    # the same rule (most pairs first, then the least total distance).
    from napari_denodet.core import metrics

    rng = np.random.default_rng(5)
    for _ in range(20):
        n, m = rng.integers(5, 200, 2)
        predicted, reference = rng.uniform(0, 40, (n, 2)), rng.uniform(0, 40, (m, 2))
        dense = match_points(predicted, reference, 5.0)
        monkeypatch.setattr(metrics, "MAX_DENSE_CELLS", 0)
        p, r, d = match_points(predicted, reference, 5.0)
        monkeypatch.undo()
        assert len(d) == len(dense[2])
        assert d.sum() == pytest.approx(dense[2].sum(), abs=1e-9)
        assert len(set(p)) == len(p) and len(set(r)) == len(r)
        np.testing.assert_allclose(np.hypot(*(predicted[p] - reference[r]).T), d)
        assert np.all(d <= 5.0)


def test_points_too_dense_to_match_are_refused_naming_the_frame(monkeypatch):
    from napari_denodet.core import metrics
    from napari_denodet.core.errors import InputError

    monkeypatch.setattr(metrics, "MAX_GATED_PAIRS", 100)
    rng = np.random.default_rng(6)
    table = points_table(rng.uniform(0, 10, 50), rng.uniform(0, 10, 50), frame=[3] * 50)
    with pytest.raises(InputError, match="frame 3: 50 predicted and 50 reference points"):
        score_detections(table, table)
