"""What detection leaves in an output folder when runs are interrupted, half done, or
meet a user's files: no temporary files, resumed outputs, a user's files never taken."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from helpers import drain
from napari_denodet.cli import main
from napari_denodet.core import batch
from napari_denodet.core.batch import DetectSettings, detect_file, expand_inputs, run_batch
from napari_denodet.core.io import read_points, write_tiff
from napari_denodet.core.simulate import simulate_timelapse

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stack(seed: int, frames: int = 2, size: int = 64) -> np.ndarray:
    sim = simulate_timelapse("vesicle", snr=7, density="low", frames=frames,
                             shape=(size, size), seed=4_700_000_000 + seed)
    return np.clip(sim.noisy, 0, 65535).astype(np.uint16)


@pytest.fixture
def data(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(2):
        write_tiff(folder / f"cells{i}.tif", _stack(i))
    return folder


def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


# ------------------------------------------------------------------ interrupted runs


@pytest.fixture(scope="module")
def long_stack(tmp_path_factory) -> Path:
    """A stack that takes the network several seconds (noise: nothing to simulate)."""
    folder = tmp_path_factory.mktemp("long")
    noise = np.random.default_rng(7).normal(100, 10, (150, 256, 256))
    write_tiff(folder / "long.tif", noise.clip(0).astype(np.uint16))
    return folder / "long.tif"


def _terminate_once_writing(argv: list[str], out: Path) -> subprocess.CompletedProcess:
    # Start the command line, send SIGTERM as soon as a temporary output exists.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "napari_denodet.cli", *argv],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (out.is_dir() and _partials(out)):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no temporary output appeared"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the workers, should any be left
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize("batch_run", [False, True], ids=["one file", "batch"])
def test_sigterm_stops_the_run_and_leaves_no_temporary_file(long_stack, tmp_path, batch_run):
    out = tmp_path / "out"
    argv = ["detect", str(long_stack), "--out", str(out)]
    if batch_run:
        twin = tmp_path / "twin.tif"
        twin.symlink_to(long_stack)
        argv += ["--workers", "1"]
        argv.insert(2, str(twin))
    result = _terminate_once_writing(argv, out)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "napari-denodet: interrupted"
    assert "Traceback" not in result.stderr
    assert _partials(out) == []
    assert not (out / "long_points.csv").exists()


def test_a_file_asked_to_stop_gives_up_at_its_next_pass_and_leaves_nothing(data, tmp_path):
    # What a dask task does when its batch is interrupted (a running task cannot be
    # cancelled from outside): it asks `stop` after every forward pass.
    out = tmp_path / "out"
    asked = []

    def stop():
        asked.append(True)
        return len(asked) >= 2

    record = detect_file(data / "cells0.tif", out, DetectSettings(model="fluorescence"), stop)
    assert record["status"] == "failed" and record["error"] == "interrupted"
    assert len(asked) == 2
    assert not out.exists() or not [p for p in out.iterdir() if "cells0" in p.name]
    # Never asked to stop, the same file is detected and written.
    record = detect_file(data / "cells0.tif", out, DetectSettings(model="fluorescence"),
                         lambda: False)
    assert record["status"] == "ok" and (out / "cells0_points.csv").is_file()


def test_a_rerun_removes_stale_temporary_files_of_its_own_outputs_only(data, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "out"
    out.mkdir()
    # Left by killed runs: temporary files of this input's outputs (a TIFF, a CSV).
    stale = [".cells0_denoised.tif.k1ll3d_x.partial.tif",
             ".cells0_points.csv.a8b7c6d5.partial.csv"]
    for name in stale:
        (out / name).write_bytes(b"x" * 1000)
    # Not ours to remove: another output's, a user's files, a live run's.
    kept = [".cells1_points.csv.a8b7c6d5.partial.csv", ".cells0_points.csv.notes",
            "cells0_points.csv.a8b7c6d5.partial.csv", ".cells0_points.csv.l1ve0000.partial.csv"]
    for name in kept:
        (out / name).write_bytes(b"y" * 1000)
    live = os.open(out / kept[-1], os.O_RDONLY)
    fcntl.flock(live, fcntl.LOCK_EX)
    try:
        record = detect_file(data / "cells0.tif", out, DetectSettings())
    finally:
        os.close(live)
    assert record["status"] == "ok"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".cells")
                  or "partial" in p.name) == sorted(kept)
    assert all((out / name).read_bytes() == b"y" * 1000 for name in kept)


# ---------------------------------------------------------------- half-written outputs


def _disk_full_at_the_points(monkeypatch):
    # The denoised stack is written, then the disk is full when the points CSV is.
    from napari_denodet.core import io

    write_points = io.write_points

    def full(path, *args, **kwargs):
        if str(path).endswith(".csv"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return write_points(path, *args, **kwargs)

    monkeypatch.setattr(io, "write_points", full)
    return lambda: monkeypatch.setattr(io, "write_points", write_points)


def test_a_single_run_resumes_what_a_full_disk_left_unwritten(data, tmp_path, capsys,
                                                               monkeypatch):
    out = tmp_path / "out"
    argv = ["detect", str(data / "cells0.tif"), "--out", str(out)]
    disk_freed = _disk_full_at_the_points(monkeypatch)
    assert main(argv) == 1
    assert "No space left on device" in capsys.readouterr().err
    denoised = out / "cells0_denoised.tif"
    assert denoised.is_file() and not (out / "cells0_points.csv").exists()
    before = denoised.stat().st_mtime_ns
    disk_freed()
    assert main(argv) == 0
    said = capsys.readouterr()
    assert "kept cells0_denoised.tif from an earlier run" in said.out and not said.err
    assert denoised.stat().st_mtime_ns == before  # kept, not written again
    assert list(read_points(out / "cells0_points.csv").columns[:3]) == ["frame", "y", "x"]
    assert _partials(out) == []


def test_a_batch_resumes_a_file_whose_run_was_cut_between_two_outputs(data, tmp_path,
                                                                      monkeypatch):
    out = tmp_path / "out"
    disk_freed = _disk_full_at_the_points(monkeypatch)
    assert detect_file(data / "cells0.tif", out, DetectSettings())["status"] == "failed"
    disk_freed()
    result, _ = drain(run_batch(expand_inputs([data]), out, DetectSettings(), n_workers=1))
    assert [r["status"] for r in result.records] == ["ok", "ok"]
    assert "kept cells0_denoised.tif" in result.records[0]["note"]
    assert (out / "cells0_points.csv").is_file()


def test_an_output_kept_from_a_run_with_other_settings_is_not_resumed(data, tmp_path,
                                                                      monkeypatch):
    out = tmp_path / "out"
    disk_freed = _disk_full_at_the_points(monkeypatch)
    detect_file(data / "cells0.tif", out, DetectSettings(threshold=0.3))
    disk_freed()
    record = detect_file(data / "cells0.tif", out, DetectSettings(threshold=0.6))
    assert record["status"] == "failed"
    assert record["error"] == (f"{out / 'cells0_denoised.tif'}: already exists from a run "
                               f"with other settings (threshold); use --overwrite or another "
                               f"--out")
    assert detect_file(data / "cells0.tif", out,
                       DetectSettings(threshold=0.6, overwrite=True))["status"] == "ok"


# ----------------------------------------------------------------------- a user's files


def test_a_users_file_named_like_an_output_is_an_input_and_never_replaced(data, capsys):
    # x_denoised.tif of the user's own, beside x.tif, with --out the same folder.
    mine = data / "cells0_denoised.tif"
    write_tiff(mine, _stack(5))
    original = mine.read_bytes()
    assert batch.without_outputs(expand_inputs([data]), data) == \
        [data / "cells0.tif", mine, data / "cells1.tif"]
    for extra in ([], ["--overwrite"]):
        assert main(["detect", str(data / "cells0.tif"), "--out", str(data), *extra]) == 1
        err = capsys.readouterr().err
        assert err == (f"napari-denodet: error: {mine}: already exists and napari-denodet did "
                       f"not write it for cells0.tif (it is not in manifest.json); it is left "
                       f"as it is: move it away or choose another --out\n")
        assert mine.read_bytes() == original
    # In a batch the user's file is detected in like any input; cells0.tif fails alone.
    assert main(["detect", str(data), "--out", str(data), "--workers", "1"]) == 1
    printed = capsys.readouterr()
    failures = [line for line in printed.err.splitlines() if "error:" in line]
    assert len(failures) == 1 and f"{mine}: already exists" in failures[0]
    assert (data / "cells0_denoised_points.csv").is_file()
    assert (data / "cells1_points.csv").is_file()
    assert mine.read_bytes() == original
    assert tifffile.imread(data / "cells0_denoised_denoised.tif").shape == (2, 64, 64)


def test_outputs_replaced_by_a_users_file_are_no_longer_ours(data, tmp_path):
    out = tmp_path / "out"
    assert detect_file(data / "cells0.tif", out, DetectSettings())["status"] == "ok"
    record, _ = drain(batch.detect_and_record(data / "cells0.tif", out, DetectSettings()))
    assert record["status"] == "skipped"
    # The user puts their own file in place of the denoised stack.
    (out / "cells0_denoised.tif").unlink()
    write_tiff(out / "cells0_denoised.tif", _stack(6))
    record = detect_file(data / "cells0.tif", out, DetectSettings(overwrite=True))
    assert record["status"] == "failed" and "did not write it" in record["error"]
