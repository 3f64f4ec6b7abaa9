from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_denodet.core.localize import (
    BlobScore,
    blob_response,
    detect_points,
    find_peaks,
    local_dsnt,
    merge_shallow_peaks,
    window_probabilities,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BACKGROUND = -20.0  # a logit whose probability is ~2e-9


def separated_positions(n: int, size: int, spacing: float, margin: float, seed: int):
    """``n`` random sub-pixel (y, x) at least ``spacing`` apart, ``margin`` from the edge."""
    generator = torch.Generator().manual_seed(seed)
    points: list[torch.Tensor] = []
    while len(points) < n:
        p = torch.rand(2, generator=generator, dtype=torch.float64) * (size - 1 - 2 * margin)
        p += margin
        if all((p - q).norm() >= spacing for q in points):
            points.append(p)
    return torch.stack(points) if points else torch.zeros(0, 2, dtype=torch.float64)


def gaussian_sum(points: torch.Tensor, shape: tuple[int, int], amplitudes=None):
    """Sum of unit-sigma Gaussians (peak = amplitude) at ``points``, as float64."""
    yy, xx = torch.meshgrid(
        torch.arange(shape[0], dtype=torch.float64),
        torch.arange(shape[1], dtype=torch.float64),
        indexing="ij",
    )
    d2 = (yy - points[:, 0, None, None]) ** 2 + (xx - points[:, 1, None, None]) ** 2
    g = torch.exp(-d2 / 2)
    if amplitudes is not None:
        g = g * torch.as_tensor(amplitudes, dtype=torch.float64)[:, None, None]
    return g.sum(0)


def nearest_errors(truth: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
    # Explicit differences: torch.cdist's matmul path loses ~0.02 px in float32.
    return (truth[:, None, :] - found[None, :, :]).norm(dim=-1).min(dim=1).values


def as_points(result: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([result["y"], result["x"]], dim=1).double().cpu()


# A sigma-1 Gaussian seen through a 5x5 window is truncated, which pulls a plain soft-argmax
# (temperature 1) towards the window centre by up to ~0.06 px. Sharpening the softmax to an
# effective sigma of ~0.7 (temperature 0.5, or logits scaled by 2) or widening the window
# removes the bias to a few thousandths of a pixel.
@pytest.mark.parametrize(
    ("eps", "scale", "temperature", "radius"),
    [
        (1e-6, 1.0, 0.5, 2),
        (1e-3, 1.0, 0.5, 2),
        (1e-6, 2.0, 1.0, 2),
        (1e-6, 1.0, 1.0, 3),
    ],
)
@pytest.mark.parametrize("device", DEVICES)
def test_gaussians_are_localised_to_a_tenth_of_a_pixel(eps, scale, temperature, radius, device):
    truth = separated_positions(30, 64, spacing=8.0, margin=3.0, seed=0)
    logits = (scale * torch.log(gaussian_sum(truth, (64, 64)) + eps)).float()[None].to(device)
    found = detect_points(logits, floor=0.3, radius=radius, temperature=temperature)
    assert all(v.device.type == device for v in found.values())
    assert len(found["y"]) == 30
    errors = nearest_errors(truth, as_points(found))
    assert errors.max() < 0.1
    assert errors.mean() < 0.01


def test_plain_softargmax_in_a_small_window_is_biased_inwards():
    # The reason the temperature argument exists (see the comment above).
    truth = torch.tensor([[20.0, 20.5]], dtype=torch.float64)
    logits = torch.log(gaussian_sum(truth, (41, 41)) + 1e-6).float()[None]
    centre = torch.tensor([[0, 20, 20]])
    plain = local_dsnt(logits, centre, radius=2, temperature=1.0)[0, 1].item()
    sharp = local_dsnt(logits, centre, radius=2, temperature=0.5)[0, 1].item()
    assert 20.4 < plain < 20.46
    assert abs(sharp - 20.5) < 0.005


@pytest.mark.parametrize("floor", [0.1, 0.5, 0.7])
def test_peaks_below_the_floor_are_dropped(floor):
    # Spots on pixel centres, so each spot's peak probability is exactly its amplitude.
    truth = separated_positions(12, 48, spacing=8.0, margin=3.0, seed=1).round()
    probability = torch.linspace(0.05, 0.95, 12, dtype=torch.float64)
    heat = gaussian_sum(truth, (48, 48), amplitudes=probability).clamp(1e-9, 1 - 1e-9)
    found = detect_points(torch.logit(heat).float()[None], floor=floor)
    kept = probability >= floor
    assert len(found["score"]) == int(kept.sum())
    assert nearest_errors(truth[kept], as_points(found)).max() < 0.01
    torch.testing.assert_close(
        found["score"].sort().values.double(), probability[kept], atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("plateau", [(1, 1), (2, 2), (3, 3), (1, 7), (4, 9), (6, 6)])
def test_a_flat_plateau_gives_one_peak(plateau):
    h, w = plateau
    logits = torch.full((1, 30, 30), BACKGROUND)
    logits[0, 10 : 10 + h, 12 : 12 + w] = 3.0
    peaks = find_peaks(logits, floor=0.5, min_distance=2)
    # Ties go to the first pixel in row-major order, so the choice is reproducible.
    assert peaks.tolist() == [[0, 10, 12]]


def test_plateau_centre_is_recovered_by_the_local_centroid():
    logits = torch.full((1, 20, 20), BACKGROUND)
    logits[0, 5:8, 9:12] = 2.0  # 3x3 plateau centred on (6, 10)
    found = detect_points(logits, floor=0.5, radius=2)
    torch.testing.assert_close(as_points(found), torch.tensor([[6.0, 10.0]], dtype=torch.float64))


@pytest.mark.parametrize(
    ("distance", "min_distance", "expected"), [(2, 2, 1), (2, 1, 2), (3, 2, 2)]
)
def test_min_distance_suppresses_close_peaks(distance, min_distance, expected):
    logits = torch.full((1, 20, 20), BACKGROUND)
    logits[0, 10, 5] = 4.0
    logits[0, 10, 5 + distance] = 3.0
    peaks = find_peaks(logits, floor=0.5, min_distance=min_distance)
    assert len(peaks) == expected
    assert peaks[0].tolist() == [0, 10, 5]  # the higher one always survives


def _probability_logits(prob: torch.Tensor) -> torch.Tensor:
    # (B, H, W) logits of a probability map given as (H, W) or (B, H, W).
    prob = prob if prob.ndim == 3 else prob[None]
    return torch.logit(prob.clamp(1e-6, 1 - 1e-6)).float()


def _ridge(spread: float) -> torch.Tensor:
    # Two sigma-`spread` bumps 5 px apart along x on a sigma-1 profile across y: with
    # spread 2 a comet-like ridge (a 12 % dip), with spread 1 two round particles.
    y, x = torch.arange(20.0)[:, None], torch.arange(20.0)[None]
    along = sum(torch.exp(-((x - c) ** 2) / (2 * spread**2)) for c in (7.5, 12.5))
    return 0.9 * torch.exp(-((y - 10) ** 2) / 2) * along / along.max()


def test_a_ridge_with_two_maxima_is_one_particle_two_blobs_stay_two():
    logits = _probability_logits(_ridge(2.0))
    peaks = find_peaks(logits, floor=0.1, min_distance=2)
    assert len(peaks) == 2  # min_distance alone cannot tell a ridge from two particles
    assert len(merge_shallow_peaks(logits, peaks, ratio=0.75)) == 1
    assert len(merge_shallow_peaks(logits, peaks, ratio=0.0)) == 2
    logits = _probability_logits(_ridge(1.0))
    peaks = find_peaks(logits, floor=0.1, min_distance=2)
    assert len(merge_shallow_peaks(logits, peaks, ratio=0.75)) == len(peaks) == 2


def test_merging_keeps_the_higher_peak_and_respects_the_reach():
    logits = _probability_logits(torch.full((2, 20, 30), 0.6))  # no dip anywhere
    logits[0, 10, 9] = 3.0  # the second peak of frame 0 is the higher one
    peaks = torch.tensor([[0, 10, 5], [0, 10, 9], [1, 10, 5], [1, 10, 25]])
    kept = merge_shallow_peaks(logits, peaks, ratio=0.75)
    # Frame 0: the lower peak goes. Frame 1: 20 px apart, beyond the reach, both stay.
    assert kept.tolist() == [[0, 10, 9], [1, 10, 5], [1, 10, 25]]
    assert len(merge_shallow_peaks(logits, peaks[:0], ratio=0.75)) == 0


def test_detect_points_merges_only_when_asked():
    logits = _probability_logits(_ridge(2.0))
    assert len(detect_points(logits, floor=0.1)["score"]) == 2
    one = detect_points(logits, floor=0.1, merge_ratio=0.75)
    assert len(one["score"]) == 1 and abs(float(one["y"][0]) - 10.0) < 0.1


@pytest.mark.parametrize(
    "position", [(0.0, 0.0), (0.3, 20.0), (20.0, 31.0), (31.0, 30.8), (1.0, 1.0), (0.2, 31.0)]
)
def test_peaks_at_the_border_stay_inside_the_image(position):
    truth = torch.tensor([position], dtype=torch.float64)
    logits = torch.log(gaussian_sum(truth, (32, 32)) + 1e-6).float()[None]
    found = detect_points(logits, floor=0.3, radius=2, temperature=0.5)
    assert len(found["y"]) == 1
    y, x = found["y"].item(), found["x"].item()
    assert 0.0 <= y <= 31.0 and 0.0 <= x <= 31.0
    # The clipped window only loses the outer half of the spot: the centre stays close.
    assert math.hypot(y - position[0], x - position[1]) < 0.5


def test_window_pixels_outside_the_image_get_no_weight():
    logits = torch.randn(1, 6, 6)
    probs = window_probabilities(logits, torch.tensor([[0, 0, 5]]), radius=2).reshape(5, 5)
    assert (probs[:2, :] == 0).all()  # rows -2, -1
    assert (probs[:, 3:] == 0).all()  # columns 6, 7
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0))
    expected = torch.softmax(logits[0, 0:3, 3:6].reshape(-1), dim=0)
    torch.testing.assert_close(probs[2:, :3].reshape(-1), expected)


def test_batch_indices_follow_the_frame():
    size = 40
    truths = [
        separated_positions(n, size, spacing=8.0, margin=3.0, seed=10 + n) for n in (3, 0, 7, 1)
    ]
    heat = torch.stack([gaussian_sum(t, (size, size)) for t in truths])
    logits = torch.log(heat + 1e-6).float()
    found = detect_points(logits, floor=0.3, temperature=0.5)
    assert found["batch"].dtype == torch.long
    assert torch.bincount(found["batch"], minlength=4).tolist() == [3, 0, 7, 1]
    points = as_points(found)
    for b, truth in enumerate(truths):
        if len(truth):
            assert nearest_errors(truth, points[found["batch"] == b]).max() < 0.1


def test_local_dsnt_passes_gradcheck():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 8, dtype=torch.float64, requires_grad=True)
    centres = torch.tensor([[0, 3, 4], [1, 0, 0], [1, 6, 7], [0, 1, 6]])
    assert torch.autograd.gradcheck(
        lambda t: local_dsnt(t, centres, radius=2, temperature=0.7), (logits,)
    )


def test_local_dsnt_gradient_is_local_and_non_zero():
    logits = torch.randn(1, 16, 16, requires_grad=True)
    coords = local_dsnt(logits, torch.tensor([[0, 8, 8]]), radius=2)
    coords.sum().backward()
    grad = logits.grad[0]
    assert grad[6:11, 6:11].abs().sum() > 0
    grad[6:11, 6:11] = 0
    assert (grad == 0).all()


def test_detect_points_keeps_the_graph_for_training():
    logits = torch.log(gaussian_sum(torch.tensor([[8.2, 7.6]]), (16, 16)) + 1e-6)[None]
    logits = logits.float().requires_grad_()
    found = detect_points(logits, floor=0.3)
    (found["y"] + found["x"] + found["score"]).sum().backward()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("batch", [1, 3])
def test_no_peaks_gives_empty_tensors(batch):
    logits = torch.full((batch, 16, 16), BACKGROUND)
    peaks = find_peaks(logits, floor=0.05)
    assert peaks.shape == (0, 3) and peaks.dtype == torch.long
    assert local_dsnt(logits, peaks).shape == (0, 2)
    assert window_probabilities(logits, peaks, radius=1).shape == (0, 9)
    found = detect_points(logits)
    assert set(found) == {"batch", "y", "x", "score"}
    for key, value in found.items():
        assert value.shape == (0,), key
    assert found["batch"].dtype == torch.long
    assert found["y"].dtype == found["x"].dtype == found["score"].dtype == torch.float32


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="B, H, W"):
        find_peaks(torch.zeros(8, 8), floor=0.5)
    with pytest.raises(ValueError, match="temperature"):
        local_dsnt(torch.zeros(1, 8, 8), torch.tensor([[0, 4, 4]]), temperature=0.0)


def test_two_thousand_peaks_in_one_call():
    # A 40 x 50 lattice (6 px pitch) of spots with random sub-pixel offsets, drawn by
    # scattering 7x7 patches so that building the image needs no loop either.
    generator = torch.Generator().manual_seed(7)
    gy, gx = torch.meshgrid(torch.arange(40), torch.arange(50), indexing="ij")
    base = torch.stack([gy.reshape(-1), gx.reshape(-1)], dim=1).double() * 6 + 4
    truth = base + torch.rand(base.shape, generator=generator, dtype=torch.float64) - 0.5
    shape = (40 * 6 + 8, 50 * 6 + 8)
    r = torch.arange(-3, 4)
    oy, ox = torch.meshgrid(r, r, indexing="ij")
    ys = truth[:, :1].round().long() + oy.reshape(1, -1)
    xs = truth[:, 1:].round().long() + ox.reshape(1, -1)
    values = torch.exp(-((ys - truth[:, :1]) ** 2 + (xs - truth[:, 1:]) ** 2) / 2)
    heat = torch.zeros(shape, dtype=torch.float64).index_put_((ys, xs), values, accumulate=True)
    logits = torch.log(heat + 1e-6).float()[None]

    found = detect_points(logits, floor=0.3, temperature=0.5)
    assert len(found["y"]) == 2000
    # Detections come back in row-major order, which is the lattice order here.
    errors = (as_points(found) - truth).norm(dim=1)
    assert errors.max() < 0.1
    assert errors[[0, 1, 999, 1998, 1999]].max() < 0.05


@pytest.mark.parametrize("sigma", [1.5, 2.0, 3.0])
def test_blob_response_is_scipys_laplacian_read_at_the_points(sigma):
    from scipy import ndimage

    rng = np.random.default_rng(1)
    frames = rng.normal(size=(2, 40, 50)).astype(np.float32)
    # Points anywhere, the edges included (reflected as scipy does).
    y = np.concatenate([rng.uniform(0, 39, 30), [0.0, 39.0, 0.4]])
    x = np.concatenate([rng.uniform(0, 49, 30), [49.0, 0.0, 48.8]])
    batch = rng.integers(0, 2, len(y))
    full = np.stack([-(sigma**2) * ndimage.gaussian_laplace(f.astype(np.float64), sigma)
                     for f in frames])
    expected = full[batch, np.rint(y).astype(int), np.rint(x).astype(int)]
    np.testing.assert_allclose(blob_response(frames, batch, y, x, sigma), expected,
                               atol=1e-9)
    assert blob_response(frames, batch[:0], y[:0], x[:0], sigma).shape == (0,)


def test_blob_score_orders_tied_peaks_and_keeps_clear_ones():
    blob = BlobScore(weight=0.1, centre=1.0, scale=0.5)
    peaks = np.array([0.56, 0.56, 0.56, 0.9, 0.2])
    responses = np.array([0.2, 1.0, 3.0, -5.0, 50.0])
    scores = blob.apply(peaks, responses)
    # Equal probabilities are ordered by the response; a probability ahead by more
    # than twice the weight stays ahead whatever the responses.
    assert scores[0] < scores[1] < scores[2]
    assert scores[1] == pytest.approx(0.56)
    assert scores[3] > scores[2] and scores[4] < scores[0]
    assert np.all(np.abs(scores - peaks) <= 0.1 + 1e-12)
    assert BlobScore(weight=0.5).apply(np.array([0.9, 0.1]), np.array([9.0, -9.0])).tolist() == [
        1.0, 0.0]


def test_blob_score_fits_the_responses_median_and_spread():
    rng = np.random.default_rng(2)
    responses = rng.normal(3.0, 2.0, 20001)
    blob = BlobScore.fit(responses, weight=0.1, sigma=2.0)
    assert blob.centre == pytest.approx(3.0, abs=0.05)
    assert blob.scale == pytest.approx(2.0, rel=0.05)
    # No spread: a scale of 1 rather than a division by zero.
    assert BlobScore.fit(np.ones(5), 0.1, 2.0).scale == 1.0
    assert BlobScore(**blob.to_dict()) == blob


@pytest.mark.parametrize("fields", [{"weight": 1.5}, {"weight": 0.1, "sigma": 0},
                                    {"weight": 0.1, "scale": -1},
                                    {"weight": float("nan")}, {"weight": "0.1"}])
def test_bad_blob_scores_are_refused(fields):
    with pytest.raises(ValueError, match="blob score"):
        BlobScore(**fields)
