"""Track files: the ISBI 2012 particle tracking challenge XML and TrackMate XML.

Both are written and read, so tracks round-trip and go to TrackMate (Fiji) and to the
challenge's evaluation software.

The challenge's format (Chenouard et al., Nature Methods 2014) is read by its
evaluation software and by Icy and TrackMate's importers::

    <?xml version="1.0" encoding="UTF-8" standalone="no"?>
    <root>
      <TrackContestISBI2012 SNR="..." density="..." scenario="...">
        <particle>
          <detection t="0" x="12.3" y="45.6" z="0"/>
          ...
        </particle>
        ...
      </TrackContestISBI2012>
    </root>

one ``particle`` per track, its detections in time order; ``x`` and ``y`` are the
column and row in pixels (napari's ``x`` and ``y``). The tracks table (``track_id``,
``frame``, ``y``, ``x`` and more columns) is written as CSV by
:func:`napari_denodet.core.pointfiles.write_points`; this module adds the XML.
"""

from __future__ import annotations

import os
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd

from napari_denodet.core.errors import InputError
from napari_denodet.core.points import FRAME, X, Y
from napari_denodet.core.tracks import TRACK_ID

#: The element under ``root`` that holds the particles.
CONTEST = "TrackContestISBI2012"


def _checked(path: str | os.PathLike, tracks: pd.DataFrame) -> Path:
    # The destination, once the tracks have the columns every track file needs.
    path = Path(path)
    missing = {TRACK_ID, FRAME, Y, X} - set(tracks.columns)
    if missing:
        raise InputError(path, f"the tracks have no {', '.join(sorted(missing))} column")
    return path


def _write(path: Path, root: ElementTree.Element, standalone: str, overwrite: bool) -> Path:
    # The document, indented, written atomically (an existing file only with overwrite).
    from napari_denodet.core.atomic import atomic_write

    ElementTree.indent(root)
    text = (f'<?xml version="1.0" encoding="UTF-8"{standalone}?>\n'
            + ElementTree.tostring(root, encoding="unicode") + "\n")
    return atomic_write(path, lambda temporary: temporary.write_text(text), overwrite)


def _parsed(path: str | os.PathLike) -> tuple[Path, ElementTree.Element]:
    path = Path(path)
    try:
        return path, ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        raise InputError(path, f"is not readable XML ({exc})") from None


def write_isbi_xml(path: str | os.PathLike, tracks: pd.DataFrame, *,
                   overwrite: bool = False, **attributes: str) -> Path:
    """Write a tracks table as ISBI 2012 challenge XML (atomically).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.xml`` file.
    tracks : pandas.DataFrame
        ``track_id``, ``frame``, ``y``, ``x``.
    overwrite : bool
        Replace an existing file (else :class:`InputError`, the file untouched).
    **attributes
        Attributes of the ``TrackContestISBI2012`` element (``SNR``, ``density``,
        ``scenario``), as the challenge's files carry them.

    Returns
    -------
    pathlib.Path
    """
    path = _checked(path, tracks)
    root = ElementTree.Element("root")
    contest = ElementTree.SubElement(root, CONTEST, {k: str(v) for k, v in attributes.items()})
    for _, track in tracks.sort_values([TRACK_ID, FRAME]).groupby(TRACK_ID, sort=True):
        particle = ElementTree.SubElement(contest, "particle")
        for row in track.itertuples(index=False):
            ElementTree.SubElement(particle, "detection", {
                "t": str(int(round(getattr(row, FRAME)))), "x": f"{getattr(row, X):.4f}",
                "y": f"{getattr(row, Y):.4f}", "z": "0"})
    return _write(path, root, ' standalone="no"', overwrite)


def read_isbi_xml(path: str | os.PathLike) -> pd.DataFrame:
    """Read ISBI 2012 challenge XML into a tracks table.

    Returns
    -------
    pandas.DataFrame
        ``track_id`` (the particle's position in the file, from 0), ``frame``, ``y``,
        ``x``.

    Raises
    ------
    InputError
        Not XML, no ``TrackContestISBI2012`` element, or a detection without a number
        in ``t``, ``x`` or ``y``.
    """
    path, root = _parsed(path)
    contest = root if root.tag == CONTEST else root.find(CONTEST)
    if contest is None:
        raise InputError(path, f"has no {CONTEST} element: not an ISBI 2012 tracks file")
    rows = []
    for track_id, particle in enumerate(contest.iter("particle")):
        for detection in particle.iter("detection"):
            try:
                rows.append((track_id, float(detection.get("t")), float(detection.get("y")),
                             float(detection.get("x"))))
            except (TypeError, ValueError):
                raise InputError(path, f"particle {track_id} has a detection without a "
                                       "number in t, x or y") from None
    table = pd.DataFrame(rows, columns=[TRACK_ID, FRAME, Y, X])
    table[FRAME] = table[FRAME].round().astype(np.int64)
    table[TRACK_ID] = table[TRACK_ID].astype(np.int64)
    return table


# ------------------------------------------------------------------------- TrackMate

#: The TrackMate version whose file layout is written (Model, Settings, GUIState).
TRACKMATE_VERSION = "7.11.1"
_SPOT_FEATURES = (  # feature, name, shortname, dimension, isint
    ("QUALITY", "Quality", "Quality", "QUALITY", "false"),
    ("POSITION_X", "X", "X", "POSITION", "false"),
    ("POSITION_Y", "Y", "Y", "POSITION", "false"),
    ("POSITION_Z", "Z", "Z", "POSITION", "false"),
    ("POSITION_T", "T", "T", "TIME", "false"),
    ("FRAME", "Frame", "Frame", "NONE", "true"),
    ("RADIUS", "Radius", "R", "LENGTH", "false"),
    ("VISIBILITY", "Visibility", "Visibility", "NONE", "true"),
    ("MEAN_INTENSITY_CH1", "Mean intensity ch1", "Mean ch1", "INTENSITY", "false"),
)
_EDGE_FEATURES = (
    ("SPOT_SOURCE_ID", "Source spot ID", "Source ID", "NONE", "true"),
    ("SPOT_TARGET_ID", "Target spot ID", "Target ID", "NONE", "true"),
    ("LINK_COST", "Edge cost", "Cost", "COST", "false"),
    ("SPEED", "Speed", "Speed", "VELOCITY", "false"),
)
_TRACK_FEATURES = (
    ("TRACK_INDEX", "Track index", "Index", "NONE", "true"),
    ("TRACK_ID", "Track ID", "ID", "NONE", "true"),
    ("NUMBER_SPOTS", "Number of spots in track", "N spots", "NONE", "true"),
    ("NUMBER_GAPS", "Number of gaps", "N gaps", "NONE", "true"),
    ("TRACK_DURATION", "Track duration", "Duration", "TIME", "false"),
    ("TRACK_START", "Track start", "Track start", "TIME", "false"),
    ("TRACK_STOP", "Track stop", "Track stop", "TIME", "false"),
    ("TRACK_MEAN_SPEED", "Track mean speed", "Mean sp.", "VELOCITY", "false"),
    ("TRACK_MEAN_QUALITY", "Track mean quality", "Mean Q", "QUALITY", "false"),
)


def _declare(parent, tag: str, features) -> None:
    group = ElementTree.SubElement(parent, tag)
    for feature, name, short, dimension, isint in features:
        ElementTree.SubElement(group, "Feature", {
            "feature": feature, "name": name, "shortname": short, "dimension": dimension,
            "isint": isint})


def _number(value) -> str:
    return repr(float(value))


def write_trackmate_xml(path: str | os.PathLike, tracks: pd.DataFrame,
                        shape: tuple[int, int, int], *, image: str = "", radius: float = 2.0,
                        max_distance: float = 5.0, gap_frames: int = 2,
                        overwrite: bool = False) -> Path:
    """Write a tracks table as a TrackMate XML file that TrackMate (Fiji) loads.

    The layout is TrackMate's own (``TrackMate > Model > FeatureDeclarations, AllSpots >
    SpotsInFrame > Spot, AllTracks > Track > Edge, FilteredTracks; Settings > ImageData,
    BasicSettings, ...``): one spot per point (``QUALITY`` = its ``score`` where the table
    has one, ``RADIUS`` = ``radius``), one track per ``track_id`` with two points or more
    (a point alone is a spot of no track, as in TrackMate), one edge per link between a
    track's consecutive points. Units are pixels and frames.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.xml`` file.
    tracks : pandas.DataFrame
        ``track_id``, ``frame``, ``y``, ``x`` (``score``, ``intensity`` if present).
    shape : (int, int, int)
        The time-lapse's ``(frames, height, width)`` (TrackMate's ImageData).
    image : str
        The image file's name, for ImageData (TrackMate offers to open it).
    radius : float
        Spot radius in pixels.
    max_distance, gap_frames : float, int
        The linking settings, recorded as the tracker's settings.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
    """
    path = _checked(path, tracks)
    table = tracks.reset_index(drop=True)
    root = ElementTree.Element("TrackMate", {"version": TRACKMATE_VERSION})
    ElementTree.SubElement(root, "Log").text = "Written by napari-denodet."
    model = ElementTree.SubElement(root, "Model", {"spatialunits": "pixel",
                                                   "timeunits": "frame"})
    declarations = ElementTree.SubElement(model, "FeatureDeclarations")
    _declare(declarations, "SpotFeatures", _SPOT_FEATURES)
    _declare(declarations, "EdgeFeatures", _EDGE_FEATURES)
    _declare(declarations, "TrackFeatures", _TRACK_FEATURES)
    quality = table["score"] if "score" in table else pd.Series(1.0, index=table.index)
    spots = ElementTree.SubElement(model, "AllSpots", {"nspots": str(len(table))})
    for frame, rows in table.groupby(FRAME, sort=True):
        group = ElementTree.SubElement(spots, "SpotsInFrame", {"frame": str(int(frame))})
        for i, row in rows.iterrows():
            attributes = {"ID": str(i), "name": f"ID{i}", "QUALITY": _number(quality[i]),
                          "POSITION_X": _number(row[X]), "POSITION_Y": _number(row[Y]),
                          "POSITION_Z": "0.0", "POSITION_T": _number(row[FRAME]),
                          "FRAME": str(int(row[FRAME])), "RADIUS": _number(radius),
                          "VISIBILITY": "1"}
            if "intensity" in table:
                attributes["MEAN_INTENSITY_CH1"] = _number(row["intensity"])
            ElementTree.SubElement(group, "Spot", attributes)
    _write_tracks(model, table, quality)
    _write_settings(root, shape, image, max_distance, gap_frames)
    ElementTree.SubElement(root, "GUIState", {"state": "ConfigureViews"})
    return _write(path, root, "", overwrite)


def _write_tracks(model, table: pd.DataFrame, quality: pd.Series) -> None:
    all_tracks = ElementTree.SubElement(model, "AllTracks")
    kept = []
    for index, (track_id, rows) in enumerate(table.sort_values(FRAME).groupby(TRACK_ID)):
        if len(rows) < 2:
            continue
        frames = rows[FRAME].to_numpy(np.float64)
        steps = np.hypot(np.diff(rows[Y].to_numpy()), np.diff(rows[X].to_numpy()))
        spans = np.diff(frames)
        track = ElementTree.SubElement(all_tracks, "Track", {
            "name": f"Track_{int(track_id)}", "TRACK_INDEX": str(index),
            "TRACK_ID": str(int(track_id)), "NUMBER_SPOTS": str(len(rows)),
            "NUMBER_GAPS": str(int((spans > 1).sum())),
            "TRACK_DURATION": _number(frames[-1] - frames[0]),
            "TRACK_START": _number(frames[0]), "TRACK_STOP": _number(frames[-1]),
            "TRACK_MEAN_SPEED": _number(np.mean(steps / spans)),
            "TRACK_MEAN_QUALITY": _number(quality[rows.index].mean())})
        for source, target, step, span in zip(rows.index[:-1], rows.index[1:], steps,
                                              spans, strict=True):
            ElementTree.SubElement(track, "Edge", {
                "SPOT_SOURCE_ID": str(source), "SPOT_TARGET_ID": str(target),
                "LINK_COST": _number(step**2), "SPEED": _number(step / span)})
        kept.append(int(track_id))
    filtered = ElementTree.SubElement(model, "FilteredTracks")
    for track_id in kept:
        ElementTree.SubElement(filtered, "TrackID", {"TRACK_ID": str(track_id)})


def _write_settings(root, shape: tuple[int, int, int], image: str, max_distance: float,
                    gap_frames: int) -> None:
    frames, height, width = (int(n) for n in shape)
    settings = ElementTree.SubElement(root, "Settings")
    ElementTree.SubElement(settings, "ImageData", {
        "filename": Path(image).name, "folder": "", "width": str(width),
        "height": str(height), "nslices": "1", "nframes": str(frames),
        "pixelwidth": "1.0", "pixelheight": "1.0", "voxeldepth": "1.0",
        "timeinterval": "1.0"})
    ElementTree.SubElement(settings, "BasicSettings", {
        "xstart": "0", "xend": str(width - 1), "ystart": "0", "yend": str(height - 1),
        "zstart": "0", "zend": "0", "tstart": "0", "tend": str(frames - 1)})
    ElementTree.SubElement(settings, "InitialSpotFilter", {"feature": "QUALITY",
                                                           "value": "0.0", "isabove": "true"})
    ElementTree.SubElement(settings, "SpotFilterCollection")
    tracker = ElementTree.SubElement(settings, "TrackerSettings", {
        "TRACKER_NAME": "SIMPLE_SPARSE_LAP_TRACKER", "CUTOFF_PERCENTILE": "0.9",
        "ALTERNATIVE_LINKING_COST_FACTOR": "1.05", "BLOCKING_VALUE": "Infinity"})
    linking = ElementTree.SubElement(tracker, "Linking",
                                     {"LINKING_MAX_DISTANCE": _number(max_distance)})
    ElementTree.SubElement(linking, "FeaturePenalties")
    gaps = ElementTree.SubElement(tracker, "GapClosing", {
        "ALLOW_GAP_CLOSING": "true" if gap_frames else "false",
        "GAP_CLOSING_MAX_DISTANCE": _number(max_distance),
        "MAX_FRAME_GAP": str(int(gap_frames) + 1)})
    ElementTree.SubElement(gaps, "FeaturePenalties")
    for tag, allow, distance in (("TrackSplitting", "ALLOW_TRACK_SPLITTING",
                                  "SPLITTING_MAX_DISTANCE"),
                                 ("TrackMerging", "ALLOW_TRACK_MERGING",
                                  "MERGING_MAX_DISTANCE")):
        element = ElementTree.SubElement(tracker, tag, {allow: "false",
                                                        distance: _number(max_distance)})
        ElementTree.SubElement(element, "FeaturePenalties")
    ElementTree.SubElement(settings, "TrackFilterCollection")


def read_trackmate_xml(path: str | os.PathLike) -> pd.DataFrame:
    """Read the spots and tracks of a TrackMate XML file into a tracks table.

    Returns
    -------
    pandas.DataFrame
        ``track_id``, ``frame``, ``y``, ``x``, ``score`` (the spot's ``QUALITY``), one row
        per spot in ``AllSpots``; a spot on no track of ``FilteredTracks`` gets a track
        of its own (ids after the file's).

    Raises
    ------
    InputError
        Not XML, not a TrackMate file, or a spot without a number in its position.
    """
    path, root = _parsed(path)
    model = root.find("Model")
    if root.tag != "TrackMate" or model is None or model.find("AllSpots") is None:
        raise InputError(path, "is not a TrackMate file (no TrackMate > Model > AllSpots)")
    spots = {}
    for spot in model.iter("Spot"):
        try:
            spots[spot.get("ID")] = (int(float(spot.get("FRAME"))),
                                     float(spot.get("POSITION_Y")),
                                     float(spot.get("POSITION_X")),
                                     float(spot.get("QUALITY", "nan")))
        except (TypeError, ValueError):
            raise InputError(path, f"spot {spot.get('ID')} has no number in FRAME, "
                                   "POSITION_X or POSITION_Y") from None
    filtered = model.find("FilteredTracks")
    shown = (None if filtered is None else
             {t.get("TRACK_ID") for t in filtered.iter("TrackID")})
    track_of: dict[str, int] = {}
    for track in model.iter("Track"):
        if shown is not None and track.get("TRACK_ID") not in shown:
            continue
        for edge in track.iter("Edge"):
            for key in ("SPOT_SOURCE_ID", "SPOT_TARGET_ID"):
                track_of[edge.get(key)] = int(track.get("TRACK_ID"))
    next_id = max(track_of.values(), default=-1) + 1
    rows = []
    for spot_id, (frame, y, x, quality) in spots.items():
        if spot_id not in track_of:
            track_of[spot_id], next_id = next_id, next_id + 1
        rows.append((track_of[spot_id], frame, y, x, quality))
    return pd.DataFrame(rows, columns=[TRACK_ID, FRAME, Y, X, "score"])
