import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_denodet.cli import main
from napari_denodet.core.io import read_points, write_points
from napari_denodet.core.points import points_table
from napari_denodet.core.simulate import simulate_timelapse


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_simulates_and_evaluates_f1_one(tmp_path):
    # The installed entry point, as a user types it (issue 2's acceptance check).
    exe = Path(sys.executable).with_name("napari-denodet")
    assert exe.exists(), "the console script was not installed"
    out_dir = tmp_path / "D"
    sim = subprocess.run([str(exe), "simulate", "--scenario", "vesicle", "--snr", "2", "--density",
                          "mid", "--frames", "10", "--out", str(out_dir)],
                         capture_output=True, text=True)
    assert sim.returncode == 0, sim.stderr
    truth = str(out_dir / "truth.csv")
    ev = subprocess.run([str(exe), "evaluate", truth, truth], capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr
    assert "F1        1.000" in ev.stdout
    noisy = tifffile.imread(out_dir / "noisy.tif")
    clean = tifffile.imread(out_dir / "clean.tif")
    assert noisy.shape == clean.shape == (10, 512, 512)
    assert noisy.dtype == np.uint16
    truth = read_points(out_dir / "truth.csv")
    assert set(truth.frame) == set(range(10))
    params = json.loads((out_dir / "simulation.json").read_text())
    assert params["scenario"] == "vesicle" and params["snr"] == 2.0


def test_micrograph_simulation_writes_a_2d_image(tmp_path, capsys):
    code, out, _ = _run(capsys, "simulate", "--scenario", "micrograph", "--size", "128",
                        "--snr", "0.2", "--out", str(tmp_path))
    assert code == 0
    assert tifffile.imread(tmp_path / "noisy.tif").shape == (128, 128)
    truth = read_points(tmp_path / "truth.csv")
    assert "frame" not in truth.columns and len(truth) > 0
    assert f"{len(truth)} particle positions" in out


def test_simulate_with_correlated_camera_noise(tmp_path, capsys):
    code, _, _ = _run(capsys, "simulate", "--frames", "2", "--size", "96", "--snr", "4",
                      "--noise-correlation", "0.6", "0.35", "--out", str(tmp_path / "cam"))
    assert code == 0
    params = json.loads((tmp_path / "cam" / "simulation.json").read_text())
    assert params["noise_correlation"] == [0.6, 0.35]
    written = tifffile.imread(tmp_path / "cam" / "noisy.tif")
    noise = written.astype(float) - tifffile.imread(tmp_path / "cam" / "clean.tif")
    rows = np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]
    assert rows > 0.3  # neighbouring rows share their noise (about 0.45 before rounding)
    # Correlated noise is not whole counts: it is rounded, not truncated, to uint16.
    sim = simulate_timelapse("vesicle", snr=4, density="mid", frames=2, shape=(96, 96),
                             seed=0, noise_correlation=(0.6, 0.35))
    np.testing.assert_array_equal(written, np.clip(np.rint(sim.noisy), 0, None))
    code, _, err = _run(capsys, "simulate", "--scenario", "micrograph", "--size", "64",
                        "--noise-correlation", "1", "1", "--out", str(tmp_path / "mic"))
    assert code == 1 and "time-lapse scenarios only" in err and err.count("\n") == 1


def test_simulate_refuses_to_overwrite_then_overwrites_when_asked(tmp_path, capsys):
    args = ["simulate", "--frames", "2", "--size", "32", "--out", str(tmp_path)]
    assert _run(capsys, *args)[0] == 0
    before = (tmp_path / "noisy.tif").read_bytes()
    code, out, err = _run(capsys, *args, "--seed", "5")
    assert code == 1
    assert "already holds" in err and err.count("\n") == 1
    assert (tmp_path / "noisy.tif").read_bytes() == before
    assert _run(capsys, *args, "--seed", "5", "--overwrite")[0] == 0
    assert (tmp_path / "noisy.tif").read_bytes() != before


def _scored(tmp_path):
    ref = points_table([10, 20, 30], [10, 20, 30], frame=[0, 0, 1])
    pred = points_table([10.5, 20, 90], [10, 21, 90], frame=[0, 0, 1], score=[0.9, 0.4, 0.8])
    write_points(tmp_path / "ref.csv", ref)
    write_points(tmp_path / "pred.csv", pred)
    return tmp_path / "pred.csv", tmp_path / "ref.csv"


def test_evaluate_json_and_threshold(tmp_path, capsys):
    pred, ref = _scored(tmp_path)
    code, out, _ = _run(capsys, "evaluate", str(pred), str(ref), "--json")
    assert code == 0
    scores = json.loads(out)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 1, 1)
    assert scores["rmse"] == pytest.approx(np.sqrt((0.25 + 1) / 2))
    code, out, _ = _run(capsys, "evaluate", str(pred), str(ref), "--json", "--threshold", "0.5")
    scores = json.loads(out)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (1, 1, 2)
    code, out, _ = _run(capsys, "evaluate", str(pred), str(ref), "--gate", "0.1", "--json")
    assert json.loads(out)["tp"] == 0


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["simulate", "--snr", "-1", "--out", "X"], 2, "must be > 0"),
        (["simulate", "--scenario", "bacteria", "--out", "X"], 2, "invalid choice"),
        (["simulate"], 2, "--out"),
        (["simulate", "--size", "4", "--out", "X"], 2, "sides >= 8"),
        (["evaluate", "missing.csv", "missing.csv"], 1, "missing.csv: no such file"),
        (["frobnicate"], 2, "invalid choice"),
        ([], 2, "required"),
    ],
)
def test_bad_arguments_give_one_line_and_nonzero_exit(tmp_path, monkeypatch, capsys, argv,
                                                      code, needle):
    monkeypatch.chdir(tmp_path)
    got, out, err = _run(capsys, *argv)
    assert got == code
    assert needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_points_files_are_named_in_the_error(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    pred, ref = _scored(tmp_path)
    code, _, err = _run(capsys, "evaluate", str(bad), str(ref))
    assert code == 1 and str(bad) in err and "missing column" in err
    single = tmp_path / "single.csv"
    write_points(single, points_table([1.0], [2.0]))
    code, _, err = _run(capsys, "evaluate", str(single), str(ref))
    assert code == 1 and "'frame' column" in err
    nos = tmp_path / "noscore.csv"
    write_points(nos, points_table([1.0], [2.0], frame=[0]))
    code, _, err = _run(capsys, "evaluate", str(nos), str(ref), "--threshold", "0.5")
    assert code == 1 and "no 'score' column" in err


def test_module_entry_and_help_run_without_error():
    out = subprocess.run([sys.executable, "-m", "napari_denodet.cli", "simulate", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "--scenario" in out.stdout


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    # `napari-denodet evaluate a b | head -1`: no "Broken pipe" error, no traceback.
    import subprocess
    import sys

    from napari_denodet.core.io import write_points
    from napari_denodet.core.points import points_table

    table = points_table([1.0, 2.0], [3.0, 4.0])
    for name in ("a.csv", "b.csv"):
        write_points(tmp_path / name, table)
    script = ("import sys; from napari_denodet.cli import main; "
              f"sys.exit(main(['evaluate', r'{tmp_path / 'a.csv'}', r'{tmp_path / 'b.csv'}']))")
    # A reader that has already gone: every write to the pipe fails.
    reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)
    reader.wait(timeout=30)
    writer = subprocess.run([sys.executable, "-c", script], stdout=reader.stdin,
                            stderr=subprocess.PIPE, text=True, timeout=120)
    reader.stdin.close()
    assert writer.returncode == 1
    assert "Broken pipe" not in writer.stderr and "Traceback" not in writer.stderr
    assert "Exception ignored" not in writer.stderr
