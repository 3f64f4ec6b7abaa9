import numpy as np
import pytest

from napari_denodet.core.classic import (
    atrous_planes,
    detect_classic,
    log_candidates,
    wavelet_candidates,
)
from napari_denodet.core.metrics import score_detections
from napari_denodet.core.points import points_table
from napari_denodet.core.simulate import simulate_timelapse


def _spots(positions, shape=(48, 48), sigma=1.2):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    img = np.zeros(shape)
    for y, x in positions:
        img += np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
    return img


@pytest.mark.parametrize("detector", [log_candidates, wavelet_candidates])
def test_noise_free_spots_are_found_at_sub_pixel_positions(detector):
    truth = np.array([[10.3, 12.8], [30.6, 20.2], [20.0, 38.45]])
    y, x, score = detector(_spots(truth) * 10)
    strong = score >= 0.5 * score.max()
    found = np.column_stack([y[strong], x[strong]])
    assert len(found) == 3
    order = np.argsort(found[:, 0])
    assert np.abs(found[order] - truth[np.argsort(truth[:, 0])]).max() < 0.3


def test_atrous_planes_sum_back_to_the_image_minus_the_residual():
    img = np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32)
    planes = atrous_planes(img, levels=3)
    assert len(planes) == 3
    # Each plane is a band-pass detail: together with the last smooth they rebuild img.
    residual = img - sum(planes)
    assert residual.std() < img.std()


def test_scores_rank_particles_above_noise_on_a_simulated_stack():
    sim = simulate_timelapse("vesicle", snr=4, density="low", frames=2, shape=(128, 128),
                             seed=3)
    for method in ("log", "wavelet"):
        c = detect_classic(sim.noisy, method)
        pred = points_table(c["y"], c["x"], frame=c["frame"], score=c["score"])
        best = max(score_detections(pred[pred.score >= t], sim.truth).f1
                   for t in np.quantile(pred.score, np.linspace(0.5, 0.995, 30)))
        assert best > 0.8, method


def test_dark_particles_need_invert():
    img = 10 - _spots([[20.0, 20.0]]) * 5 + np.random.default_rng(1).normal(0, 0.1, (48, 48))
    bright = detect_classic(img, "log", invert=False)
    dark = detect_classic(img, "log", invert=True)
    top = np.argmax(dark["score"])
    assert abs(dark["y"][top] - 20) < 0.5 and abs(dark["x"][top] - 20) < 0.5
    assert bright["score"].max() < dark["score"].max()
