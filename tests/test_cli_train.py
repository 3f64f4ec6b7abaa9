"""`napari-denodet train`: a model file and a card whose command reproduces it."""

import json
import shlex

import pytest

from napari_denodet.cli import main
from napari_denodet.core.models import load_model

ARGS = ["train", "--scenario", "vesicle", "--steps", "2", "--batch-size", "1",
        "--patch-size", "32", "--eval-every", "1", "--settle-fraction", "0.5"]


def test_train_writes_a_loadable_model_whose_card_reproduces_it(tmp_path):
    out = tmp_path / "tiny.pt"
    assert main([*ARGS, "--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    command = shlex.split(card["training"]["command"])
    assert command[command.index("--settle-fraction") + 1] == "0.5"
    assert card["training"]["settings"]["settle_fraction"] == 0.5
    assert load_model(out).threshold == card["threshold"]
    # The recorded command, run again, gives the same weights.
    again = tmp_path / "again.pt"
    assert main([*command[1:-1], str(again)]) == 0
    a, b = load_model(out).network.state_dict(), load_model(again).network.state_dict()
    assert all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("share", ["-0.1", "1.5"])
def test_train_refuses_a_settle_share_out_of_range(tmp_path, share, capsys):
    out = tmp_path / "m.pt"
    assert main([*ARGS[:-2], "--settle-fraction", share, "--out", str(out)]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    assert not out.exists()


def test_train_with_the_papers_instance_norm_records_and_reproduces_it(tmp_path):
    out = tmp_path / "instance.pt"
    assert main([*ARGS, "--norm", "instance", "--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["network"]["norm"] == "instance"
    command = shlex.split(card["training"]["command"])
    assert command[command.index("--norm") + 1] == "instance"
    assert load_model(out).network.config.norm == "instance"


def test_train_with_the_papers_denoising_loss_records_it(tmp_path):
    out = tmp_path / "dice.pt"
    assert main([*ARGS, "--denoising-loss", "dice-bce", "--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["settings"]["denoising_loss"] == "dice-bce"
    command = shlex.split(card["training"]["command"])
    assert command[command.index("--denoising-loss") + 1] == "dice-bce"


def test_train_micrograph_fringe_and_blur_ranges_are_recorded(tmp_path):
    out = tmp_path / "mic.pt"
    args = ["train", "--scenario", "micrograph", "--steps", "2", "--batch-size", "1",
            "--patch-size", "32", "--eval-every", "1", "--halo-range", "0", "0.8",
            "--blur-range", "0.5", "2.5", "--out", str(out)]
    assert main(args) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["settings"]["halo_range"] == [0.0, 0.8]
    assert card["training"]["settings"]["blur_range"] == [0.5, 2.5]
    command = shlex.split(card["training"]["command"])
    assert command[command.index("--halo-range") + 1:][:2] == ["0", "0.8"]
    assert command[command.index("--blur-range") + 1:][:2] == ["0.5", "2.5"]


def test_train_with_correlated_noise_records_and_reproduces_it(tmp_path):
    out = tmp_path / "camera.pt"
    assert main([*ARGS, "--correlated-noise", "0.8", "--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["settings"]["correlated_noise"] == 0.8
    command = shlex.split(card["training"]["command"])
    assert command[command.index("--correlated-noise") + 1] == "0.8"
    # The default (white noise only) is not repeated in the command.
    plain = tmp_path / "plain.pt"
    assert main([*ARGS, "--out", str(plain)]) == 0
    assert "--correlated-noise" not in json.loads(plain.with_suffix(".json").read_text())[
        "training"]["command"]


def test_train_records_the_share_of_plain_patches(tmp_path):
    out = tmp_path / "mixed.pt"
    assert main([*ARGS, "--domain", "realistic", "--ptc-share", "0.5", "--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["settings"]["ptc_share"] == 0.5
    assert card["training"]["ptc_share"] == 0.5
    assert "50% of them through" in card["training"]["data"]
    command = shlex.split(card["training"]["command"])
    assert command[command.index("--ptc-share") + 1] == "0.5"


@pytest.mark.parametrize("extra, message", [
    (["--scenario", "micrograph", "--blur-range", "2", "1"], "blur_range"),
    (["--scenario", "micrograph", "--correlated-noise", "0.5"], "time-lapses only"),
    (["--halo-range", "0", "0.5"], "micrographs only"),
    (["--ptc-share", "0.5"], "realistic domain only"),
])
def test_train_refuses_fringe_or_blur_that_does_not_fit(tmp_path, extra, message, capsys):
    out = tmp_path / "m.pt"
    assert main([*ARGS, *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_train_with_wider_feature_maps_records_and_loads_them(tmp_path):
    out = tmp_path / "wide.pt"
    assert main([*ARGS, "--widths", "4", "8", "12", "--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["network"]["widths"] == [4, 8, 12]
    command = shlex.split(card["training"]["command"])
    assert command[command.index("--widths") + 1:][:3] == ["4", "8", "12"]
    assert load_model(out).network.config.widths == (4, 8, 12)
    # The paper's widths are the default and are not repeated in the command.
    plain = tmp_path / "plain.pt"
    assert main([*ARGS, "--out", str(plain)]) == 0
    assert "--widths" not in json.loads(plain.with_suffix(".json").read_text())[
        "training"]["command"]


def test_train_with_a_window_records_and_reproduces_it(tmp_path):
    out = tmp_path / "window.pt"
    extra = ["--window", "3", "--init", "fluorescence", "--window-init", "sum"]
    assert main([*ARGS, *extra, "--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["settings"]["window"] == 3
    assert card["training"]["settings"]["window_init"] == "sum"
    assert "neighbours (3 frames" in card["training"]["data"]
    command = shlex.split(card["training"]["command"])
    assert command[command.index("--window") + 1] == "3"
    assert command[command.index("--window-init") + 1] == "sum"
    assert load_model(out).window == 3


def test_train_refuses_an_even_window(tmp_path, capsys):
    out = tmp_path / "w.pt"
    assert main([*ARGS, "--window", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "window must be an odd number" in err and "Traceback" not in err
    assert not out.exists()
