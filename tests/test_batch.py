"""Many files on dask: inputs, one file's task, a batch on a local cluster and on a
scheduler and worker started as separate processes, through the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from helpers import drain
from napari_denodet.cli import main
from napari_denodet.core import batch
from napari_denodet.core import scheduler as scheduler_module
from napari_denodet.core.batch import (
    MANIFEST_FIELDS,
    DetectSettings,
    detect_file,
    expand_inputs,
    run_batch,
)
from napari_denodet.core.errors import InputError
from napari_denodet.core.io import read_image, read_points, write_tiff
from napari_denodet.core.models import load_model
from napari_denodet.core.predict import detect, run
from napari_denodet.core.resample import BinnedStack, bin_image, bin_lazily
from napari_denodet.core.simulate import simulate_timelapse

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stack(seed: int, frames: int = 2, size: int = 64) -> np.ndarray:
    sim = simulate_timelapse("vesicle", snr=7, density="low", frames=frames,
                             shape=(size, size), seed=4_500_000_000 + seed)
    return np.clip(sim.noisy, 0, 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Three small stacks and one corrupt TIFF."""
    folder = tmp_path_factory.mktemp("inputs")
    for i in range(3):
        write_tiff(folder / f"cells{i}.tif", _stack(i))
    (folder / "broken.tif").write_bytes(b"this is not a TIFF")
    return folder


def _good(folder: Path) -> list[Path]:
    return sorted(folder.glob("cells*.tif"))


# ------------------------------------------------------------------------------ inputs


def test_inputs_from_folders_globs_and_list_files(inputs, tmp_path):
    everything = sorted(inputs.glob("*.tif"))
    assert expand_inputs([inputs]) == everything
    assert expand_inputs([str(inputs / "cells*.tif")]) == _good(inputs)
    listed = tmp_path / "todo.txt"
    listed.write_text(f"# facility run\n{inputs / 'cells2.tif'}\n\n{inputs / 'cells*.tif'}\n")
    # Each file once, in the order given.
    assert expand_inputs([listed]) == [inputs / "cells2.tif", inputs / "cells0.tif",
                                       inputs / "cells1.tif"]
    (tmp_path / "relative.txt").write_text("cells0.tif\n")
    (tmp_path / "cells0.tif").write_bytes(b"")
    assert expand_inputs([tmp_path / "relative.txt"]) == [tmp_path / "cells0.tif"]
    # A missing single file is kept: it fails as that file, not as the batch.
    assert expand_inputs([tmp_path / "absent.tif"]) == [tmp_path / "absent.tif"]


def test_a_rerun_into_the_input_folder_does_not_take_outputs_for_inputs(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_tiff(folder / "cells.tif", _stack(0))
    write_tiff(folder / "other_denoised.tif", _stack(2))  # an input that merely looks like one
    # A previous run's output (cells_denoised.tif), recorded in the folder's manifest.
    assert detect_file(folder / "cells.tif", folder, DetectSettings())["status"] == "ok"
    kept = batch.without_outputs(expand_inputs([folder]), folder)
    assert kept == [folder / "cells.tif", folder / "other_denoised.tif"]
    assert batch.without_outputs(expand_inputs([folder]), tmp_path) == \
        expand_inputs([folder])


@pytest.mark.parametrize("what", ["empty folder", "pattern", "empty list"])
def test_inputs_that_yield_nothing_are_a_clear_error(tmp_path, what):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.txt").write_text("# nothing yet\n")
    item = {"empty folder": tmp_path / "empty", "pattern": str(tmp_path / "*.mrc"),
            "empty list": tmp_path / "empty.txt"}[what]
    with pytest.raises(InputError, match="no image files|no files match|list of inputs"):
        expand_inputs([item])


# --------------------------------------------------------------------------- one file


def test_detect_file_streams_the_same_result_as_detect_in_memory(inputs, tmp_path):
    model = load_model("fluorescence")
    settings = DetectSettings(all_candidates=True)
    record = detect_file(inputs / "cells0.tif", tmp_path, settings)
    assert record["status"] == "ok" and record["error"] is None
    assert record["frames"] == 2 and record["shape"] == "2x64x64"
    denoised = read_image(tmp_path / "cells0_denoised.tif")
    assert isinstance(denoised, np.memmap)  # on disk, mapped lazily when read back
    expected = run(model.detect(tifffile.imread(inputs / "cells0.tif")))
    np.testing.assert_array_equal(denoised, expected.denoised)
    points = read_points(tmp_path / "cells0_points.csv")
    pd.testing.assert_frame_equal(points, expected.candidates, check_exact=False, rtol=1e-6)
    assert record["n_points"] == len(points)
    # The raw peak scores are the engine's; the scores are their probabilities.
    engine = run(detect(tifffile.imread(inputs / "cells0.tif"), model.network,
                        **model.localisation))
    np.testing.assert_allclose(points["peak"], engine.points["score"], rtol=1e-6)
    assert points["score"].between(0, 1).all()


def test_thresholded_points_equal_thresholding_all_candidates(inputs, tmp_path):
    every = detect_file(inputs / "cells1.tif", tmp_path / "all",
                        DetectSettings(all_candidates=True, denoised="none"))
    cut = detect_file(inputs / "cells1.tif", tmp_path / "cut",
                      DetectSettings(threshold=0.3, denoised="zarr"))
    assert every["outputs"] == [str(tmp_path / "all" / "cells1_points.csv")]
    all_points = read_points(tmp_path / "all" / "cells1_points.csv")
    strict = read_points(tmp_path / "cut" / "cells1_points.csv")
    pd.testing.assert_frame_equal(
        strict, all_points[all_points.score >= 0.3].reset_index(drop=True))
    assert cut["threshold"] == 0.3
    assert read_image(tmp_path / "cut" / "cells1_denoised.zarr").shape == (2, 64, 64)


def test_a_stack_is_binned_frame_by_frame(inputs, tmp_path):
    stack = read_image(inputs / "cells2.tif")
    binned = bin_lazily(stack, 2)
    assert isinstance(binned, BinnedStack) and binned.shape == (2, 32, 32)
    np.testing.assert_array_equal(binned[1:2], bin_image(np.asarray(stack[1:2]), 2))
    record = detect_file(inputs / "cells2.tif", tmp_path, DetectSettings(binning=2))
    assert record["status"] == "ok"
    assert tifffile.imread(tmp_path / "cells2_denoised.tif").shape == (2, 32, 32)


def test_detect_file_records_a_failure_instead_of_raising(inputs, tmp_path):
    record = detect_file(inputs / "broken.tif", tmp_path, DetectSettings())
    assert record["status"] == "failed"
    assert record["error"].startswith(str(inputs / "broken.tif"))
    assert "not a readable TIFF" in record["error"] and "\n" not in record["error"]
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_finished_files_are_skipped_and_partial_ones_refused(inputs, tmp_path):
    settings = DetectSettings()
    assert detect_file(inputs / "cells0.tif", tmp_path, settings)["status"] == "ok"
    mtime = (tmp_path / "cells0_points.csv").stat().st_mtime_ns
    assert detect_file(inputs / "cells0.tif", tmp_path, settings)["status"] == "skipped"
    assert (tmp_path / "cells0_points.csv").stat().st_mtime_ns == mtime
    redo = DetectSettings(overwrite=True)
    assert detect_file(inputs / "cells0.tif", tmp_path, redo)["status"] == "ok"
    # Outputs of an interrupted run (or someone else's files) are never replaced silently.
    (tmp_path / "cells1_denoised.tif").write_text("mine")
    record = detect_file(inputs / "cells1.tif", tmp_path, settings)
    assert record["status"] == "failed" and "already exists" in record["error"]
    assert (tmp_path / "cells1_denoised.tif").read_text() == "mine"


# ------------------------------------------------------------------------------ batch


def test_batch_on_a_local_cluster_records_every_file_and_survives_a_broken_one(inputs,
                                                                             tmp_path):
    out = tmp_path / "out"
    paths = expand_inputs([inputs])
    result, steps = drain(run_batch(paths, out, DetectSettings(), n_workers=2))
    assert [s.step for s in steps] == [1, 2, 3, 4] and {s.total for s in steps} == {4}
    assert result.about["scheduler"] == "local" and result.about["workers"] == 2
    assert result.about["torch_threads"] >= 1
    status = {Path(r["file"]).name: r["status"] for r in result.records}
    assert status == {"broken.tif": "failed", "cells0.tif": "ok", "cells1.tif": "ok",
                      "cells2.tif": "ok"}
    assert all(r["worker"].startswith("tcp://") for r in result.records)
    for name in ("cells0", "cells1", "cells2"):
        assert (out / f"{name}_points.csv").is_file()
        assert read_image(out / f"{name}_denoised.tif").shape == (2, 64, 64)
    # The manifest says what ran, how long, and what failed and why.
    table = pd.read_csv(out / "manifest.csv")
    assert list(table.columns) == list(MANIFEST_FIELDS)
    assert table.file.tolist() == [str(p) for p in paths]
    broken = table[table.status == "failed"].iloc[0]
    assert "not a readable TIFF" in broken.error
    assert (table[table.status == "ok"].seconds > 0).all()
    document = json.loads((out / "manifest.json").read_text())
    assert document["counts"] == {"ok": 3, "failed": 1, "skipped": 0}
    assert document["settings"]["model"] == "auto"  # the default
    assert len(document["files"]) == 4


def test_a_rerun_skips_finished_files_without_starting_a_cluster(inputs, tmp_path,
                                                                 monkeypatch):
    settings = DetectSettings(denoised="none")
    for path in _good(inputs):
        detect_file(path, tmp_path, settings)

    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started for finished files")

    monkeypatch.setattr(batch, "dask_client", no_cluster)
    result, steps = drain(run_batch(_good(inputs), tmp_path, settings))
    assert [r["status"] for r in result.records] == ["skipped"] * 3
    assert len(steps) == 3
    assert pd.read_csv(tmp_path / "manifest.csv").status.tolist() == ["skipped"] * 3


def test_inputs_whose_results_would_collide_are_refused(inputs, tmp_path):
    twin = tmp_path / "other"
    twin.mkdir()
    write_tiff(twin / "cells0.tif", _stack(9))
    with pytest.raises(InputError, match="same name"):
        next(run_batch([inputs / "cells0.tif", twin / "cells0.tif"], tmp_path / "out",
                       DetectSettings()))


def test_a_file_name_that_is_not_utf8_does_not_stop_the_batch(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    write_tiff(folder / "cells0.tif", _stack(0))
    write_tiff(folder / "cells1.tif", _stack(1))
    odd = os.fsdecode(os.path.join(os.fsencode(folder), b"caf\xff.tif"))
    write_tiff(odd, _stack(2))
    out = tmp_path / "out"
    assert main(["detect", str(folder), "--out", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr()
    assert "caf\\xff.tif: " in printed.out and "Traceback" not in printed.err
    document = json.loads((out / "manifest.json").read_text())
    assert {r["file"]: r["status"] for r in document["files"]} == {
        str(folder / "caf\udcff.tif"): "ok", str(folder / "cells0.tif"): "ok",
        str(folder / "cells1.tif"): "ok"}
    assert os.path.exists(os.path.join(os.fsencode(out), b"caf\xff_points.csv"))
    # The table keeps the name's bytes.
    table = pd.read_csv(out / "manifest.csv", encoding_errors="surrogateescape")
    assert str(folder / "caf\udcff.tif") in table.file.tolist()


# ---------------------------------------------- a scheduler and a worker as processes


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A ``dask scheduler`` and a ``dask worker`` on loopback, as separate processes."""
    from distributed import Client

    dask = Path(sys.executable).parent / "dask"
    if not dask.exists():
        pytest.skip(f"no dask command next to {sys.executable}")
    folder = tmp_path_factory.mktemp("dask")
    address_file = folder / "scheduler.json"
    log = (folder / "dask.log").open("w")
    processes = []

    def start(*args):
        processes.append(subprocess.Popen([str(dask), *args], cwd=folder, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))

    try:
        start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
              "--scheduler-file", str(address_file))
        deadline = time.monotonic() + 60
        while not address_file.exists() and time.monotonic() < deadline:
            assert processes[0].poll() is None, (folder / "dask.log").read_text()
            time.sleep(0.2)
        start("worker", "--scheduler-file", str(address_file), "--host", "127.0.0.1",
              "--nworkers", "1", "--nthreads", "1", "--no-dashboard")
        address = json.loads(address_file.read_text())["address"]
        with Client(address, timeout="30s", set_as_default=False) as client:
            client.wait_for_workers(1, timeout=60)
        yield address
    finally:
        for process in reversed(processes):  # the worker (and its nanny's child) first
            with _no_such_process():
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with _no_such_process():
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)
        log.close()


def _no_such_process():
    import contextlib

    return contextlib.suppress(ProcessLookupError)


def test_cli_batch_through_a_scheduler_address(scheduler, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    pattern = str(inputs / "cells*.tif")
    assert main(["detect", pattern, "--out", str(out), "--scheduler", scheduler]) == 0
    printed = capsys.readouterr()
    assert printed.out.count("particles (score >=") == 3
    assert f"dask scheduler {scheduler}" in printed.out
    table = pd.read_csv(out / "manifest.csv")
    assert table.status.tolist() == ["ok"] * 3
    assert (table.worker.str.startswith("tcp://127.0.0.1:")).all()
    # Again with the broken file: finished files are skipped, the failure is one line
    # and the exit status says so.
    code = main(["detect", str(inputs), "--out", str(out), "--scheduler", scheduler])
    printed = capsys.readouterr()
    assert code == 1
    failures = [line for line in printed.err.splitlines() if "error:" in line]
    assert len(failures) == 1 and "broken.tif" in failures[0]
    assert "Traceback" not in printed.err
    assert f"manifest: {out / 'manifest.csv'}" in printed.err
    assert sorted(pd.read_csv(out / "manifest.csv").status) == ["failed"] + ["skipped"] * 3
    # --overwrite redoes them; the row of the file this run left out stays.
    assert main(["detect", pattern, "--out", str(out), "--scheduler", scheduler,
                 "--overwrite"]) == 0
    table = pd.read_csv(out / "manifest.csv")
    assert table.status.tolist() == ["failed", "ok", "ok", "ok"]
    assert table.file[0] == str(inputs / "broken.tif")


def test_an_unreachable_scheduler_is_one_line(inputs, tmp_path, capsys, monkeypatch):
    import socket

    monkeypatch.setattr(scheduler_module, "SCHEDULER_TIMEOUT", 1.0)
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = main(["detect", str(inputs / "cells0.tif"), "--out", str(tmp_path),
                 "--scheduler", f"tcp://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 1 and "cannot reach the dask scheduler" in err
    assert "Traceback" not in err and err.strip().count("\n") == 0


@pytest.fixture
def quick_scheduler_timeout(monkeypatch):
    monkeypatch.setattr(scheduler_module, "SCHEDULER_TIMEOUT", 1.0)


def _serve(answer: bytes | None):
    """A TCP server on loopback that accepts and then never answers (answer None), or
    answers every connection with ``answer`` whatever it is sent; return its socket."""
    import contextlib
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)
            if answer is not None:
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return server


def _main_with_deadline(argv, seconds: float):
    # main() in a thread, so that a hang fails the test instead of stalling the suite.
    import threading

    done = {}
    thread = threading.Thread(target=lambda: done.setdefault("code", main(argv)), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    return done["code"], time.monotonic() - started


@pytest.mark.usefixtures("quick_scheduler_timeout")
@pytest.mark.parametrize(("answer", "said"), [
    (None, "no answer within 1 s"),
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
     "the server there does not answer as a dask scheduler"),
])
def test_a_scheduler_that_never_answers_or_speaks_http_is_one_line(inputs, tmp_path, capsys,
                                                                   answer, said):
    server = _serve(answer)
    try:
        address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        code, seconds = _main_with_deadline(["detect", str(inputs / "cells0.tif"), "--out",
                                             str(tmp_path / "out"), "--scheduler", address],
                                            60)
    finally:
        server.close()
    err = capsys.readouterr().err
    assert code == 1 and seconds < 20
    assert err == f"napari-denodet: error: cannot reach the dask scheduler at {address} " \
                  f"({said})\n"
    assert not (tmp_path / "out").exists()  # nothing written before the check


def test_a_bad_scheduler_address_is_one_line_and_exits_at_once(inputs, tmp_path):
    # Run as a process: the dask client used to print a traceback when it was collected,
    # tens of seconds after the error line.
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "napari_denodet.cli", "detect",
                             str(inputs / "cells0.tif"), "--out", str(tmp_path),
                             "--scheduler", "foo"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr == "napari-denodet: error: cannot reach the dask scheduler at foo " \
                            "(missing port number in address 'foo')\n"
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("address", ["", "  "])
def test_an_empty_scheduler_address_is_a_usage_error(inputs, tmp_path, capsys, address):
    code = main(["detect", str(inputs / "cells0.tif"), "--out", str(tmp_path),
                 "--scheduler", address])
    err = capsys.readouterr().err
    assert code == 2 and "--scheduler" in err and "empty" in err
    assert err.count("\n") == 1 and not list(tmp_path.iterdir())


def test_a_list_of_inputs_that_includes_itself_is_one_line(tmp_path):
    own = tmp_path / "own.txt"
    own.write_text(f"{own}\n")
    with pytest.raises(InputError, match="includes itself"):
        batch.expand_inputs([own])
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text(f"{second}\n")
    second.write_text(f"{first}\n")
    with pytest.raises(InputError, match="includes itself"):
        batch.expand_inputs([first])


def test_the_local_cluster_starts_while_port_8787_is_taken():
    # dask's dashboard port: held by another program, it must not make the batch fail
    # (pytest turns dask's "port already in use" warning into an error).
    import socket

    with socket.socket() as holder:
        try:
            holder.bind(("127.0.0.1", 8787))
            holder.listen()
        except OSError:
            pass  # something else holds it already: the same situation
        with batch.dask_client(n_workers=1) as (client, _):
            assert client.submit(sum, [1, 2]).result() == 3


def test_a_single_mrc_image_under_auto_is_told_about_the_micrograph_model(tmp_path):
    import mrcfile

    from napari_denodet.core.simulate import simulate_micrograph

    path = tmp_path / "grid.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(simulate_micrograph(shape=(128, 128), snr=0.2, seed=1).noisy
                     .astype(np.float32))
    record = detect_file(path, tmp_path / "out", DetectSettings())  # the default, auto
    assert record["status"] == "ok"
    assert "a cryo-EM micrograph? detect with --model micrograph --diameter PX" in (
        record["note"])
    # Asked for a model, or given a TIFF, no such hint.
    tiff = tmp_path / "cells.tif"
    write_tiff(tiff, simulate_micrograph(shape=(128, 128), snr=0.2, seed=1).noisy
               .astype(np.float32))
    for settings, image in ((DetectSettings(model="fluorescence", overwrite=True), path),
                            (DetectSettings(), tiff)):
        note = detect_file(image, tmp_path / "out2", settings)["note"]
        assert "cryo-EM" not in note
