"""Large files without copies (issue 9): a TIFF of the data folder is memory-mapped when its
image data is stored as it is (uncompressed, contiguous, native byte order), decoded page by
page into one array otherwise; OME-TIFF and multi-series files are listed and any series can
be read. Files are generated with tifffile in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pipeline import io
from pipeline.errors import InputError
from tests.test_hostile import BOMBS, tiff_with_strip

ROOT = Path(__file__).resolve().parents[1]
LIMITS = {"max_bytes": 256 * 2**20, "max_pixels": 2**27}
MB = 2**20


def _stack(shape=(6, 64, 80), dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)


def _memmap_of(array):
    """The numpy.memmap an array is a view of, or None."""
    while array is not None:
        if isinstance(array, np.memmap):
            return array
        array = array.base if isinstance(array, np.ndarray) else None
    return None


@pytest.fixture
def asarray_calls(monkeypatch):
    """The `out` argument of every TiffFile.asarray call (a spy)."""
    calls = []
    original = tifffile.TiffFile.asarray

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("out"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffFile, "asarray", spy)
    return calls


# --------------------------------------------------------------------------------------------
# Which path reads the file


def test_an_uncompressed_stack_is_memory_mapped_not_copied(tmp_path, asarray_calls):
    stack = _stack()
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    loaded = io.read_image_file(path, **LIMITS)
    assert asarray_calls == ["memmap"]
    mapped = _memmap_of(loaded.array)
    assert mapped is not None, "the array is not a view of a memory map of the file"
    assert Path(mapped.filename) == path.resolve()
    assert not loaded.array.flags.writeable  # a read-only map: the file cannot be changed
    assert loaded.array.dtype == np.uint16 and loaded.array.shape == stack.shape
    np.testing.assert_array_equal(loaded.array, tifffile.imread(path))
    assert io.content_hash(loaded.array) == io.content_hash(stack)


def test_imagej_and_multipage_stacks_are_memory_mapped_too(tmp_path):
    stack = _stack((5, 40, 48), np.uint8)
    tifffile.imwrite(tmp_path / "imagej.tif", stack, imagej=True)
    tifffile.imwrite(tmp_path / "pages.tif", stack, photometric="minisblack", metadata=None)
    for name in ("imagej.tif", "pages.tif"):
        loaded = io.read_image_file(tmp_path / name, **LIMITS)
        assert _memmap_of(loaded.array) is not None, name
        np.testing.assert_array_equal(loaded.array, tifffile.imread(tmp_path / name))


@pytest.mark.parametrize("compression", ["zlib", "lzma"])
def test_a_compressed_stack_is_decoded_page_by_page_into_one_array(tmp_path, monkeypatch,
                                                                    compression):
    stack = _stack()
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack", compression=compression,
                     predictor=compression == "zlib")
    calls = []
    original = io._decode_tiff_series

    def spy(tif, series, data, name):
        calls.append(name)
        return original(tif, series, data, name)

    monkeypatch.setattr(io, "_decode_tiff_series", spy)
    loaded = io.read_image_file(path, **LIMITS)
    assert calls == ["stack.tif"]
    assert _memmap_of(loaded.array) is None
    assert loaded.array.flags.owndata or loaded.array.base.flags.owndata  # one array, no copy
    np.testing.assert_array_equal(loaded.array, tifffile.imread(path))


@pytest.mark.parametrize("case", ["tiled", "big-endian"])
def test_uncompressed_data_that_cannot_be_mapped_is_read_page_by_page(tmp_path, asarray_calls,
                                                                      case):
    stack = _stack((4, 64, 80))
    path = tmp_path / "stack.tif"
    if case == "tiled":
        tifffile.imwrite(path, stack, photometric="minisblack", tile=(16, 16))
    else:  # mapped, it would need a byte-swapped copy
        tifffile.imwrite(path, stack, photometric="minisblack", byteorder=">")
    loaded = io.read_image_file(path, **LIMITS)
    assert "memmap" not in asarray_calls
    assert _memmap_of(loaded.array) is None
    assert loaded.array.dtype == np.dtype("uint16") and loaded.array.dtype.isnative
    np.testing.assert_array_equal(loaded.array, tifffile.imread(path))


def test_uploads_are_still_decoded_from_their_bytes(tmp_path):
    stack = _stack()
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    loaded = io.read_image_bytes(path.read_bytes(), "stack.tif", **LIMITS)
    assert _memmap_of(loaded.array) is None
    np.testing.assert_array_equal(loaded.array, stack)


def test_png_files_still_load(tmp_path):
    from PIL import Image

    image = _stack((30, 40), np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    np.testing.assert_array_equal(io.read_image_file(tmp_path / "a.png", **LIMITS).array, image)
    assert io.tiff_series(tmp_path / "a.png", max_bytes=LIMITS["max_bytes"]) == ()
    with pytest.raises(InputError, match=r"series 1 is out of range: a\.png has 1 image series"):
        io.read_image_file(tmp_path / "a.png", series=1, **LIMITS)


# --------------------------------------------------------------------------------------------
# Memory: no copy of the file, no second copy of the image


def _traced_peak(function):
    tracemalloc.start()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_memory_mapped_read_allocates_next_to_nothing(tmp_path):
    stack = _stack((16, 1024, 1024))  # 32 MB
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    del stack
    loaded, peak = _traced_peak(lambda: io.read_image_file(path, **LIMITS))
    assert loaded.array.nbytes == 32 * MB
    # before: the file's bytes and the decoded array, 64 MB
    assert peak < 4 * MB, f"the read allocated {peak / MB:.1f} MB"
    _, peak = _traced_peak(lambda: io.content_hash(loaded.array))
    assert peak < 4 * MB, f"the hash allocated {peak / MB:.1f} MB"


def test_a_compressed_read_holds_one_array(tmp_path):
    stack = _stack((16, 1024, 1024))  # 32 MB decoded
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack", compression="zlib",
                     rowsperstrip=64)
    del stack
    loaded, peak = _traced_peak(lambda: io.read_image_file(path, **LIMITS))
    assert loaded.array.nbytes == 32 * MB
    # the array and a strip or two; before: the compressed file's bytes as well
    assert peak < 32 * MB + 4 * MB, f"the read allocated {peak / MB:.1f} MB"


_CHILD = textwrap.dedent("""
    import json, resource, sys
    from pipeline import io
    from pipeline.errors import InputError
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        io.read_image_file(sys.argv[1], max_bytes=64 * 2**20, max_pixels=2**27)
        outcome = "ok"
    except InputError as exc:
        outcome = str(exc)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"outcome": outcome, "peak_mb": (after - before) / 1024}))
""")


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_a_compression_bomb_in_the_data_folder_is_refused_before_it_expands(tmp_path, kind):
    compression, make = BOMBS[kind]
    path = tmp_path / "bomb.tif"
    path.write_bytes(tiff_with_strip(64, 64, compression, make()))
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, check=False,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "refused as a decompression bomb" in result["outcome"]
    assert result["peak_mb"] < 48, f"{kind} bomb took {result['peak_mb']:.0f} MB"


def test_the_pixel_and_decode_limits_hold_before_mapping(tmp_path, asarray_calls):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, _stack((8, 64, 64)), photometric="minisblack")
    with pytest.raises(InputError, match="the limit is 10,000 pixels"):
        io.read_image_file(path, max_bytes=LIMITS["max_bytes"], max_pixels=10_000)
    with pytest.raises(InputError, match=r"file is .* the limit is"):
        io.read_image_file(path, max_bytes=1000, max_pixels=2**27)
    assert asarray_calls == []


def test_a_truncated_uncompressed_stack_is_refused(tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, _stack((4, 64, 64)), imagej=True)  # one IFD, then the data
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 5000])
    with pytest.raises(InputError, match="could not decode stack.tif as TIFF"):
        io.read_image_file(path, **LIMITS)


# --------------------------------------------------------------------------------------------
# Multi-series and OME-TIFF files


def _two_series(path, first, second, **kwargs):
    with tifffile.TiffWriter(path, **kwargs) as tif:
        tif.write(first[0], photometric="minisblack", metadata=first[1])
        tif.write(second[0], photometric="minisblack", metadata=second[1])


def test_a_multi_series_file_is_listed_and_each_series_read(tmp_path):
    stack, plane = _stack((5, 32, 40)), _stack((48, 56), np.uint8, seed=1)
    path = tmp_path / "two.tif"
    _two_series(path, (stack, {"axes": "ZYX"}), (plane, {"axes": "YX"}))
    infos = io.tiff_series(path, max_bytes=LIMITS["max_bytes"])
    assert [(i.index, i.shape, i.dtype) for i in infos] == [(0, (5, 32, 40), "uint16"),
                                                          (1, (48, 56), "uint8")]
    assert infos[1].label() == "1: 48 × 56 uint8"
    first = io.read_image_file(path, **LIMITS)
    second = io.read_image_file(path, series=1, **LIMITS)
    np.testing.assert_array_equal(first.array, tifffile.imread(path, series=0))
    np.testing.assert_array_equal(second.array, tifffile.imread(path, series=1))
    assert second.array.shape == (48, 56)
    assert _memmap_of(second.array) is not None
    assert any("TIFF with 2 image series: series 1 (48 × 56, uint8) is shown" in n
               for n in second.notes)


def test_series_of_an_upload_can_be_chosen_too(tmp_path):
    stack, plane = _stack((5, 32, 40)), _stack((48, 56), np.uint8, seed=1)
    path = tmp_path / "two.tif"
    _two_series(path, (stack, {"axes": "ZYX"}), (plane, {"axes": "YX"}))
    data = path.read_bytes()
    assert "only the first is used" in " ".join(io.read_image_bytes(data, "two.tif",
                                                                    **LIMITS).notes)
    np.testing.assert_array_equal(io.read_image_bytes(data, "two.tif", series=1,
                                                      **LIMITS).array, plane)


def test_an_ome_tiff_lists_its_images_with_their_names_and_voxel_sizes(tmp_path):
    stack, plane = _stack((5, 32, 40)), _stack((48, 56), np.uint16, seed=1)
    path = tmp_path / "cells.ome.tif"
    _two_series(path, (stack, {"axes": "ZYX", "Name": "nuclei", "PhysicalSizeX": 0.5,
                               "PhysicalSizeY": 0.5, "PhysicalSizeZ": 2.0}),
                (plane, {"axes": "YX", "Name": "membranes", "PhysicalSizeX": 0.25,
                         "PhysicalSizeY": 0.25}), ome=True)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
    infos = io.tiff_series(path, max_bytes=LIMITS["max_bytes"])
    assert [(i.name, i.kind, i.shape) for i in infos] == [("nuclei", "ome", (5, 32, 40)),
                                                        ("membranes", "ome", (48, 56))]
    assert infos[0].label() == "0: “nuclei” — 5 × 32 × 40 uint16"
    first = io.read_image_file(path, **LIMITS)
    second = io.read_image_file(path, series=1, **LIMITS)
    np.testing.assert_array_equal(first.array, stack)
    np.testing.assert_array_equal(second.array, plane)
    assert (first.voxel_size.z, first.voxel_size.y, first.voxel_size.x) == (2.0, 0.5, 0.5)
    assert first.voxel_size.source == "OME"
    assert (second.voxel_size.z, second.voxel_size.x) == (None, 0.25)
    assert io.voxel_size(path, series=1) == second.voxel_size
    assert io.voxel_size(path) == first.voxel_size
    assert "“membranes”" in " ".join(second.notes)


def test_a_series_out_of_range_is_a_clear_input_error(tmp_path):
    path = tmp_path / "two.tif"
    _two_series(path, (_stack((3, 16, 16)), {"axes": "ZYX"}),
                (_stack((16, 16), seed=1), {"axes": "YX"}))
    with pytest.raises(InputError, match=r"^series 2 is out of range: two\.tif has 2 image "
                                         r"series \(0 … 1\); choose series between 0 and 1\."):
        io.read_image_file(path, series=2, **LIMITS)
    for bad in (-1, 1.5, True, "1", None):
        with pytest.raises(InputError, match=r"^series must be a non-negative integer"):
            io.read_image_file(path, series=bad, **LIMITS)


def test_a_corrupt_series_gives_a_message_and_the_others_still_load(tmp_path):
    stack, plane = _stack((3, 32, 32)), _stack((40, 40), np.uint16, seed=1)
    path = tmp_path / "two.tif"
    _two_series(path, (stack, {"axes": "ZYX"}), (plane, {"axes": "YX"}))
    with tifffile.TiffFile(path) as tif:
        offset = tif.series[1].pages[0].dataoffsets[0]
        count = tif.series[1].pages[0].databytecounts[0]
    data = bytearray(path.read_bytes())
    # the second series' strip now points past the end of the file
    data[offset:offset + count] = b"\x00" * count
    with tifffile.TiffFile(path) as tif:
        entry = tif.series[1].pages[0].tags["StripOffsets"]
        value_offset = entry.valueoffset
    data[value_offset:value_offset + 4] = (len(data) + 10).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="could not decode two.tif as TIFF"):
        io.read_image_file(path, series=1, **LIMITS)
    np.testing.assert_array_equal(io.read_image_file(path, **LIMITS).array, stack)


def test_listing_is_bounded_like_reading(tmp_path):
    path = tmp_path / "x.tif"
    path.write_bytes(b"II*\x00" + (10**6).to_bytes(4, "little") + b"\x00" * 100)
    with pytest.raises(InputError, match="chain of image directories is broken"):
        io.tiff_series(path, max_bytes=LIMITS["max_bytes"])
    (tmp_path / "gif.tif").write_bytes(b"GIF89a" + b"\x00" * 100)
    with pytest.raises(InputError, match="looks like a GIF"):
        io.tiff_series(tmp_path / "gif.tif", max_bytes=LIMITS["max_bytes"])
    with pytest.raises(InputError, match="file is"):
        io.tiff_series(path, max_bytes=10)
    with pytest.raises(InputError, match="was not found"):
        io.tiff_series(tmp_path / "missing.tif", max_bytes=LIMITS["max_bytes"])
