"""A full disk or a read-only folder: one line naming the destination, nothing partial.

A full disk is simulated by a writer that raises ``OSError(ENOSPC)`` naming the file it
was writing (the hidden temporary file, as the system call would), and a read-only
folder by a ``PermissionError`` from creating that temporary file (tests run as root
here, where permission bits do not stop writes).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_denodet.cli import main
from napari_denodet.core.errors import InputError
from napari_denodet.core.io import atomic_write, open_denoised_output, write_points
from napari_denodet.core.points import points_table

NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"


def _full_disk(tmp: Path) -> None:
    tmp.write_bytes(b"half a fi")
    raise OSError(errno.ENOSPC, NO_SPACE, str(tmp))


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())  # hidden files too


def test_full_disk_names_the_destination_not_the_temporary(tmp_path):
    path = tmp_path / "points.csv"
    with pytest.raises(InputError) as info:
        atomic_write(path, _full_disk)
    assert str(info.value) == f"{path}: cannot write ({NO_SPACE})"
    assert _listing(tmp_path) == []


def test_read_only_folder_names_the_destination_not_the_temporary(tmp_path, monkeypatch):
    def refused(dir=None, prefix="", suffix=""):  # noqa: A002 - tempfile's own names
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES),
                              os.path.join(dir, f"{prefix}x1y2z3{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    path = tmp_path / "points.csv"
    with pytest.raises(InputError) as info:
        write_points(path, points_table([1.0], [2.0]))
    assert str(info.value) == f"{path}: cannot write ({os.strerror(errno.EACCES)})"
    assert _listing(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="permission bits do not stop root")
def test_really_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(InputError) as info:
            write_points(folder / "p.csv", points_table([1.0], [2.0]))
        assert info.value.path == str(folder / "p.csv")
    finally:
        folder.chmod(0o755)


def test_full_disk_while_streaming_frames_leaves_nothing(tmp_path):
    path = tmp_path / "denoised.tif"
    with pytest.raises(InputError) as info, open_denoised_output(path, (2, 8, 8)) as writer:
        real = writer._file

        class FullDisk:
            def seek(self, offset):
                return real.seek(offset)

            def write(self, data):
                raise OSError(errno.ENOSPC, NO_SPACE, str(writer._tmp))

            def close(self):
                real.close()

        writer._file = FullDisk()
        writer[0] = np.zeros((8, 8), np.float32)
    assert str(info.value) == f"{path}: cannot write ({NO_SPACE})"
    assert _listing(tmp_path) == []


def test_simulate_on_a_full_disk_writes_none_of_its_files(tmp_path, monkeypatch, capsys):
    # The disk fills while clean.tif is written: noisy.tif was left behind, and the
    # error named the hidden temporary file.
    real, calls = tifffile.imwrite, []

    def filling(file, *args, **kwargs):
        calls.append(file)
        if len(calls) == 2:
            _full_disk(Path(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", filling)
    out = tmp_path / "sim"
    code = main(["simulate", "--frames", "2", "--size", "32", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"napari-denodet: error: {out / 'clean.tif'}: cannot write ({NO_SPACE})\n"
    assert _listing(out) == []


def test_simulate_replaces_its_files_only_when_all_are_written(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "--frames", "2", "--size", "32", "--out", str(out)]) == 0
    before = {name: (out / name).read_bytes() for name in _listing(out)}

    def failing_points(table, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, NO_SPACE, str(path))

    monkeypatch.setattr("pandas.DataFrame.to_csv", failing_points)
    assert main(["simulate", "--frames", "2", "--size", "32", "--seed", "5", "--overwrite",
                 "--out", str(out)]) == 1
    assert f"{out / 'truth.csv'}: cannot write" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in _listing(out)} == before
