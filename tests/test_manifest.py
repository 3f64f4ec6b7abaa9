"""The npe2 manifest validates from an editable install and from a built wheel."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _validate(python: str | Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "npe2", "validate", "napari-denodet"],
                          capture_output=True, text=True, env={**os.environ, **env})


def test_manifest_validates_in_this_install():
    result = _validate(sys.executable)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_top_level_manifest_is_the_one_shipped():
    shipped = REPO / "src" / "napari_denodet" / "napari.yaml"
    assert shipped.read_text() == (REPO / "napari.yaml").read_text()


@pytest.mark.slow
def test_manifest_validates_from_a_built_wheel(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(wheels), str(REPO)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("napari_denodet-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "napari_denodet/napari.yaml" in names
        assert zf.read("napari_denodet/napari.yaml") == (REPO / "napari.yaml").read_bytes()
        assert any(n.endswith("entry_points.txt") for n in names)
        # A fresh environment that has the wheel's files instead of the editable source;
        # napari and npe2 come from this environment's site-packages through a .pth file.
        env_dir = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)],
                       check=True)
        python = env_dir / "bin" / "python"
        purelib = Path(subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True).stdout.strip())
        zf.extractall(purelib)
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run(
        [str(python), "-c", "import napari_denodet; print(napari_denodet.__file__)"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(purelib), where
    result = _validate(python)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


@pytest.mark.parametrize(("command", "ndim"), [("vesicle_timelapse", 3), ("comet_timelapse", 3),
                                              ("micrograph", 2)])
def test_sample_data_comes_with_its_truth(command, ndim):
    from napari_denodet import _sample_data

    (image, image_kw, image_type), (points, points_kw, points_type) = getattr(
        _sample_data, command)()
    assert image_type == "image" and points_type == "points"
    assert image.ndim == ndim
    assert points.shape[1] == ndim and len(points) > 10
    # Truth positions lie inside the image, in napari's (t, y, x) / (y, x) order.
    assert np.all(points >= -0.5) and np.all(points < np.array(image.shape) - 0.5)
    assert "truth" in points_kw["name"]


def test_sample_data_opens_in_a_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-denodet", "vesicles")
    assert [type(layer).__name__ for layer in layers] == ["Image", "Points"]
    assert viewer.layers["vesicles truth"].data.shape[1] == 3
    assert "track_id" in viewer.layers["vesicles truth"].features
