"""The realistic image formation: camera, background structure, particle appearance."""

import numpy as np
import pytest

from napari_denodet.core.simulate import (
    Camera,
    Formation,
    draw_formation,
    simulate_timelapse,
)
from napari_denodet.core.simulate.formation import RANGES, structure
from napari_denodet.core.train import PTC_SHARE, TrainSettings, draw_sample, patch_formation


def _neighbour_correlation(noise, axis):
    a = np.moveaxis(noise, axis, -1)
    return float(np.corrcoef(a[..., :-1].ravel(), a[..., 1:].ravel())[0, 1])


def test_draws_are_reproducible_recorded_and_inside_the_ranges():
    draws = [draw_formation(seed) for seed in range(200)]
    assert draw_formation(7) == draws[7]
    for f in draws:
        assert Formation.from_dict(f.to_dict()) == f
        assert RANGES["psf_sigma_px"][0] <= f.psf_sigma <= RANGES["psf_sigma_px"][1]
        assert RANGES["background_photons"][0] <= f.background <= \
            RANGES["background_photons"][1]
        assert f.structure_scale >= 2.5 * f.psf_sigma
    # Every effect is on in some draws and off in others: the plain world stays typical.
    for on in (lambda f: f.camera.emccd, lambda f: f.camera.hot_fraction > 0,
               lambda f: max(f.camera.correlation) > 0, lambda f: f.structure_strength > 0,
               lambda f: f.cluster_fraction > 0, lambda f: f.elongation > 1,
               lambda f: f.camera.offset_spread > 0):
        share = np.mean([on(f) for f in draws])
        assert 0.1 < share < 0.8


def test_camera_maps_photons_to_integer_adu_with_gain_and_offset():
    camera = Camera(gain=2.0, offset=100.0)
    photons = np.full((4, 64, 64), 50.0)
    adu = camera.expose(photons, np.random.default_rng(0))
    assert adu.dtype == np.float32 and np.all(adu == np.round(adu)) and adu.min() >= 0
    assert adu.mean() == pytest.approx(200.0, abs=1.0)
    # Poisson shot noise scaled by the gain: variance gain^2 x photons.
    assert adu.var() == pytest.approx(4.0 * 50.0, rel=0.1)
    np.testing.assert_allclose(camera.clean(photons), 200.0)


def test_emccd_doubles_the_shot_noise_variance():
    photons = np.full((4, 64, 64), 40.0)
    plain = Camera(quantise=False).expose(photons, np.random.default_rng(1))
    emccd = Camera(emccd=True, quantise=False).expose(photons, np.random.default_rng(1))
    assert emccd.mean() == pytest.approx(40.0, rel=0.02)
    assert emccd.var() / plain.var() == pytest.approx(2.0, rel=0.1)


def test_fixed_pattern_holds_in_every_frame():
    camera = Camera(offset_spread=3.0, read_spread=0.5, read_noise=1.0, hot_fraction=0.01,
                    hot_level=400.0, quantise=False)
    adu = camera.expose(np.full((30, 48, 48), 10.0), np.random.default_rng(2))
    mean = adu.mean(0)
    hot = mean > 10.0 + 50.0
    assert 0.003 < hot.mean() < 0.02
    # The offset map is the same in every frame: per-pixel means spread far more than
    # 30 frames of noise alone would give (sqrt(10 + 1) / sqrt(30) = 0.6).
    assert mean[~hot].std() > 2.0
    # Per-pixel read noise differs between pixels (lognormal map).
    spread = adu[:, ~hot].std(0)
    assert np.percentile(spread, 95) / np.percentile(spread, 5) > 1.3


def test_correlated_camera_noise_correlates_neighbours_and_keeps_its_level():
    photons = np.full((2, 128, 128), 100.0)
    white = Camera(quantise=False).expose(photons, np.random.default_rng(3))
    correlated = Camera(correlation=(0.6, 0.45), quantise=False).expose(
        photons, np.random.default_rng(3))
    noise = correlated - 100.0
    assert noise.std() == pytest.approx((white - 100.0).std(), rel=0.05)
    assert _neighbour_correlation(noise, 1) == pytest.approx(0.45, abs=0.06)
    assert _neighbour_correlation(noise, 2) == pytest.approx(0.17, abs=0.06)
    assert abs(_neighbour_correlation(white - 100.0, 1)) < 0.05


def test_structure_spans_its_scale_and_drifts_when_asked():
    rng = np.random.default_rng(4)
    field = structure((128, 128), 20.0, rng)
    assert field.min() == pytest.approx(0.0) and field.max() == pytest.approx(1.0)
    # Smooth at the scale asked: neighbours nearly equal, far pixels not.
    assert _neighbour_correlation(field[None], 2) > 0.95
    still = Formation(structure_strength=0.8, structure_scale=20.0)
    moving = Formation(structure_strength=0.8, structure_scale=20.0, drift=True, bleach=0.2)
    a = still.background_field(5, (64, 64), np.random.default_rng(5))
    b = moving.background_field(5, (64, 64), np.random.default_rng(5))
    np.testing.assert_allclose(a[0], a[-1])
    assert np.abs(b[0] - b[-1] / b[-1].mean() * b[0].mean()).mean() > 0.05
    assert b[-1].mean() / b[0].mean() == pytest.approx(0.8, rel=0.05)
    assert a.mean() == pytest.approx(1.0, abs=0.05)


def test_a_formation_changes_the_stack_as_drawn_and_spots_keep_their_photons():
    formation = Formation(camera=Camera(gain=3.0, offset=500.0), background=200.0,
                          structure_strength=1.0, structure_scale=30.0, psf_sigma=3.0,
                          intensity_spread=0.0)
    sim = simulate_timelapse("vesicle", snr=30, density="low", frames=2, shape=(128, 128),
                             seed=6, formation=formation)
    assert sim.params["formation"] == formation.to_dict()
    assert sim.params["sigma_along"] == sim.params["sigma_across"] == 3.0
    # Clean is the camera's noise-free record: gain x photons + offset.
    assert sim.clean.min() > 500.0 + 3.0 * 200.0 * 0.04
    # A structured background varies over the frame by about its own level.
    plain = simulate_timelapse("vesicle", snr=30, density=0, frames=1, shape=(128, 128),
                               seed=6, formation=Formation(background=200.0))
    structured = simulate_timelapse("vesicle", snr=30, density=0, frames=1, shape=(128, 128),
                                    seed=6, formation=formation)
    assert np.ptp(structured.clean) > 5 * np.ptp(plain.clean)
    # The noise follows the camera: gain^2 x photons around the clean record.
    residual = sim.noisy - sim.clean
    assert residual.var() / (3.0 * (sim.clean - 500.0).mean()) == pytest.approx(1.0, rel=0.15)
    with pytest.raises(ValueError, match="formation"):
        simulate_timelapse("vesicle", frames=1, shape=(32, 32), formation=formation,
                           noise_correlation=(0.5, 0.5))


def test_clusters_put_particles_beside_each_other():
    from scipy.spatial import cKDTree

    def nearest(fraction):
        f = Formation(cluster_fraction=fraction, cluster_spread=2.0, psf_sigma=1.0)
        sim = simulate_timelapse("vesicle", snr=4, density=200, frames=1, shape=(256, 256),
                                 seed=8, formation=f)
        yx = sim.truth[["y", "x"]].to_numpy()
        return np.median(cKDTree(yx).query(yx, k=2)[0][:, 1])

    assert nearest(0.5) < 0.6 * nearest(0.0)


def test_training_patches_are_made_again_from_their_seed():
    settings = TrainSettings(domain="realistic", patch_size=48)
    rng = np.random.default_rng(9)
    samples = [draw_sample(settings, rng) for _ in range(24)]
    with_formation = [s for s in samples if "formation" in s.params]
    # PTC_SHARE of the patches stay in the PTC-like world.
    assert 0 < len(samples) - len(with_formation) < len(samples)
    assert 0.0 < PTC_SHARE < 0.5
    sample = with_formation[0]
    formation = patch_formation(settings, sample.params["seed"])
    assert formation.to_dict() == sample.params["formation"]
    with pytest.raises(ValueError, match="unknown domain"):
        TrainSettings(domain="mars")


def test_share_of_plain_patches_is_a_setting():
    def plain_share(share):
        settings = TrainSettings(domain="realistic", ptc_share=share)
        return np.mean([patch_formation(settings, seed) is None for seed in range(400)])

    assert plain_share(0.0) == 0.0 and plain_share(1.0) == 1.0
    assert abs(plain_share(0.5) - 0.5) < 0.08
    assert abs(plain_share(PTC_SHARE) - PTC_SHARE) < 0.08
    with pytest.raises(ValueError, match="ptc_share"):
        TrainSettings(domain="realistic", ptc_share=1.5)
    with pytest.raises(ValueError, match="realistic domain only"):
        TrainSettings(ptc_share=0.5)


def test_correlated_noise_goes_to_the_ptc_like_patches_of_a_realistic_run():
    # The formation has its own camera (correlated noise in some draws); the setting's
    # widths go to the PTC-like share only, about half of it.
    def widths(share):
        settings = TrainSettings(domain="realistic", ptc_share=share, correlated_noise=1.0,
                                 patch_size=32)
        rng = np.random.default_rng(0)
        return [draw_sample(settings, rng).params["noise_correlation"] for _ in range(40)]

    ptc = widths(1.0)
    assert 8 <= sum(max(w) > 0 for w in ptc) <= 32
    assert all(max(w) <= 1.0 for w in ptc)
    assert all(max(w) == 0 for w in widths(0.0))


def test_micrograph_contrast_transfer_and_artefacts():
    from napari_denodet.core.simulate import simulate_micrograph
    from napari_denodet.core.simulate.micrograph import contrast_transfer
    from napari_denodet.core.train import patch_micrograph

    plain = simulate_micrograph(shape=(256, 256), snr=0.3, seed=1)
    again = simulate_micrograph(shape=(256, 256), snr=0.3, seed=1, ctf=0.0, artefacts=False)
    np.testing.assert_array_equal(plain.noisy, again.noisy)  # defaults draw nothing
    ctf = simulate_micrograph(shape=(256, 256), snr=0.3, seed=1, ctf=0.25)
    assert ctf.params["ctf"] == 0.25
    # Rings: the transfer function has zeros, so the clean image's spectrum dips there.
    impulse = np.zeros((128, 128))
    impulse[64, 64] = 1.0
    spectrum = np.abs(np.fft.rfft2(contrast_transfer(impulse, 0.25) - 0.0))
    radial = spectrum[0, 1:64]
    assert radial[30:50].min() < 0.1 * radial.max()  # the first zero, at 0.35 cycles/px
    # Particles stay darker than their surroundings at their centres.
    yx = np.rint(ctf.truth[["y", "x"]].to_numpy()).astype(int)
    assert np.median(ctf.clean[yx[:, 0], yx[:, 1]]) < np.median(ctf.clean)
    # Detector artefacts are in the noisy image only.
    art = simulate_micrograph(shape=(256, 256), snr=0.3, seed=1, artefacts=True)
    np.testing.assert_array_equal(art.clean, plain.clean)
    assert np.abs(art.noisy - plain.noisy).max() > 0
    # The realistic training domain draws these per patch, from the patch's seed.
    settings = TrainSettings(scenario="micrograph", domain="realistic", patch_size=64)
    options = [patch_micrograph(settings, seed) for seed in range(60)]
    assert options[5] == patch_micrograph(settings, 5)
    assert any(o.get("ctf", 0) > 0 for o in options) and any(o.get("artefacts") for o in options)
    assert any(o == {} for o in options)  # the plain world stays in
    assert patch_micrograph(TrainSettings(scenario="micrograph"), 3) == {
        "halo": (0.0, 0.0), "blur": (0.0, 0.0)}
