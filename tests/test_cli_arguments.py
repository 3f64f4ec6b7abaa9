"""Arguments that used to be taken as something else, or checked only after the work."""

from __future__ import annotations

import errno
import os
import tempfile

import numpy as np
import pytest
import tifffile

from napari_denodet.cli import main
from napari_denodet.core.errors import InputError
from napari_denodet.core.io import read_image, write_points
from napari_denodet.core.points import points_table


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(tmp_path, monkeypatch):
    # A small stack and clicks on it, in the current folder.
    monkeypatch.chdir(tmp_path)
    tifffile.imwrite("cells.tif", np.random.default_rng(0).integers(
        0, 100, (2, 32, 32), dtype=np.uint16), imagej=True, metadata={"axes": "TYX"})
    write_points("clicks.csv", points_table([10.0, 20.0], [12.0, 22.0], frame=[0, 0]))
    return tmp_path


# ---------------------------------------------------------------------- empty paths


@pytest.mark.parametrize("argv", [
    ["simulate", "--frames", "1", "--size", "16", "--out", ""],
    ["detect", "cells.tif", "--out", ""],
    ["detect", "", "--out", "results"],
    ["finetune", "cells.tif", "--points", "clicks.csv", "--out", ""],
    ["finetune", "cells.tif", "--points", "", "--out", "m.pt"],
    ["evaluate", "", "clicks.csv"],
    ["train", "--out", " "],
])
def test_an_empty_path_is_refused(files, capsys, argv):
    # Path("") is the current folder: simulate --out "" wrote into it, detect "" read it.
    before = sorted(os.listdir(files))
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert "an empty path" in err and err.count("\n") == 1
    assert sorted(os.listdir(files)) == before


# ----------------------------------------------------------------------------- axes


@pytest.mark.parametrize(("axes", "needle"), [
    ("QQ", "unknown letter(s) 'Q'"),
    ("TXY", "must end in YX"),
    ("XY", "must end in YX"),
    ("YXT", "must end in YX"),
    ("TTYX", "'T' given more than once"),
])
def test_axes_letters_and_order_are_checked(files, capsys, axes, needle):
    # Any letters were taken, and X before Y was ignored (the image read as Y, X).
    code, _, err = _run(capsys, "detect", "cells.tif", "--out", "results", "--axes", axes)
    assert code == 2
    assert needle in err and err.count("\n") == 1
    assert not (files / "results").exists()


@pytest.mark.parametrize("axes", ["TXY", "QYX", "YYX"])
def test_read_image_checks_the_axes_too(files, axes):
    with pytest.raises(InputError, match=f"axes '{axes}'") as info:
        read_image("cells.tif", axes=axes)
    assert info.value.path == "cells.tif"


def test_lower_case_axes_are_accepted(files):
    assert read_image("cells.tif", axes="tyx").shape == (2, 32, 32)


# ------------------------------------------------------------------------ threshold


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_evaluate_refuses_a_threshold_that_is_not_a_number(files, capsys, value):
    # NaN kept no prediction at all: precision 1, recall 0, and exit status 0.
    code, _, err = _run(capsys, "evaluate", "clicks.csv", "clicks.csv", f"--threshold={value}")
    assert code == 2
    assert "must be a finite number" in err and err.count("\n") == 1


# ------------------------------------------------------------------ finetune --out


@pytest.fixture
def no_training(monkeypatch):
    def trained(*args, **kwargs):
        raise AssertionError("fine-tuning started before --out was checked")

    monkeypatch.setattr("napari_denodet.core.models.Model.finetune", trained)


def test_finetune_checks_a_missing_out_folder_before_training(files, capsys, no_training):
    out = files / "missing" / "mine.pt"
    code, _, err = _run(capsys, "finetune", "cells.tif", "--points", "clicks.csv",
                        "--out", out)
    assert code == 1
    assert err == f"napari-denodet: error: {out}: folder {out.parent} does not exist\n"


def test_finetune_checks_a_read_only_out_folder_before_training(files, capsys, monkeypatch,
                                                                no_training):
    folder = files / "readonly"
    folder.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own name
        if dir is not None and os.path.samefile(dir, folder):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES),
                                  os.path.join(dir, ".mine.pt.x1.partial.pt"))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    out = folder / "mine.pt"
    code, _, err = _run(capsys, "finetune", "cells.tif", "--points", "clicks.csv",
                        "--out", out)
    assert code == 1
    assert err == (f"napari-denodet: error: {out}: cannot write "
                   f"({os.strerror(errno.EACCES)})\n")


# ----------------------------------------------------------- all-NaN single image


def test_all_nan_single_image_names_the_file(tmp_path, capsys):
    # Already so since the non-finite pixel work; kept here with the other one-liners.
    path = tmp_path / "blank.tif"
    tifffile.imwrite(path, np.full((32, 32), np.nan, np.float32))
    code, _, err = _run(capsys, "detect", path, "--out", tmp_path / "out")
    assert code == 1
    assert err == (f"napari-denodet: error: {path}: the image holds no finite pixel "
                   "(all NaN or inf)\n")
