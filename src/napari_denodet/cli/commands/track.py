"""``napari-denodet track``: link a time-lapse's detections into tracks."""

from __future__ import annotations

import argparse

from napari_denodet.cli._common import _path, _positive_int, _share, _step

NAME = "track"
HELP = "link the detections of a time-lapse into tracks"
DESCRIPTION = ("Link the points of POINTS (a points CSV of a time-lapse, as detect writes "
               "it) into tracks with the LAP linker TrackMate uses (laptrack): frame to "
               "frame up to --max-distance px (estimated from the points unless "
               "given), across up to --gap missed frames. Writes "
               "DIR/<stem>_tracks.csv (the points with a track_id column) and, with "
               "--isbi, DIR/<stem>_tracks.xml in the ISBI 2012 particle tracking "
               "challenge's format.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``track``."""
    from napari_denodet.core.tracks import LinkSettings

    parser.add_argument("points", type=_path, metavar="POINTS",
                        help="points CSV with frame, y, x (e.g. detect's <stem>_points.csv)")
    parser.add_argument("--out", type=_path, required=True, metavar="DIR")
    parser.add_argument("--max-distance", type=_step, default="auto", metavar="PX",
                        help="largest displacement between linked detections, in px "
                             "(default: auto, estimated from the points: how much more "
                             "often a detection has a neighbour within a distance in the "
                             "next frame than by chance)")
    parser.add_argument("--gap", type=int, default=LinkSettings.gap_frames, metavar="FRAMES",
                        help="most frames a particle may be missed and still be linked "
                             f"across (default {LinkSettings.gap_frames}; 0: none)")
    parser.add_argument("--min-length", type=_positive_int, default=1, metavar="FRAMES",
                        help="keep tracks spanning at least this many frames (default 1: "
                             "all; short tracks are often noise)")
    parser.add_argument("--threshold", type=_share, default=None,
                        help="link only points whose score is at least this")
    parser.add_argument("--isbi", action="store_true",
                        help="also write the tracks as ISBI 2012 challenge XML")
    parser.add_argument("--trackmate", action="store_true",
                        help="also write DIR/<stem>_trackmate.xml, a TrackMate file Fiji's "
                             "TrackMate loads")
    parser.add_argument("--image", type=_path, default=None, metavar="IMAGE",
                        help="the time-lapse the points come from: its size and name go "
                             "into the TrackMate file (default: the points' extent)")
    parser.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Read the points, link them, write the tracks and say what was found."""
    from napari_denodet.core.errors import InputError, about_file
    from napari_denodet.core.io import read_points, write_points
    from napari_denodet.core.points import FRAME, SCORE
    from napari_denodet.core.trackfiles import write_isbi_xml, write_trackmate_xml
    from napari_denodet.core.tracks import LinkSettings, link, track_features, tracks_longer

    points = read_points(args.points)
    if FRAME not in points.columns:
        raise InputError(args.points, "has no frame column: tracks need a time-lapse")
    if args.threshold is not None:
        if SCORE not in points.columns:
            raise InputError(args.points, "has no 'score' column to apply --threshold to")
        points = points[points[SCORE] >= args.threshold]
    step = None if args.max_distance == "auto" else args.max_distance
    with about_file(args.points):
        settings = LinkSettings(max_distance=step, gap_frames=args.gap).for_points(points)
        tracks = link(points, settings)
    tracks = tracks_longer(tracks, args.min_length)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.points.stem.removesuffix("_points")
    written = [write_points(args.out / f"{stem}_tracks.csv", tracks, overwrite=args.overwrite)]
    if args.isbi:
        written.append(write_isbi_xml(args.out / f"{stem}_tracks.xml", tracks,
                                      overwrite=args.overwrite))
    if args.trackmate:
        written.append(write_trackmate_xml(
            args.out / f"{stem}_trackmate.xml", tracks, _shape(args, points),
            image=str(args.image or ""), max_distance=settings.max_distance,
            gap_frames=args.gap, overwrite=args.overwrite))
    features = track_features(tracks)
    length = f", median length {features['length'].median():.0f} frames" if len(
        features) else ""
    how = " (estimated from the points)" if step is None else ""
    print(f"{args.points}: {len(features)} tracks from {len(tracks)} points{length}, "
          f"largest step {settings.max_distance:g} px{how}; wrote "
          + ", ".join(str(path) for path in written))
    return 0


def _shape(args: argparse.Namespace, points) -> tuple[int, int, int]:
    # (frames, height, width): the image's, else the smallest that holds the points.
    import numpy as np

    from napari_denodet.core.errors import InputError
    from napari_denodet.core.io import read_image
    from napari_denodet.core.points import FRAME, X, Y

    if args.image is not None:
        shape = tuple(int(n) for n in read_image(args.image).shape)
        if len(shape) != 3:
            raise InputError(args.image, f"is not a time-lapse (shape {shape})")
        return shape
    if points.empty:
        return (1, 1, 1)
    return (int(points[FRAME].max()) + 1, int(np.ceil(points[Y].max())) + 1,
            int(np.ceil(points[X].max())) + 1)
