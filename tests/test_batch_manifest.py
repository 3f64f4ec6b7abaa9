"""The output folder's manifest is merged, never rewritten from one run's memory:
concurrent and disjoint runs keep each other's rows, skipped files keep their counts."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import drain
from napari_denodet.core.batch import DetectSettings, detect_file_steps, run_batch
from napari_denodet.core.io import write_tiff
from napari_denodet.core.simulate import simulate_timelapse

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    for i in range(3):
        sim = simulate_timelapse("vesicle", snr=7, density="low", frames=2, shape=(64, 64),
                                 seed=4_800_000_000 + i)
        write_tiff(folder / f"cells{i}.tif", np.clip(sim.noisy, 0, 65535).astype(np.uint16))
    return folder


def _rows(out: Path) -> dict[str, dict]:
    return {Path(r["file"]).name: r
            for r in json.loads((out / "manifest.json").read_text())["files"]}


def test_disjoint_runs_keep_each_others_rows_and_a_rerun_keeps_the_counts(data, tmp_path):
    out = tmp_path / "out"
    first, _ = drain(run_batch([data / "cells0.tif", data / "cells1.tif"], out,
                               DetectSettings(), n_workers=1))
    second, _ = drain(run_batch([data / "cells2.tif"], out, DetectSettings(), n_workers=1))
    rows = _rows(out)
    assert {name: r["status"] for name, r in rows.items()} == {
        "cells0.tif": "ok", "cells1.tif": "ok", "cells2.tif": "ok"}
    found = {Path(r["file"]).name: r["n_points"] for r in first.records + second.records}
    assert {name: r["n_points"] for name, r in rows.items()} == found
    assert pd.read_csv(out / "manifest.csv").file.tolist() == \
        [str(data / f"cells{i}.tif") for i in range(3)]
    # A rerun finds everything done: the rows keep what the runs found.
    again, _ = drain(run_batch(sorted(data.glob("cells*.tif")), out, DetectSettings()))
    assert [r["status"] for r in again.records] == ["skipped"] * 3
    rows = _rows(out)
    assert {name: r["n_points"] for name, r in rows.items()} == found
    assert all(r["status"] == "skipped" and r["note"].startswith("already done")
               for r in rows.values())
    document = json.loads((out / "manifest.json").read_text())
    assert document["counts"] == {"ok": 0, "failed": 0, "skipped": 3}
    # Each row names the run whose settings made its results.
    assert {r["run"] for r in rows.values()} <= set(document["runs"])


def test_two_runs_over_the_same_file_at_once_both_find_it_done(data, tmp_path):
    out = tmp_path / "out"
    settings = DetectSettings()
    one = detect_file_steps(data / "cells0.tif", out, settings)
    two = detect_file_steps(data / "cells0.tif", out, settings)
    next(one)  # both are detecting, neither has written anything
    next(two)
    record_one, _ = drain(one)
    record_two, _ = drain(two)  # its outputs were written meanwhile by the first run
    assert record_one["status"] == "ok"
    assert record_two["status"] == "skipped" and record_two["error"] is None
    assert record_two["n_points"] == record_one["n_points"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("manifest")) == \
        ["cells0_denoised.tif", "cells0_points.csv"]
    # Whichever run writes the manifest last, it says the file is done, with its count.
    from napari_denodet.core.manifest import new_run, record_results

    for order in ((record_one, record_two), (record_two, record_one)):
        for record in order:
            record_results(out, [record], new_run(), {})
        (row,) = _rows(out).values()
        assert row["status"] in ("ok", "skipped") and row["n_points"] == record_one["n_points"]


def test_concurrent_merges_under_the_lock_lose_no_row(tmp_path):
    from napari_denodet.core.manifest import new_run, record_results

    def one_run(i: int) -> None:
        about = new_run()
        for j in range(5):
            record_results(tmp_path, [{"file": str(tmp_path / f"in{i}_{j}.tif"),
                                       "status": "failed", "outputs": [], "error": "x"}],
                           about, {})

    threads = [threading.Thread(target=one_run, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(_rows(tmp_path)) == 30
    assert not (tmp_path / ".manifest.lock").exists()


def test_a_lock_left_by_a_killed_run_is_broken_a_live_one_waited_for(tmp_path):
    from napari_denodet.core import manifest

    lock = tmp_path / manifest.LOCK_NAME
    lock.write_text("somewhere 1234 killed\n")
    old = time.time() - 10 * manifest.LOCK_STALE
    os.utime(lock, (old, old))
    started = time.monotonic()
    manifest.record_results(tmp_path, [], manifest.new_run(), {})
    assert time.monotonic() - started < manifest.LOCK_STALE
    assert not lock.exists()
    # A fresh lock is another run's: wait until it lets go.
    with manifest.manifest_lock(tmp_path):
        waiter = threading.Thread(target=manifest.record_results,
                                  args=(tmp_path, [], manifest.new_run(), {}))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive()
    waiter.join(30)
    assert not waiter.is_alive() and not lock.exists()


def test_an_unreadable_manifest_is_left_alone(data, tmp_path):
    from napari_denodet.core.errors import InputError

    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{ half written by hand")
    with pytest.raises(InputError, match="manifest.json: cannot read the manifest"):
        drain(run_batch([data / "cells0.tif"], out, DetectSettings()))
    assert (out / "manifest.json").read_text() == "{ half written by hand"


def test_a_manifest_of_an_earlier_version_vouches_for_its_outputs(data, tmp_path):
    # Earlier versions wrote no `written` record: the outputs of their ok rows are ours.
    out = tmp_path / "out"
    record, _ = drain(detect_file_steps(data / "cells0.tif", out, DetectSettings()))
    document = {"settings": {"model": "fluorescence", "binning": 1}, "files": [record]}
    (out / "manifest.json").write_text(json.dumps(document))
    result, _ = drain(run_batch([data / "cells0.tif"], out, DetectSettings()))
    assert result.records[0]["status"] == "skipped"
    assert _rows(out)["cells0.tif"]["n_points"] == record["n_points"]
