"""Small files that claim huge sizes, and files the readers used to answer in many lines.

A hostile header must be refused in one line naming the file before anything of the
claimed size is allocated: the command-line runs here are limited to 2 GB of address
space (``RLIMIT_AS``), so an allocation of the claimed size fails instead of succeeding
slowly, and only a refusal before it gives the expected line.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings

import mrcfile
import numpy as np
import pytest
import tifffile

from napari_denodet.core.errors import InputError
from napari_denodet.core.io import read_image

resource = pytest.importorskip("resource")

LIMIT = 2 * 2**30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def _cli_limited(*argv: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run([sys.executable, "-m", "napari_denodet.cli", *map(str, argv)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=_limit_memory)


def _one_error_line(result: subprocess.CompletedProcess, path) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"napari-denodet: error: {path}: "), lines[0]
    return lines[0]


# ----------------------------------------------------------------------- hostile claims


def _zarr_claim(folder, shape, chunks, dtype="<u2", fill=0):
    # A Zarr v2 array: metadata only, no chunk files (missing chunks are the fill value).
    folder.mkdir()
    (folder / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": list(shape), "chunks": list(chunks), "dtype": dtype,
        "compressor": None, "fill_value": fill, "order": "C", "filters": None}))
    return folder


def _huge_frame_zarr(tmp_path):
    return _zarr_claim(tmp_path / "frame.zarr", (1, 200000, 200000), (1, 200000, 200000))


def _billion_frames_zarr(tmp_path):
    return _zarr_claim(tmp_path / "frames.zarr", (10**9, 64, 64), (1, 64, 64))


def _huge_chunk_zarr(tmp_path):
    # Frames within the limit, but one chunk of 2 GB: more than the process may take.
    return _zarr_claim(tmp_path / "chunk.zarr", (1, 16000, 16000), (1, 16000, 16000), "<f8")


def _huge_extended_header_mrc(tmp_path):
    path = tmp_path / "extended.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((16, 16), np.float32))
    with open(path, "r+b") as handle:
        handle.seek(92)  # nsymbt: the extended header's size
        handle.write(np.int32(2**31 - 1).tobytes())
    return path


def _truncated_tiff(tmp_path):
    # Tags of an uncompressed 16000 x 16000 float64 image (2 GB) in a file of 4 kB.
    path = tmp_path / "claim.tif"
    tifffile.imwrite(path, shape=(16000, 16000), dtype=np.float64, photometric="minisblack")
    os.truncate(path, 4096)
    return path


def _compressed_tiff_claim(tmp_path):
    # A zlib TIFF of 16 x 16 whose size tags are rewritten to 16000 x 16000 (512 MB).
    path = tmp_path / "zlib.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint16), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        offsets = [tags[name].valueoffset for name in ("ImageWidth", "ImageLength",
                                                       "RowsPerStrip")]
    with open(path, "r+b") as handle:
        for offset in offsets:
            handle.seek(offset)
            handle.write(np.uint32(16000).tobytes())
    return path


@pytest.mark.slow
@pytest.mark.parametrize(("make", "expected"), [
    (_huge_frame_zarr, "200000 x 200000 pixels"),
    (_billion_frames_zarr, "1,000,000,000 frames"),
    (_huge_chunk_zarr, "one chunk would take"),
    (_huge_extended_header_mrc, "extended header promises"),
    (_truncated_tiff, "the file is truncated"),
    (_compressed_tiff_claim, "of compressed data"),
])
def test_hostile_claims_are_refused_before_allocating(tmp_path, make, expected):
    path = make(tmp_path)
    result = _cli_limited("detect", path, "--out", tmp_path / "out", cwd=tmp_path)
    assert expected in _one_error_line(result, path)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_evaluate_refuses_points_too_dense_to_match(tmp_path):
    # 200,000 points on 100 x 100 pixels: 300 million pairs within the gate, once an
    # N x M problem of 6.7 GB. Counted first (no memory), refused in one line.
    rng = np.random.default_rng(0)
    for name in ("pred.csv", "truth.csv"):
        yx = rng.uniform(0, 100, (200000, 2))
        np.savetxt(tmp_path / name, yx, delimiter=",", header="y,x", comments="", fmt="%.3f")
    result = _cli_limited("evaluate", "pred.csv", "truth.csv", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("napari-denodet: error: pred.csv against truth.csv: ")
    assert "too dense" in lines[0]


# --------------------------------------------------------------- one line, not several


@pytest.mark.parametrize("suffix", [".tif", ".mrc"])
def test_complex_pixels_are_refused(tmp_path, suffix):
    # The imaginary part used to be dropped without a word.
    path = tmp_path / f"complex{suffix}"
    data = (np.ones((16, 16)) + 1j).astype(np.complex64)
    if suffix == ".tif":
        tifffile.imwrite(path, data)
    else:
        with mrcfile.new(path) as mrc:
            mrc.set_data(data)
    with pytest.raises(InputError, match="complex-valued pixels") as info:
        read_image(path)
    assert info.value.path == str(path)


def test_complex_zarr_is_refused(tmp_path):
    path = _zarr_claim(tmp_path / "complex.zarr", (8, 8), (8, 8), "<c8", [0.0, 0.0])
    with pytest.raises(InputError, match="complex-valued pixels"):
        read_image(path)


@pytest.mark.parametrize("content", [b"not a png at all", b"\x89PNG\r\n\x1a\n garbage"])
def test_unreadable_png_is_one_line(tmp_path, content):
    # imageio's answer was four lines of backend advice ("pip install imageio[pyav]").
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        read_image(path)
    assert info.value.path == str(path)
    assert "\n" not in str(info.value)
    assert "pip install" not in str(info.value)


def test_input_errors_are_one_line_whatever_they_quote():
    error = InputError("a.png", "not readable (first line\n  second line\nthird)")
    assert str(error) == "a.png: not readable (first line second line third)"


def test_picture_beyond_pils_warning_size_reads_quietly(tmp_path, monkeypatch):
    # PIL warns between MAX_IMAGE_PIXELS and twice that ("decompression bomb", two more
    # lines on stderr, an error under this test suite's warning filter); the size
    # checks of napari-denodet replace that warning.
    from PIL import Image

    path = tmp_path / "large.png"
    Image.new("L", (40, 40), 7).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_image(path)
    assert image.shape == (40, 40)


def test_picture_beyond_pils_error_size_is_one_line(tmp_path, monkeypatch):
    from PIL import Image

    path = tmp_path / "bomb.png"
    Image.new("L", (50, 50)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputError, match="too large to decode") as info:
        read_image(path)
    assert info.value.path == str(path)


def _mrc_bytes(tmp_path, name="plain.mrc"):
    path = tmp_path / name
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.arange(64, dtype=np.float32).reshape(8, 8))
    return path


def test_mrc_header_quirks_read_without_warnings(tmp_path):
    # No map ID and an unknown machine stamp: mrcfile's permissive mode printed a
    # RuntimeWarning for each; the data are read as mrcfile would read them, silently.
    path = _mrc_bytes(tmp_path)
    with open(path, "r+b") as handle:
        handle.seek(208)
        handle.write(b"\0\0\0\0")  # map ID
        handle.write(b"\x99\x99\0\0")  # machine stamp
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_image(path)
    np.testing.assert_array_equal(image, np.arange(64, dtype=np.float32).reshape(8, 8))


def test_mrc_extended_header_longer_than_the_file_is_one_line(tmp_path):
    path = _mrc_bytes(tmp_path)
    with open(path, "r+b") as handle:
        handle.seek(92)
        handle.write(np.int32(100_000).tobytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="truncated: the extended header promises") \
                as info:
            read_image(path)
    assert info.value.path == str(path)


def test_circular_tiff_pages_are_refused_in_one_line(tmp_path, caplog):
    # The last page's "next page" pointer leads back to the first: tifffile logged it
    # (twice) and read on.
    path = tmp_path / "loop.tif"
    tifffile.imwrite(path, np.zeros((2, 8, 8), np.uint8))
    with tifffile.TiffFile(path) as tif:
        first, second = (page.offset for page in tif.pages)
        tags = len(tif.pages[1].tags)
    with open(path, "r+b") as handle:
        handle.seek(second + 2 + tags * 12)
        handle.write(np.uint32(first).tobytes())
    with caplog.at_level(logging.DEBUG), pytest.raises(InputError, match="circular") as info:
        read_image(path)
    assert info.value.path == str(path)
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]
