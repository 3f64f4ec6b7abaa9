"""Detection over many files: one core function per file, many files on dask.

:func:`detect_file` is the unit of work: it reads one image or stack (lazily), bins it,
streams it through :func:`napari_denodet.core.predict.detect` with the denoised frames
going straight to disk, writes the particles, and returns a *record* (a plain dict:
what ran, how long, what it found, or what failed and why). It never raises for a bad
file, so one broken file cannot stop a batch. :func:`detect_file_steps` is the same work
as a generator (progress after every forward pass) that raises instead, for running a
single file in process.

:func:`run_batch` sends one :func:`detect_file` task per file to ``dask.distributed``:
a local cluster sized to this machine by default, or an existing scheduler by address
(``dask scheduler`` plus ``dask worker`` processes, dask-jobqueue, Coiled...). It yields a
:class:`BatchProgress` per finished file and keeps ``manifest.csv`` and
``manifest.json`` in the output folder up to date. Files whose outputs all exist are
skipped unless the settings say ``overwrite``; a file whose outputs were only partly
written (a killed run, a full disk) gets the missing ones. Only files that the
manifest records as written by napari-denodet (:mod:`napari_denodet.core.manifest`)
count as outputs: a user's file that has an output's name is never skipped, resumed or
replaced. On a remote cluster the workers need napari-denodet installed and must see
the input and output paths (a shared file system).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Generator, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from napari_denodet.core import manifest
from napari_denodet.core import scheduler as _scheduler
from napari_denodet.core.errors import DenodetError, InputError, about_file
from napari_denodet.core.inputs import LIST_SUFFIXES, expand_inputs  # noqa: F401
from napari_denodet.core.manifest import MANIFEST_FIELDS, MANIFEST_NAMES  # noqa: F401
from napari_denodet.core.partial import remove_stale_partials
from napari_denodet.core.progress import Stage
from napari_denodet.core.scheduler import check_scheduler

#: Formats of the denoised output: a TIFF, an OME-Zarr, or nothing.
DENOISED_FORMATS = ("tif", "zarr", "none")


@dataclass(frozen=True)
class DetectSettings:
    """How to detect in each file (plain values: they travel to dask workers).

    Attributes
    ----------
    model : str
        Bundled model name or path of a ``.pt`` file, or ``"auto"`` (the default): on
        each time-lapse, the bundled model that expects the higher F1 there
        (:func:`~napari_denodet.core.choice.choose_model`); on a single image,
        ``fluorescence``.
    threshold : float, optional
        Probability threshold; None chooses it per file (the expected-F1 optimum).
    all_candidates : bool
        Keep every candidate with its score instead of thresholding.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    precision : str
        ``"auto"``, ``"float32"`` or ``"bfloat16"``
        (:func:`~napari_denodet.core.predict.choose_precision`).
    binning : int, optional
        Average ``binning x binning`` pixels before detection; None: the model's
        (:attr:`~napari_denodet.core.models.Model.binning`: the one a fine-tuned model
        was fine-tuned at, else 1).
    batch_size : int, optional
        Frames per forward pass; None lets the engine choose.
    axes : str, optional
        Axes of the inputs when their metadata is missing or wrong, e.g. ``"TYX"``.
    star : bool
        Also write ``<stem>_points.star`` (single images only).
    box_size : int, optional
        Also write ``<stem>_points.box`` with this box size.
    denoised : str
        ``"tif"``, ``"zarr"`` or ``"none"`` (:data:`DENOISED_FORMATS`).
    overwrite : bool
        Redo files whose outputs exist and replace them.
    torch_threads : int, optional
        Threads of the network on each worker; None chooses from the worker's share of
        its machine.
    polarity : str, optional
        ``"dark"``, ``"bright"`` or ``"auto"`` particles; None: the model's (auto for
        micrograph models).
    track : float or str, optional
        Also link a time-lapse's detections into tracks with this largest step (px),
        or ``"auto"`` for a step estimated from the detections, and write
        ``<stem>_tracks.csv`` (:func:`napari_denodet.core.tracks.link`); None: no
        tracks.
    """

    model: str = "auto"
    threshold: float | None = None
    all_candidates: bool = False
    device: str = "auto"
    precision: str = "auto"
    binning: int | None = None
    batch_size: int | None = None
    axes: str | None = None
    star: bool = False
    box_size: int | None = None
    denoised: str = "tif"
    overwrite: bool = False
    torch_threads: int | None = None
    polarity: str | None = None
    track: float | str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.track, str) and self.track != "auto":
            raise InputError(None, f"track must be a largest step in px or 'auto', not "
                                   f"{self.track!r}")
        if self.denoised not in DENOISED_FORMATS:
            raise InputError(None, f"denoised output must be one of "
                                   f"{', '.join(DENOISED_FORMATS)}, not {self.denoised!r}")


@dataclass(frozen=True)
class BatchProgress:
    """Progress of :func:`run_batch`, yielded once per finished (or skipped) file.

    Attributes
    ----------
    stage : Stage
        Always ``Stage.BATCH``.
    step, total : int
        Files done (including skipped and failed ones) and in all.
    record : dict
        The record of the file just finished (see :data:`MANIFEST_FIELDS`).
    """

    stage: Stage
    step: int
    total: int
    record: dict


@dataclass
class BatchResult:
    """What :func:`run_batch` returns.

    Attributes
    ----------
    records : list of dict
        One record per input file, in input order.
    manifest : tuple of pathlib.Path
        ``manifest.csv`` and ``manifest.json``.
    about : dict
        Where it ran (scheduler address or ``"local"``, number of workers) and when.
    """

    records: list[dict]
    manifest: tuple[Path, Path]
    about: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[dict]:
        """Records of the files that failed."""
        return [r for r in self.records if r["status"] == "failed"]


def without_outputs(paths: Sequence[Path], out_dir: str | os.PathLike) -> list[Path]:
    """Drop inputs that napari-denodet wrote from other inputs (a rerun into that folder).

    Parameters
    ----------
    paths : sequence of pathlib.Path
        Inputs, e.g. from :func:`expand_inputs` on a folder that is also the output
        folder.
    out_dir : str or os.PathLike
        The output folder.

    Returns
    -------
    list of pathlib.Path
        ``paths`` without the files that the manifest of ``out_dir`` records as written
        from another of the inputs. A user's ``<stem>_denoised.tif`` stays an input.
    """
    document = manifest.read_manifest(out_dir)
    sources = {os.path.abspath(p) for p in paths}
    kept = []
    for path in paths:
        entry = manifest.written_entry(document, path)
        if entry is None or entry["file"] not in sources or entry["file"] == os.path.abspath(path):
            kept.append(path)
    return kept


def output_paths(path: str | os.PathLike, out_dir: str | os.PathLike,
                 settings: DetectSettings) -> dict[str, Path]:
    """Name the files that detection in ``path`` writes into ``out_dir``.

    Parameters
    ----------
    path : str or os.PathLike
        The input.
    out_dir : str or os.PathLike
        The output folder.
    settings : DetectSettings
        Which outputs are wanted.

    Returns
    -------
    dict of str to pathlib.Path
        ``denoised`` (unless ``settings.denoised`` is ``"none"``), ``star``, ``box``
        and ``tracks`` when asked for, and ``points`` (the CSV, written last).
    """
    stem, out_dir = Path(path).stem, Path(out_dir)
    targets = {}
    if settings.denoised != "none":
        targets["denoised"] = out_dir / f"{stem}_denoised.{settings.denoised}"
    if settings.star:
        targets["star"] = out_dir / f"{stem}_points.star"
    if settings.box_size:
        targets["box"] = out_dir / f"{stem}_points.box"
    if settings.track:
        targets["tracks"] = out_dir / f"{stem}_tracks.csv"
    targets["points"] = out_dir / f"{stem}_points.csv"
    return targets


# --------------------------------------------------------------------------- one file


def _record(path: Path, targets: dict[str, Path], **values: Any) -> dict:
    record = dict.fromkeys(MANIFEST_FIELDS)
    record.update(file=str(path), outputs=[str(p) for p in targets.values()], **values)
    return record


def detect_file_steps(
    path: str | os.PathLike, out_dir: str | os.PathLike, settings: DetectSettings
) -> Generator[Any, None, dict]:
    """Detect particles in one file, streaming; the generator form of :func:`detect_file`.

    Parameters
    ----------
    path : str or os.PathLike
        An image or stack that :func:`napari_denodet.core.io.read_image` reads.
    out_dir : str or os.PathLike
        Output folder (created if missing); see :func:`output_paths`. The outputs to
        write (:func:`~napari_denodet.core.manifest.plan_outputs`) are claimed in its
        manifest first; temporary files that killed runs left for them are removed.
    settings : DetectSettings
        The settings.

    Yields
    ------
    napari_denodet.core.predict.DetectProgress
        After every forward pass; close the generator to stop (nothing is left behind).

    Returns
    -------
    dict
        The record, with status ``"ok"``, or ``"skipped"`` when every output exists.

    Raises
    ------
    DenodetError
        For an unreadable file, bad settings, or outputs that exist and may not be
        replaced (see :func:`~napari_denodet.core.manifest.plan_outputs`).
    """
    from napari_denodet.core.choice import (
        AUTO,
        AUTO_CANDIDATES,
        choose_model,
        looks_like_micrograph,
    )
    from napari_denodet.core.io import read_image
    from napari_denodet.core.models import load_model
    from napari_denodet.core.normalize import non_finite_note
    from napari_denodet.core.resample import binned_shape

    started = time.perf_counter()
    path, out_dir = Path(path), Path(out_dir)
    targets = output_paths(path, out_dir, settings)
    remove_stale_partials(targets.values())
    todo = manifest.plan_outputs(path, targets, asdict(settings))
    if not todo:
        return _record(path, targets, status="skipped")
    _set_torch_threads(settings.torch_threads)
    auto = settings.model == AUTO
    model = load_model(AUTO_CANDIDATES[0] if auto else settings.model)
    binning = model.binning if settings.binning is None else settings.binning
    image = read_image(path, axes=settings.axes)
    if len(image.shape) == 3 and ("star" in targets or "box" in targets):
        raise InputError(path, "STAR and BOX output is for single micrographs, not stacks")
    if len(image.shape) == 2 and "tracks" in targets:
        raise InputError(path, "is a single image: tracks need a time-lapse")
    try:
        shape = binned_shape(image.shape, binning)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    if "denoised" in targets and "denoised" not in todo:
        _check_kept_denoised(targets["denoised"], shape)
    choice = None
    if auto:
        with about_file(path):
            choice = yield from choose_model(image, device=settings.device,
                                             precision=settings.precision,
                                             batch_size=settings.batch_size)
        model = choice.model
    out_dir.mkdir(parents=True, exist_ok=True)
    writing = {k: targets[k] for k in todo}
    manifest.claim_outputs(out_dir, path, writing.values(), asdict(settings))
    with about_file(path), _open_denoised(path, writing.get("denoised"), shape,
                                          settings) as denoised:
        found = yield from model.detect(image, threshold=settings.threshold,
                                        binning=binning, polarity=settings.polarity,
                                        out=denoised, device=settings.device,
                                        precision=settings.precision,
                                        batch_size=settings.batch_size)
        wrote = _commit(path, denoised, settings)
    if choice is not None:
        found.model_note = choice.note()
        if looks_like_micrograph(path, image.ndim):
            found.model_note += (" - a cryo-EM micrograph? detect with --model micrograph "
                                 "--diameter PX (the particle diameter in pixels)")
    points = found.candidates if settings.all_candidates else found.points
    linking = _link_settings(points, settings) if "tracks" in writing else None
    wrote += _write_points(path, writing, points, settings, linking)
    kept = [p.name for p in targets.values() if p not in wrote]
    notes = [found.summary(), found.warning(),
             f"tracks linked with a largest step of {linking.max_distance:g} px"
             + (" (estimated from the detections)" if settings.track == "auto" else "")
             if linking else None,
             non_finite_note(found.non_finite) if found.non_finite else None,
             f"kept {', '.join(kept)} from an earlier run" if kept and wrote else None,
             "written meanwhile by another run" if not wrote else None]
    return _record(path, targets, status="ok" if wrote else "skipped",
                   frames=image.shape[0] if image.ndim == 3 else 1,
                   shape="x".join(map(str, image.shape)), dtype=str(image.dtype),
                   n_points=len(points),
                   threshold=None if settings.all_candidates else float(found.threshold),
                   seconds=round(time.perf_counter() - started, 3),
                   note="; ".join(n for n in notes if n))


def detect_and_record(
    path: str | os.PathLike, out_dir: str | os.PathLike, settings: DetectSettings
) -> Generator[Any, None, dict]:
    """Run :func:`detect_file_steps`, then merge its record into the folder's manifest.

    Parameters, progress and record are those of :func:`detect_file_steps`; the row
    joins the rows of other runs in ``manifest.csv`` and ``manifest.json``.
    """
    about = manifest.new_run(scheduler="in process", workers=1)
    record = yield from detect_file_steps(path, out_dir, settings)
    about["finished"] = manifest.now()
    manifest.record_results(out_dir, [record], about, asdict(settings), [path])
    return record


def _check_kept_denoised(target: Path, shape: tuple[int, ...]) -> None:
    # A denoised output kept from an earlier run must hold this input's frames.
    from napari_denodet.core.io import read_image

    try:
        found = tuple(read_image(target).shape)
    except (DenodetError, OSError, ValueError):
        found = None
    if found != tuple(shape):
        raise InputError(target, f"already exists but does not hold this input's denoised "
                                 f"frames (shape {found}, expected {tuple(shape)}); use "
                                 f"--overwrite or another --out")


def _open_denoised(path: Path, target: Path | None, shape: tuple[int, ...],
                   settings: DetectSettings):
    from napari_denodet.core.io import open_denoised_output

    try:
        return open_denoised_output(target, shape, settings.overwrite)
    except InputError:
        if target is not None and manifest.written_by_twin(path, target, asdict(settings)):
            return open_denoised_output(None, shape)
        raise


def _commit(path: Path, writer, settings: DetectSettings) -> list[Path]:
    # Move the denoised frames into place; return what was written.
    if writer.path is None:
        writer.commit()
        return []
    try:
        return [writer.commit()]
    except InputError:
        if manifest.written_by_twin(path, writer.path, asdict(settings)):
            return []
        raise


def _link_settings(points, settings: DetectSettings):
    # How the detections are linked: the given step, or one estimated from them.
    from napari_denodet.core.tracks import LinkSettings

    step = None if settings.track == "auto" else float(settings.track)
    return LinkSettings(max_distance=step).for_points(points)


def _write_points(path: Path, writing: dict[str, Path], points,
                  settings: DetectSettings, linking=None) -> list[Path]:
    # The points files to write (the tracks: the points linked with ``linking``), the
    # CSV last; return what was written.
    from napari_denodet.core.io import write_points
    from napari_denodet.core.tracks import link

    wrote = []
    for key in ("star", "box", "tracks", "points"):
        if key not in writing:
            continue
        table = link(points, linking) if key == "tracks" else points
        try:
            write_points(writing[key], table, overwrite=settings.overwrite,
                         box_size=settings.box_size if key == "box" else None)
        except InputError:
            if manifest.written_by_twin(path, writing[key], asdict(settings)):
                continue
            raise
        wrote.append(writing[key])
    return wrote


def _set_torch_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def one_line(exc: BaseException) -> str:
    """Describe an exception in one line fit for a manifest or a terminal.

    Parameters
    ----------
    exc : BaseException
        The exception.

    Returns
    -------
    str
        Its message (prefixed by the file for OS errors, by the type for unexpected
        errors), on one line.
    """
    if isinstance(exc, DenodetError):
        text = str(exc)
    elif isinstance(exc, OSError):
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        text = f"{where}{exc.strerror or exc}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def detect_file(
    path: str | os.PathLike, out_dir: str | os.PathLike, settings: DetectSettings,
    stop=None,
) -> dict:
    """Detect particles in one file and write the results; never raise for the file.

    This is the function each dask task runs. Outputs (see :func:`output_paths`) are
    written atomically; the denoised frames are streamed to disk, so memory is bounded
    by a batch of frames, not by the file.

    Parameters
    ----------
    path : str or os.PathLike
        An image or stack.
    out_dir : str or os.PathLike
        Output folder (created if missing).
    settings : DetectSettings
        The settings.
    stop : callable, optional
        Asked after every forward pass; when it returns True the file is given up
        (its temporary files removed, nothing written) and recorded as failed
        (``"interrupted"``).

    Returns
    -------
    dict
        The record (:data:`MANIFEST_FIELDS`): status ``"ok"``, ``"skipped"`` or
        ``"failed"`` with the reason in ``error``, and ``seconds``.
    """
    started = time.perf_counter()
    steps = detect_file_steps(path, out_dir, settings)
    try:
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value
            if stop is not None and stop():
                steps.close()  # removes the temporary files of its outputs
                return _record(Path(path), {}, status="failed", error="interrupted",
                               seconds=round(time.perf_counter() - started, 3))
    except Exception as exc:  # any failure of this file is recorded, not raised
        return _record(Path(path), {}, status="failed", error=one_line(exc),
                       seconds=round(time.perf_counter() - started, 3))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _detect_on_worker(path: Path, out_dir: Path, settings: DetectSettings,
                      workers_per_host: dict[str, int], stop_event: str | None = None
                      ) -> dict:
    # The dask task: give the network this worker's share of its machine's cores (dask
    # starts workers with one OpenMP thread), then detect_file. A running task cannot be
    # cancelled from outside: it gives up at its next forward pass once the batch sets
    # the event named `stop_event` (asked at most every STOP_POLL seconds).
    from distributed import Event, get_worker

    worker = get_worker()
    if settings.torch_threads is None:
        share = workers_per_host.get(worker.host, 1) * max(1, worker.state.nthreads)
        settings = replace(settings, torch_threads=max(1, _cpu_count() // share))
    stop = None
    if stop_event is not None:
        event, asked = Event(stop_event, client=worker.client), [0.0]

        def stop() -> bool:
            now = time.monotonic()
            if now - asked[0] < STOP_POLL:
                return False
            asked[0] = now
            return event.is_set()

    return {**detect_file(path, out_dir, settings, stop), "worker": worker.address}


#: Seconds between a dask task's looks at the batch's stop event.
STOP_POLL = 0.25


# ------------------------------------------------------------------------------ batch


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None, n_workers: int | None = None, n_tasks: int | None = None
) -> Iterator[tuple[Any, dict]]:
    """Connect to a dask scheduler, or start a local cluster sized to this machine.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:port``), checked first
        (:func:`check_scheduler`). By default a :class:`distributed.LocalCluster` is
        started and closed afterwards.
    n_workers : int, optional
        Local workers (processes, one task each at a time); by default one per core,
        but no more than ``n_tasks``. Ignored with ``scheduler``.
    n_tasks : int, optional
        How many tasks will be submitted.

    Yields
    ------
    (distributed.Client, dict)
        The client, and what it runs on: ``scheduler`` and ``workers``; for a local
        cluster also ``torch_threads`` (each worker's share of the cores).
    """
    from distributed import Client, LocalCluster

    if scheduler is not None:
        check_scheduler(scheduler)  # the client itself can wait forever on a mute peer
        try:
            client = Client(scheduler, timeout=_scheduler.SCHEDULER_TIMEOUT,
                            set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(None, f"cannot reach the dask scheduler at {scheduler} "
                                   f"({one_line(exc)})") from None
        with client:
            workers = client.scheduler_info(n_workers=-1)["workers"]
            yield client, {"scheduler": scheduler, "workers": len(workers)}
        return
    cores = _cpu_count()
    n = n_workers or max(1, min(cores, n_tasks or cores))
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=":0", scheduler_kwargs={"dashboard": False},
                           silence_logs=logging.ERROR)
    with cluster, Client(cluster, set_as_default=False) as client:
        yield client, {"scheduler": "local", "workers": n,
                       "torch_threads": max(1, cores // n)}


def _check_unique_names(paths: Sequence[Path], out_dir: Path,
                        settings: DetectSettings) -> None:
    seen: dict[Path, Path] = {}
    for path in paths:
        target = output_paths(path, out_dir, settings)["points"]
        if target in seen:
            raise InputError(path, f"has the same name as {seen[target]}: their results "
                                   f"would overwrite each other in {out_dir} (rename one, "
                                   f"or run them into separate --out folders)")
        seen[target] = path


def run_batch(
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    settings: DetectSettings,
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
) -> Generator[BatchProgress, None, BatchResult]:
    """Detect particles in many files, one dask task per file.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        Input files (see :func:`expand_inputs` to build it from folders and globs).
    out_dir : str or os.PathLike
        Output folder for every file's results and the manifest; each record is merged
        into the manifest as its file finishes, beside the rows of other runs
        (:func:`napari_denodet.core.manifest.record_results`).
    settings : DetectSettings
        The settings, the same for every file.
    scheduler : str, optional
        Address of an existing dask scheduler (checked first, within
        :data:`napari_denodet.core.scheduler.SCHEDULER_TIMEOUT`); by default a local
        cluster.
    n_workers : int, optional
        Local workers (default: one per core, at most one per file).

    Yields
    ------
    BatchProgress
        One per file, as files finish (skipped and refused files first). Closing the
        generator cancels the files not yet started and, once the local cluster is
        down, removes the temporary files of their outputs.

    Returns
    -------
    BatchResult
        Every record, in input order, and the manifest's paths.
    """
    paths = [Path(p).absolute() for p in paths]
    out_dir = Path(out_dir).absolute()
    _check_unique_names(paths, out_dir, settings)
    if scheduler is not None:
        check_scheduler(scheduler)  # before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    about = manifest.new_run()
    plain = asdict(settings)
    targets = {path: output_paths(path, out_dir, settings) for path in paths}
    remove_stale_partials([out_dir / name for name in MANIFEST_NAMES]
                          + [p for t in targets.values() for p in t.values()])
    document = manifest.read_manifest(out_dir)
    records: dict[Path, dict] = {}
    todo = []
    for path in paths:
        try:
            writing = manifest.plan_outputs(path, targets[path], plain, document)
        except InputError as exc:
            records[path] = _record(path, {}, status="failed", error=one_line(exc))
            continue
        if writing:
            todo.append(path)
        else:
            records[path] = _record(path, targets[path], status="skipped")
    if records:
        manifest.record_results(out_dir, list(records.values()), about, plain, paths)
    for step, record in enumerate(records.values(), start=1):
        yield BatchProgress(Stage.BATCH, step, len(paths), record)
    if todo:
        try:
            yield from _run_on_dask(todo, paths, out_dir, settings, scheduler, n_workers,
                                    records, about)
        finally:  # an interrupted batch: its workers are gone, and so are their files
            remove_stale_partials(p for path in todo for p in targets[path].values())
    about["finished"] = manifest.now()
    ordered = [records[p] for p in paths]
    written = manifest.record_results(out_dir, [], about, plain, paths)
    return BatchResult(ordered, written, about)


def _run_on_dask(todo: list[Path], paths: list[Path], out_dir: Path,
                 settings: DetectSettings, scheduler: str | None, n_workers: int | None,
                 records: dict[Path, dict], about: dict) -> Iterator[BatchProgress]:
    # One task per file; each record goes into the manifest as its file finishes.
    from distributed import Event, as_completed

    with dask_client(scheduler, n_workers, len(todo)) as (client, where):
        stop = Event(f"napari-denodet-stop-{uuid.uuid4().hex}", client=client)
        about.update(where)
        task_settings = replace(settings, torch_threads=settings.torch_threads
                                or where.get("torch_threads"))
        hosts = Counter(w["host"] for w in
                        client.scheduler_info(n_workers=-1)["workers"].values())
        # Keys name the file by its place in the batch: a file name need not be UTF-8.
        futures = {client.submit(_detect_on_worker, path, out_dir, task_settings,
                                 dict(hosts), stop.name,
                                 key=f"detect-{i}-{uuid.uuid4().hex}"): path
                   for i, path in enumerate(todo)}
        try:
            for future in as_completed(futures, loop=client.loop):
                path = futures[future]
                records[path] = _task_record(future, path)
                manifest.record_results(out_dir, [records[path]], about, asdict(settings),
                                        paths)
                yield BatchProgress(Stage.BATCH, len(records), len(paths), records[path])
        finally:
            unfinished = [f for f in futures if not f.done()]
            if unfinished:  # interrupted: running files stop at their next pass
                stop.set()
                client.cancel(unfinished)


def _task_record(future, path: Path) -> dict:
    # A task that raised (its worker died, or was lost) is recorded like a failed file.
    try:
        return future.result()
    except Exception as exc:
        return _record(path, {}, status="failed", error=one_line(exc))
