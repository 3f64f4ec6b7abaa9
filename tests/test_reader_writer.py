"""The npe2 reader and writer, directly and through a real viewer."""

import numpy as np
import pandas as pd
import pytest

from napari_denodet._reader import get_reader, read_layers
from napari_denodet._writer import write_points_layer
from napari_denodet.core.io import read_points, write_points, write_tiff
from napari_denodet.core.points import points_table


@pytest.fixture
def files(tmp_path):
    stack = (np.arange(3 * 20 * 30) % 251).astype(np.uint16).reshape(3, 20, 30)
    write_tiff(tmp_path / "movie.tif", stack)
    table = points_table([1.25, 7.5], [3.0, 9.125], frame=[0, 2], score=[0.9, 0.4],
                         intensity=[10.0, 20.0])
    write_points(tmp_path / "movie_points.csv", table)
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(tmp_path / "other.csv", index=False)
    (tmp_path / "broken.tif").write_bytes(b"not a tiff at all")
    return tmp_path, stack, table


def test_reader_claims_images_and_our_csv_and_declines_the_rest(files):
    folder, _, _ = files
    assert get_reader(str(folder / "movie.tif")) is read_layers
    assert get_reader(str(folder / "movie_points.csv")) is read_layers
    assert get_reader(str(folder / "other.csv")) is None  # someone else's table
    assert get_reader(str(folder / "notes.txt")) is None
    assert get_reader([str(folder / "movie.tif"), str(folder / "other.csv")]) is None


def test_reader_gives_a_lazy_image_and_points_with_features(files):
    folder, stack, table = files
    (image, image_kw, kind), = read_layers(str(folder / "movie.tif"))
    assert kind == "image" and isinstance(image, np.memmap)
    np.testing.assert_array_equal(image, stack)
    assert image_kw["name"] == "movie"
    (coords, kw, kind), = read_layers(str(folder / "movie_points.csv"))
    assert kind == "points"
    np.testing.assert_array_equal(coords, [[0, 1.25, 3.0], [2, 7.5, 9.125]])
    assert list(kw["features"].columns) == ["score", "intensity"]


def test_a_claimed_file_that_cannot_be_read_becomes_a_notification(files, monkeypatch):
    folder, _, _ = files
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    assert read_layers(str(folder / "broken.tif")) == [(None,)]
    assert len(shown) == 1 and "broken.tif" in shown[0] and "TIFF" in shown[0]


@pytest.mark.parametrize("suffix", [".csv", ".star", ".box"])
def test_writer_round_trips(files, tmp_path, suffix):
    _, _, table = files
    # STAR and BOX hold one micrograph: a single 2D point; CSV keeps the whole stack.
    source = table if suffix == ".csv" else table.drop(columns="frame").iloc[:1]
    axes = [c for c in ("frame", "y", "x") if c in source.columns]
    data = source[axes].to_numpy(dtype=float)
    features = source.drop(columns=axes)
    out = str(tmp_path / f"saved{suffix}")
    assert write_points_layer(out, data,
                              {"features": features, "metadata": {"box_size": 16},
                               "size": np.full(len(features), 6.0)}) == [out]
    back = read_points(out)
    if suffix == ".csv":
        pd.testing.assert_frame_equal(back, table)
    else:
        np.testing.assert_allclose(back[["y", "x"]], source[["y", "x"]], atol=0.5)


def test_open_and_save_through_the_viewer(make_napari_viewer, files, tmp_path):
    folder, stack, table = files
    viewer = make_napari_viewer()
    viewer.open(str(folder / "movie.tif"), plugin="napari-denodet")
    viewer.open(str(folder / "movie_points.csv"), plugin="napari-denodet")
    assert viewer.layers["movie"].data.shape == stack.shape
    points = viewer.layers["movie_points"]
    assert points.data.shape == (2, 3)
    out = tmp_path / "again.csv"
    viewer.layers.selection = {points}
    viewer.layers.save(str(out), selected=True, plugin="napari-denodet")
    pd.testing.assert_frame_equal(read_points(out), table)


def test_reader_opens_mrc_and_png(tmp_path):
    import imageio.v3 as iio
    import mrcfile

    stack = np.random.default_rng(0).normal(size=(2, 12, 14)).astype(np.float32)
    with mrcfile.new(tmp_path / "frames.mrcs") as mrc:
        mrc.set_data(stack)
        mrc.set_image_stack()
    picture = (np.arange(12 * 14) % 256).astype(np.uint8).reshape(12, 14)
    iio.imwrite(tmp_path / "micrograph.png", picture)
    for name, expected in (("frames.mrcs", stack), ("micrograph.png", picture)):
        path = str(tmp_path / name)
        assert get_reader(path) is read_layers
        (data, kw, kind), = read_layers(path)
        assert kind == "image"
        np.testing.assert_array_equal(data, expected)


def test_reader_opens_zarr_folders_lazily_and_declines_other_folders(tmp_path):
    import dask.array as da

    from napari_denodet.core.io import open_denoised_output

    stack = np.random.default_rng(1).normal(size=(3, 12, 14)).astype(np.float32)
    with open_denoised_output(tmp_path / "movie.zarr", stack.shape) as out:
        out[0:3] = stack
    (tmp_path / "plain").mkdir()
    assert get_reader(str(tmp_path / "plain")) is None
    assert get_reader(str(tmp_path / "movie.zarr")) is read_layers
    (data, kw, kind), = read_layers(str(tmp_path / "movie.zarr"))
    assert kind == "image" and isinstance(data, da.Array) and kw["name"] == "movie"
    np.testing.assert_array_equal(data, stack)


@pytest.mark.parametrize(("name", "offered"), [
    ("movie_points.csv", True),          # detect's output
    ("cells particles.csv", True),       # Save Selected Layers' proposed name
    ("truth.csv", True),                 # simulate's output
    ("other.csv", False),                # someone else's table: napari's own reader only
    ("movie.tif", True),
])
def test_napari_offers_this_reader_only_for_our_csv_names(tmp_path, name, offered):
    from napari.plugins import _npe2

    readers = _npe2.get_readers(str(tmp_path / name))
    assert ("napari-denodet" in readers) is offered
    if name == "other.csv":
        # one reader left: napari opens the file without the "Choose reader" dialog
        assert list(readers) == ["napari"]


def test_a_points_csv_saved_with_a_byte_order_mark_is_claimed(tmp_path):
    path = tmp_path / "spots_points.csv"
    path.write_bytes("\ufeffy,x,score\n1.5,2.5,0.9\n".encode())
    assert get_reader(str(path)) is read_layers
    (coords, kw, kind), = read_layers(str(path))
    assert kind == "points"
    np.testing.assert_array_equal(coords, [[1.5, 2.5]])


def test_our_csv_opens_without_a_question_when_napari_denodet_is_preferred(
        make_napari_viewer, files):
    # napari's own "*.csv" reader always matches too, so without a preference napari
    # asks; with the preference the user guide describes, it opens straight away.
    # plugin=None: as File > Open and drag-and-drop (viewer.open defaults to "napari").
    from napari.errors import MultipleReaderError
    from napari.settings import get_settings

    folder, _, _ = files
    viewer = make_napari_viewer()
    with pytest.raises(MultipleReaderError):
        viewer.open(str(folder / "movie_points.csv"), plugin=None)
    readers = get_settings().plugins.extension2reader
    saved = dict(readers)
    try:
        get_settings().plugins.extension2reader = {**saved,
                                                   "*_points.csv": "napari-denodet"}
        viewer.open(str(folder / "movie_points.csv"), plugin=None)
    finally:
        get_settings().plugins.extension2reader = saved
    assert viewer.layers["movie_points"].data.shape == (2, 3)
