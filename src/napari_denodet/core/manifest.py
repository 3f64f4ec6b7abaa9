"""The output folder's manifest: what ran there, what it found, what napari-denodet wrote.

``manifest.json`` (and its table, ``manifest.csv``) in an output folder holds

* ``files``: one row per input (:data:`MANIFEST_FIELDS`, plus the ``run`` it comes
  from), the latest outcome of each input whichever run produced it;
* ``runs``: when, where and with which settings each run that a row comes from ran;
* ``written``: every output napari-denodet wrote there, by path: the input it came
  from, the settings that matter for its content (:data:`OUTPUT_SETTINGS`) and, once
  written, its identity (inode, size, modification time). Only these files are ever
  skipped as outputs, resumed or replaced; a file of the same name that is not here,
  or whose identity changed, is the user's.

Runs never rewrite the manifest from their own memory: each change takes the folder's
lock (``.manifest.lock``, created with ``O_EXCL``; one older than :data:`LOCK_STALE`
seconds is left over from a killed run and broken), reads the current manifest,
replaces this run's rows by input, and writes both files atomically. Concurrent runs
into one folder, disjoint or not, thus keep each other's records.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

from napari_denodet.core.errors import InputError

#: Columns of ``manifest.csv`` (and keys of every record).
MANIFEST_FIELDS = ("file", "status", "frames", "shape", "dtype", "n_points", "threshold",
                   "seconds", "worker", "outputs", "error", "note")
MANIFEST_NAMES = ("manifest.csv", "manifest.json")
#: The lock file that serialises changes to the manifest.
LOCK_NAME = ".manifest.lock"
#: A lock older than this (s) was left by a killed run; changes take milliseconds.
LOCK_STALE = 30.0
#: Give up waiting for the lock after this long (s): a lock that cannot be broken.
LOCK_WAIT = 120.0
#: Settings that decide an output's content: an output is resumed only if they match.
OUTPUT_SETTINGS = ("model", "binning", "polarity", "axes", "threshold", "all_candidates",
                   "box_size", "track")


def new_run(**about) -> dict:
    """Start the description of a run: its id and start time, plus ``about``."""
    return {"run": uuid.uuid4().hex[:12], "started": now(), **about}


def now() -> str:
    """Return the current time, UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -------------------------------------------------------------------------------- lock


@contextlib.contextmanager
def manifest_lock(out_dir: str | os.PathLike, stale: float | None = None) -> Iterator[None]:
    """Hold the output folder's manifest lock (``.manifest.lock``) for the block.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The output folder (must exist).
    stale : float, optional
        Age (s) beyond which an existing lock is taken for a killed run's and broken;
        default :data:`LOCK_STALE`.
    """
    stale = LOCK_STALE if stale is None else stale
    lock = Path(out_dir) / LOCK_NAME
    token = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}\n".encode()
    delay, deadline = 0.005, time.monotonic() + max(LOCK_WAIT, 2 * stale)
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            _break_if_stale(lock, stale)
            if time.monotonic() > deadline:
                raise InputError(lock, f"another run has held the manifest's lock for over "
                                       f"{max(LOCK_WAIT, 2 * stale):g} s; remove this file "
                                       f"if no run is writing into this folder") from None
            time.sleep(delay)
            delay = min(2 * delay, 0.2)
            continue
        try:
            os.write(fd, token)
        finally:
            os.close(fd)
        break
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if lock.read_bytes() == token:  # not broken meanwhile by someone else
                lock.unlink()


def _break_if_stale(lock: Path, stale: float) -> None:
    try:
        if time.time() - lock.stat().st_mtime <= stale:
            return
        # Move it aside first: of several runs that found it stale, one moves it, and
        # it checks that what it moved is still the stale lock, not a fresh one.
        aside = lock.with_name(f"{lock.name}.{uuid.uuid4().hex}")
        os.rename(lock, aside)
    except OSError:
        return
    try:
        if time.time() - aside.stat().st_mtime <= stale:
            with contextlib.suppress(OSError):  # a fresh lock: give it back
                os.link(aside, lock)
    finally:
        with contextlib.suppress(OSError):
            aside.unlink()


# ------------------------------------------------------------------------------ reading


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """Read ``manifest.json`` of an output folder.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The output folder.

    Returns
    -------
    dict
        The document, with ``files``, ``runs`` and ``written`` always present (empty for
        a folder without a manifest). A manifest of an earlier version, without
        ``written``, vouches for the outputs of its ``ok`` rows.

    Raises
    ------
    InputError
        When the manifest exists but cannot be read: nothing overwrites it then.
    """
    path = Path(out_dir) / MANIFEST_NAMES[1]
    try:
        document = json.loads(path.read_text(errors="surrogateescape"))
        if not isinstance(document, dict) or not isinstance(document.get("files", []), list):
            raise ValueError("not a napari-denodet manifest")
    except (FileNotFoundError, NotADirectoryError):
        return {"files": [], "runs": {}, "written": {}}
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise InputError(path, f"cannot read the manifest ({reason}); move it away to "
                               f"start a new one") from None
    document.setdefault("files", [])
    document.setdefault("runs", {})
    if "written" not in document:
        settings = _output_settings(document.get("settings") or {})
        document["written"] = {output: {"file": row["file"], "settings": settings}
                               for row in document["files"] if row.get("status") == "ok"
                               for output in row.get("outputs") or []}
    return document


def written_entry(document: dict, output: str | os.PathLike,
                  source: str | os.PathLike | None = None) -> dict | None:
    """Return what the manifest says about an existing output napari-denodet wrote.

    Parameters
    ----------
    document : dict
        From :func:`read_manifest`.
    output : str or os.PathLike
        A file (or ``.zarr`` folder) in the output folder.
    source : str or os.PathLike, optional
        The input it should come from.

    Returns
    -------
    dict or None
        The ``written`` entry (``file``, ``settings``, maybe ``identity``), or None when
        the manifest does not vouch for this file: not recorded, from another input, or
        replaced since (its identity changed).
    """
    entry = document["written"].get(os.path.abspath(output))
    if entry is None or (source is not None and entry["file"] != os.path.abspath(source)):
        return None
    if entry.get("identity") is not None and entry["identity"] != identity(output):
        return None
    return entry


def identity(path: str | os.PathLike) -> list[int] | None:
    """Inode, size and modification time of a file (the inode of a folder); None if absent."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if stat.S_ISDIR(info.st_mode):
        return [info.st_ino]
    return [info.st_ino, info.st_size, info.st_mtime_ns]


def _output_settings(settings: dict) -> dict:
    return {name: settings.get(name) for name in OUTPUT_SETTINGS}


def differing_settings(entry: dict, settings: dict) -> list[str]:
    """Return the :data:`OUTPUT_SETTINGS` in which an output's entry and ``settings`` differ."""
    recorded = entry.get("settings") or {}
    return [name for name in OUTPUT_SETTINGS if recorded.get(name) != settings.get(name)]


# ----------------------------------------------------------------------------- planning


def plan_outputs(path: str | os.PathLike, targets: dict[str, Path],
                 settings: dict, document: dict | None = None) -> list[str]:
    """Decide which of a file's outputs to write, from what exists and the manifest.

    Parameters
    ----------
    path : str or os.PathLike
        The input.
    targets : dict of str to pathlib.Path
        Its outputs (:func:`napari_denodet.core.batch.output_paths`).
    settings : dict
        The run's settings (``dataclasses.asdict(DetectSettings)``).
    document : dict, optional
        The output folder's manifest (:func:`read_manifest`); read when not given.

    Returns
    -------
    list of str
        Keys of ``targets`` to write: all of them when none exists (or with
        ``overwrite``), none when all exist (the file is done), else the missing ones:
        the others were written for this input with the same settings by a run that did
        not finish (a kill, a full disk).

    Raises
    ------
    InputError
        When an output's name is taken by a file napari-denodet did not write for this
        input (never replaced, even with ``overwrite``), or by one it wrote with other
        settings (without ``overwrite``).
    """
    existing = {k: p for k, p in targets.items() if p.exists() or p.is_symlink()}
    if not existing:
        return list(targets)
    if document is None:
        document = read_manifest(next(iter(targets.values())).parent)
    entries = {k: written_entry(document, p, path) for k, p in existing.items()}
    for key, entry in entries.items():
        if entry is None:
            other = written_entry(document, existing[key])
            why = (f"napari-denodet wrote it for {other['file']}" if other is not None else
                   f"napari-denodet did not write it for {Path(path).name} (it is not in "
                   f"{MANIFEST_NAMES[1]}); it is left as it is")
            raise InputError(existing[key], f"already exists and {why}: move it away or "
                                            f"choose another --out")
    if settings.get("overwrite"):
        return list(targets)
    if len(existing) == len(targets):
        return []
    for key, entry in entries.items():
        differ = differing_settings(entry, settings)
        if differ:
            raise InputError(existing[key], f"already exists from a run with other "
                                            f"settings ({', '.join(differ)}); use "
                                            f"--overwrite or another --out")
    return [k for k in targets if k not in existing]


def written_by_twin(source: str | os.PathLike, target: Path, settings: dict) -> bool:
    """Tell whether another run wrote ``target`` from ``source`` with these settings meanwhile.

    Two runs over the same files race to move their outputs into place; the one that
    finds an output taken by the other keeps it instead of failing.
    """
    if settings.get("overwrite") or not target.exists():
        return False
    entry = written_entry(read_manifest(target.parent), target, source)
    return entry is not None and not differing_settings(entry, settings)


# ------------------------------------------------------------------------------ writing


def claim_outputs(out_dir: str | os.PathLike, source: str | os.PathLike,
                  outputs: Iterable[str | os.PathLike], settings: dict) -> None:
    """Record, before writing them, that these outputs of ``source`` are napari-denodet's.

    A run killed between two outputs leaves a claim without identity, so the next run
    knows the output that did get written for what it is and writes only the rest.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The output folder.
    source : str or os.PathLike
        The input.
    outputs : iterable of str or os.PathLike
        The outputs about to be written.
    settings : dict
        The run's settings (``dataclasses.asdict(DetectSettings)``).
    """
    claim = {"file": os.path.abspath(source), "settings": _output_settings(settings)}
    with manifest_lock(out_dir):
        document = read_manifest(out_dir)
        for output in outputs:
            document["written"][os.path.abspath(output)] = dict(claim)
        _write(Path(out_dir), document)


def record_results(out_dir: str | os.PathLike, records: Sequence[dict], about: dict,
                   settings: dict, order: Sequence[str | os.PathLike] = ()
                   ) -> tuple[Path, Path]:
    """Merge a run's records into the folder's manifest, under its lock.

    Each record replaces the row of its input; rows of other inputs (other runs, before
    or at the same time) stay. A ``skipped`` record keeps the row an earlier run left
    for that input (its counts), its status saying it was already done. Outputs of
    ``ok`` and ``skipped`` records get their identity recorded; claims of a ``failed``
    input's outputs that were never written are dropped.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The output folder.
    records : sequence of dict
        This run's records (:data:`MANIFEST_FIELDS`); may be empty to update only the
        run's description.
    about : dict
        The run: ``run`` (its id, see :func:`new_run`), ``started``, where it ran, and
        ``finished`` once it has.
    settings : dict
        The run's settings.
    order : sequence of str or os.PathLike
        This run's inputs, in order: their rows come last, in this order.

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        ``manifest.csv`` and ``manifest.json``.
    """
    from napari_denodet import __version__

    out_dir = Path(out_dir).absolute()
    run = about.get("run") or new_run()["run"]
    with manifest_lock(out_dir):
        document = read_manifest(out_dir)
        rows = {row["file"]: row for row in document["files"]}
        written = document["written"]
        for record in records:
            key = os.path.abspath(record["file"])
            row = {**record, "file": key, "run": run}
            earlier = rows.get(key)
            if row["status"] == "skipped" and earlier is not None:
                row = _already_done(earlier, row)
            rows[key] = row
            _update_written(written, row, settings)
        for output in [o for o, e in written.items()
                       if e.get("identity") is not None and identity(o) is None]:
            del written[output]  # removed since; a claim without identity may be in use
        position = {os.path.abspath(p): i for i, p in enumerate(order)}
        ordered = ([r for k, r in rows.items() if k not in position]
                   + sorted((r for k, r in rows.items() if k in position),
                            key=lambda r: position[r["file"]]))
        runs = document["runs"]
        runs[run] = {"napari_denodet": __version__, **about, "settings": dict(settings)}
        used = {r.get("run") for r in ordered}
        counts = Counter(r["status"] for r in ordered)
        top = {k: v for k, v in about.items() if k != "run"}
        document = {"napari_denodet": __version__, **top, "settings": dict(settings),
                    "counts": {s: counts.get(s, 0) for s in ("ok", "failed", "skipped")},
                    "files": ordered,
                    "runs": {k: v for k, v in runs.items() if k in used or k == run},
                    "written": written}
        return _write(out_dir, document)


def _already_done(earlier: dict, row: dict) -> dict:
    # The earlier row's counts, its status saying this run found the file done.
    if earlier["status"] == "skipped":
        return earlier
    if earlier["status"] != "ok":
        return row
    note = "already done" + (f"; {earlier['note']}" if earlier.get("note") else "")
    return {**earlier, "status": "skipped", "outputs": row.get("outputs") or earlier["outputs"],
            "note": note}


def _update_written(written: dict, row: dict, settings: dict) -> None:
    source = row["file"]
    if row["status"] == "failed":
        for output in [o for o, e in written.items()
                       if e["file"] == source and identity(o) is None]:
            del written[output]
        return
    for output in row.get("outputs") or []:
        output = os.path.abspath(output)
        entry = written.get(output)
        found = identity(output)
        if found is None:
            continue
        if entry is None or entry["file"] != source:
            entry = {"file": source, "settings": _output_settings(settings)}
        written[output] = {**entry, "identity": found}


def _write(out_dir: Path, document: dict) -> tuple[Path, Path]:
    import pandas as pd

    from napari_denodet.core.io import atomic_write

    csv_path, json_path = (out_dir / name for name in MANIFEST_NAMES)
    rows = document["files"]
    table = pd.DataFrame([{**r, "outputs": ";".join(r.get("outputs") or [])} for r in rows],
                         columns=list(MANIFEST_FIELDS))
    # Whole numbers stay whole next to the blanks of failed and skipped files.
    table = table.astype({"frames": "Int64", "n_points": "Int64"})
    # JSON escapes file names that are not UTF-8 (\udcff); the CSV keeps their bytes.
    text = json.dumps(document, indent=1) + "\n"
    atomic_write(json_path, lambda tmp: tmp.write_text(text), overwrite=True)
    atomic_write(csv_path, lambda tmp: table.to_csv(tmp, index=False,
                                                    errors="surrogateescape"),
                 overwrite=True)
    return csv_path, json_path
