"""The image formats napari-denodet reads: one reader per format, no axis logic.

Each ``read_*`` function takes a path and returns the file's array (memory-mapped, a
lazy dask array, or decoded when the file is compressed) and the axes its metadata
names, after checking what the header claims against the file and memory
(:mod:`napari_denodet.core.limits`) before anything is allocated. Damaged files become
an :class:`~napari_denodet.core.errors.InputError` naming the file, in one line; the
libraries' own warnings and log lines are kept from the user.
:func:`napari_denodet.core.io.read_image` picks the reader and brings the axes to
``(t, y, x)`` or ``(y, x)``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from napari_denodet.core.errors import InputError
from napari_denodet.core.limits import check_chunks, check_decoded, check_frame, check_stored


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def check_pixel_type(path: Path, dtype: np.dtype) -> None:
    """Refuse pixels that are not real numbers (complex, text, records, dates)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise InputError(path, f"complex-valued pixels ({dtype.name}); napari-denodet needs "
                               f"real intensities (save the magnitude or the real part)")
    if dtype.kind not in "biuf":
        raise InputError(path, f"pixels of type {dtype} are not numbers napari-denodet reads")


def import_zarr(path: Path):
    """Import zarr, or say (naming ``path``) that reading Zarr needs it."""
    try:
        import zarr
    except ImportError:
        raise InputError(path, "reading and writing Zarr needs the 'zarr' package "
                               "(pip install zarr)") from None
    return zarr


def read_zarr(path: Path) -> tuple[Any, str]:
    """Read a Zarr array or OME-Zarr image (first level) lazily (dask); give its axes."""
    import dask.array as da

    zarr = import_zarr(path)
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises many types for damaged stores
        raise InputError(path, f"not a readable Zarr folder ({exc})") from None
    axes = None
    if not hasattr(node, "shape"):  # a group: OME-Zarr, or a folder of arrays
        node, axes = _ome_zarr_level(path, node)
    if 0 in node.shape:
        raise InputError(path, f"the image is empty (shape {node.shape})")
    # Missing chunks are legal (the fill value), so nothing bounds a claim by the folder's
    # size: check the frame, the chunk count and one chunk before dask indexes them.
    check_pixel_type(path, node.dtype)
    if len(node.shape) >= 2:
        check_frame(path, *node.shape[-2:])
    check_chunks(path, node.shape, node.chunks, node.dtype.itemsize)
    # Plain arrays carry no axis names: the leading ones are taken as frames.
    return da.from_zarr(node), axes or ("I" * (len(node.shape) - 2) + "YX")[-len(node.shape):]


def _ome_zarr_level(path: Path, group) -> tuple[Any, str | None]:
    attrs = dict(group.attrs)
    multiscales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    if multiscales:
        first = multiscales[0]
        level = group[first["datasets"][0]["path"]]
        names = [a["name"] if isinstance(a, dict) else a for a in first.get("axes") or []]
        axes = "".join(str(n)[:1].upper() for n in names) or None
        return level, axes
    arrays = [name for name, node in group.members() if hasattr(node, "shape")]
    if len(arrays) == 1:
        return group[arrays[0]], None
    raise InputError(path, "a Zarr group without OME-Zarr multiscales metadata; open one "
                           f"of its arrays instead ({', '.join(sorted(arrays)) or 'none'})")


def read_tiff(path: Path) -> tuple[np.ndarray, str]:
    """Read a TIFF's first series, memory-mapped when uncompressed; give its axes."""
    import tifffile

    try:
        with _tifffile_log(path), tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError(path, "the TIFF file holds no image")
            series = tif.series[0]
            axes, shape, dtype = series.axes, series.shape, series.dtype
            offset = series.dataoffset  # None unless the pixels are one uncompressed block
            nbytes = int(series.nbytes)
            stored = None if offset is not None else _tiff_stored_bytes(path, series)
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InputError(path, f"not a readable TIFF file ({exc})") from None
    if 0 in shape:
        raise InputError(path, f"the image is empty (shape {shape})")
    check_pixel_type(path, dtype)
    spatial = [shape[axes.index(a)] for a in "YX" if a in axes]
    check_frame(path, *(spatial if len(spatial) == 2 else shape[-2:]))
    if offset is not None:
        check_stored(path, int(offset) + nbytes)
        try:
            data = tifffile.memmap(path, mode="r")
            return (data if data.shape == tuple(shape) else data.reshape(shape)), axes
        except Exception:  # noqa: S110 - memory mapping is impossible: decode it below
            pass
    check_decoded(path, nbytes, nbytes if stored is None else stored)
    try:
        with _tifffile_log(path):
            data = tifffile.imread(path)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"cannot read the TIFF pixel data ({exc})") from None
    return data, axes


def _tiff_stored_bytes(path: Path, series) -> int:
    # The bytes the pages of a compressed or scattered TIFF claim to hold, all inside
    # their file (a multi-file OME-TIFF's pages lie in several): the bound on what
    # decoding them can honestly give.
    stored = 0
    for page in series.pages:
        if page is None:
            continue
        handle = getattr(getattr(page, "parent", None), "filehandle", None)
        size = handle.size if handle is not None else os.path.getsize(path)
        for start, count in zip(page.dataoffsets, page.databytecounts, strict=False):
            if start + count > size:
                raise InputError(path, f"the file is truncated: a page's data runs to byte "
                                       f"{start + count}, the file has {size}")
            stored += count
    return stored


#: tifffile's log messages that mean the chain of pages (IFDs) is damaged.
_TIFF_DAMAGE = ("circular reference", "invalid page offset", "invalid offset to page",
                "corrupted tag list")


@contextlib.contextmanager
def _tifffile_log(path: Path):
    # tifffile logs what it recovers from, one stderr line each. Keep them from the
    # user; a damaged page chain is refused in one line, the rest was recovered.
    logger = logging.getLogger("tifffile")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    for record in records:
        message = record.getMessage().split("> ", 1)[-1]
        if any(damage in message for damage in _TIFF_DAMAGE):
            raise InputError(path, f"a damaged TIFF file: {message}")


def read_mrc(path: Path) -> tuple[np.ndarray, str]:
    """Read an MRC image, stack or volume, memory-mapped; give its axes."""
    header = _mrc_header(path)
    nx, ny, nz = (int(header.nx), int(header.ny), int(header.nz))
    extended, ispg = int(header.nsymbt), int(header.ispg)
    if extended < 0:
        raise InputError(path, f"the MRC header gives a negative extended header ({extended} "
                               "bytes)")
    offset = header.nbytes + extended
    check_stored(path, offset, "the extended header")
    if min(nx, ny, nz) <= 0:
        raise InputError(path, f"the MRC header gives an empty image ({nz} x {ny} x {nx})")
    try:
        from mrcfile.utils import data_dtype_from_header

        dtype = data_dtype_from_header(header)
    except ValueError as exc:
        raise InputError(path, f"not a readable MRC file ({exc})") from None
    check_pixel_type(path, dtype)
    check_frame(path, ny, nx)
    check_stored(path, offset + nx * ny * nz * dtype.itemsize)
    data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(nz, ny, nx))
    if nz == 1:
        return data[0], "YX"
    # Space group 0 marks a stack of 2D images (.mrcs); anything else is a volume,
    # unless the suffix says it is a stack.
    is_stack = ispg == 0 or _suffix(path) in (".mrcs", ".st")
    return data, ("TYX" if is_stack else "ZYX")


def _mrc_header(path: Path):
    # The 1024-byte header alone, read as mrcfile's permissive mode reads it but without
    # its warnings, and without the extended header, whose size the header claims
    # (mrcfile would read all of it first, up to 2 GB).
    from mrcfile.dtypes import HEADER_DTYPE
    from mrcfile.utils import byte_order_from_machine_stamp, dtype_from_mode

    try:
        with open(path, "rb") as handle:
            raw = handle.read(HEADER_DTYPE.itemsize)
    except OSError as exc:
        raise InputError(path, f"cannot read the file ({exc.strerror or exc})") from None
    if len(raw) < HEADER_DTYPE.itemsize:
        raise InputError(path, f"not a readable MRC file (too short for an MRC header: "
                               f"{len(raw)} bytes)")
    header = np.frombuffer(raw, dtype=HEADER_DTYPE).reshape(()).view(np.recarray)
    try:
        order = byte_order_from_machine_stamp(header.machst)
    except ValueError:
        order = "<"  # an unrecognised stamp: little-endian, as mrcfile assumes
    header = header.view(HEADER_DTYPE.newbyteorder(order)).view(np.recarray)
    for candidate in (header, header.view(header.dtype.newbyteorder()).view(np.recarray)):
        try:
            dtype_from_mode(candidate.mode)  # a stamp that lies about the byte order
            return candidate
        except ValueError:
            continue
    raise InputError(path, f"not a readable MRC file (unknown data mode {int(header.mode)})")


def read_picture(path: Path) -> tuple[np.ndarray, str]:
    """Decode a PNG or JPEG picture; give its axes (``YX``, or ``YXS`` for colour)."""
    import imageio.v3 as iio
    from PIL import Image, UnidentifiedImageError

    kind = _suffix(path)[1:].upper()
    try:
        # Opening reads the header only: check its claim before decoding. PIL's own
        # "decompression bomb" warning stays quiet: these checks replace it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as picture:
                (width, height), bands = picture.size, len(picture.getbands())
                depth = 1 if picture.mode in ("1", "L", "P", "RGB", "RGBA", "LA") else 4
            check_frame(path, height, width)
            check_decoded(path, width * height * bands * depth, os.path.getsize(path))
            data = iio.imread(path, plugin="pillow")
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(path, f"not a readable {kind} image (its contents are not an "
                               f"image the decoder recognises)") from None
    except Image.DecompressionBombError as exc:
        raise InputError(path, f"a {kind} image too large to decode ({exc})") from None
    except Exception as exc:
        raise InputError(path, f"not a readable {kind} image ({exc})") from None
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        return data, "YXS"
    return data, "YX"[-data.ndim:] if data.ndim <= 2 else "?" * data.ndim
