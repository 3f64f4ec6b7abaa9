"""Reading images, and writing images and denoised stacks, frame by frame.

Images come back as ``(t, y, x)`` stacks or ``(y, x)`` images, memory-mapped where the
file allows it (uncompressed TIFF, MRC) or as a lazy dask array (Zarr and OME-Zarr), so
opening a large stack costs nothing until frames are read. Anything else — colour
images, 3D volumes, extra dimensions — is refused with an
:class:`~napari_denodet.core.errors.InputError` naming the file and the problem, unless
the caller states the axes. :func:`load_block` brings a batch of frames into memory and
gives the pages of a memory map back afterwards, so streaming through a stack larger
than memory keeps the process's resident memory at the size of a batch.

Denoised stacks are written frame by frame (:func:`open_denoised_output`) into a TIFF
or an OME-Zarr that becomes visible under its name only when complete.

Points files (CSV, STAR, BOX) are read and written by
:mod:`napari_denodet.core.pointfiles`, and every write is atomic
(:mod:`napari_denodet.core.atomic`); both are importable from here too.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from napari_denodet.core.atomic import (
    _check_destination,
    _move_into_place,
    _temporary_file,
    atomic_write,
    writing_to,
)
from napari_denodet.core.errors import InputError
from napari_denodet.core.formats import (
    check_pixel_type,
    import_zarr,
    read_mrc,
    read_picture,
    read_tiff,
    read_zarr,
)
from napari_denodet.core.pointfiles import POINTS_SUFFIXES, read_points, write_points

__all__ = ["EAGER_BYTE_SWAP_BYTES", "IMAGE_SUFFIXES", "MRC_SUFFIXES", "PICTURE_SUFFIXES",
           "POINTS_SUFFIXES", "TIFF_SUFFIXES", "ZARR_SUFFIXES", "DiscardedOutput",
           "FrameWriter", "TiffFrameWriter", "ZarrFrameWriter", "atomic_write", "check_axes",
           "is_zarr", "load_block", "open_denoised_output", "read_image", "read_points",
           "release_pages", "write_points", "write_tiff"]
from napari_denodet.core.partial import new_partial_dir, release

TIFF_SUFFIXES = (".tif", ".tiff")
MRC_SUFFIXES = (".mrc", ".mrcs", ".map", ".st")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
ZARR_SUFFIXES = (".zarr",)
IMAGE_SUFFIXES = TIFF_SUFFIXES + MRC_SUFFIXES + PICTURE_SUFFIXES + ZARR_SUFFIXES
#: Files in a byte order other than the machine's are converted to it in memory up to
#: this size, and lazily (a dask array, frame by frame) beyond it.
EAGER_BYTE_SWAP_BYTES = 256 * 2**20

_TIME_AXES = "TIQ"  # tifffile's names for a time-like leading axis (I, Q: unnamed pages)
#: The letters a caller may give as axes: T (time, frames), Y (rows), X (columns); Z, C
#: and S name what an axis is (a volume, channels, colour samples) so that it is refused
#: as such, or dropped when it has a single entry.
AXIS_LETTERS = "TZCSYX"


def _suffix(path: Path) -> str:
    return path.suffix.lower()


# ------------------------------------------------------------------------------ images


def read_image(path: str | os.PathLike, axes: str | None = None) -> Any:
    """Read a 2D image or a 2D+t stack.

    Parameters
    ----------
    path : str or os.PathLike
        A TIFF, MRC (``.mrc``, ``.mrcs``, ``.map``), PNG or JPEG file, or a Zarr array or
        OME-Zarr image folder (``.zarr``; the first, full-resolution level).
    axes : str, optional
        The file's axes when its metadata is missing or wrong, one letter per dimension
        from ``T`` (time or frames), ``Y``, ``X``, e.g. ``"TYX"`` to read a stack that
        its metadata calls a Z-stack as a time-lapse (see :func:`check_axes`: images are
        never transposed, so ``Y`` comes right before ``X``).

    Returns
    -------
    numpy.ndarray or dask.array.Array
        ``(t, y, x)`` or ``(y, x)``, in the file's own dtype (in the machine's byte
        order); a read-only memory map where the file allows one, a dask array for Zarr
        and for files larger than :data:`EAGER_BYTE_SWAP_BYTES` in the other byte order.

    Raises
    ------
    InputError
        When the file is missing, unreadable, not a single-channel 2D image or 2D+t
        stack of real numbers, or claims more than it holds or memory allows (see
        :mod:`napari_denodet.core.limits`).
    """
    path = Path(path)
    if axes is not None:
        try:
            axes = check_axes(axes)
        except ValueError as exc:
            raise InputError(path, str(exc)) from None
    if not path.exists():
        raise InputError(path, "no such file")
    suffix = _suffix(path)
    if is_zarr(path):
        data, file_axes = read_zarr(path)
    elif path.is_dir():
        raise InputError(path, "is a folder, not an image file")
    elif suffix in TIFF_SUFFIXES:
        data, file_axes = read_tiff(path)
    elif suffix in MRC_SUFFIXES:
        data, file_axes = read_mrc(path)
    elif suffix in PICTURE_SUFFIXES:
        data, file_axes = read_picture(path)
    else:
        raise InputError(path, f"unsupported file type '{suffix}' (napari-denodet reads "
                               f"{', '.join(IMAGE_SUFFIXES)})")
    check_pixel_type(path, data.dtype)
    data = _to_standard_axes(path, data, axes or file_axes, from_user=axes is not None)
    if not data.dtype.isnative:
        data = _in_native_byte_order(data)
    return data


def check_axes(axes: str) -> str:
    """Check axes a user gives for an image; return them in upper case.

    Parameters
    ----------
    axes : str
        One letter per dimension from :data:`AXIS_LETTERS`, each at most once, with ``Y``
        (rows) right before ``X`` (columns) and nothing after ``X`` but ``S`` (colour
        samples): ``"YX"``, ``"TYX"``, ``"YXS"``. Images are not transposed: a file
        stored column by column must be transposed first.

    Returns
    -------
    str
        The axes in upper case.

    Raises
    ------
    ValueError
        For any other string.
    """
    text = str(axes).strip().upper()
    unknown = "".join(sorted(set(text) - set(AXIS_LETTERS)))
    if unknown:
        raise ValueError(f"axes '{axes}': unknown letter(s) '{unknown}' (use T for time or "
                         f"frames, Y for rows, X for columns, e.g. TYX)")
    repeated = "".join(sorted({c for c in text if text.count(c) > 1}))
    if repeated:
        raise ValueError(f"axes '{axes}': '{repeated}' given more than once")
    if text.rstrip("S")[-2:] != "YX":
        raise ValueError(f"axes '{axes}' must end in YX (rows, then columns), e.g. TYX; "
                         f"napari-denodet does not transpose images")
    return text


def _in_native_byte_order(data: Any) -> Any:
    # Fiji writes big-endian TIFFs; torch and many readers refuse that byte order. A
    # small file is converted in memory; a large one lazily, so it is never read whole.
    native = data.dtype.newbyteorder("=")
    if hasattr(data, "compute") or data.nbytes <= EAGER_BYTE_SWAP_BYTES:
        return data.astype(native)
    import dask.array as da

    chunks = (1, *data.shape[1:]) if data.ndim == 3 else data.shape
    return da.from_array(data, chunks=chunks, asarray=True).astype(native)


def is_zarr(path: str | os.PathLike) -> bool:
    """Tell whether ``path`` is a Zarr array or group folder (by suffix or by content).

    Parameters
    ----------
    path : str or os.PathLike
        Any path.

    Returns
    -------
    bool
        True for a folder named ``*.zarr`` or holding Zarr metadata.
    """
    path = Path(path)
    if not path.is_dir():
        return False
    return _suffix(path) in ZARR_SUFFIXES or any(
        (path / name).is_file() for name in (".zarray", ".zgroup", "zarr.json"))


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


# ------------------------------------------------------------------ streaming frames


def load_block(block: Any) -> np.ndarray:
    """Bring a block of frames (a slice of an image or stack) into memory.

    Parameters
    ----------
    block : array_like
        A numpy array, a memory map, a dask array or anything :func:`numpy.asarray`
        takes.

    Returns
    -------
    numpy.ndarray
        The block's values. A dask block is computed on the calling thread (no thread
        pool, nothing scheduled on a cluster); a block of a read-only memory map is
        copied and its pages are given back to the operating system (:func:`release_pages`).
    """
    if hasattr(block, "compute"):
        return np.asarray(block.compute(scheduler="synchronous"))
    if isinstance(block, np.memmap):
        values = np.array(block)
        release_pages(block)
        return values
    return np.asarray(block)


def release_pages(block: np.ndarray) -> None:
    """Drop the resident pages of a slice of a read-only memory map (Linux).

    Pages of a memory-mapped file that were read stay mapped, and count in the process's
    resident memory, until memory runs short: streaming through a stack larger than
    memory would look like holding all of it. Dropping them after each batch keeps the
    resident memory at the size of a batch; the data stays in the OS file cache, and
    reading it again just maps it again. Anything other than a C-contiguous slice of a
    read-only :class:`numpy.memmap` is left alone.

    Parameters
    ----------
    block : numpy.ndarray
        Usually a slice of a :class:`numpy.memmap` opened with ``mode="r"``.
    """
    handle = getattr(block, "_mmap", None)
    if (handle is None or getattr(block, "mode", None) != "r" or block.nbytes == 0
            or not block.flags.c_contiguous or not hasattr(mmap, "MADV_DONTNEED")):
        return
    base = np.frombuffer(handle, dtype=np.uint8).ctypes.data
    start = block.ctypes.data - base
    page = mmap.PAGESIZE
    first = start // page * page
    last = min(len(handle), -(-(start + block.nbytes) // page) * page)
    # Dropping clean pages of a shared read-only mapping loses nothing.
    with contextlib.suppress(OSError, ValueError):
        handle.madvise(mmap.MADV_DONTNEED, first, last - first)


class FrameWriter:
    """A float32 image or stack on disk, written frame by frame, visible when complete.

    Supports ``writer[i] = frame`` and ``writer[a:b] = frames`` for a ``(t, y, x)``
    stack and ``writer[...] = image`` for a ``(y, x)`` image, in any order. Data go to
    a temporary name beside the destination; :meth:`commit` moves them under the
    destination's name, :meth:`discard` removes them. As a context manager it commits
    when the block ends normally and discards otherwise (an error, a cancelled run).
    Create writers with :func:`open_denoised_output`.

    Attributes
    ----------
    path : pathlib.Path or None
        The destination (None for :class:`DiscardedOutput`).
    shape : tuple of int
        ``(t, y, x)`` or ``(y, x)``.
    dtype : numpy.dtype
        float32.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, path: Path | None, shape: tuple[int, ...], overwrite: bool) -> None:
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise InputError(path, f"cannot write an image of shape {shape}")
        self.path = path
        self.shape = tuple(int(n) for n in shape)
        self.overwrite = overwrite
        self._done = False

    @property
    def ndim(self) -> int:
        """Number of dimensions (2 or 3)."""
        return len(self.shape)

    def __setitem__(self, key: Any, value: Any) -> None:
        start, stop = self._frames(key)
        frames = np.asarray(value, dtype=np.float32)
        expected = (stop - start, *self.shape[-2:])
        if frames.shape != expected and frames.shape != expected[1:]:
            raise ValueError(f"expected frames of shape {expected}, got {frames.shape}")
        self._write(start, np.ascontiguousarray(frames.reshape(expected)))

    def _frames(self, key: Any) -> tuple[int, int]:
        n = self.shape[0] if self.ndim == 3 else 1
        if self.ndim == 2 and (key is Ellipsis or key == slice(None)):
            return 0, 1
        if self.ndim == 3 and isinstance(key, (int, np.integer)) and 0 <= key < n:
            return int(key), int(key) + 1
        if self.ndim == 3 and isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(n)
            if start < stop:
                return start, stop
        raise IndexError(f"frames are written as writer[i], writer[a:b] (stacks) or "
                         f"writer[...] (images), not writer[{key!r}]")

    def _write(self, start: int, frames: np.ndarray) -> None:
        raise NotImplementedError

    def commit(self) -> Path | None:
        """Finish writing and move the data under the destination's name.

        Returns
        -------
        pathlib.Path or None
            The destination.
        """
        self._done = True
        return self.path

    def discard(self) -> None:
        """Remove what was written; the destination is left as it was."""
        self._done = True

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if self._done:
            return
        if kind is None:
            self.commit()
        else:
            self.discard()


class DiscardedOutput(FrameWriter):
    """A :class:`FrameWriter` that keeps nothing: for runs that want only the points."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__(None, shape, overwrite=False)

    def _write(self, start: int, frames: np.ndarray) -> None:
        pass


class TiffFrameWriter(FrameWriter):
    """Frames written straight into an uncompressed single-channel TIFF.

    The file is laid out by :mod:`tifffile` with its pixel data in one contiguous block
    (an ImageJ hyperstack, or a BigTIFF beyond 4 GB), which is then filled with plain
    file writes: unlike a writable memory map, written frames do not stay in the
    process's resident memory. The result reads back memory-mapped (:func:`read_image`).
    """

    def __init__(self, path: Path, shape: tuple[int, ...], overwrite: bool) -> None:
        import tifffile

        super().__init__(path, shape, overwrite)
        self._tmp = _temporary_file(path, overwrite)
        nbytes = int(np.prod(self.shape)) * 4
        # ImageJ hyperstacks open in Fiji with a time axis; they are classic TIFFs.
        imagej = nbytes < 2**32 - 2**25
        try:
            with writing_to(path):
                offset, _ = tifffile.imwrite(
                    self._tmp, shape=self.shape, dtype="<f4", photometric="minisblack",
                    imagej=imagej, bigtiff=not imagej, returnoffset=True,
                    metadata={"axes": "TYX" if self.ndim == 3 else "YX"})
                self._file = open(self._tmp, "r+b")  # noqa: SIM115 - closed in commit/discard
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            release(self._tmp)
            raise
        self._offset = int(offset)
        self._frame_bytes = self.shape[-1] * self.shape[-2] * 4

    def _write(self, start: int, frames: np.ndarray) -> None:
        with writing_to(self.path):
            self._file.seek(self._offset + start * self._frame_bytes)
            self._file.write(frames.astype("<f4", copy=False).data)

    def commit(self) -> Path:
        """Close the file and move it to the destination (see :class:`FrameWriter`)."""
        try:
            with writing_to(self.path):
                self._file.close()  # closes even when flushing fails (a full disk)
                _move_into_place(self._tmp, self.path, self.overwrite)
        finally:
            self._tmp.unlink(missing_ok=True)
            release(self._tmp)
            self._done = True
        return self.path

    def discard(self) -> None:
        """Close and remove the temporary file."""
        with contextlib.suppress(OSError):  # unflushed frames of a failed run
            self._file.close()
        self._tmp.unlink(missing_ok=True)
        release(self._tmp)
        self._done = True


class ZarrFrameWriter(FrameWriter):
    """Frames written into a single-level OME-Zarr image (version 0.4, chunked tiles).

    Chunks are one frame deep and at most 1024 px on a side, so napari and dask read
    any frame, or any part of a large frame, without touching the rest.
    """

    CHUNK = 1024

    def __init__(self, path: Path, shape: tuple[int, ...], overwrite: bool) -> None:
        zarr = import_zarr(path)
        super().__init__(path, shape, overwrite)
        _check_destination(path, overwrite)
        with writing_to(path):
            self._tmp = new_partial_dir(path)
        names = "tyx"[-self.ndim:]
        axes = [{"name": n, "type": "time" if n == "t" else "space"} for n in names]
        chunks = (1,) * (self.ndim - 2) + tuple(min(n, self.CHUNK) for n in self.shape[-2:])
        try:
            with writing_to(path):
                group = zarr.open_group(str(self._tmp), mode="w", zarr_format=2)
                self._array = group.create_array("0", shape=self.shape, chunks=chunks,
                                                 dtype="float32")
                group.attrs["multiscales"] = [{
                    "version": "0.4", "name": path.stem, "axes": axes,
                    "datasets": [{"path": "0", "coordinateTransformations": [
                        {"type": "scale", "scale": [1.0] * self.ndim}]}],
                }]
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            release(self._tmp)
            raise

    def _write(self, start: int, frames: np.ndarray) -> None:
        with writing_to(self.path):
            if self.ndim == 2:
                self._array[...] = frames[0]
            else:
                self._array[start : start + len(frames)] = frames

    def commit(self) -> Path:
        """Move the finished Zarr folder to the destination (see :class:`FrameWriter`)."""
        try:
            if self.path.exists() or self.path.is_symlink():
                if not self.overwrite:
                    raise InputError(self.path, "already exists; choose another name or "
                                                "allow overwriting (--overwrite)")
                _remove(self.path)
            with writing_to(self.path):
                os.rename(self._tmp, self.path)
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)
            release(self._tmp)
            self._done = True
        return self.path

    def discard(self) -> None:
        """Remove the temporary folder."""
        shutil.rmtree(self._tmp, ignore_errors=True)
        release(self._tmp)
        self._done = True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def open_denoised_output(
    path: str | os.PathLike | None, shape: tuple[int, ...], overwrite: bool = False
) -> FrameWriter:
    """Open a float32 image or stack on disk to be written frame by frame.

    Parameters
    ----------
    path : str or os.PathLike or None
        ``.tif``/``.tiff`` (an uncompressed TIFF, memory-mapped when read back) or
        ``.zarr`` (an OME-Zarr image); None keeps nothing (:class:`DiscardedOutput`).
    shape : tuple of int
        ``(t, y, x)`` or ``(y, x)``.
    overwrite : bool
        Replace an existing destination when the writer commits. Without it an
        existing destination is refused at once and never touched.

    Returns
    -------
    FrameWriter
        Use it as a context manager, or call :meth:`FrameWriter.commit`.

    Raises
    ------
    InputError
        For an unsupported suffix, a missing folder, or an existing destination
        without ``overwrite``.
    """
    if path is None:
        return DiscardedOutput(shape)
    path = Path(path)
    suffix = _suffix(path)
    if suffix in TIFF_SUFFIXES:
        return TiffFrameWriter(path, shape, overwrite)
    if suffix in ZARR_SUFFIXES:
        return ZarrFrameWriter(path, shape, overwrite)
    raise InputError(path, f"unsupported output type '{suffix}' (use .tif or .zarr)")
