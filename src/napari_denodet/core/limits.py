"""How much a file may claim before anything is allocated for it.

A header is a claim: a few bytes can announce a frame of 200,000 x 200,000 pixels, a
billion frames or a 2 GB extended header. The readers check each claim here, against
the file's size and against what one frame, one chunk or the whole decoded image needs
in memory, before they allocate or index anything; a claim that cannot be honoured is
refused with an :class:`~napari_denodet.core.errors.InputError` naming the file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

from napari_denodet.core.errors import InputError

#: Largest frame, in pixels (16384 x 16384: the largest cryo-EM super-resolution
#: frames). Detection works on float32 copies of a frame, several at a time.
MAX_FRAME_PIXELS = 2**28
#: Largest number of chunks along one axis of a Zarr array (dask indexes every chunk
#: boundary: a billion one-frame chunks would take gigabytes before the first frame).
MAX_CHUNKS_PER_AXIS = 2**22
#: A compressed image may decode to at most this many times its stored bytes (deflate
#: tops out near 1,000; real images compress by a few times) ...
MAX_COMPRESSION_RATIO = 4096
#: ... unless it decodes to no more than this, which any file may claim.
SMALL_DECODED_BYTES = 64 * 2**20


def available_memory() -> int:
    """Bytes this process can still allocate: free memory, within its address-space limit.

    Returns
    -------
    int
        The smaller of the memory the operating system reports as available and what is
        left under ``RLIMIT_AS``; a large number when neither is known.
    """
    known = [n for n in (_os_available(), _address_space_left()) if n is not None]
    return min(known, default=2**62)


def _os_available() -> int | None:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(AttributeError, OSError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def _address_space_left() -> int | None:
    # What RLIMIT_AS (ulimit -v) still allows: allocations beyond it fail at once.
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/statm") as statm:
            in_use = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        return max(0, soft - in_use)
    return None


def size_text(nbytes: float) -> str:
    """Write a byte count for people: ``1.5 GB``, ``320 MB``, ``12 kB``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} bytes"


def check_frame(path: str | os.PathLike | None, height: int, width: int) -> None:
    """Refuse frames larger than :data:`MAX_FRAME_PIXELS`."""
    height, width = int(height), int(width)
    if height * width > MAX_FRAME_PIXELS:
        raise InputError(path, f"frames of {height} x {width} pixels are larger than "
                               f"napari-denodet handles (at most {MAX_FRAME_PIXELS:,} "
                               "pixels a frame); crop or bin the image first")


def check_in_memory(path: str | os.PathLike | None, nbytes: int, what: str) -> None:
    """Refuse to bring ``nbytes`` into memory when they are not available."""
    free = available_memory()
    if nbytes > free:
        raise InputError(path, f"{what} would take {size_text(nbytes)} of memory, more "
                               f"than is free ({size_text(free)})")


def check_stored(path: str | os.PathLike, claimed: int, what: str = "the header") -> None:
    """Refuse a claim of ``claimed`` stored bytes that the file is too short to hold."""
    size = os.path.getsize(path)
    if claimed > size:
        raise InputError(path, f"the file is truncated: {what} promises {claimed} bytes, "
                               f"the file has {size}")


def check_decoded(path: str | os.PathLike, decoded: int, stored: int) -> None:
    """Refuse compressed data that claims to decode to far more than it could hold."""
    if decoded > max(SMALL_DECODED_BYTES, MAX_COMPRESSION_RATIO * max(stored, 1)):
        raise InputError(path, f"the header claims {size_text(decoded)} of pixels in "
                               f"{size_text(stored)} of compressed data; the file is "
                               "damaged or hostile")
    check_in_memory(path, decoded, "decoding the image")


def check_chunks(path: str | os.PathLike, shape: Sequence[int], chunks: Sequence[int],
                 itemsize: int) -> None:
    """Refuse a chunked array whose chunks cannot be indexed or read one at a time."""
    for axis, (n, c) in enumerate(zip(shape, chunks, strict=True)):
        count = -(-int(n) // max(int(c), 1))
        if count > MAX_CHUNKS_PER_AXIS:
            what = "frames" if axis == 0 and len(shape) > 2 else f"entries along axis {axis}"
            raise InputError(path, f"claims {int(n):,} {what} in {count:,} chunks, more "
                                   f"than napari-denodet can index (at most "
                                   f"{MAX_CHUNKS_PER_AXIS:,} chunks along an axis)")
    chunk_bytes = itemsize
    for n, c in zip(shape, chunks, strict=True):
        chunk_bytes *= min(int(n), int(c))
    check_in_memory(path, chunk_bytes, "one chunk")
