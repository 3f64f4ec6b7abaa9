from __future__ import annotations

import gc
import os
import warnings
from pathlib import Path

import imageio.v3 as iio
import mrcfile
import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_denodet.core.errors import InputError
from napari_denodet.core.io import atomic_write, read_image, read_points, write_points, write_tiff
from napari_denodet.core.points import empty_points_table, points_table

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def listing(folder: Path) -> list[str]:
    """Every name in ``folder``, hidden temporary files included."""
    return sorted(p.name for p in folder.iterdir())


def random_table(n: int, *, with_frame: bool, seed: int = 0) -> pd.DataFrame:
    """Points with awkward float64 values, an int feature and a string feature."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(-10, 5000, n) * rng.choice([1.0, 1e-9, 1e9], n)
    x = rng.standard_normal(n) * 1000
    awkward = [0.1 + 0.2, 1e-17, 5e-324, 1.7976931348623157e308, -0.0, 1 / 3, 2.0**53 + 2]
    y[: len(awkward)] = awkward
    x[-len(awkward):] = awkward[::-1]
    labels = np.array([f"p{i}" for i in range(n)], dtype=object)
    labels[:3] = ["with,comma", 'with "quotes"', "µm ünïcode"]
    return points_table(
        y,
        x,
        frame=rng.integers(0, 500, n) if with_frame else None,
        score=rng.uniform(0, 1, n),
        track_id=rng.integers(-(2**62), 2**62, n),
        label=labels,
    )


def assert_bitwise_equal(a: pd.Series, b: pd.Series) -> None:
    """Equal to the last bit (distinguishes -0.0 from 0.0)."""
    np.testing.assert_array_equal(
        a.to_numpy(np.float64).view(np.int64), b.to_numpy(np.float64).view(np.int64)
    )


# ------------------------------------------------------------------------- points: CSV


@pytest.mark.parametrize("with_frame", [False, True])
def test_csv_round_trip_is_exact(tmp_path, with_frame):
    table = random_table(50, with_frame=with_frame)
    path = tmp_path / "points.csv"

    assert write_points(path, table) == path
    back = read_points(path)

    pd.testing.assert_frame_equal(back, table, check_exact=True)
    for name in ("y", "x", "score"):
        assert_bitwise_equal(back[name], table[name])
    assert listing(tmp_path) == ["points.csv"]


@pytest.mark.parametrize("with_frame", [False, True])
@pytest.mark.parametrize("with_score", [False, True])
def test_csv_round_trip_of_empty_table(tmp_path, with_frame, with_score):
    table = empty_points_table(with_frame=with_frame, with_score=with_score)
    path = tmp_path / "empty.csv"
    write_points(path, table)
    pd.testing.assert_frame_equal(read_points(path), table)


def test_read_csv_uses_no_deprecated_pandas_argument(tmp_path):
    # read_points must not rely on arguments pandas deprecates (e.g. float_precision,
    # deprecated in pandas 3): every CSV read would warn, and fail once it is removed.
    path = tmp_path / "p.csv"
    path.write_text("y,x\n0.30000000000000004,1e-17\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = read_points(path)
    assert table["y"].tolist() == [0.1 + 0.2]
    assert table["x"].tolist() == [1e-17]


def test_csv_written_in_canonical_column_order(tmp_path):
    table = pd.DataFrame({"x": [1.5], "note": ["a"], "y": [2.5], "frame": [3]})
    path = tmp_path / "p.csv"
    write_points(path, table)
    assert path.read_text().splitlines() == ["frame,y,x,note", "3,2.5,1.5,a"]


def test_csv_suffix_is_case_insensitive(tmp_path):
    table = points_table([1.0], [2.0], score=[0.5])
    path = tmp_path / "P.CSV"
    write_points(path, table)
    pd.testing.assert_frame_equal(read_points(path), table)


def test_write_points_refuses_to_overwrite(tmp_path):
    path = tmp_path / "points.csv"
    original = b"keep me\n"
    path.write_bytes(original)

    with pytest.raises(InputError, match="already exists") as info:
        write_points(path, points_table([1.0], [2.0]))

    assert info.value.path == str(path)
    assert path.read_bytes() == original
    assert listing(tmp_path) == ["points.csv"]


@pytest.mark.parametrize("suffix", [".csv", ".star"])
def test_write_points_overwrite_replaces(tmp_path, suffix):
    path = tmp_path / f"points{suffix}"
    path.write_bytes(b"old content\n")
    table = points_table([1.0, 2.0], [3.0, 4.0], score=[0.25, 0.5])

    write_points(path, table, overwrite=True)

    pd.testing.assert_frame_equal(read_points(path), table)
    assert listing(tmp_path) == [path.name]


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("bad.csv", {"table": pd.DataFrame({"y": [1.0]})}),  # no x: invalid table
        ("bad.box", {"table": points_table([1.0], [2.0])}),  # no box size
        ("bad.star", {"table": points_table([1.0, 2.0], [1.0, 2.0], frame=[0, 1])}),
        ("bad.txt", {"table": points_table([1.0], [2.0])}),  # unsupported suffix
    ],
)
def test_failed_write_points_leaves_nothing(tmp_path, name, kwargs):
    with pytest.raises(InputError):
        write_points(tmp_path / name, **kwargs)
    assert listing(tmp_path) == []


def test_write_points_missing_folder(tmp_path):
    path = tmp_path / "no" / "such" / "folder" / "points.csv"
    with pytest.raises(InputError, match="does not exist") as info:
        write_points(path, points_table([1.0], [2.0]))
    assert info.value.path == str(path)
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("y,score\n1.0,0.5\n", "missing column\\(s\\) x"),
        ("y,x\n1.0,2.0\nabc,3.0\n", "column 'y' has a missing or non-numeric value in row 2"),
        ("y,x\n1.0,2.0\n,3.0\n", "column 'y' has a missing or non-numeric value in row 2"),
        ("frame,y,x\n0.5,1.0,2.0\n", "whole numbers"),
        ("", "cannot parse"),
    ],
)
def test_malformed_csv_names_the_file(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        read_points(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["missing.csv", "missing.star", "missing.box"])
def test_read_points_missing_file(tmp_path, name):
    with pytest.raises(InputError, match="no such file") as info:
        read_points(tmp_path / name)
    assert info.value.path == str(tmp_path / name)


def test_read_points_folder_is_not_a_file(tmp_path):
    folder = tmp_path / "points.csv"
    folder.mkdir()
    with pytest.raises(InputError, match="no such file"):
        read_points(folder)


def test_points_unsupported_suffix(tmp_path):
    path = tmp_path / "points.txt"
    path.write_text("y,x\n1,2\n")
    with pytest.raises(InputError, match="unsupported points file type '.txt'"):
        read_points(path)
    with pytest.raises(InputError, match="unsupported points file type '.txt'"):
        write_points(tmp_path / "other.txt", points_table([1.0], [2.0]))


# ------------------------------------------------------------------------- atomic_write


def test_atomic_write_failing_writer_keeps_destination(tmp_path):
    path = tmp_path / "result.csv"
    original = b"precious results\n"
    path.write_bytes(original)

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half a fi")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken, overwrite=True)

    assert path.read_bytes() == original
    assert listing(tmp_path) == ["result.csv"]


def test_atomic_write_failing_writer_creates_nothing(tmp_path):
    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise OSError("no space left")

    with pytest.raises(InputError, match="no space left") as info:
        atomic_write(tmp_path / "new.txt", broken)
    assert info.value.path == str(tmp_path / "new.txt")  # the destination, not the temporary
    assert listing(tmp_path) == []


def test_atomic_write_writes_through_a_temporary_in_the_same_folder(tmp_path):
    seen = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        assert tmp.parent == tmp_path
        assert tmp != tmp_path / "out.txt"
        assert not (tmp_path / "out.txt").exists()  # nothing visible until complete
        tmp.write_text("complete")

    assert atomic_write(tmp_path / "out.txt", write) == tmp_path / "out.txt"
    assert len(seen) == 1
    assert (tmp_path / "out.txt").read_text() == "complete"
    assert listing(tmp_path) == ["out.txt"]


def test_atomic_write_does_not_clobber_a_file_created_meanwhile(tmp_path):
    path = tmp_path / "out.txt"

    def write(tmp: Path) -> None:
        tmp.write_text("mine")
        path.write_text("someone else's")  # another process takes the name

    with pytest.raises(InputError, match="already exists"):
        atomic_write(path, write)
    assert path.read_text() == "someone else's"
    assert listing(tmp_path) == ["out.txt"]


def test_atomic_write_missing_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        atomic_write(tmp_path / "absent" / "x.txt", lambda tmp: tmp.write_text("x"))
    assert listing(tmp_path) == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_atomic_write_gives_ordinary_file_permissions(tmp_path, overwrite):
    # A written file must be as readable as any file the user creates (umask), not
    # owner-only like the temporary file it came from.
    reference = tmp_path / "reference.txt"
    reference.write_text("x")
    path = tmp_path / "out.txt"
    if overwrite:
        path.write_text("old")
    atomic_write(path, lambda tmp: tmp.write_text("new"), overwrite=overwrite)
    assert oct(path.stat().st_mode & 0o777) == oct(reference.stat().st_mode & 0o777)


# ------------------------------------------------------------------------ points: STAR


@pytest.mark.parametrize("with_score", [False, True])
def test_star_round_trip(tmp_path, with_score):
    rng = np.random.default_rng(1)
    n = 30
    table = points_table(
        rng.uniform(0, 4096, n),
        rng.uniform(0, 4096, n),
        score=rng.uniform(0, 1, n) if with_score else None,
    )
    path = tmp_path / "picks.star"
    write_points(path, table)
    back = read_points(path)

    assert list(back.columns) == (["y", "x", "score"] if with_score else ["y", "x"])
    np.testing.assert_allclose(back["y"], table["y"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(back["x"], table["x"], rtol=0, atol=1e-6)
    if with_score:
        np.testing.assert_allclose(back["score"], table["score"], rtol=0, atol=1e-6)
    assert listing(tmp_path) == ["picks.star"]


def test_star_x_is_column_and_y_is_row(tmp_path):
    path = tmp_path / "one.star"
    write_points(path, points_table([10.0], [300.0], score=[0.75]))
    lines = path.read_text().splitlines()
    labels = [line.split()[0] for line in lines if line.startswith("_")]
    assert labels == ["_rlnCoordinateX", "_rlnCoordinateY", "_rlnAutopickFigureOfMerit"]
    row = lines[-1].split()
    assert [float(v) for v in row] == [300.0, 10.0, 0.75]


def test_star_single_frame_table_is_accepted(tmp_path):
    table = points_table([1.0, 2.0], [3.0, 4.0], frame=[5, 5])
    path = tmp_path / "frame5.star"
    write_points(path, table)
    back = read_points(path)
    assert list(back.columns) == ["y", "x"]
    assert back["x"].tolist() == [3.0, 4.0]


def test_star_empty_table(tmp_path):
    path = tmp_path / "none.star"
    write_points(path, empty_points_table(with_frame=False))
    pd.testing.assert_frame_equal(read_points(path), empty_points_table(with_frame=False))


RELION31_STAR = """
# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnMicrographOriginalPixelSize #3
_rlnVoltage #4
opticsGroup1 1 0.885000 300.000000

# version 30001

data_particles

loop_
_rlnMicrographName #1
_rlnCoordinateX #2
_rlnCoordinateY #3
_rlnClassNumber #4
_rlnAutopickFigureOfMerit #5
_rlnAnglePsi #6
_rlnOpticsGroup #7
MotionCorr/job002/mic_001.mrc 1234.500000 678.250000 1 0.912000 -999.0 1
MotionCorr/job002/mic_001.mrc 100.000000 2000.000000 2 0.123000 45.0 1
MotionCorr/job002/mic_001.mrc 3.000000 4.000000 1 -0.500000 12.5 1
"""


def test_star_relion31_optics_then_particles(tmp_path):
    path = tmp_path / "particles.star"
    path.write_text(RELION31_STAR)
    table = read_points(path)
    assert list(table.columns) == ["y", "x", "score"]
    assert table["x"].tolist() == [1234.5, 100.0, 3.0]
    assert table["y"].tolist() == [678.25, 2000.0, 4.0]
    assert table["score"].tolist() == [0.912, 0.123, -0.5]


def test_star_coordinates_block_before_other_blocks(tmp_path):
    text = (
        "data_particles\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n5.0 6.0\n7.0 8.0\n"
        "\ndata_other\nloop_\n_rlnSomething #1\n42\n"
    )
    path = tmp_path / "first.star"
    path.write_text(text)
    table = read_points(path)
    assert table["x"].tolist() == [5.0, 7.0]
    assert table["y"].tolist() == [6.0, 8.0]


@pytest.mark.parametrize(
    "text",
    [
        "data_\nloop_\n_rlnMicrographName #1\n_rlnDefocusU #2\nmic.mrc 10000\n",
        "data_\nloop_\n_rlnCoordinateX #1\n_rlnAnglePsi #2\n1.0 2.0\n",
        "data_optics\nloop_\n_rlnOpticsGroup #1\n1\n",
        "",
    ],
)
def test_star_without_coordinates(tmp_path, text):
    path = tmp_path / "nocoords.star"
    path.write_text(text)
    with pytest.raises(InputError, match="_rlnCoordinateX/_rlnCoordinateY") as info:
        read_points(path)
    assert info.value.path == str(path)


def test_star_with_text_coordinates(tmp_path):
    path = tmp_path / "text.star"
    path.write_text("data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1.0 abc\n")
    with pytest.raises(InputError) as info:
        read_points(path)
    assert info.value.path == str(path)


# ------------------------------------------------------------------------- points: BOX


def test_box_writes_corner_and_reads_centre(tmp_path):
    path = tmp_path / "mic.box"
    write_points(path, points_table([50.0], [30.0], score=[0.9]), box_size=20)
    assert path.read_text() == "20\t40\t20\t20\n"
    back = read_points(path)
    assert list(back.columns) == ["y", "x"]
    assert back["y"].tolist() == [50.0]
    assert back["x"].tolist() == [30.0]


def test_box_round_trip_of_integer_centres(tmp_path):
    rng = np.random.default_rng(2)
    table = points_table(rng.integers(0, 4096, 25), rng.integers(0, 4096, 25))
    path = tmp_path / "many.box"
    write_points(path, table, box_size=108)
    pd.testing.assert_frame_equal(read_points(path), table)


@pytest.mark.parametrize("box_size", [None, 0, -20])
def test_box_requires_box_size(tmp_path, box_size):
    path = tmp_path / "mic.box"
    with pytest.raises(InputError, match="box size"):
        write_points(path, points_table([50.0], [30.0]), box_size=box_size)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("suffix", [".star", ".box"])
def test_star_and_box_refuse_several_frames(tmp_path, suffix):
    table = points_table([1.0, 2.0], [3.0, 4.0], frame=[0, 1])
    with pytest.raises(InputError, match="several frames"):
        write_points(tmp_path / f"p{suffix}", table, box_size=10)
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [("10 20 30 30\n1 2 3\n", "line 2: a box line needs"), ("a b c d\n", "line 1: not numbers")],
)
def test_malformed_box(tmp_path, text, message):
    path = tmp_path / "bad.box"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        read_points(path)
    assert str(info.value).startswith(f"{path}: ")


def test_empty_box_file_is_an_empty_table(tmp_path):
    path = tmp_path / "empty.box"
    path.write_text("\n")
    table = read_points(path)
    assert list(table.columns) == ["y", "x"]
    assert len(table) == 0


# ------------------------------------------------------------------------ images: TIFF


def test_tiff_imagej_tyx_is_memory_mapped(tmp_path):
    data = np.random.default_rng(3).integers(0, 65535, (4, 16, 20), dtype=np.uint16)
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TYX"})

    image = read_image(path)

    assert isinstance(image, np.memmap)
    assert image.shape == (4, 16, 20)
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image, data)
    assert not image.flags.writeable


def write_big_endian(path: Path, data: np.ndarray) -> None:
    big = data.astype(data.dtype.newbyteorder(">"))
    if path.suffix == ".tif":
        tifffile.imwrite(path, big, imagej=True, metadata={"axes": "TYX"}, byteorder=">")
    else:
        with mrcfile.new(path) as mrc:
            mrc.set_data(big)
            mrc.set_image_stack()


@pytest.mark.parametrize(
    ("name", "dtype"), [("fiji.tif", np.uint16), ("fiji.tif", np.float32),
                        ("old.mrcs", np.float32), ("old.mrcs", np.int16)]
)
def test_big_endian_file_comes_back_in_native_byte_order(tmp_path, name, dtype):
    # ImageJ/Fiji save big-endian TIFFs (the project's own time-lapse is one). A '>u2'
    # array is refused by torch.from_numpy ("byte order different from the native byte
    # order"), so the reader must hand back the same values in native byte order.
    data = (np.arange(2 * 6 * 7).reshape(2, 6, 7) * 100).astype(dtype)
    path = tmp_path / name
    write_big_endian(path, data)
    image = read_image(path)
    assert image.dtype == np.dtype(dtype)
    assert image.dtype.isnative
    np.testing.assert_array_equal(image, data)


def test_tiff_plain_2d_float32(tmp_path):
    data = np.random.default_rng(4).standard_normal((12, 9)).astype(np.float32)
    path = tmp_path / "plain.tiff"
    tifffile.imwrite(path, data)
    image = read_image(path)
    assert image.shape == (12, 9)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, data)


def test_tiff_suffix_is_case_insensitive(tmp_path):
    data = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = tmp_path / "UPPER.TIF"
    tifffile.imwrite(path, data)
    np.testing.assert_array_equal(read_image(path), data)


def test_tiff_zstack_refused_unless_axes_given(tmp_path):
    data = np.arange(3 * 8 * 10, dtype=np.uint16).reshape(3, 8, 10)
    path = tmp_path / "zstack.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZYX"})

    with pytest.raises(InputError, match="3D volume") as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert "TYX" in str(info.value)  # says how to read it as a time-lapse

    for axes in ("TYX", "tyx"):
        image = read_image(path, axes=axes)
        assert image.shape == (3, 8, 10)
        np.testing.assert_array_equal(image, data)


@pytest.mark.parametrize("axes", ["YX", "ZTYX"])
def test_axes_override_of_wrong_length(tmp_path, axes):
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, np.zeros((2, 5, 6), np.uint16), imagej=True, metadata={"axes": "TYX"})
    with pytest.raises(InputError, match="do not fit") as info:
        read_image(path, axes=axes)
    assert info.value.path == str(path)


def test_tiff_rgb_colour_refused(tmp_path):
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
    path = tmp_path / "colour.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    with pytest.raises(InputError, match="colour") as info:
        read_image(path)
    assert info.value.path == str(path)


def test_tiff_grey_saved_as_rgb_is_2d(tmp_path):
    grey = np.random.default_rng(6).integers(0, 255, (10, 12), dtype=np.uint8)
    path = tmp_path / "grey_rgb.tif"
    tifffile.imwrite(path, np.stack([grey] * 3, axis=-1), photometric="rgb")
    image = read_image(path)
    assert image.shape == (10, 12)
    np.testing.assert_array_equal(image, grey)


def test_tiff_4d_refused(tmp_path):
    path = tmp_path / "tcyx.tif"
    data = np.zeros((2, 3, 8, 9), np.uint16)
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TCYX"})
    with pytest.raises(InputError, match="4D data") as info:
        read_image(path)
    assert info.value.path == str(path)


def test_tiff_single_frame_stack_is_2d(tmp_path):
    path = tmp_path / "one.tif"
    data = np.arange(20, dtype=np.uint16).reshape(1, 4, 5)
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TYX"})
    image = read_image(path)
    assert image.shape == (4, 5)
    np.testing.assert_array_equal(image, data[0])


def test_tiff_compressed_is_read(tmp_path):
    data = np.random.default_rng(7).integers(0, 1000, (3, 16, 16), dtype=np.uint16)
    path = tmp_path / "zlib.tif"
    tifffile.imwrite(path, data, compression="zlib", photometric="minisblack")
    image = read_image(path)
    assert not isinstance(image, np.memmap)
    assert image.shape == (3, 16, 16)
    np.testing.assert_array_equal(image, data)


# imageio leaves the file open when no plugin can read it (a ResourceWarning from
# imageio itself, not from napari_denodet).
IMAGEIO_LEAK = pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)


@pytest.mark.parametrize(
    "suffix",
    [".tif", ".mrc", pytest.param(".png", marks=IMAGEIO_LEAK),
     pytest.param(".jpg", marks=IMAGEIO_LEAK)],
)
def test_random_bytes_refused(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(np.random.default_rng(8).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError) as info:
        read_image(path)
    error = info.value
    del info
    gc.collect()  # finalise imageio's leaked file handle here, under this test's filter
    assert error.path == str(path)
    assert "\n" not in str(error)


# ------------------------------------------------------------------------- images: MRC


def test_mrc_2d(tmp_path):
    data = np.random.default_rng(9).standard_normal((14, 11)).astype(np.float32)
    path = tmp_path / "mic.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
    image = read_image(path)
    assert isinstance(image, np.memmap)
    assert image.shape == (14, 11)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, data)


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint16, np.int8])
def test_mrcs_stack_is_t_y_x(tmp_path, dtype):
    data = np.arange(3 * 6 * 7).reshape(3, 6, 7).astype(dtype)
    path = tmp_path / "stack.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.set_image_stack()
    image = read_image(path)
    assert isinstance(image, np.memmap)
    assert image.shape == (3, 6, 7)
    assert image.dtype == dtype
    np.testing.assert_array_equal(image, data)


def test_mrc_with_extended_header(tmp_path):
    data = np.arange(2 * 5 * 4, dtype=np.float32).reshape(2, 5, 4)
    path = tmp_path / "ext.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_extended_header(np.zeros(100, dtype=np.uint8) + 7)
        mrc.set_data(data)
        mrc.set_image_stack()
    np.testing.assert_array_equal(read_image(path), data)


def test_mrc_volume_refused_unless_axes_given(tmp_path):
    data = np.zeros((4, 6, 7), np.float32)
    path = tmp_path / "vol.map"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.set_volume()
    with pytest.raises(InputError, match="3D volume") as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert read_image(path, axes="TYX").shape == (4, 6, 7)


def test_mrc_truncated(tmp_path):
    path = tmp_path / "cut.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((3, 20, 20), np.float32))
        mrc.set_image_stack()
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size - 500)
    with pytest.raises(InputError, match="truncated") as info:
        read_image(path)
    assert info.value.path == str(path)


# ---------------------------------------------------------------------- images: PNG/JPEG


def test_png_grey_uint8(tmp_path):
    data = np.random.default_rng(10).integers(0, 255, (15, 17), dtype=np.uint8)
    path = tmp_path / "grey.png"
    iio.imwrite(path, data)
    image = read_image(path)
    assert image.shape == (15, 17)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, data)


def test_png_grey_uint16(tmp_path):
    data = (np.arange(12 * 10).reshape(12, 10) * 500).astype(np.uint16)
    path = tmp_path / "grey16.png"
    iio.imwrite(path, data)
    image = read_image(path)
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(image, data)


def test_png_grey_rgba_is_2d(tmp_path):
    grey = np.arange(30, dtype=np.uint8).reshape(5, 6)
    rgba = np.empty((5, 6, 4), np.uint8)
    rgba[..., :3] = grey[..., None]
    rgba[..., 3] = 255
    path = tmp_path / "grey_rgba.png"
    iio.imwrite(path, rgba)
    np.testing.assert_array_equal(read_image(path), grey)


def test_png_colour_refused(tmp_path):
    rgb = np.random.default_rng(11).integers(0, 255, (15, 17, 3), dtype=np.uint8)
    path = tmp_path / "colour.png"
    iio.imwrite(path, rgb)
    with pytest.raises(InputError, match="colour"):
        read_image(path)


def smooth_grey(shape=(32, 48)) -> np.ndarray:
    """A smooth uint8 ramp, which JPEG keeps within a few grey levels."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (40 + 2 * yy + 3 * xx).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg"])
def test_jpeg_grey(tmp_path, suffix):
    data = smooth_grey()
    path = tmp_path / f"grey{suffix}"
    iio.imwrite(path, data)
    image = read_image(path)
    assert image.shape == data.shape
    assert image.dtype == np.uint8
    assert np.abs(image.astype(int) - data).max() <= 8


def test_jpeg_of_grey_saved_as_rgb_is_2d(tmp_path):
    data = smooth_grey()
    path = tmp_path / "grey_rgb.jpg"
    iio.imwrite(path, np.stack([data] * 3, axis=-1))
    assert iio.imread(path).shape == (32, 48, 3)  # really stored as RGB
    image = read_image(path)
    assert image.shape == data.shape
    assert image.dtype == np.uint8
    assert np.abs(image.astype(int) - data).max() <= 8


# ---------------------------------------------------------------------- images: general


def test_read_image_missing_file(tmp_path):
    path = tmp_path / "absent.tif"
    with pytest.raises(InputError, match="no such file") as info:
        read_image(path)
    assert str(info.value) == f"{path}: no such file"


def test_read_image_folder(tmp_path):
    folder = tmp_path / "images.tif"
    folder.mkdir()
    with pytest.raises(InputError, match="folder") as info:
        read_image(folder)
    assert info.value.path == str(folder)


def test_read_image_unknown_suffix(tmp_path):
    path = tmp_path / "image.xyz"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="unsupported file type '.xyz'"):
        read_image(path)


def test_read_image_accepts_str_path(tmp_path):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, np.ones((3, 4), np.uint16))
    assert read_image(os.fspath(path)).shape == (3, 4)


# ------------------------------------------------------------------------- write_tiff


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, np.int32])
def test_write_tiff_three_frames_are_not_rgb(tmp_path, dtype):
    data = np.arange(3 * 7 * 5).reshape(3, 7, 5).astype(dtype)
    path = tmp_path / "three.tif"
    assert write_tiff(path, data) == path
    image = read_image(path)
    assert image.shape == (3, 7, 5)
    assert image.dtype == dtype
    np.testing.assert_array_equal(image, data)
    assert listing(tmp_path) == ["three.tif"]


def test_write_tiff_2d(tmp_path):
    data = np.random.default_rng(12).standard_normal((9, 8)).astype(np.float32)
    path = tmp_path / "one.tif"
    write_tiff(path, data)
    np.testing.assert_array_equal(read_image(path), data)


def test_write_tiff_imagej_time_axis(tmp_path):
    path = tmp_path / "fiji.tif"
    write_tiff(path, np.zeros((4, 5, 6), np.uint16))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.series[0].axes == "TYX"


def test_write_tiff_refuses_overwrite(tmp_path):
    path = tmp_path / "out.tif"
    first = np.zeros((3, 4, 5), np.uint16)
    write_tiff(path, first)
    before = path.read_bytes()

    with pytest.raises(InputError, match="already exists"):
        write_tiff(path, np.ones((3, 4, 5), np.uint16))
    assert path.read_bytes() == before

    write_tiff(path, np.ones((3, 4, 5), np.uint16), overwrite=True)
    np.testing.assert_array_equal(read_image(path), np.ones((3, 4, 5)))
    assert listing(tmp_path) == ["out.tif"]


# -------------------------------------------------------------------------- real data


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"real data file {path} is absent")
    return path


def test_real_timelapse_tiff():
    image = read_image(shared_file("timelapse_telomeres_2d.tif"))
    assert image.shape == (200, 133, 162)
    assert image.dtype == np.uint16  # native: the file itself is big-endian (ImageJ)
    assert image[0].std() > 0  # real pixel data, not an empty map


def test_real_micrograph_jpeg():
    image = read_image(shared_file("empiar10017_micrograph.jpg"))
    assert image.shape == (4096, 4096)
    assert image.dtype == np.uint8
    assert image.std() > 0


# ---------------------------------------------------------------- images: Zarr, OME-Zarr


def _ome_zarr(path: Path, data: np.ndarray, axes: str) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", shape=data.shape, chunks=(1,) * (data.ndim - 2) + data.shape[-2:],
                       dtype=data.dtype)[...] = data
    group.create_array("1", shape=(1,), dtype="uint8")  # a lower level: never read
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": a} for a in axes],
                                   "datasets": [{"path": "0"}, {"path": "1"}]}]


def test_ome_zarr_is_read_lazily_as_t_y_x(tmp_path):
    import dask.array as da

    data = np.random.default_rng(0).integers(0, 4000, (3, 1, 1, 24, 20), dtype=np.uint16)
    _ome_zarr(tmp_path / "movie.ome.zarr", data, "tczyx")
    image = read_image(tmp_path / "movie.ome.zarr")
    assert isinstance(image, da.Array)
    assert image.shape == (3, 24, 20) and image.dtype == np.uint16
    np.testing.assert_array_equal(image[1:3].compute(), data[1:3, 0, 0])


def test_ome_zarr_z_stack_is_refused_like_a_tiff_one(tmp_path):
    _ome_zarr(tmp_path / "volume.zarr", np.zeros((5, 8, 8), np.float32), "zyx")
    with pytest.raises(InputError, match="3D volume"):
        read_image(tmp_path / "volume.zarr")


def test_plain_zarr_array_leading_axis_is_frames(tmp_path):
    import zarr

    data = np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5)
    zarr.open_array(str(tmp_path / "raw.zarr"), mode="w", shape=data.shape,
                    dtype=data.dtype)[...] = data
    np.testing.assert_array_equal(read_image(tmp_path / "raw.zarr"), data)


def test_zarr_group_without_multiscales_names_its_arrays(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "bag.zarr"), mode="w")
    group.create_array("a", shape=(4, 4), dtype="uint8")
    group.create_array("b", shape=(4, 4), dtype="uint8")
    with pytest.raises(InputError, match="without OME-Zarr multiscales.*a, b"):
        read_image(tmp_path / "bag.zarr")


def test_a_folder_that_is_not_zarr_is_still_refused(tmp_path):
    (tmp_path / "plain.zarr").mkdir()
    with pytest.raises(InputError, match="not a readable Zarr"):
        read_image(tmp_path / "plain.zarr")


def test_large_big_endian_file_is_converted_lazily(tmp_path, monkeypatch):
    import dask.array as da

    from napari_denodet.core import io

    data = (np.arange(3 * 6 * 7).reshape(3, 6, 7) * 100).astype(np.uint16)
    write_big_endian(tmp_path / "fiji.tif", data)
    monkeypatch.setattr(io, "EAGER_BYTE_SWAP_BYTES", 0)
    image = read_image(tmp_path / "fiji.tif")
    assert isinstance(image, da.Array) and image.dtype.isnative
    np.testing.assert_array_equal(image, data)


# --------------------------------------------------------------------- streaming frames


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
@pytest.mark.parametrize("shape", [(5, 16, 20), (16, 20)])
def test_frame_writer_streams_frames_and_reads_back(tmp_path, suffix, shape):
    from napari_denodet.core.io import open_denoised_output

    data = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    path = tmp_path / f"out{suffix}"
    with open_denoised_output(path, shape) as out:
        if len(shape) == 3:
            out[3:5] = data[3:5]  # any order, any batch size
            out[0] = data[0]
            out[1:3] = data[1:3]
        else:
            out[...] = data
        assert not path.exists()  # nothing visible under the name until complete
    back = read_image(path)
    if suffix == ".tif":
        assert isinstance(back, np.memmap)
    np.testing.assert_array_equal(np.asarray(back), data)
    assert listing(tmp_path) == [path.name]


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_frame_writer_leaves_nothing_when_the_run_fails(tmp_path, suffix):
    from napari_denodet.core.io import open_denoised_output

    with pytest.raises(RuntimeError, match="cancelled"), \
            open_denoised_output(tmp_path / f"out{suffix}", (3, 8, 8)) as out:
        out[0] = np.ones((8, 8))
        raise RuntimeError("cancelled")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_frame_writer_overwrites_only_when_asked(tmp_path, suffix):
    from napari_denodet.core.io import open_denoised_output

    path = tmp_path / f"out{suffix}"
    with open_denoised_output(path, (2, 4, 4)) as out:
        out[0:2] = np.zeros((2, 4, 4))
    with pytest.raises(InputError, match="already exists"):
        open_denoised_output(path, (2, 4, 4))
    with open_denoised_output(path, (2, 4, 4), overwrite=True) as out:
        out[0:2] = np.full((2, 4, 4), 7.0)
    assert np.asarray(read_image(path)).min() == 7.0
    assert listing(tmp_path) == [path.name]


def test_frame_writer_refuses_bad_keys_shapes_and_suffixes(tmp_path):
    from napari_denodet.core.io import open_denoised_output

    with open_denoised_output(tmp_path / "out.tif", (3, 4, 4)) as out:
        with pytest.raises(IndexError):
            out[::2] = np.zeros((2, 4, 4))
        with pytest.raises(ValueError, match="shape"):
            out[0:2] = np.zeros((3, 4, 4))
        out[0:3] = np.zeros((3, 4, 4))
    with pytest.raises(InputError, match="unsupported output type '.png'"):
        open_denoised_output(tmp_path / "out.png", (4, 4))


def test_load_block_gives_back_the_pages_of_a_memory_map(tmp_path):
    # Streaming a 32 MB memory-mapped stack batch by batch must not leave it resident.
    import psutil

    from napari_denodet.core.io import load_block

    frames = np.random.default_rng(2).integers(0, 65535, (64, 512, 512), dtype=np.uint16)
    write_tiff(tmp_path / "big.tif", frames)
    del frames
    gc.collect()
    stack = read_image(tmp_path / "big.tif")
    process = psutil.Process()
    before = process.memory_info().rss
    total = 0
    for first in range(0, 64, 4):
        total += int(load_block(stack[first : first + 4]).sum(dtype=np.int64))
    grown = process.memory_info().rss - before
    assert total == int(np.asarray(stack).sum(dtype=np.int64))  # the map still reads
    assert grown < 16 * 2**20, f"resident memory grew by {grown / 2**20:.0f} MB"
