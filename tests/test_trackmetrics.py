"""The particle tracking challenge's measures on small cases worked by hand."""

import pandas as pd
import pytest

from napari_denodet.core.trackmetrics import EPSILON, score_tracks


def _track(track_id, frames, y, x=10.0, dy=0.0):
    return pd.DataFrame({"track_id": track_id, "frame": list(frames),
                         "y": [y + dy * i for i in range(len(frames))], "x": x})


TRUTH = pd.concat([_track(0, range(10), 10.0, dy=1.0), _track(1, range(5), 50.0)],
                  ignore_index=True)


def test_perfect_tracks_score_one_and_none_score_zero():
    perfect = score_tracks(TRUTH, TRUTH)
    assert (perfect.alpha, perfect.beta, perfect.jaccard_tracks,
            perfect.jaccard_detections) == (1.0, 1.0, 1.0, 1.0)
    nothing = score_tracks(TRUTH, TRUTH.iloc[:0])
    assert nothing.alpha == 0.0 and nothing.beta == 0.0 and nothing.jaccard_tracks == 0.0


def test_a_constant_offset_costs_its_share_of_the_gate():
    shifted = TRUTH.assign(x=TRUTH["x"] + 2.0)
    scores = score_tracks(TRUTH, shifted)
    assert scores.alpha == pytest.approx(1 - 2.0 / EPSILON)
    assert scores.jaccard_detections == 1.0  # every point within the gate


def test_a_spurious_track_lowers_beta_not_alpha():
    extra = pd.concat([TRUTH, _track(7, range(5), 200.0)], ignore_index=True)
    scores = score_tracks(TRUTH, extra)
    assert scores.alpha == 1.0
    # beta = d(X, 0) / (d(X, 0) + 5 eps): 15 true points, 5 spurious.
    assert scores.beta == pytest.approx(15 / 20)
    assert scores.jaccard_tracks == pytest.approx(2 / 3)
    assert scores.jaccard_detections == pytest.approx(15 / 20)


def test_a_track_broken_in_two_pairs_one_half():
    halves = pd.concat([TRUTH[TRUTH.track_id == 1],
                        _track(2, range(6), 10.0, dy=1.0),
                        _track(3, range(6, 10), 16.0, dy=1.0)], ignore_index=True)
    scores = score_tracks(TRUTH, halves)
    # Track 0 pairs with its 6-point half; its other 4 points count eps each.
    assert scores.alpha == pytest.approx(1 - 4 * EPSILON / (15 * EPSILON))
    assert scores.beta == pytest.approx((15 - 4) / (15 + 4))
    assert scores.jaccard_tracks == pytest.approx(2 / 3)  # the other half is spurious
