"""Track files: the ISBI 2012 particle tracking challenge XML, written and read.

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
    from napari_denodet.core.atomic import atomic_write

    path = Path(path)
    missing = {TRACK_ID, FRAME, Y, X} - set(tracks.columns)
    if missing:
        raise InputError(path, f"the tracks have no {', '.join(sorted(missing))} column")
    root = ElementTree.Element("root")
    contest = ElementTree.SubElement(root, CONTEST, {k: str(v) for k, v in attributes.items()})
    for _, track in tracks.sort_values([TRACK_ID, FRAME]).groupby(TRACK_ID, sort=True):
        particle = ElementTree.SubElement(contest, "particle")
        for row in track.itertuples(index=False):
            ElementTree.SubElement(particle, "detection", {
                "t": str(int(round(getattr(row, FRAME)))), "x": f"{getattr(row, X):.4f}",
                "y": f"{getattr(row, Y):.4f}", "z": "0"})
    ElementTree.indent(root)
    text = ('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
            + ElementTree.tostring(root, encoding="unicode") + "\n")
    return atomic_write(path, lambda temporary: temporary.write_text(text), overwrite)


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
    path = Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        raise InputError(path, f"is not readable XML ({exc})") from None
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
