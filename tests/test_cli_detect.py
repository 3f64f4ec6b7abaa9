"""`napari-denodet detect` end to end with the bundled model on small simulated data."""

import re

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_denodet.cli import main
from napari_denodet.core.io import read_points, write_tiff
from napari_denodet.core.metrics import score_detections
from napari_denodet.core.simulate import simulate_micrograph, simulate_timelapse


@pytest.fixture(scope="module")
def stack_file(tmp_path_factory):
    # 256 x 256: at 128 x 128 the frame edge, where the network makes more false
    # detections, is an eighth of the area and a dozen particles decide the F1.
    sim = simulate_timelapse("vesicle", snr=7, density="low", frames=3, shape=(256, 256),
                             seed=4_100_000_000)
    folder = tmp_path_factory.mktemp("data")
    write_tiff(folder / "cells.tif", np.clip(sim.noisy, 0, 65535).astype(np.uint16))
    return folder / "cells.tif", sim


def test_detect_writes_points_and_denoised_stack_that_match_the_truth(stack_file, tmp_path,
                                                                      capsys):
    path, sim = stack_file
    assert main(["detect", str(path), "--out", str(tmp_path / "out")]) == 0
    points = read_points(tmp_path / "out" / "cells_points.csv")
    denoised = tifffile.imread(tmp_path / "out" / "cells_denoised.tif")
    assert denoised.shape == sim.noisy.shape and denoised.dtype == np.float32
    assert list(points.columns[:4]) == ["frame", "y", "x", "score"]
    said = capsys.readouterr().out
    cut = float(re.search(r"particles \(score >= ([0-9.]+)\)", said).group(1))
    assert points.score.min() >= cut - 0.005  # the threshold chosen for this stack
    assert "threshold chosen for this image" in said
    assert score_detections(points, sim.truth).f1 > 0.8
    # The denoised stack is closer to the clean one than the noisy input is.
    assert np.abs(denoised - sim.clean).mean() < np.abs(sim.noisy - sim.clean).mean()


def test_all_candidates_keeps_low_scores_and_threshold_filters(stack_file, tmp_path):
    path, _ = stack_file
    assert main(["detect", str(path), "--out", str(tmp_path), "--all-candidates"]) == 0
    every = read_points(tmp_path / "cells_points.csv")
    assert every.score.min() < 0.5 <= every.score.max()
    assert main(["detect", str(path), "--out", str(tmp_path), "--threshold", "0.5",
                 "--overwrite"]) == 0
    strict = read_points(tmp_path / "cells_points.csv")
    assert 0 < len(strict) < len(every)
    pd.testing.assert_frame_equal(strict, every[every.score >= 0.5].reset_index(drop=True))


def test_existing_results_are_not_overwritten(stack_file, tmp_path, capsys):
    path, _ = stack_file
    (tmp_path / "cells_points.csv").write_text("mine\n")
    assert main(["detect", str(path), "--out", str(tmp_path)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "cells_points.csv").read_text() == "mine\n"
    assert not (tmp_path / "cells_denoised.tif").exists()


# 35 px particles: 17.5 px radius, 2 x the middle of the micrograph model's 5-15 px.
@pytest.mark.parametrize("binning", [["--bin", "2"], ["--diameter", "35"]])
def test_binning_maps_coordinates_back_to_full_resolution(tmp_path, capsys, binning):
    sim = simulate_micrograph(shape=(256, 256), snr=5.0, density="low", radius=8.0, seed=5)
    write_tiff(tmp_path / "mic.tif", sim.noisy)
    assert main(["detect", str(tmp_path / "mic.tif"), "--out", str(tmp_path), *binning,
                 "--model", "micrograph", "--all-candidates", "--star", "--box-size",
                 "32"]) == 0
    if binning[0] == "--diameter":
        assert "binning 2 x 2" in capsys.readouterr().err
    points = read_points(tmp_path / "mic_points.csv")
    assert "frame" not in points.columns
    assert points.y.max() > 128  # full-resolution coordinates, not binned ones
    star = read_points(tmp_path / "mic_points.star")
    np.testing.assert_allclose(star[["y", "x"]], points[["y", "x"]], atol=1e-5)
    assert (tmp_path / "mic_points.box").read_text().count("\n") == len(points)
    assert tifffile.imread(tmp_path / "mic_denoised.tif").shape == (128, 128)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--model", "nosuchmodel"], "unknown model 'nosuchmodel'"),
        (["--device", "cuda"], "cuda"),
        (["--star"], "single micrographs"),
        (["--diameter", "100"], "records no particle radius"),
    ],
)
def test_detect_errors_are_one_line(stack_file, tmp_path, capsys, argv, needle):
    path, _ = stack_file
    code = main(["detect", str(path), "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 1 and needle in err
    assert "Traceback" not in err and err.strip().count("\n") == 0


def test_detect_runs_on_the_real_time_lapse(shared_data, tmp_path):
    # Real uint16 big-endian ImageJ stack: first three frames through the engine.
    import tifffile as tf

    source = shared_data / "timelapse_telomeres_2d.tif"
    frames = tf.imread(source)[:3]
    write_tiff(tmp_path / "telomeres.tif", frames)
    assert main(["detect", str(tmp_path / "telomeres.tif"), "--out", str(tmp_path)]) == 0
    points = read_points(tmp_path / "telomeres_points.csv")
    denoised = tifffile.imread(tmp_path / "telomeres_denoised.tif")
    assert denoised.shape == frames.shape
    assert set(points.frame) == {0, 1, 2}
    assert points.y.between(0, frames.shape[1] - 1).all()
    assert points.x.between(0, frames.shape[2] - 1).all()
    # Denoising keeps the input's intensity range (camera offset ~100 counts).
    assert abs(np.median(denoised) - np.median(frames)) < 5


def test_nan_and_inf_pixels_are_treated_as_background_and_said(tmp_path, capsys):
    # One +inf in a small float image used to turn half the denoised pixels into NaN.
    image = np.random.default_rng(0).normal(100.0, 10.0, (64, 64)).astype(np.float32)
    image[10, 10], image[40, 50] = np.inf, np.nan
    write_tiff(tmp_path / "hot.tif", image)
    assert main(["detect", str(tmp_path / "hot.tif"), "--out", str(tmp_path / "out")]) == 0
    said = capsys.readouterr().out
    assert "2 pixels NaN or infinite, treated as background" in said
    assert np.isfinite(tifffile.imread(tmp_path / "out" / "hot_denoised.tif")).all()
    points = read_points(tmp_path / "out" / "hot_points.csv")
    assert np.isfinite(points[["y", "x", "score"]].to_numpy()).all()


def test_a_stack_of_noise_alone_gives_an_empty_table_and_says_why(tmp_path, capsys):
    noise = np.random.default_rng(7).normal(100.0, 10.0, (4, 192, 192)).astype(np.float32)
    write_tiff(tmp_path / "empty.tif", noise)
    assert main(["detect", str(tmp_path / "empty.tif"), "--model", "fluorescence",
                 "--out", str(tmp_path / "out")]) == 0
    assert "no particle stands out from the noise" in capsys.readouterr().out
    points = read_points(tmp_path / "out" / "empty_points.csv")
    assert len(points) == 0 and list(points.columns[:4]) == ["frame", "y", "x", "score"]
    # The candidates are there for a user who asks for them.
    assert main(["detect", str(tmp_path / "empty.tif"), "--model", "fluorescence",
                 "--all-candidates", "--out", str(tmp_path / "all")]) == 0
    assert len(read_points(tmp_path / "all" / "empty_points.csv")) > 1000


def test_an_image_without_a_finite_pixel_is_one_line_naming_it(tmp_path, capsys):
    write_tiff(tmp_path / "void.tif", np.full((32, 32), np.nan, np.float32))
    assert main(["detect", str(tmp_path / "void.tif"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"napari-denodet: error: {tmp_path / 'void.tif'}: the image holds no "
                   "finite pixel (all NaN or inf)")


@pytest.mark.parametrize("value", ["nan", "1.5", "-0.1"])
def test_a_threshold_outside_zero_to_one_is_refused(stack_file, tmp_path, capsys, value):
    path, _ = stack_file
    assert main(["detect", str(path), "--out", str(tmp_path), "--threshold", value]) == 2
    assert "--threshold" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
