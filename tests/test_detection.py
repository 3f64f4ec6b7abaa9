"""Model.detect: probabilities, the per-image threshold, polarity and the recurrence check."""

import numpy as np
import pandas as pd
import pytest

from napari_denodet.core.detection import POLARITIES, Detections, recurrence
from napari_denodet.core.metrics import score_detections
from napari_denodet.core.models import load_model
from napari_denodet.core.predict import detect, run
from napari_denodet.core.simulate import simulate_micrograph, simulate_timelapse

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sparse():
    return simulate_timelapse("vesicle", snr=4, density="low", frames=3, shape=(192, 192),
                              seed=12)


def test_scores_are_probabilities_of_the_engines_peaks(sparse):
    model = load_model("fluorescence")
    found = run(model.detect(sparse.noisy))
    engine = run(detect(sparse.noisy, model.network, **model.localisation)).points
    np.testing.assert_array_equal(found.candidates["peak"], engine["score"])
    order = np.argsort(found.candidates["peak"].to_numpy())
    assert np.all(np.diff(found.candidates["score"].to_numpy()[order]) >= 0)
    assert found.threshold_rule == "expected F1"
    assert len(found.points) == found.choice.kept
    # Chosen without truth, the threshold is as good as the model's fixed one here.
    fixed = engine[engine.score >= model.threshold]
    assert score_detections(found.points, sparse.truth).f1 >= \
        score_detections(fixed, sparse.truth).f1 - 0.02


def test_a_stack_of_noise_alone_gets_no_particles_and_says_why():
    # Without the surplus test the expected F1 keeps noise here (hundreds with the
    # comet model).
    rng = np.random.default_rng(7)
    noise = rng.normal(100.0, 10.0, (4, 192, 192)).astype(np.float32)
    for name in ("fluorescence", "microtubule"):
        found = run(load_model(name).detect(noise))
        assert len(found.points) == 0 and not found.choice.supported
        assert "no particle stands out from the noise" in found.summary()
        assert len(found.candidates) > 1000  # the slider still has candidates to show
    given = run(load_model("fluorescence").detect(noise, threshold=0.5))
    assert given.choice.supported  # a given threshold is the user's: nothing is tested


def test_a_given_threshold_is_applied_to_the_probabilities(sparse):
    found = run(load_model("fluorescence").detect(sparse.noisy, threshold=0.3))
    assert found.threshold == 0.3 and found.threshold_rule == "given"
    assert (found.points.score >= 0.3).all()
    assert len(found.points) == (found.candidates.score >= 0.3).sum()


def test_a_micrograph_model_finds_bright_particles_as_well_as_dark_ones():
    sim = simulate_micrograph(shape=(256, 256), snr=2.0, density="low", radius=8.0, seed=5)
    model = load_model("micrograph")
    dark = run(model.detect(sim.noisy))
    bright = run(model.detect(-sim.noisy))
    assert (dark.polarity, bright.polarity) == ("dark", "bright")
    pd.testing.assert_frame_equal(dark.points[["y", "x", "score"]],
                                  bright.points[["y", "x", "score"]])
    assert score_detections(dark.points, sim.truth).f1 > 0.8
    forced = run(model.detect(-sim.noisy, polarity="dark"))
    assert forced.polarity == "dark"
    assert score_detections(forced.points, sim.truth).f1 < 0.5
    assert POLARITIES == ("auto", "dark", "bright")


def test_recurrence_counts_detections_found_again_in_the_next_frame():
    points = pd.DataFrame({"frame": [0, 0, 1, 1, 2], "y": [10.0, 50.0, 10.5, 80.0, 10.4],
                           "x": [10.0, 50.0, 10.0, 80.0, 11.0]})
    # Frame 0: one of two found again; frame 1: one of two (10.5, 10) -> (10.4, 11).
    assert recurrence(points) == pytest.approx(2 / 4)
    assert recurrence(points, gate=0.2) == 0.0
    assert recurrence(points[points.frame == 0]) is None
    assert recurrence(points.drop(columns="frame")) is None


def _detections(overall, confident):
    from napari_denodet.core.calibration import expected_scores

    return Detections(candidates=pd.DataFrame(), threshold=0.5,
                      choice=expected_scores(np.ones(3), 0.5), denoised=None, binning=1,
                      polarity="bright", first_frame=0, non_finite=0, recurrence=overall,
                      threshold_rule="expected F1", recurrence_confident=confident)


def test_the_self_check_warns_about_noise_not_about_fast_particles():
    assert "may be noise" in _detections(0.2, 0.88).warning()
    assert _detections(0.36, 0.38).warning() is None  # fast particles: all move on
    assert _detections(0.8, 0.9).warning() is None
    assert "80% found again" in _detections(0.8, 0.9).summary()


def test_a_fine_tuned_model_keeps_its_fitted_threshold_with_probabilities(sparse):
    # Its threshold was fitted to clicks on the raw peak scores: Detect keeps exactly the
    # candidates at or above it, and still scores them as probabilities (they were all 1
    # once, and every candidate was kept).
    model = load_model("fluorescence")
    parent = model.card.to_dict()
    model.card = model.card.updated(parent={"name": parent["name"], "source": "test",
                                            "threshold": 0.5}, threshold=0.8)
    found = run(model.detect(sparse.noisy))
    assert found.threshold_rule == "fine-tuned"
    peaks = found.candidates["peak"]
    assert len(found.points) == int((peaks >= 0.8).sum()) < len(found.candidates)
    assert found.candidates["score"].between(0, 1).all()
    assert found.candidates["score"].nunique() > 2
    # Probabilities rise strictly with the raw score, so any two candidates can be split.
    order = np.argsort(peaks.to_numpy())
    distinct = np.diff(peaks.to_numpy()[order]) > 0
    assert np.all(np.diff(found.candidates["score"].to_numpy()[order])[distinct] > 0)
