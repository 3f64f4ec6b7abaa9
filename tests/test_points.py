from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_denodet.core.errors import InputError
from napari_denodet.core.points import (
    POINT_COLUMNS,
    coordinates,
    empty_points_table,
    points_table,
    table_from_coordinates,
    validate_points_table,
)

# ------------------------------------------------------------------------ points_table


@pytest.mark.parametrize("with_frame", [False, True])
@pytest.mark.parametrize("with_score", [False, True])
@pytest.mark.parametrize("with_features", [False, True])
def test_points_table_column_order_and_dtypes(with_frame, with_score, with_features):
    features = {"track_id": [7, 8, 9], "intensity": [0.5, 1.5, 2.5]} if with_features else {}
    table = points_table(
        [1.0, 2.0, 3.0],
        [4, 5, 6],  # integers become float64 coordinates
        frame=[0, 1, 1] if with_frame else None,
        score=[0.9, 0.8, 0.7] if with_score else None,
        **features,
    )

    expected = (["frame"] if with_frame else []) + ["y", "x"]
    expected += (["score"] if with_score else []) + list(features)
    assert list(table.columns) == expected
    assert len(table) == 3
    assert table["y"].dtype == np.float64
    assert table["x"].dtype == np.float64
    np.testing.assert_array_equal(table["x"], [4.0, 5.0, 6.0])
    if with_frame:
        assert table["frame"].dtype == np.int64
    if with_score:
        assert table["score"].dtype == np.float64
    if with_features:
        assert table["track_id"].dtype == np.int64
        np.testing.assert_array_equal(table["intensity"], [0.5, 1.5, 2.5])


def test_points_table_keeps_feature_order_as_given():
    table = points_table([0], [0], zeta=[1], alpha=[2], mid=[3])
    assert list(table.columns) == ["y", "x", "zeta", "alpha", "mid"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"y": [1, 2], "x": [1, 2, 3]},
        {"y": [1, 2], "x": [1, 2], "frame": [0]},
        {"y": [1, 2], "x": [1, 2], "score": [0.1, 0.2, 0.3]},
        {"y": [1, 2], "x": [1, 2], "extra": [1]},
    ],
)
def test_points_table_length_mismatch_raises(kwargs):
    with pytest.raises(ValueError, match="differ in length"):
        points_table(**kwargs)


@pytest.mark.parametrize("with_frame", [False, True])
@pytest.mark.parametrize("with_score", [False, True])
def test_empty_points_table(with_frame, with_score):
    table = empty_points_table(with_frame=with_frame, with_score=with_score)
    expected = [c for c in POINT_COLUMNS if (c != "frame" or with_frame)
                and (c != "score" or with_score)]
    assert list(table.columns) == expected
    assert len(table) == 0
    assert table["y"].dtype == np.float64
    if with_frame:
        assert table["frame"].dtype == np.int64


# ------------------------------------------------------------------------- coordinates


def test_coordinates_with_frame_is_t_y_x():
    table = points_table([1.5, 2.5], [3.25, 4.75], frame=[0, 2], score=[0.1, 0.2], k=[5, 6])
    coords = coordinates(table)
    assert coords.shape == (2, 3)
    assert coords.dtype == np.float64
    np.testing.assert_array_equal(coords, [[0, 1.5, 3.25], [2, 2.5, 4.75]])


def test_coordinates_without_frame_is_y_x():
    table = points_table([1.5, 2.5], [3.25, 4.75], score=[0.1, 0.2])
    coords = coordinates(table)
    assert coords.shape == (2, 2)
    np.testing.assert_array_equal(coords, [[1.5, 3.25], [2.5, 4.75]])


@pytest.mark.parametrize("with_frame", [False, True])
def test_coordinates_of_empty_table(with_frame):
    coords = coordinates(empty_points_table(with_frame=with_frame))
    assert coords.shape == (0, 3 if with_frame else 2)


# -------------------------------------------------------------- table_from_coordinates


@pytest.mark.parametrize("with_frame", [False, True])
def test_table_from_coordinates_round_trip(with_frame):
    rng = np.random.default_rng(0)
    n = 20
    table = points_table(
        rng.uniform(0, 100, n),
        rng.uniform(0, 100, n),
        frame=rng.integers(0, 10, n) if with_frame else None,
        score=rng.uniform(0, 1, n),
        track_id=rng.integers(0, 1000, n),
        label=np.array([f"p{i}" for i in range(n)]),
    )
    features = table.drop(columns=["frame", "y", "x"], errors="ignore")

    rebuilt = table_from_coordinates(coordinates(table), features)

    pd.testing.assert_frame_equal(rebuilt, table)


@pytest.mark.parametrize(
    ("t", "frame"), [(0.0, 0), (1.4, 1), (1.6, 2), (2.9999, 3), (-0.2, 0)]
)
def test_table_from_coordinates_rounds_time_to_frame(t, frame):
    table = table_from_coordinates(np.array([[t, 10.5, 20.25]]))
    assert list(table.columns) == ["frame", "y", "x"]
    assert table["frame"].dtype == np.int64
    assert table["frame"].tolist() == [frame]
    assert table["y"].tolist() == [10.5]
    assert table["x"].tolist() == [20.25]


def test_table_from_coordinates_ignores_frame_y_x_features():
    coords = np.array([[3.0, 1.0, 2.0], [4.0, 5.0, 6.0]])
    features = pd.DataFrame(
        {"frame": [99, 98], "y": [-1.0, -1.0], "x": [-2.0, -2.0], "score": [0.5, 0.25],
         "intensity": [10, 20]}
    )
    table = table_from_coordinates(coords, features)
    assert list(table.columns) == ["frame", "y", "x", "score", "intensity"]
    assert table["frame"].tolist() == [3, 4]
    assert table["y"].tolist() == [1.0, 5.0]
    assert table["x"].tolist() == [2.0, 6.0]
    assert table["score"].tolist() == [0.5, 0.25]
    assert table["intensity"].tolist() == [10, 20]


def test_table_from_coordinates_accepts_mapping_features_2d():
    table = table_from_coordinates(np.array([[1.0, 2.0]]), {"score": [0.3], "n": [4]})
    assert list(table.columns) == ["y", "x", "score", "n"]
    assert table.iloc[0].tolist() == [1.0, 2.0, 0.3, 4]


@pytest.mark.parametrize("with_frame", [False, True])
def test_table_from_coordinates_empty(with_frame):
    coords = np.zeros((0, 3 if with_frame else 2))
    table = table_from_coordinates(coords)
    assert len(table) == 0
    assert list(table.columns) == (["frame", "y", "x"] if with_frame else ["y", "x"])


@pytest.mark.parametrize("shape", [(4,), (4, 1), (4, 4), (2, 3, 2)])
def test_table_from_coordinates_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match="coordinates must be"):
        table_from_coordinates(np.zeros(shape))


# ---------------------------------------------------------------- validate_points_table


def test_validate_reorders_columns_canonically():
    table = pd.DataFrame(
        {"label": ["a", "b"], "x": [1.0, 2.0], "score": [0.5, 0.6], "y": [3.0, 4.0],
         "frame": [1, 0], "track_id": [5, 6]}
    )
    out = validate_points_table(table)
    assert list(out.columns) == ["frame", "y", "x", "score", "label", "track_id"]
    assert out["frame"].tolist() == [1, 0]
    assert out["y"].tolist() == [3.0, 4.0]
    assert out["label"].tolist() == ["a", "b"]


def test_validate_converts_standard_dtypes():
    table = pd.DataFrame(
        {"frame": [0.0, 2.0], "y": [1, 2], "x": ["3.5", "4"], "score": [1, 0]}
    )
    out = validate_points_table(table)
    assert out["frame"].dtype == np.int64
    assert out["frame"].tolist() == [0, 2]
    for name in ("y", "x", "score"):
        assert out[name].dtype == np.float64
    assert out["x"].tolist() == [3.5, 4.0]


def test_validate_ignores_the_input_index():
    table = pd.DataFrame({"y": [1.0, 2.0], "x": [3.0, 4.0], "n": [7, 8]}, index=[10, 3])
    out = validate_points_table(table)
    assert out.index.tolist() == [0, 1]
    assert out["n"].tolist() == [7, 8]


def test_validate_keeps_a_valid_table_unchanged():
    table = points_table([1.0], [2.0], frame=[3], score=[0.5], extra=[1])
    pd.testing.assert_frame_equal(validate_points_table(table), table)


@pytest.mark.parametrize(
    ("columns", "missing"),
    [({"x": [1.0]}, "y"), ({"y": [1.0]}, "x"), ({"frame": [0], "score": [1.0]}, "y, x")],
)
def test_validate_missing_coordinates_names_the_file(columns, missing):
    with pytest.raises(InputError, match=f"missing column\\(s\\) {missing}") as info:
        validate_points_table(pd.DataFrame(columns), source="picks/run1.csv")
    assert str(info.value).startswith("picks/run1.csv: ")
    assert info.value.path == "picks/run1.csv"


@pytest.mark.parametrize("column", ["frame", "y", "x", "score"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, "abc", None])
def test_validate_bad_value_names_column_row_and_file(column, bad):
    table = pd.DataFrame(
        {"frame": [0, 1, 2], "y": [1.0, 2.0, 3.0], "x": [4.0, 5.0, 6.0],
         "score": [0.1, 0.2, 0.3]}
    ).astype(object)
    table.loc[1, column] = bad
    with pytest.raises(InputError) as info:
        validate_points_table(table, source="data/points.csv")
    message = str(info.value)
    assert message.startswith("data/points.csv: ")
    assert f"column '{column}'" in message
    assert "row 2" in message


@pytest.mark.parametrize("frames", [[0, -1], [0, 1.5], [0.25, 1]])
def test_validate_rejects_negative_or_fractional_frames(frames):
    table = pd.DataFrame({"frame": frames, "y": [1.0, 2.0], "x": [3.0, 4.0]})
    with pytest.raises(InputError, match="whole numbers >= 0") as info:
        validate_points_table(table, source="movie_points.csv")
    assert str(info.value).startswith("movie_points.csv: ")


def test_validate_without_source_has_no_path_prefix():
    with pytest.raises(InputError) as info:
        validate_points_table(pd.DataFrame({"x": [1.0]}))
    assert info.value.path is None
    assert str(info.value).startswith("not a points table")


def test_validate_empty_table():
    out = validate_points_table(pd.DataFrame({"y": [], "x": [], "score": []}))
    assert list(out.columns) == ["y", "x", "score"]
    assert len(out) == 0
    assert out["y"].dtype == np.float64
