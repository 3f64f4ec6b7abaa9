"""Reading images and reading/writing particle positions.

Images come back as ``(t, y, x)`` stacks or ``(y, x)`` images, memory-mapped where the
file allows it (uncompressed TIFF, MRC), so opening a large stack costs nothing until
frames are read. Anything else — colour images, 3D volumes, extra dimensions — is
refused with an :class:`~napari_denodet.core.errors.InputError` naming the file and
the problem, unless the caller states the axes.

Points are written as CSV in the one schema of :mod:`napari_denodet.core.points`, as
RELION STAR (``_rlnCoordinateX/Y``) or as EMAN ``.box``. Every write is atomic (a
temporary file in the same folder, then a rename) and refuses to replace an existing
file unless asked to.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from napari_denodet.core.errors import InputError
from napari_denodet.core.points import FRAME, SCORE, X, Y, points_table, validate_points_table

TIFF_SUFFIXES = (".tif", ".tiff")
MRC_SUFFIXES = (".mrc", ".mrcs", ".map", ".st")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_SUFFIXES = TIFF_SUFFIXES + MRC_SUFFIXES + PICTURE_SUFFIXES
POINTS_SUFFIXES = (".csv", ".star", ".box")

_TIME_AXES = "TIQ"  # tifffile's names for a time-like leading axis (I, Q: unnamed pages)


def _suffix(path: Path) -> str:
    return path.suffix.lower()


# ------------------------------------------------------------------------------ images


def read_image(path: str | os.PathLike, axes: str | None = None) -> np.ndarray:
    """Read a 2D image or a 2D+t stack.

    Parameters
    ----------
    path : str or os.PathLike
        A TIFF, MRC (``.mrc``, ``.mrcs``, ``.map``), PNG or JPEG file.
    axes : str, optional
        The file's axes when its metadata is missing or wrong, one letter per dimension
        from ``T`` (time or frames), ``Y``, ``X``, e.g. ``"TYX"`` to read a stack that
        its metadata calls a Z-stack as a time-lapse.

    Returns
    -------
    numpy.ndarray
        ``(t, y, x)`` or ``(y, x)``, in the file's own dtype; a read-only memory map
        where the file allows one.

    Raises
    ------
    InputError
        When the file is missing, unreadable, or not a single-channel 2D image or
        2D+t stack.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a folder, not an image file")
    suffix = _suffix(path)
    if suffix in TIFF_SUFFIXES:
        data, file_axes = _read_tiff(path)
    elif suffix in MRC_SUFFIXES:
        data, file_axes = _read_mrc(path)
    elif suffix in PICTURE_SUFFIXES:
        data, file_axes = _read_picture(path)
    else:
        raise InputError(path, f"unsupported file type '{suffix}' (napari-denodet reads "
                               f"{', '.join(IMAGE_SUFFIXES)})")
    data = _to_standard_axes(path, data, axes or file_axes, from_user=axes is not None)
    if not data.dtype.isnative:
        # Fiji writes big-endian TIFFs; torch and many readers refuse that byte order.
        # This costs the memory map: such files are read into memory.
        data = data.astype(data.dtype.newbyteorder("="))
    return data


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError(path, "the TIFF file holds no image")
            series = tif.series[0]
            axes = series.axes
            shape = series.shape
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InputError(path, f"not a readable TIFF file ({exc})") from None
    if 0 in shape:
        raise InputError(path, f"the image is empty (shape {shape})")
    try:
        data = tifffile.memmap(path, mode="r")
        if data.shape != tuple(shape):
            data = data.reshape(shape)
    except Exception:  # compressed or tiled: memory mapping is impossible, read it
        try:
            data = tifffile.imread(path)
        except Exception as exc:
            raise InputError(path, f"cannot read the TIFF pixel data ({exc})") from None
    return data, axes


def _read_mrc(path: Path) -> tuple[np.ndarray, str]:
    import mrcfile
    from mrcfile.utils import data_dtype_from_header

    try:
        with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
            header = mrc.header
            nx, ny, nz = (int(header.nx), int(header.ny), int(header.nz))
            dtype = data_dtype_from_header(header)
            offset = header.nbytes + int(header.nsymbt)
            ispg = int(header.ispg)
    except Exception as exc:
        raise InputError(path, f"not a readable MRC file ({exc})") from None
    if min(nx, ny, nz) <= 0:
        raise InputError(path, f"the MRC header gives an empty image ({nz} x {ny} x {nx})")
    needed = offset + nx * ny * nz * dtype.itemsize
    if os.path.getsize(path) < needed:
        raise InputError(path, f"the file is truncated: the header promises {needed} bytes, "
                               f"the file has {os.path.getsize(path)}")
    data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(nz, ny, nx))
    if nz == 1:
        return data[0], "YX"
    # Space group 0 marks a stack of 2D images (.mrcs); anything else is a volume,
    # unless the suffix says it is a stack.
    is_stack = ispg == 0 or _suffix(path) in (".mrcs", ".st")
    return data, ("TYX" if is_stack else "ZYX")


def _read_picture(path: Path) -> tuple[np.ndarray, str]:
    import imageio.v3 as iio

    try:
        data = iio.imread(path)
    except Exception as exc:
        raise InputError(path, f"not a readable {_suffix(path)[1:].upper()} image "
                               f"({exc})") from None
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        return data, "YXS"
    return data, "YX"[-data.ndim:] if data.ndim <= 2 else "?" * data.ndim


def _to_standard_axes(path: Path, data: np.ndarray, axes: str, from_user: bool) -> np.ndarray:
    axes = axes.upper()
    if len(axes) != data.ndim:
        if from_user:
            raise InputError(path, f"axes '{axes}' do not fit the image's {data.ndim} "
                                   f"dimensions (shape {data.shape})")
        axes = "?" * data.ndim
    # Drop singleton axes (a 1-frame stack, a single channel) before judging the rest.
    keep = [i for i, n in enumerate(data.shape) if n != 1]
    if len(keep) < data.ndim:
        data = data.reshape([data.shape[i] for i in keep])
        axes = "".join(axes[i] for i in keep)
    if "S" in axes and data.shape[axes.index("S")] in (3, 4):
        data, axes = _grey_from_colour(path, data, axes)
    if data.ndim < 2:
        raise InputError(path, f"not an image: shape {data.shape}")
    if data.ndim == 2:
        return data
    if data.ndim == 3:
        lead = axes[0]
        if lead in _TIME_AXES:
            return data
        what = {"Z": "a 3D volume", "C": "a multi-channel image"}.get(
            lead, f"a 3D array with axes '{axes}'")
        raise InputError(path, f"{what} of shape {data.shape}; napari-denodet takes 2D images "
                               f"and 2D+t stacks (if the first axis is time, say so: "
                               f"--axes TYX)")
    raise InputError(path, f"{data.ndim}D data of shape {data.shape} (axes '{axes}'); "
                           f"napari-denodet takes (t, y, x) or (y, x): split channels or "
                           f"positions first")


def _grey_from_colour(path: Path, data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    s = axes.index("S")
    colour = np.moveaxis(np.asarray(data), s, -1)[..., :3]
    first = colour[..., 0]
    # A grey picture saved as RGB (common for JPEG exports) is taken as it is.
    if np.array_equal(colour[..., 1], first) and np.array_equal(colour[..., 2], first):
        return first, axes.replace("S", "")
    raise InputError(path, "a colour (RGB) image; napari-denodet needs a single-channel "
                           "image (convert to greyscale, e.g. Fiji: Image > Type > 16-bit)")


# ------------------------------------------------------------------------- atomic write


def atomic_write(
    path: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False
) -> Path:
    """Write a file through a temporary file in the same folder, then move it in place.

    Parameters
    ----------
    path : str or os.PathLike
        The destination.
    write : callable
        Called with the temporary path; writes the whole file there.
    overwrite : bool
        Replace an existing file. Without it an existing file is never touched.

    Returns
    -------
    pathlib.Path
        The destination.

    Raises
    ------
    InputError
        When the destination exists and ``overwrite`` is False, or its folder is missing.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(path, f"folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise InputError(path, "already exists; choose another name or allow overwriting "
                               "(--overwrite)")
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                    suffix=".partial" + path.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); give it the mode a plain open() would.
    os.chmod(tmp, 0o666 & ~_current_umask())
    try:
        write(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            # A hard link fails if the name was taken meanwhile: no silent clobbering.
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise InputError(path, "already exists; choose another name or allow "
                                       "overwriting (--overwrite)") from None
            except OSError:  # file systems without hard links
                if path.exists():
                    raise InputError(path, "already exists") from None
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_tiff(path: str | os.PathLike, data: np.ndarray, overwrite: bool = False) -> Path:
    """Write a 2D image or a ``(t, y, x)`` stack as a single-channel TIFF, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The destination ``.tif`` file.
    data : numpy.ndarray
        ``(y, x)`` or ``(t, y, x)``.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The destination.
    """
    import tifffile

    data = np.asarray(data)
    axes = "TYX" if data.ndim == 3 else "YX"

    # ImageJ hyperstacks open in Fiji with a time axis; ImageJ knows only these dtypes.
    imagej = data.dtype in (np.uint8, np.uint16, np.float32)

    def write(tmp: Path) -> None:
        # minisblack: a (3, Y, X) stack would otherwise be taken for an RGB image.
        tifffile.imwrite(tmp, data, photometric="minisblack", imagej=imagej,
                         metadata={"axes": axes})

    return atomic_write(path, write, overwrite)


# ------------------------------------------------------------------------------ points


def write_points(
    path: str | os.PathLike,
    table: pd.DataFrame,
    overwrite: bool = False,
    box_size: int | None = None,
) -> Path:
    """Write a points table as CSV, STAR or BOX, chosen by the file suffix.

    Parameters
    ----------
    path : str or os.PathLike
        ``.csv`` (every column), ``.star`` (RELION coordinates and score) or ``.box``
        (EMAN boxes; needs ``box_size``).
    table : pandas.DataFrame
        A points table (see :mod:`napari_denodet.core.points`).
    overwrite : bool
        Replace an existing file.
    box_size : int, optional
        Box edge in pixels, for ``.box``.

    Returns
    -------
    pathlib.Path
        The destination.
    """
    path = Path(path)
    suffix = _suffix(path)
    table = validate_points_table(table)
    if suffix == ".csv":
        return atomic_write(path, lambda tmp: table.to_csv(tmp, index=False), overwrite)
    if suffix in (".star", ".box"):
        _require_single_image(path, table)
        if suffix == ".star":
            text = _star_text(table)
        else:
            if not box_size or box_size <= 0:
                raise InputError(path, "a .box file needs a box size in pixels (--box-size)")
            text = _box_text(table, int(box_size))
        return atomic_write(path, lambda tmp: tmp.write_text(text), overwrite)
    raise InputError(path, f"unsupported points file type '{suffix}' "
                           f"(use {', '.join(POINTS_SUFFIXES)})")


def read_points(path: str | os.PathLike) -> pd.DataFrame:
    """Read a points file written by napari-denodet (CSV), RELION (STAR) or EMAN (BOX).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    pandas.DataFrame
        A points table; STAR and BOX give ``y, x`` (and ``score`` where the STAR file has
        ``_rlnAutopickFigureOfMerit``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    suffix = _suffix(path)
    try:
        if suffix == ".csv":
            table = pd.read_csv(path)
        elif suffix == ".star":
            table = _read_star(path)
        elif suffix == ".box":
            table = _read_box(path)
        else:
            raise InputError(path, f"unsupported points file type '{suffix}' "
                                   f"(use {', '.join(POINTS_SUFFIXES)})")
    except InputError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            ValueError) as exc:
        raise InputError(path, f"cannot parse the file ({str(exc).strip() or 'empty'})") \
            from None
    return validate_points_table(table, source=path)


def _require_single_image(path: Path, table: pd.DataFrame) -> None:
    if FRAME in table.columns and table[FRAME].nunique() > 1:
        raise InputError(path, "STAR and BOX files hold the particles of one micrograph; "
                               "these points span several frames (write CSV instead)")


def _star_text(table: pd.DataFrame) -> str:
    from napari_denodet import __version__

    labels = ["_rlnCoordinateX", "_rlnCoordinateY"]
    columns = [table[X].to_numpy(), table[Y].to_numpy()]
    if SCORE in table.columns:
        labels.append("_rlnAutopickFigureOfMerit")
        columns.append(table[SCORE].to_numpy())
    lines = [f"# written by napari-denodet {__version__}; x = column, y = row, in pixels",
             "", "data_", "", "loop_"]
    lines += [f"{label} #{i}" for i, label in enumerate(labels, start=1)]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in zip(*columns, strict=True)]
    return "\n".join(lines) + "\n"


def _read_star(path: Path) -> pd.DataFrame:
    labels: list[str] = []
    rows: list[list[str]] = []
    best: tuple[list[str], list[list[str]]] | None = None
    in_loop = False
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("data_"):
            if "_rlnCoordinateX" in labels:
                best = (labels, rows)
            labels, rows, in_loop = [], [], False
        elif line.startswith("loop_"):
            in_loop, labels, rows = True, [], []
        elif line.startswith("_"):
            labels.append(line.split()[0])
        elif in_loop:
            rows.append(line.split())
    if "_rlnCoordinateX" in labels:
        best = (labels, rows)
    if best is None or "_rlnCoordinateY" not in best[0]:
        raise InputError(path, "no _rlnCoordinateX/_rlnCoordinateY loop in this STAR file")
    labels, rows = best
    frame = pd.DataFrame(rows, columns=labels) if rows else pd.DataFrame(columns=labels)
    table = {Y: frame["_rlnCoordinateY"].astype(float), X: frame["_rlnCoordinateX"].astype(float)}
    if "_rlnAutopickFigureOfMerit" in labels:
        table[SCORE] = frame["_rlnAutopickFigureOfMerit"].astype(float)
    return points_table(table[Y], table[X], score=table.get(SCORE))


def _box_text(table: pd.DataFrame, box_size: int) -> str:
    # EMAN boxes store the corner of a box_size square: centre minus half a box.
    # Integer pixels, as EMAN2, cryoSPARC and RELION importers expect.
    half = box_size / 2.0
    xs = np.rint(table[X].to_numpy() - half).astype(np.int64)
    ys = np.rint(table[Y].to_numpy() - half).astype(np.int64)
    return "".join(f"{x}\t{y}\t{box_size}\t{box_size}\n" for x, y in zip(xs, ys, strict=True))


def _read_box(path: Path) -> pd.DataFrame:
    values = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        if not raw.strip():
            continue
        parts = raw.split()
        if len(parts) < 4:
            raise InputError(path, f"line {number}: a box line needs x, y, width, height")
        try:
            values.append([float(p) for p in parts[:4]])
        except ValueError:
            raise InputError(path, f"line {number}: not numbers: {raw.strip()!r}") from None
    arr = np.asarray(values, dtype=np.float64).reshape(-1, 4)
    return points_table(arr[:, 1] + arr[:, 3] / 2.0, arr[:, 0] + arr[:, 2] / 2.0)
