"""`napari-denodet finetune` end to end: clicks in, a model file that detect can use."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from helpers import scattered
from napari_denodet.cli import main
from napari_denodet.core.io import read_points, write_points, write_tiff
from napari_denodet.core.models import load_model
from napari_denodet.core.predict import run
from napari_denodet.core.resample import unbin_points
from napari_denodet.core.simulate import simulate_micrograph, simulate_timelapse


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    sim = simulate_timelapse("vesicle", snr=4, density=400, frames=2, shape=(96, 96), seed=21)
    folder = tmp_path_factory.mktemp("ft")
    write_tiff(folder / "cells.tif", np.clip(sim.noisy, 0, 65535).astype(np.uint16))
    write_points(folder / "clicks.csv", sim.truth[sim.truth.frame == 0].iloc[:6][
        ["frame", "y", "x"]])
    write_points(folder / "one.csv", sim.truth.iloc[:1][["frame", "y", "x"]])
    write_points(folder / "flat.csv", sim.truth.iloc[:4][["y", "x"]])
    return folder


def test_finetune_writes_a_model_that_detect_loads(stack, tmp_path, capsys):
    model = tmp_path / "mine.pt"
    assert main(["finetune", str(stack / "cells.tif"), "--points", str(stack / "clicks.csv"),
                 "--model", "fluorescence", "--steps", "3", "--out", str(model)]) == 0
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["name"] == "mine" and card["parent"]["name"] == "fluorescence"
    assert card["training"]["clicks"] == 6 and card["training"]["steps"] == 3
    assert card["training"]["command"].startswith("napari-denodet finetune ")
    assert "--pseudo-labels 0.5" in card["training"]["command"]
    assert card["training"]["settings"]["pseudo_labels"] == 0.5
    # The calibration the card advice resolved to is repeated.
    advised = load_model("fluorescence").card["finetune"]["calibration"]
    assert card["training"]["settings"]["calibration"] == advised
    assert f"--calibration {advised}" in card["training"]["command"]
    assert "wrote" in capsys.readouterr().out
    assert main(["detect", str(stack / "cells.tif"), "--model", str(model),
                 "--out", str(tmp_path / "out")]) == 0
    points = read_points(tmp_path / "out" / "cells_points.csv")
    assert len(points) > 0
    # Three steps cannot beat the starting model on the held-out clicks by more than
    # the check's uncertainty: the file holds the starting weights, which detect as the
    # starting model does (its threshold chosen for the image, not the card's).
    assert card["training"]["accepted"] is False
    assert main(["detect", str(stack / "cells.tif"), "--model", "fluorescence",
                 "--out", str(tmp_path / "parent")]) == 0
    parent = read_points(tmp_path / "parent" / "cells_points.csv")
    np.testing.assert_allclose(points[["frame", "y", "x", "score"]].to_numpy(),
                               parent[["frame", "y", "x", "score"]].to_numpy())


def test_pseudo_label_share_is_checked_and_recorded(stack, tmp_path, capsys):
    args = ["finetune", str(stack / "cells.tif"), "--points", str(stack / "clicks.csv"),
            "--steps", "2"]
    assert main([*args, "--pseudo-labels", "1.5", "--out", str(tmp_path / "no.pt")]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "no.pt").exists()
    assert main([*args, "--pseudo-labels", "0", "--calibration", "count",
                 "--out", str(tmp_path / "clicks.pt")]) == 0
    card = json.loads((tmp_path / "clicks.json").read_text())
    assert card["training"]["settings"]["pseudo_labels"] == 0.0
    assert "--pseudo-labels 0 " in card["training"]["command"]
    assert card["training"]["settings"]["calibration"] == "count"
    assert "--calibration count" in card["training"]["command"]
    assert "as many detections" in capsys.readouterr().err


@pytest.mark.parametrize(("clicks", "message"), [
    ("one.csv", "at least 2 clicked particle centres, got 1"),
    ("flat.csv", "has no 'frame' column but"),
])
def test_bad_clicks_give_one_line(stack, tmp_path, capsys, clicks, message):
    code = main(["finetune", str(stack / "cells.tif"), "--points", str(stack / clicks),
                 "--steps", "2", "--out", str(tmp_path / "m.pt")])
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()


def test_existing_model_is_not_overwritten(stack, tmp_path, capsys):
    (tmp_path / "m.pt").write_bytes(b"mine")
    code = main(["finetune", str(stack / "cells.tif"), "--points", str(stack / "clicks.csv"),
                 "--steps", "2", "--out", str(tmp_path / "m.pt")])
    assert code == 1 and "already exists" in capsys.readouterr().err
    assert (tmp_path / "m.pt").read_bytes() == b"mine"


# 35 px particles: 17.5 px radius, 2 x the middle of the micrograph model's 5-15 px.
@pytest.mark.parametrize("binning", [["--bin", "2"], ["--diameter", "35"]])
def test_binned_micrograph_clicks_are_mapped_to_binned_pixels(tmp_path, binning):
    sim = simulate_micrograph(shape=(128, 128), snr=0.3, seed=5)
    full = np.repeat(np.repeat(sim.noisy, 2, axis=0), 2, axis=1)  # a 2x "full-res" image
    write_tiff(tmp_path / "mic.tif", full)
    write_points(tmp_path / "picks.csv", unbin_points(sim.truth.iloc[:5][["y", "x"]], 2))
    assert main(["finetune", str(tmp_path / "mic.tif"), "--points",
                 str(tmp_path / "picks.csv"), "--model", "micrograph", *binning,
                 "--steps", "2", "--out", str(tmp_path / "mic.pt")]) == 0
    card = load_model(tmp_path / "mic.pt").card
    assert card["training"]["binning"] == 2 and card["invert"] is True


def test_detect_bins_as_the_model_was_fine_tuned(tmp_path, capsys):
    # A model fine-tuned on 2x binned clicks detects at 2x unless told otherwise.
    sim = simulate_micrograph(shape=(128, 128), snr=0.3, seed=5)
    full = np.repeat(np.repeat(sim.noisy, 2, axis=0), 2, axis=1)
    write_tiff(tmp_path / "mic.tif", full)
    write_points(tmp_path / "picks.csv", unbin_points(sim.truth.iloc[:5][["y", "x"]], 2))
    assert main(["finetune", str(tmp_path / "mic.tif"), "--points",
                 str(tmp_path / "picks.csv"), "--model", "micrograph", "--bin", "2",
                 "--out", str(tmp_path / "mic.pt")]) == 0
    training = json.loads((tmp_path / "mic.json").read_text())["training"]
    assert training["binning"] == 2 and "--bin 2" in training["command"]
    capsys.readouterr()
    assert main(["detect", str(tmp_path / "mic.tif"), "--model", str(tmp_path / "mic.pt"),
                 "--out", str(tmp_path / "found")]) == 0
    assert "binning 2 x 2, as mic was fine-tuned" in capsys.readouterr().err
    assert tifffile.imread(tmp_path / "found" / "mic_denoised.tif").shape == (128, 128)
    model = load_model(tmp_path / "mic.pt")
    assert model.binning == 2 and run(model.detect(full)).binning == 2
    assert run(model.detect(full, binning=1)).binning == 1
    # --bin still wins, without a word.
    assert main(["detect", str(tmp_path / "mic.tif"), "--model", str(tmp_path / "mic.pt"),
                 "--bin", "1", "--out", str(tmp_path / "full")]) == 0
    assert "binning" not in capsys.readouterr().err
    assert tifffile.imread(tmp_path / "full" / "mic_denoised.tif").shape == (256, 256)


def test_threshold_mode_keeps_the_weights(stack, tmp_path, capsys):
    out = tmp_path / "recalibrated.pt"
    assert main(["finetune", str(stack / "cells.tif"), "--points", str(stack / "clicks.csv"),
                 "--mode", "threshold", "--out", str(out)]) == 0
    card = load_model(out).card
    assert card["training"]["mode"] == "threshold" and card["training"]["steps"] == 0
    assert "--mode threshold" in card["training"]["command"]
    err = capsys.readouterr().err
    assert "threshold recalibrated from the clicked area" in err
    assert "ties broken by the denoised image" in err and "blob" in card["localisation"]
    # Detection with it keeps the raw scores (with the blob term: ``peak``) at its
    # threshold; ``score`` is their probability.
    assert main(["detect", str(stack / "cells.tif"), "--model", str(out),
                 "--out", str(tmp_path / "found")]) == 0
    found = pd.read_csv(tmp_path / "found" / "cells_points.csv")
    assert len(found) and found["peak"].min() >= card["threshold"]
    # The engine's floor (on the peak probability) lost no detection the term lifted.
    assert main(["detect", str(stack / "cells.tif"), "--model", str(out), "--all-candidates",
                 "--out", str(tmp_path / "all")]) == 0
    every = pd.read_csv(tmp_path / "all" / "cells_points.csv")
    assert len(found) == int((every["peak"] >= card["threshold"]).sum())


def test_scattered_clicks_get_a_warning(tmp_path, capsys):
    sim = simulate_timelapse("vesicle", snr=5, density=2000, frames=1, shape=(128, 128),
                             seed=12)
    write_tiff(tmp_path / "dense.tif", np.clip(sim.noisy[0], 0, 65535).astype(np.uint16))
    write_points(tmp_path / "here_and_there.csv", scattered(sim.truth, 8)[["y", "x"]])
    out = tmp_path / "recalibrated.pt"
    assert main(["finetune", str(tmp_path / "dense.tif"), "--points",
                 str(tmp_path / "here_and_there.csv"), "--mode", "threshold",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "dense.tif: " in err and "does not look completely clicked" in err
    assert load_model(out).card["training"]["unclicked_in_area"] > 2


def test_finetune_on_an_image_with_inf_pixels_writes_finite_weights(stack, tmp_path, capsys):
    image = tifffile.imread(stack / "cells.tif").astype(np.float32)
    image[0, 5, 5], image[1, 50, 60] = np.inf, np.nan
    write_tiff(tmp_path / "hot.tif", image)
    model = tmp_path / "mine.pt"
    assert main(["finetune", str(tmp_path / "hot.tif"), "--points", str(stack / "clicks.csv"),
                 "--model", "fluorescence", "--steps", "2", "--mode", "weights",
                 "--out", str(model)]) == 0
    assert "1 pixel NaN or infinite, treated as background" in capsys.readouterr().err
    weights = torch.load(model, weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_fine_tuning_finishes_in_a_minute_unless_told_otherwise():
    from napari_denodet.cli import build_parser
    from napari_denodet.core.finetune import FinetuneSettings

    base = ["finetune", "a.tif", "--points", "b.csv", "--out", "c.pt"]
    assert build_parser().parse_args(base).time_budget == 60.0
    assert FinetuneSettings().time_budget == 60.0
    assert build_parser().parse_args([*base, "--time-budget", "0"]).time_budget == 0
    # A run without a budget repeats as one (not with the default minute).
    command = FinetuneSettings(time_budget=None).command("a.tif", "b.csv", "fluorescence",
                                                         "c.pt")
    assert "--time-budget 0" in command


def test_by_default_it_starts_from_the_model_detect_chose(tmp_path, capsys):
    # A dim time-lapse: detect's default, auto, chooses the timelapse model there, and
    # finetune's default starts from the same one (and records it to repeat the run).
    dim = simulate_timelapse("vesicle", snr=1.2, density="mid", frames=12, shape=(128, 128),
                             seed=3)
    write_tiff(tmp_path / "dim.tif", dim.noisy.astype(np.float32))
    write_points(tmp_path / "clicks.csv", dim.truth[dim.truth.frame == 5].iloc[:6][
        ["frame", "y", "x"]])
    assert main(["detect", str(tmp_path / "dim.tif"), "--out", str(tmp_path / "found")]) == 0
    assert "model timelapse chosen" in capsys.readouterr().out
    out = tmp_path / "mine.pt"
    assert main(["finetune", str(tmp_path / "dim.tif"), "--points",
                 str(tmp_path / "clicks.csv"), "--steps", "1", "--out", str(out)]) == 0
    assert "model timelapse chosen" in capsys.readouterr().err
    card = load_model(out).card
    assert card["parent"]["name"] == "timelapse"
    assert "--model timelapse" in card["training"]["command"]
