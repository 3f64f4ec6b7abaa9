"""Tracks: detections linked with laptrack, summarised, filtered, written and read."""

import numpy as np
import pandas as pd
import pytest

from napari_denodet.cli import main
from napari_denodet.core.errors import InputError
from napari_denodet.core.io import read_points, write_points
from napari_denodet.core.simulate import simulate_timelapse
from napari_denodet.core.trackfiles import read_isbi_xml, write_isbi_xml
from napari_denodet.core.tracks import (
    FALLBACK_MAX_DISTANCE,
    TRACK_ID,
    LinkSettings,
    estimate_max_distance,
    link,
    track_features,
    tracks_longer,
)


@pytest.fixture(scope="module")
def moving():
    return simulate_timelapse("vesicle", snr=4, density="low", frames=20, shape=(128, 128),
                              seed=3)


def _purity(linked, truth_ids):
    # How many true tracks each linked track mixes, and how many pieces each true one has.
    table = linked.assign(true=np.asarray(truth_ids))
    mixed = table.groupby(TRACK_ID)["true"].nunique().mean()
    pieces = table.groupby("true")[TRACK_ID].nunique().mean()
    return mixed, pieces


def test_the_true_positions_link_into_the_true_tracks(moving):
    truth = moving.truth
    linked = link(truth[["frame", "y", "x"]])
    assert list(linked.index) == list(range(len(truth)))
    mixed, pieces = _purity(linked, truth["track_id"])
    assert mixed == 1.0  # no track joins two particles
    assert pieces < 1.3  # a particle is seldom cut in two
    # Ids count from 0 in order of first appearance.
    first = linked.groupby(TRACK_ID)["frame"].min().to_numpy()
    assert np.all(np.diff(first) >= 0) and linked[TRACK_ID].min() == 0


def test_a_missed_frame_is_bridged_only_within_the_gap():
    frames = [0, 1, 2, 4, 5]  # frame 3 missed
    points = pd.DataFrame({"frame": frames, "y": [10.0 + f for f in frames],
                           "x": [20.0] * 5})
    assert link(points, LinkSettings(max_distance=3, gap_frames=1))[TRACK_ID].nunique() == 1
    assert link(points, LinkSettings(max_distance=3, gap_frames=0))[TRACK_ID].nunique() == 2
    # A jump larger than the largest displacement starts a new track.
    far = points.assign(x=[20.0, 20.0, 20.0, 40.0, 40.0])
    assert link(far, LinkSettings(max_distance=3, gap_frames=1))[TRACK_ID].nunique() == 2


def _walkers(step, frames=10, n=25, seed=0, jitter=0.3):
    # n particles on a grid 100 px apart, each moving ``step`` px a frame in its own
    # direction (plus a little jitter), seen in every frame.
    rng = np.random.default_rng(seed)
    start = np.stack(np.meshgrid(np.arange(5), np.arange(5)), -1).reshape(-1, 2)[:n] * 100.0
    heading = rng.uniform(0, 2 * np.pi, n)
    rows = []
    for f in range(frames):
        at = start + f * step * np.c_[np.sin(heading), np.cos(heading)]
        at = at + rng.normal(0, jitter, at.shape)
        rows += [(f, y, x, i) for i, (y, x) in enumerate(at)]
    return pd.DataFrame(rows, columns=["frame", "y", "x", "true"])


@pytest.mark.parametrize("step", [1.0, 8.0])
def test_the_largest_step_is_read_from_the_points(step):
    walkers = _walkers(step)
    estimate = estimate_max_distance(walkers)
    # Above the step, and well below the particles' spacing (100 px): a sparse field lets
    # the estimate reach further, as chance neighbours are rare there.
    assert step < estimate < 2.5 * step + 3
    # Linked with the estimate (the default), each particle is one whole track.
    linked = link(walkers[["frame", "y", "x"]])
    mixed, pieces = _purity(linked, walkers["true"])
    assert mixed == 1.0 and pieces == 1.0
    if step > FALLBACK_MAX_DISTANCE:  # a fixed 5 px step cuts every track
        cut = link(walkers[["frame", "y", "x"]], LinkSettings(max_distance=5.0))
        assert cut[TRACK_ID].nunique() > 0.9 * len(walkers)


def test_points_that_do_not_recur_give_the_fallback_step():
    rng = np.random.default_rng(1)
    noise = pd.DataFrame({"frame": np.repeat(np.arange(10), 50),
                          "y": rng.uniform(0, 400, 500), "x": rng.uniform(0, 400, 500)})
    assert estimate_max_distance(noise) == FALLBACK_MAX_DISTANCE
    assert estimate_max_distance(_walkers(1.0, frames=2, n=5)) == FALLBACK_MAX_DISTANCE
    assert estimate_max_distance(noise.drop(columns="frame")) == FALLBACK_MAX_DISTANCE
    given = LinkSettings(max_distance=3.0)
    assert given.for_points(noise) is given
    assert LinkSettings().for_points(noise).max_distance == FALLBACK_MAX_DISTANCE


def test_features_and_the_length_filter():
    points = pd.DataFrame({"frame": [0, 1, 2, 0], "y": [0.0, 3.0, 7.0, 50.0],
                           "x": [0.0, 4.0, 4.0, 50.0], "score": [0.9, 0.8, 0.7, 0.4]})
    linked = link(points, LinkSettings(max_distance=6, gap_frames=0))
    features = track_features(linked).set_index(TRACK_ID)
    walker = linked[TRACK_ID].iloc[0]
    assert features.loc[walker, "length"] == 3 and features.loc[walker, "detections"] == 3
    assert features.loc[walker, "mean_speed"] == pytest.approx((5.0 + 4.0) / 2)
    assert features.loc[walker, "mean_score"] == pytest.approx(0.8)
    assert len(tracks_longer(linked, 2)) == 3


def test_settings_and_inputs_are_checked():
    with pytest.raises(InputError, match="largest displacement"):
        LinkSettings(max_distance=0)
    with pytest.raises(InputError, match="whole number of frames"):
        LinkSettings(gap_frames=-1)
    with pytest.raises(InputError, match="no frame column"):
        link(pd.DataFrame({"y": [1.0], "x": [2.0]}))
    assert link(pd.DataFrame({"frame": [], "y": [], "x": []}))[TRACK_ID].tolist() == []


def test_isbi_xml_round_trips(moving, tmp_path):
    linked = link(moving.truth[["frame", "y", "x"]])
    path = write_isbi_xml(tmp_path / "tracks.xml", linked, SNR="4", scenario="vesicle")
    text = path.read_text()
    assert text.startswith('<?xml version="1.0"') and "<TrackContestISBI2012" in text
    assert 'scenario="vesicle"' in text and "<particle>" in text and 'z="0"' in text
    back = read_isbi_xml(path)
    assert back[TRACK_ID].nunique() == linked[TRACK_ID].nunique()
    ordered = linked.sort_values([TRACK_ID, "frame"]).reset_index(drop=True)
    np.testing.assert_allclose(back[["frame", "y", "x"]], ordered[["frame", "y", "x"]],
                               atol=1e-4)
    with pytest.raises(InputError, match="exists"):
        write_isbi_xml(path, linked)
    (tmp_path / "bad.xml").write_text("<root><other/></root>")
    with pytest.raises(InputError, match="no TrackContestISBI2012"):
        read_isbi_xml(tmp_path / "bad.xml")


def test_the_track_command_writes_csv_and_xml(moving, tmp_path, capsys):
    points = moving.truth[["frame", "y", "x"]].assign(score=0.9)
    source = write_points(tmp_path / "cells_points.csv", points)
    assert main(["track", str(source), "--out", str(tmp_path / "out"), "--isbi",
                 "--trackmate", "--min-length", "3"]) == 0
    tracks = read_points(tmp_path / "out" / "cells_tracks.csv")
    assert TRACK_ID in tracks and tracks.groupby(TRACK_ID)["frame"].agg(
        lambda f: f.max() - f.min() + 1).min() >= 3
    assert (tmp_path / "out" / "cells_tracks.xml").is_file()
    from napari_denodet.core.trackfiles import read_trackmate_xml

    assert len(read_trackmate_xml(tmp_path / "out" / "cells_trackmate.xml")) == len(tracks)
    said = capsys.readouterr().out
    assert "tracks from" in said and "(estimated from the points)" in said
    # The step the points gave is the one TrackMate is told was used.
    step = estimate_max_distance(points)
    assert f"largest step {step:g} px" in said
    text = (tmp_path / "out" / "cells_trackmate.xml").read_text()
    assert f'LINKING_MAX_DISTANCE="{step!r}"' in text
    # A step given is used as given.
    assert main(["track", str(source), "--out", str(tmp_path / "given"),
                 "--max-distance", "2.5"]) == 0
    said = capsys.readouterr().out
    assert "largest step 2.5 px;" in said
    assert main(["track", str(source), "--out", str(tmp_path / "bad"),
                 "--max-distance", "far"]) != 0
    assert "far" in capsys.readouterr().err
    # A single image's points: a one-line error naming the file.
    write_points(tmp_path / "single.csv", points.drop(columns="frame"))
    assert main(["track", str(tmp_path / "single.csv"), "--out", str(tmp_path)]) != 0
    assert "single.csv" in capsys.readouterr().err


#: The layout of a TrackMate file as TrackMate writes it (read from files TrackMate
#: saved): element paths and the attributes its loader reads on each.
TRACKMATE_LAYOUT = {
    "TrackMate": {"version"},
    "TrackMate/Model": {"spatialunits", "timeunits"},
    "TrackMate/Model/FeatureDeclarations/SpotFeatures/Feature":
        {"feature", "name", "shortname", "dimension", "isint"},
    "TrackMate/Model/FeatureDeclarations/EdgeFeatures/Feature":
        {"feature", "name", "shortname", "dimension", "isint"},
    "TrackMate/Model/FeatureDeclarations/TrackFeatures/Feature":
        {"feature", "name", "shortname", "dimension", "isint"},
    "TrackMate/Model/AllSpots": {"nspots"},
    "TrackMate/Model/AllSpots/SpotsInFrame": {"frame"},
    "TrackMate/Model/AllSpots/SpotsInFrame/Spot":
        {"ID", "name", "QUALITY", "POSITION_X", "POSITION_Y", "POSITION_Z", "POSITION_T",
         "FRAME", "RADIUS", "VISIBILITY"},
    "TrackMate/Model/AllTracks/Track": {"name", "TRACK_ID", "TRACK_INDEX", "NUMBER_SPOTS"},
    "TrackMate/Model/AllTracks/Track/Edge": {"SPOT_SOURCE_ID", "SPOT_TARGET_ID",
                                             "LINK_COST"},
    "TrackMate/Model/FilteredTracks/TrackID": {"TRACK_ID"},
    "TrackMate/Settings/ImageData": {"filename", "folder", "width", "height", "nslices",
                                     "nframes", "pixelwidth", "pixelheight", "voxeldepth",
                                     "timeinterval"},
    "TrackMate/Settings/BasicSettings": {"xstart", "xend", "ystart", "yend", "zstart",
                                         "zend", "tstart", "tend"},
    "TrackMate/Settings/TrackerSettings/Linking": {"LINKING_MAX_DISTANCE"},
    "TrackMate/Settings/TrackerSettings/GapClosing": {"ALLOW_GAP_CLOSING",
                                                      "GAP_CLOSING_MAX_DISTANCE",
                                                      "MAX_FRAME_GAP"},
}


def _paths(element, prefix=""):
    here = f"{prefix}/{element.tag}" if prefix else element.tag
    yield here, element
    for child in element:
        yield from _paths(child, here)


def test_trackmate_xml_follows_trackmates_layout_and_round_trips(moving, tmp_path):
    from xml.etree import ElementTree

    from napari_denodet.core.trackfiles import read_trackmate_xml, write_trackmate_xml

    linked = link(moving.truth[["frame", "y", "x"]].assign(score=0.7, intensity=3.0))
    path = write_trackmate_xml(tmp_path / "tracks.xml", linked, moving.noisy.shape,
                               image="cells.tif")
    root = ElementTree.parse(path).getroot()
    found = {}
    for element_path, element in _paths(root):
        found.setdefault(element_path, set()).update(element.attrib)
    for element_path, attributes in TRACKMATE_LAYOUT.items():
        assert element_path in found, element_path
        assert attributes <= found[element_path], (element_path, attributes - found[
            element_path])
    # Every spot an edge names exists; nspots is the number of spots.
    spot_ids = {s.get("ID") for s in root.iter("Spot")}
    assert root.find("Model/AllSpots").get("nspots") == str(len(spot_ids)) == str(len(linked))
    assert all({e.get("SPOT_SOURCE_ID"), e.get("SPOT_TARGET_ID")} <= spot_ids
               for e in root.iter("Edge"))
    back = read_trackmate_xml(path)
    assert len(back) == len(linked)
    pairs = back.merge(linked, on=["frame", "y", "x"], suffixes=("_back", ""))
    assert len(pairs) == len(linked)
    # The same partition into tracks (ids may differ).
    assert pairs.groupby("track_id")["track_id_back"].nunique().max() == 1
    assert pairs.groupby("track_id_back")["track_id"].nunique().max() == 1
    assert (back["score"] == 0.7).all()
    (tmp_path / "other.xml").write_text("<root/>")
    with pytest.raises(InputError, match="not a TrackMate file"):
        read_trackmate_xml(tmp_path / "other.xml")


def test_detect_track_writes_the_tracks_of_a_time_lapse(tmp_path, capsys):
    from napari_denodet.core.io import write_tiff

    sim = simulate_timelapse("vesicle", snr=6, density="low", frames=6, shape=(96, 96),
                             seed=8)
    write_tiff(tmp_path / "cells.tif", np.clip(sim.noisy, 0, 65535).astype(np.uint16))
    assert main(["detect", str(tmp_path / "cells.tif"), "--out", str(tmp_path / "out"),
                 "--track", "--denoised", "none"]) == 0
    points = read_points(tmp_path / "out" / "cells_points.csv")
    tracks = read_points(tmp_path / "out" / "cells_tracks.csv")
    assert len(tracks) == len(points) and TRACK_ID in tracks
    assert tracks[TRACK_ID].nunique() < len(tracks)  # detections were linked
    step = estimate_max_distance(points)
    assert (f"tracks linked with a largest step of {step:g} px (estimated from the "
            "detections)") in capsys.readouterr().out
    from napari_denodet.core.batch import DetectSettings

    with pytest.raises(InputError, match="largest step in px or 'auto'"):
        DetectSettings(track="far")
    # A single image has no tracks: one line naming the file.
    write_tiff(tmp_path / "one.tif", np.clip(sim.noisy[0], 0, 65535).astype(np.uint16))
    assert main(["detect", str(tmp_path / "one.tif"), "--out", str(tmp_path / "out"),
                 "--track"]) != 0
    assert "one.tif" in capsys.readouterr().err
