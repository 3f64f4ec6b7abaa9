"""Points files that used to give silent wrong answers or a traceback."""

from __future__ import annotations

import numpy as np
import pytest

from napari_denodet._writer import write_points_layer
from napari_denodet.core.errors import InputError
from napari_denodet.core.io import read_points, write_points
from napari_denodet.core.points import points_table

# ------------------------------------------------------------------------------- STAR


def test_star_key_value_block_is_one_particle(tmp_path):
    # A data block without loop_: "_label value" pairs (read as 0 points before).
    path = tmp_path / "one.star"
    path.write_text("data_\n\n_rlnCoordinateX 10.5\n_rlnCoordinateY   20.25\n"
                    "_rlnAutopickFigureOfMerit 0.75\n")
    table = read_points(path)
    assert table["x"].tolist() == [10.5]
    assert table["y"].tolist() == [20.25]
    assert table["score"].tolist() == [0.75]


def test_star_key_value_block_after_an_optics_loop(tmp_path):
    path = tmp_path / "two.star"
    path.write_text("data_optics\nloop_\n_rlnOpticsGroup #1\n1\n\n"
                    "data_particle\n_rlnCoordinateX 3\n_rlnCoordinateY 4\n")
    table = read_points(path)
    assert (table["x"].tolist(), table["y"].tolist()) == ([3.0], [4.0])


def test_star_loop_row_of_the_wrong_length_names_its_line(tmp_path):
    path = tmp_path / "short.star"
    path.write_text("data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 2\n3\n")
    with pytest.raises(InputError, match="line 6: 1 values for a table of 2 columns") as info:
        read_points(path)
    assert info.value.path == str(path)


def test_star_label_without_value_is_one_line(tmp_path):
    path = tmp_path / "novalue.star"
    path.write_text("data_\n_rlnCoordinateX\n_rlnCoordinateY 4\n")
    with pytest.raises(InputError, match="line 2: _rlnCoordinateX has no value"):
        read_points(path)


# ------------------------------------------------------------------------------- CSV


@pytest.mark.parametrize("frame", ["9223372036854775808", "18446744073709551616", "1e30",
                                   "2147483648"])
def test_csv_frame_numbers_beyond_the_largest_are_refused(tmp_path, frame):
    # 2**63 and beyond wrapped to negative frame numbers (with a two-line RuntimeWarning).
    path = tmp_path / "huge.csv"
    path.write_text(f"frame,y,x\n0,1,1\n{frame},2,2\n")
    with pytest.raises(InputError, match="row 2, beyond the largest frame number") as info:
        read_points(path)
    assert info.value.path == str(path)
    assert "\n" not in str(info.value)


def test_csv_largest_frame_number_is_kept(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("frame,y,x\n2147483647,1,1\n")
    assert read_points(path)["frame"].tolist() == [2**31 - 1]


# ------------------------------------------------------------------------------- BOX


@pytest.mark.parametrize("box_size", ["abc", float("nan"), float("inf"), True, [20], 0.4])
def test_box_size_that_is_not_a_number_of_pixels_is_one_line(tmp_path, box_size):
    path = tmp_path / "mic.box"
    with pytest.raises(InputError, match="box size in pixels") as info:
        write_points(path, points_table([50.0], [30.0]), box_size=box_size)
    assert info.value.path == str(path)
    assert not path.exists()


def test_box_size_given_as_a_whole_float_or_string_number(tmp_path):
    for box_size in (20.0, "20", np.int64(20)):
        path = tmp_path / "mic.box"
        write_points(path, points_table([50.0], [30.0]), box_size=box_size, overwrite=True)
        assert path.read_text() == "20\t40\t20\t20\n"


def test_points_layer_with_a_text_box_size_is_one_line(tmp_path):
    # napari's writer hook with metadata box_size='abc' raised a TypeError traceback.
    path = tmp_path / "layer.box"
    with pytest.raises(InputError, match="box size in pixels") as info:
        write_points_layer(str(path), np.array([[50.0, 30.0]]),
                           {"metadata": {"box_size": "abc"}, "size": np.array([6.0])})
    assert info.value.path == str(path)
    assert not path.exists()
