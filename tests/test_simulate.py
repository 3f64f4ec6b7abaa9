import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from napari_denodet.core.simulate import (
    BACKGROUND,
    DENSITIES,
    peak_amplitude,
    simulate,
    simulate_micrograph,
    simulate_timelapse,
)


@pytest.mark.parametrize("snr", [1.0, 2.0, 4.0, 7.0])
def test_peak_amplitude_meets_the_ptc_snr_definition(snr):
    amplitude = peak_amplitude(snr, BACKGROUND)
    peak = BACKGROUND + amplitude
    assert (peak - BACKGROUND) / np.sqrt(peak) == pytest.approx(snr)


def test_same_seed_same_stack_and_other_seed_differs():
    a = simulate_timelapse("receptor", snr=2, density="low", frames=4, shape=(64, 64), seed=3)
    b = simulate_timelapse("receptor", snr=2, density="low", frames=4, shape=(64, 64), seed=3)
    c = simulate_timelapse("receptor", snr=2, density="low", frames=4, shape=(64, 64), seed=4)
    np.testing.assert_array_equal(a.noisy, b.noisy)
    assert a.truth.equals(b.truth)
    assert not np.array_equal(a.noisy, c.noisy)


@pytest.mark.parametrize("scenario", ["vesicle", "receptor", "microtubule"])
def test_timelapse_shapes_and_truth_inside_the_image(scenario):
    sim = simulate_timelapse(scenario, snr=4, density="mid", frames=6, shape=(96, 128), seed=1)
    assert sim.noisy.shape == sim.clean.shape == (6, 96, 128)
    assert sim.noisy.dtype == sim.clean.dtype == np.float32
    t = sim.truth
    assert list(t.columns) == ["frame", "y", "x", "track_id"]
    assert set(t["frame"]) == set(range(6))
    assert t["y"].between(-0.5, 95.5).all() and t["x"].between(-0.5, 127.5).all()
    # Positions are continuous, not snapped to the pixel grid.
    frac = t["y"] - np.rint(t["y"])  # uniform on [-0.5, 0.5): std 0.29
    assert frac.std() > 0.2
    # One track has at most one position per frame.
    assert not t.duplicated(["frame", "track_id"]).any()


@pytest.mark.parametrize("density", ["low", "mid", "high"])
def test_density_is_particles_per_512_squared_frame(density):
    sim = simulate_timelapse("vesicle", snr=4, density=density, frames=5, shape=(256, 256),
                             seed=7)
    per_frame = len(sim.truth) / 5
    expected = DENSITIES[density] / 4  # a quarter of a 512 x 512 frame
    assert per_frame == pytest.approx(expected, rel=0.2)


def test_noise_is_poisson_around_the_clean_stack():
    sim = simulate_timelapse("vesicle", snr=2, density="mid", frames=4, shape=(128, 128),
                             seed=5)
    residual = sim.noisy - sim.clean
    assert np.all(sim.noisy == np.round(sim.noisy))  # photon counts
    assert abs(residual.mean()) < 0.05
    assert (residual**2).mean() / sim.clean.mean() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("snr", [1.0, 4.0, 7.0])
def test_isolated_particles_reach_the_nominal_peak(snr):
    sim = simulate_timelapse("vesicle", snr=snr, density="low", frames=3, shape=(256, 256),
                             seed=11, randomise=False)
    t = sim.truth[sim.truth.frame == 0]
    yx = t[["y", "x"]].to_numpy()
    nearest = cKDTree(yx).query(yx, k=2)[0][:, 1]
    inner = (yx.min(1) > 8) & (yx[:, 0] < 247) & (yx[:, 1] < 247)
    pick = yx[(nearest > 12) & inner]
    assert len(pick) >= 5
    peaks = sim.clean[0][np.rint(pick[:, 0]).astype(int), np.rint(pick[:, 1]).astype(int)]
    above = np.median(peaks - BACKGROUND)
    # Sampling at the nearest pixel loses a little of the continuous peak.
    assert 0.75 * peak_amplitude(snr) < above < 1.1 * peak_amplitude(snr)


def _step_stats(truth):
    t = truth.sort_values(["track_id", "frame"])
    ids, frames = t.track_id.to_numpy(), t.frame.to_numpy()
    d = np.diff(t[["y", "x"]].to_numpy(), axis=0)
    valid = (ids[1:] == ids[:-1]) & (np.diff(frames) == 1)  # step i: row i -> row i+1
    steps = np.hypot(d[:, 0], d[:, 1])
    # Persistence: cosine between two consecutive steps of the same track.
    both = valid[1:] & valid[:-1]
    cos = np.sum(d[1:] * d[:-1], axis=1) / (steps[1:] * steps[:-1] + 1e-9)
    return steps[valid].mean(), cos[both].mean()


def test_microtubules_move_directed_and_vesicles_diffuse():
    kw = dict(snr=4, density="low", frames=12, shape=(256, 256), seed=2, randomise=False)
    mt_speed, mt_persist = _step_stats(simulate_timelapse("microtubule", **kw).truth)
    ves_speed, ves_persist = _step_stats(simulate_timelapse("vesicle", **kw).truth)
    assert mt_persist > 0.6
    assert abs(ves_persist) < 0.2
    assert mt_speed > ves_speed


def _second_moments(img):
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    w = img / img.sum()
    my, mx = (w * yy).sum(), (w * xx).sum()
    cov = np.array([[(w * (yy - my) ** 2).sum(), (w * (yy - my) * (xx - mx)).sum()],
                    [(w * (yy - my) * (xx - mx)).sum(), (w * (xx - mx) ** 2).sum()]])
    ev = np.linalg.eigvalsh(cov)
    return ev[1] / ev[0]


@pytest.mark.parametrize(("scenario", "elongated"), [("microtubule", True), ("vesicle", False)])
def test_microtubule_comets_are_elongated(scenario, elongated):
    sim = simulate_timelapse(scenario, snr=7, density=20, frames=1, shape=(256, 256), seed=4,
                             randomise=False)
    yx = sim.truth[["y", "x"]].to_numpy()
    isolated = cKDTree(yx).query(yx, k=2)[0][:, 1] > 24
    ratios = []
    for y, x in yx[isolated]:
        iy, ix = int(round(y)), int(round(x))
        if 20 <= iy < 236 and 20 <= ix < 236:
            patch = sim.clean[0, iy - 15:iy + 16, ix - 15:ix + 16]
            spot = patch - np.median(patch)
            ratios.append(_second_moments(np.where(spot > 0.1 * spot.max(), spot, 0.0)))
    assert ratios
    if elongated:
        assert np.median(ratios) > 3.0
    else:
        assert np.median(ratios) < 1.3


def test_particles_enter_and_leave():
    sim = simulate_timelapse("receptor", snr=4, density="mid", frames=30, shape=(128, 128),
                             seed=9)
    t = sim.truth
    first, last = t.groupby("track_id").frame.min(), t.groupby("track_id").frame.max()
    assert (first > 0).sum() > 10  # born (or entered) after the start
    assert (last < 29).sum() > 10  # died (or left) before the end


def test_background_varies_slowly_in_time_when_randomised():
    sim = simulate_timelapse("vesicle", snr=4, density=0, frames=10, shape=(128, 128),
                             seed=0)
    assert len(sim.truth) == 0
    assert sim.params["bg_variation"] > 0
    assert sim.clean[0].std() > 0.05 * BACKGROUND * sim.params["bg_variation"]
    step = np.abs(np.diff(sim.clean, axis=0)).max()
    assert step < 0.1 * BACKGROUND


def test_micrograph_particles_are_dark_textured_and_apart():
    sim = simulate_micrograph(shape=(256, 256), snr=0.1, density="mid", radius=8.0, seed=1,
                              carbon=False)
    assert sim.noisy.shape == sim.clean.shape == (256, 256)
    t = sim.truth
    assert list(t.columns) == ["y", "x", "radius"]
    assert len(t) == sim.params["count"] > 20
    assert t.radius.between(8 * 0.9, 8 * 1.1).all()
    yx = t[["y", "x"]].to_numpy()
    assert cKDTree(yx).query(yx, k=2)[0][:, 1].min() >= 2 * 8.0
    centres = sim.clean[np.rint(yx[:, 0]).astype(int), np.rint(yx[:, 1]).astype(int)]
    assert np.median(centres) < np.median(sim.clean) - 0.3
    # Texture: the interior of a particle is not flat.
    iy, ix = np.rint(yx[0]).astype(int)
    assert sim.clean[iy - 4:iy + 5, ix - 4:ix + 5].std() > 0.05


def test_micrograph_noise_scales_with_snr():
    lo = simulate_micrograph(shape=(128, 128), snr=0.05, seed=3, radius=6.0)
    hi = simulate_micrograph(shape=(128, 128), snr=0.2, seed=3, radius=6.0)
    np.testing.assert_array_equal(lo.clean, hi.clean)
    ratio = np.std(lo.noisy - lo.clean) / np.std(hi.noisy - hi.clean)
    assert ratio == pytest.approx(2.0, rel=0.05)
    assert np.std(lo.noisy - lo.clean) == pytest.approx(lo.params["noise_sigma"], rel=0.05)


def test_micrograph_carbon_is_darker_and_holds_no_particles():
    with_carbon = simulate_micrograph(shape=(256, 256), snr=0.1, seed=5, radius=6.0,
                                      carbon=True)
    without = simulate_micrograph(shape=(256, 256), snr=0.1, seed=5, radius=6.0, carbon=False)
    assert with_carbon.params["carbon"] and not without.params["carbon"]
    # The darkest tenth of the background (a median far wider than a particle) is
    # carbon, and no particle sits within it.
    background = ndimage.median_filter(with_carbon.clean, size=25)
    dark = background < np.quantile(background, 0.1)
    yx = np.rint(with_carbon.truth[["y", "x"]].to_numpy()).astype(int)
    assert not dark[yx[:, 0], yx[:, 1]].any()
    assert with_carbon.clean.mean() < without.clean.mean()


def test_dispatch_and_bad_arguments():
    assert simulate("micrograph", shape=(64, 64), frames=5, seed=0).noisy.ndim == 2
    assert simulate("vesicle", shape=(32, 32), frames=2, seed=0).noisy.ndim == 3
    with pytest.raises(ValueError, match="unknown scenario"):
        simulate_timelapse("bacteria")
    with pytest.raises(ValueError, match="unknown density"):
        simulate_timelapse("vesicle", density="crowded")
    with pytest.raises(ValueError, match="snr"):
        simulate_micrograph(snr=0)


def test_micrograph_halo_and_blur_default_to_the_plain_micrograph():
    plain = simulate_micrograph(shape=(96, 96), snr=0.1, seed=4)
    explicit = simulate_micrograph(shape=(96, 96), snr=0.1, seed=4, halo=0.0, blur=0.0)
    np.testing.assert_array_equal(plain.noisy, explicit.noisy)
    assert plain.params["halo"] == plain.params["blur"] == 0.0
    # A range whose ends are equal draws nothing either (training passes its ranges so).
    empty = simulate_micrograph(shape=(96, 96), snr=0.1, seed=4, halo=(0.0, 0.0),
                                blur=(0.0, 0.0))
    np.testing.assert_array_equal(plain.noisy, empty.noisy)
    # A range is drawn from, and recorded.
    drawn = simulate_micrograph(shape=(96, 96), snr=0.1, seed=4, halo=(0.2, 0.6),
                                blur=(1.0, 2.0))
    assert 0.2 <= drawn.params["halo"] <= 0.6 and 1.0 <= drawn.params["blur"] <= 2.0


def test_micrograph_halo_puts_a_bright_fringe_around_particles():
    kwargs = dict(shape=(256, 256), snr=0.1, density="low", radius=8.0, seed=2, carbon=False,
                  randomise=False)
    plain, fringed = simulate_micrograph(**kwargs), simulate_micrograph(**kwargs, halo=0.6)
    np.testing.assert_array_equal(plain.truth, fringed.truth)
    yx = plain.truth[["y", "x"]].to_numpy()
    distance = cKDTree(yx).query(np.stack(np.mgrid[0:256, 0:256], -1).reshape(-1, 2))[0]
    ring = (distance.reshape(256, 256) > 9.5) & (distance.reshape(256, 256) < 14)
    far = distance.reshape(256, 256) > 20
    # Just outside a particle the fringed image is brighter than far from any particle;
    # the plain one is not.
    assert fringed.clean[ring].mean() > fringed.clean[far].mean() + 0.02
    assert plain.clean[ring].mean() < plain.clean[far].mean() + 0.01


def test_micrograph_blur_correlates_the_noise_and_keeps_the_snr_setting():
    plain = simulate_micrograph(shape=(256, 256), snr=0.1, seed=6, radius=6.0)
    blurred = simulate_micrograph(shape=(256, 256), snr=0.1, seed=6, radius=6.0, blur=2.0)
    assert blurred.params["noise_sigma"] == plain.params["noise_sigma"]

    def neighbour_correlation(noise):
        return np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]

    assert abs(neighbour_correlation(plain.noisy - plain.clean)) < 0.05
    assert neighbour_correlation(blurred.noisy - blurred.clean) > 0.8
    # Blurred noise is weaker per pixel: about 1 / (2 sqrt(pi) sigma) of the white noise.
    ratio = np.std(blurred.noisy - blurred.clean) / np.std(plain.noisy - plain.clean)
    assert ratio == pytest.approx(1 / (2 * np.sqrt(np.pi) * 2.0), rel=0.1)


def _neighbour_correlation(noise, axis):
    a = np.moveaxis(noise, axis, -1)
    return np.corrcoef(a[..., :-1].ravel(), a[..., 1:].ravel())[0, 1]


def test_timelapse_noise_correlation_keeps_the_noise_level_and_correlates_neighbours():
    common = dict(snr=2, density="mid", frames=3, shape=(128, 128), seed=5)
    white = simulate_timelapse("vesicle", **common)
    camera = simulate_timelapse("vesicle", noise_correlation=(0.6, 0.45), **common)
    # The same particles and clean stack; only the noise's texture changes.
    np.testing.assert_array_equal(white.clean, camera.clean)
    assert white.truth.equals(camera.truth)
    assert camera.params["noise_correlation"] == [0.6, 0.45]
    assert white.params["noise_correlation"] == [0.0, 0.0]
    noise_white, noise_camera = white.noisy - white.clean, camera.noisy - camera.clean
    assert np.std(noise_camera) == pytest.approx(np.std(noise_white), rel=0.01)
    assert abs(_neighbour_correlation(noise_white, 1)) < 0.05
    # About 0.45 between rows at 0.6 px and 0.17 between columns at 0.45 px (the sampled
    # kernel's 2w / (1 + 2w^2), w = exp(-1 / (2 width^2))): the real telomere
    # time-lapse measures 0.48 and 0.17.
    assert _neighbour_correlation(noise_camera, 1) == pytest.approx(0.45, abs=0.06)
    assert _neighbour_correlation(noise_camera, 2) == pytest.approx(0.17, abs=0.06)


def test_default_noise_correlation_leaves_the_stack_as_it_was():
    # Seeds of earlier benchmarks and trainings must give the same stacks.
    common = dict(snr=2, density="low", frames=2, shape=(64, 64), seed=9)
    np.testing.assert_array_equal(simulate_timelapse("receptor", **common).noisy,
                                  simulate_timelapse("receptor", noise_correlation=(0, 0),
                                                     **common).noisy)
    with pytest.raises(ValueError, match="noise widths"):
        simulate_timelapse("receptor", noise_correlation=(-1.0, 0.5), **common)
