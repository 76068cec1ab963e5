"""Hostile and unusual input (issue 11): bounded before it runs, refused with a clear message.

Every hostile file is generated here, in tmp_path, with streaming compressors (the test
process never holds the expanded data). The memory-measured cases run the decode in a child
process with an address-space limit, so a regression fails the test (MemoryError, or a peak
over the bound) instead of taking the machine.
"""

from __future__ import annotations

import contextlib
import io as _io
import json
import lzma
import os
import resource
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from pipeline import io, recipe, render, segment, thresholds
from pipeline.errors import InputError

LIMITS = dict(max_bytes=64 * 2**20, max_pixels=2**27)
MB = 2**20


# --------------------------------------------------------------------------------------------
# Builders


def tiff_with_strip(width, height, compression, strip, *, bits=8, sampleformat=1, pages=1,
                    good_strip=None):
    """A hand-made little-endian TIFF: `pages` pages of one strip each.

    Page 1 holds `good_strip` when given (a valid page before the bomb), the others `strip`.
    """
    entries = [(256, 4, width), (257, 4, height), (258, 3, bits), (259, 3, compression),
               (262, 3, 1), (273, 4, "offset"), (277, 3, 1), (278, 4, height),
               (279, 4, "count"), (339, 3, sampleformat)]
    ifd_size = 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    strips = [good_strip if (good_strip is not None and i == 0) else strip for i in range(pages)]
    data_start = 8 + ifd_size * pages
    offsets = []
    position = data_start
    for s in strips:
        offsets.append(position)
        position += len(s)
    for i in range(pages):
        out += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            value = {"offset": offsets[i], "count": len(strips[i])}.get(value, value)
            packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, 1) + packed
        nxt = 8 + ifd_size * (i + 1) if i + 1 < pages else 0
        out += struct.pack("<I", nxt)
    for s in strips:
        out += s
    return bytes(out)


def _stream(compressor, n_bytes):
    parts, chunk = [], b"\0" * (4 * MB)
    while n_bytes > 0:
        k = min(n_bytes, len(chunk))
        parts.append(compressor.compress(chunk[:k]))
        n_bytes -= k
    parts.append(compressor.flush())
    return b"".join(parts)


def zlib_zeros(n_bytes):
    return _stream(zlib.compressobj(9), n_bytes)


def lzma_zeros(n_bytes):
    return _stream(lzma.LZMACompressor(preset=1), n_bytes)


def tiff_bytes(array, **kwargs):
    buffer = _io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def png_bytes(image):
    buffer = _io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def read(data, name="image.tif", **limits):
    return io.read_image_bytes(data, name, **{**LIMITS, **limits})


# --------------------------------------------------------------------------------------------
# Peak memory, measured in a child process under an address-space limit

_CHILD = textwrap.dedent("""
    import json, resource, sys
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from pipeline import io
    from pipeline.errors import InputError
    data = open(sys.argv[1], "rb").read()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        loaded = io.read_image_bytes(data, "f", max_bytes=64 * 2**20, max_pixels=int(sys.argv[3]))
        outcome = ["ok", list(loaded.array.shape)]
    except InputError as exc:
        outcome = ["refused", str(exc)]
    except MemoryError:
        outcome = ["MemoryError", ""]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"outcome": outcome, "peak_mb": (after - before) / 1024}))
""")


@contextlib.contextmanager
def address_space_headroom(extra_bytes):
    """Limit this process's address space to what it maps now plus `extra_bytes`.

    An in-process test that regresses then raises MemoryError instead of swapping the
    machine; the soft limit is put back afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def peak_of_read(tmp_path, data, *, max_pixels=2**27, address_space=3 * 2**30):
    """(outcome, peak RSS growth in MB) of ``read_image_bytes`` on `data` in a child."""
    path = tmp_path / "input.bin"
    path.write_bytes(data)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(address_space),
                           str(max_pixels)], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["outcome"], result["peak_mb"]


# --------------------------------------------------------------------------------------------
# 1. TIFF compression bombs


BOMBS = {
    # name: (compression tag, builder of a strip that expands to ~512 MB (PackBits: 128 MB))
    "zlib": (8, lambda: zlib_zeros(512 * MB)),
    "deflate": (32946, lambda: zlib_zeros(512 * MB)),
    "lzma": (34925, lambda: lzma_zeros(256 * MB)),
    "packbits": (32773, lambda: b"\x81\x00" * (MB)),  # 2 bytes -> 128 zeros each
}


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_tiff_compression_bomb_is_refused_before_it_expands(tmp_path, kind):
    compression, make = BOMBS[kind]
    strip = make()
    data = tiff_with_strip(64, 64, compression, strip)
    outcome, peak = peak_of_read(tmp_path, data)
    assert outcome[0] == "refused", outcome
    assert "expands beyond the 4.0 kB its image needs" in outcome[1]
    assert "refused as a decompression bomb" in outcome[1]
    assert peak < 48, f"{kind} bomb took {peak:.0f} MB"


def test_bomb_on_a_later_page_is_refused(tmp_path):
    good = zlib.compress(np.arange(64 * 64, dtype=np.uint8).tobytes())
    data = tiff_with_strip(64, 64, 8, zlib_zeros(256 * MB), pages=3, good_strip=good)
    outcome, peak = peak_of_read(tmp_path, data)
    assert outcome[0] == "refused" and "on page 2" in outcome[1], outcome
    assert peak < 48


def test_small_strip_bomb_is_bounded_too():
    """A strip small enough to skip the check cannot expand beyond the unchecked bound."""
    strip = zlib_zeros(8 * MB)  # ~8 kB compressed: 8 kB * 1032 < 16 MB, decoded by tifffile
    data = tiff_with_strip(64, 64, 8, strip)
    with pytest.raises(InputError):
        read(data)


def test_corrupt_compressed_strip_gives_a_decode_message():
    strip = b"\xff" * 20_000  # not a zlib stream; large enough to be checked
    with pytest.raises(InputError, match="could not decode image.tif as TIFF"):
        read(tiff_with_strip(64, 64, 8, strip))


def test_lzw_and_zstd_without_imagecodecs_say_so():
    pytest.importorskip("numpy")
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("imagecodecs is installed: LZW decodes")
    for compression in (5, 50000):
        with pytest.raises(InputError, match="imagecodecs|could not decode"):
            read(tiff_with_strip(64, 64, compression, b"\x00" * 100_000))


def test_too_many_pages_refused_before_parsing():
    n = io._MAX_TIFF_PAGES + 1
    strip = zlib.compress(b"\x00\x01" * 2)
    data = tiff_with_strip(2, 2, 8, strip, pages=n)
    with pytest.raises(InputError, match=f"{n:,} TIFF pages, the limit is"):
        read(data)


LEGIT = {
    "zlib strips": dict(compression="zlib"),
    "zlib predictor": dict(compression="zlib", predictor=True),
    "zlib tiles": dict(compression="zlib", tile=(64, 64)),
    "lzma": dict(compression="lzma"),
    "one big deflate strip": dict(compression="zlib", rowsperstrip=4096),
    "uncompressed": dict(),
}


@pytest.mark.parametrize("case", sorted(LEGIT))
def test_legit_compressed_tiffs_still_load_exactly(case):
    rng = np.random.default_rng(3)
    image = (rng.random((300, 700)) * 4000).astype(np.uint16)
    image[:100] = 17  # compressible part: some strips are checked, others not
    loaded = read(tiff_bytes(image, **LEGIT[case]))
    np.testing.assert_array_equal(loaded.array, image)


def packbits(raw: bytes) -> bytes:
    """PackBits of `raw`: runs of one byte repeated, literal chunks of at most 128 bytes."""
    out, i = bytearray(), 0
    while i < len(raw):
        run = 1
        while i + run < len(raw) and run < 128 and raw[i + run] == raw[i]:
            run += 1
        if run > 2:
            out += bytes([257 - run, raw[i]])
            i += run
            continue
        chunk = raw[i:i + 128]
        out += bytes([len(chunk) - 1]) + chunk
        i += len(chunk)
    return bytes(out)


def test_legit_packbits_tiff_loads_exactly():
    rng = np.random.default_rng(12)
    image = rng.integers(0, 255, (1024, 1100), dtype=np.uint8)
    image[:300] = 9  # runs of 128 bytes, stored in 2: expansions up to 64 times
    strip = packbits(image.tobytes())
    assert len(strip) * 64 > io._UNCHECKED_SEGMENT_BYTES  # the strip is checked
    data = tiff_with_strip(1100, 1024, 32773, strip)
    np.testing.assert_array_equal(read(data).array, image)


def test_legit_multipage_stack_and_ome_load_exactly():
    rng = np.random.default_rng(4)
    stack = (rng.random((6, 80, 90)) * 1000).astype(np.uint16)
    for kwargs in (dict(compression="zlib"), dict(compression="zlib", ome=True),
                   dict(compression="lzma", tile=(32, 32))):
        loaded = read(tiff_bytes(stack, photometric="minisblack", **kwargs))
        np.testing.assert_array_equal(loaded.array, stack)


def test_highly_compressible_legit_tiff_loads(tmp_path):
    """A mostly empty label image compresses ~1000:1: checked, then accepted, memory bounded."""
    labels = np.zeros((4096, 4096), np.uint16)
    labels[1000:1010, 2000:2010] = 7
    data = tiff_bytes(labels, compression="zlib", rowsperstrip=4096)
    outcome, peak = peak_of_read(tmp_path, data)
    assert outcome == ["ok", [4096, 4096]]
    assert peak < 3 * 32 + 48  # the 32 MB image and its copies, not a multiple of it


# --------------------------------------------------------------------------------------------
# 5. Large colour PNGs: estimated from the header, converted by blocks


def test_huge_rgba_png_refused_from_its_header(tmp_path):
    image = Image.new("RGBA", (11000, 11000), (10, 200, 30, 128))
    data = png_bytes(image)
    del image
    assert len(data) < 1_000_000
    outcome, peak = peak_of_read(tmp_path, data)
    assert outcome[0] == "refused", outcome
    assert "11000 × 11000 image would take about" in outcome[1]
    assert "the limit is 1024 MB" in outcome[1]
    assert peak < 48


def test_rgba_png_within_budget_converts_near_its_output_size(tmp_path):
    rng = np.random.default_rng(5)
    tile = rng.integers(0, 255, (64, 4000, 4), dtype=np.uint8)
    image = Image.fromarray(np.tile(tile, (50, 1, 1)))  # 3200 x 4000 RGBA, 51 MB decoded
    data = png_bytes(image)
    outcome, peak = peak_of_read(tmp_path, data)
    assert outcome == ["ok", [3200, 4000]]
    # Pillow's copy (4 B/px) + numpy's (4) or: numpy's + RGB channels (3) + float32 gray (4);
    # before: 7 float copies of the channels (~28 B/px)
    assert peak < 12 * 12.8 + 48, f"{peak:.0f} MB for a 12.8 Mpx RGBA PNG"


def test_rgba_conversion_by_blocks_is_unchanged():
    from skimage import color, util

    rng = np.random.default_rng(6)
    for shape, dtype in (((1100, 1300, 4), np.uint8), ((1100, 1300, 3), np.uint16),
                         ((3, 400, 500, 4), np.float32), ((2, 300, 400, 3), np.float64)):
        array = (rng.random(shape) * (255 if dtype in (np.uint8, np.uint16) else 1)).astype(dtype)
        as_float = util.img_as_float32(array) if array.dtype.kind in "ui" else array
        if shape[-1] == 4:
            as_float = color.rgba2rgb(as_float)
        expected = color.rgb2gray(as_float)
        got = io.validate_image(array)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_budget_follows_max_pixels():
    rng = np.random.default_rng(7)
    data = png_bytes(Image.fromarray(rng.integers(0, 255, (100, 100, 4), dtype=np.uint8)))
    assert read(data, "a.png", max_pixels=10_000).array.shape == (100, 100)
    with pytest.raises(InputError, match="would take about .* the limit is 64 MB"):
        # 2**23 pixels allowed -> 64 MB budget; an RGBA 2800 x 2800 needs ~82 MB
        read(png_bytes(Image.new("RGBA", (2800, 2800), (1, 2, 3, 4))), "b.png",
             max_pixels=2**23)


# --------------------------------------------------------------------------------------------
# 9 and 10. Float ranges, wide integers


def test_float_values_too_large_are_refused_at_load():
    rng = np.random.default_rng(8)
    image = rng.random((64, 64)) * 1e302
    with pytest.raises(InputError, match=r"values reach 1e\+302.*divide it by 1e298"):
        read(tiff_bytes(image))
    with pytest.raises(InputError, match="values reach"):
        io.validate_image(-image)


def test_float_range_too_small_is_refused_at_load():
    rng = np.random.default_rng(9)
    with pytest.raises(InputError, match=r"values span only .*multiply it by 1e20\d"):
        read(tiff_bytes(rng.random((64, 64)) * 1e-200))


@pytest.mark.parametrize("scale", [1e99, 1e-90, 2.5e-5])
def test_extreme_but_accepted_floats_segment(scale):
    rng = np.random.default_rng(10)
    image = rng.random((48, 48))
    image[15:35, 15:35] += 1
    image = io.validate_image((image * scale).astype(np.float32 if scale > 1e-30 and scale < 1e30
                                                     else np.float64))
    vmin, vmax = segment.default_thresholds(image)
    for method in ("random_walker", "watershed", "threshold", "hysteresis"):
        r = recipe.default_recipe(vmin, vmax)
        r["segmentation"] = {"name": method, "params": {}}
        result = recipe.run(image, r)
        assert 0 < np.count_nonzero(result.mask) < image.size
        io.labels_to_tiff_bytes(result.labels)


def _blob(rng, n=64):
    """A smooth bright disk on a noisy background, values 0…1: every range of values used."""
    yy, xx = np.mgrid[:n, :n]
    r2 = ((yy - n / 2) ** 2 + (xx - n / 2) ** 2) / (n / 4) ** 2
    return np.clip(np.exp(-r2 ** 2) + 0.05 * rng.random((n, n)), 0, 1)


def _scaled(rng, low, high, dtype):
    values = low + _blob(rng) * (high - low)
    out = np.array([int(v) for v in values.ravel()], dtype=object)  # exact up to 2**64 - 1
    out = np.clip(out, low, high).astype(dtype).reshape(values.shape)
    out[32, 32] = high
    return out


WIDE = {
    "uint64 max": lambda rng: _scaled(rng, 0, 2**64 - 1, np.uint64),
    "int64 wide": lambda rng: _scaled(rng, -2**62, 2**62, np.int64),
    "uint32 wide": lambda rng: _scaled(rng, 0, 2**32 - 1, np.uint32),
    "int32 1e8": lambda rng: _scaled(rng, 0, 10**8, np.int32),
}


@pytest.mark.parametrize("case", sorted(WIDE))
def test_wide_integer_images_work_in_bounded_memory(case):
    import tracemalloc

    image = WIDE[case](np.random.default_rng(11))
    tracemalloc.start()
    try:
        with address_space_headroom(1 << 30):
            loaded = read(tiff_bytes(image))
            a = loaded.array
            vmin, vmax = segment.default_thresholds(a)
            segment.threshold_step(a)
            render.display_range(a)
            counts, edges = render.histogram(a)
            assert counts.sum() == a.size and len(counts) <= 256
            values = thresholds.global_thresholds(a)  # the raw image, not only the filtered
            as_float = thresholds.global_thresholds(a.astype(np.float64))
            for method, value in values.items():  # no method fails (out of memory) on ints
                assert isinstance(value, float) == isinstance(as_float[method], float), value
            for method in ("random_walker", "watershed", "threshold", "hysteresis"):
                r = recipe.default_recipe(vmin, vmax)
                r["segmentation"] = {"name": method, "params": {}}
                result = recipe.run(a, r)
                assert 0 < np.count_nonzero(result.mask) < a.size
                io.labels_to_tiff_bytes(result.labels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * MB, f"{case}: {peak / MB:.0f} MB"


# --------------------------------------------------------------------------------------------
# 8 and 4. Recipe texts and sizes


def _base_recipe():
    return recipe.default_recipe(10.0, 100.0)


TEXT_PLACES = {
    "unit": (lambda r, t: r["measure"].__setitem__("unit", t), "measure → unit"),
    "mode": (lambda r, t: r["segmentation"]["params"].__setitem__("mode", t),
             "segmentation → params → mode"),
    "filter name": (lambda r, t: r["filter"].__setitem__("name", t), "filter → name"),
    "property": (lambda r, t: r["measure"].__setitem__("properties", ["area", t]),
                 "measure → properties → item 2"),
    "operation name": (lambda r, t: r["postprocess"].insert(0, {"name": t}),
                       "postprocess operation 1 → name"),
}
BAD_TEXTS = {"NUL": "a\x00b", "lone surrogate": "µm\ud800", "line break": "a\nb",
             "right-to-left override": "\u202eab", "too long": "x" * 201}


@pytest.mark.parametrize("place", sorted(TEXT_PLACES))
@pytest.mark.parametrize("text", sorted(BAD_TEXTS))
def test_bad_text_anywhere_in_a_recipe_is_refused_naming_the_field(place, text):
    from pipeline.script import to_script

    put, where = TEXT_PLACES[place]
    r = _base_recipe()
    put(r, BAD_TEXTS[text])
    with pytest.raises(InputError) as info:
        recipe.validate(r)
    message = str(info.value)
    assert message.startswith(f"recipe {where}: text ")
    message.encode("utf-8")  # the message itself can be shown
    with pytest.raises(InputError):
        to_script(r)
    with pytest.raises(InputError):
        recipe.loads(json.dumps(r))


def test_bad_key_is_refused_naming_where():
    r = _base_recipe()
    r["measure"]["un\x00it"] = "px"
    with pytest.raises(InputError, match=r"recipe key measure → 'un\\x00it': text must be"):
        recipe.validate(r)
    r = _base_recipe()
    r["postprocess"][0]["params"]["\ud800"] = 1
    with pytest.raises(InputError, match="lone surrogate"):
        recipe.loads(json.dumps(r))  # JSON's "\ud800" escape gives a lone surrogate


def test_valid_unicode_texts_still_pass_and_export():
    from pipeline.script import to_script

    r = _base_recipe()
    r["measure"]["unit"] = "µm"
    source = to_script(recipe.validate(r))
    source.encode("utf-8")
    assert "µm" in source


def test_recipe_size_caps():
    r = _base_recipe()
    r["postprocess"] = [{"name": "closing"}] * 30 + [{"name": "label"}]
    with pytest.raises(InputError, match="postprocess has 31 operations, the limit is 20"):
        recipe.validate(r)
    r["postprocess"] = [{"name": "closing"}] * 10_000 + [{"name": "label"}]
    with pytest.raises(InputError, match="more than 5,000 values"):
        recipe.validate(r)  # refused by the size walk, before 10,000 steps are checked
    r = _base_recipe()
    r["measure"]["properties"] = [[[[[[[["area"]]]]]]]]
    with pytest.raises(InputError, match="nested more than 8 levels deep"):
        recipe.validate(r)
    r = _base_recipe()
    r["measure"]["properties"] = ["area"] * 6000
    with pytest.raises(InputError, match="more than 5,000 values"):
        recipe.validate(r)


def test_recipe_cost_is_estimated_and_refused_before_running():
    r = _base_recipe()
    r["postprocess"] = [{"name": "closing", "params": {"radius": 25}},
                        {"name": "opening", "params": {"radius": 25}},
                        {"name": "label", "params": {}}]
    shape = (2048, 2048)
    assert recipe.estimate_cost(r, shape) == pytest.approx(2048 * 2048 * (4 * 51**2 + 10 + 10))
    mask = np.zeros(shape, bool)
    with pytest.raises(InputError, match=r"would take about 4\.4e\+10 pixel operations on a "
                                         r"2048 × 2048 image \(closing\(radius=25\) most\)"):
        recipe.postprocess_stage(mask, r)  # refused at once: nothing ran on the mask
    with pytest.raises(InputError, match="pixel operations"):
        recipe.filter_stage(np.zeros(shape, np.uint8), r)
    # the same recipe on a small image is fine
    small = np.zeros((200, 200), bool)
    small[50:150, 50:150] = True
    assert recipe.postprocess_stage(small, r).max() == 1
    # a heavy filter on a volume
    heavy = _base_recipe()
    heavy["filter"] = {"name": "nl_means", "params": {"patch_distance": 15}}
    with pytest.raises(InputError, match=r"nl_means\(.*\) most"):
        recipe.check_cost(heavy, (256, 256, 256))
    recipe.check_cost(heavy, (512, 512))


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_random_walker_accepts_the_scale_of_64_bit_images(dtype):
    r = _base_recipe()
    r["segmentation"] = {"name": "random_walker",
                         "params": {"intensity_scale": segment.intensity_scale(dtype)}}
    recipe.validate(r)


LAYOUTS = {
    "strips": dict(compression="zlib", rowsperstrip=7),
    "predictor": dict(compression="zlib", predictor=2),
    "lzma": dict(compression="lzma"),
    "tiles": dict(compression="adobe_deflate", tile=(16, 32), predictor=2),
    "big-endian": dict(compression="zlib", byteorder=">", predictor=2),
    "separate planes": dict(compression="zlib", planarconfig="separate"),
    "ome": dict(compression="zlib", ome=True),
}


# tifffile writes the horizontal predictor (2) for integers only: float images are not
# paired with those layouts (rather than skipped)
DECODE_CASES = [(layout, dtype, shape) for layout in sorted(LAYOUTS)
                for dtype in (np.uint8, np.int16, np.uint32, np.float32, np.float64)
                for shape in ((37, 53), (4, 70, 45), (33, 41, 3))
                if not (LAYOUTS[layout].get("predictor") == 2 and np.dtype(dtype).kind == "f")]


@pytest.mark.parametrize("layout,dtype,shape", DECODE_CASES)
def test_single_pass_tiff_decode_equals_tifffile(layout, dtype, shape):
    kwargs = LAYOUTS[layout]
    rng = np.random.default_rng(13)
    image = (rng.random(shape) * 200).astype(dtype)
    buffer = _io.BytesIO()
    tifffile.imwrite(buffer, image, photometric="rgb" if shape[-1] == 3 else "minisblack",
                     **kwargs)
    data = buffer.getvalue()
    with tifffile.TiffFile(_io.BytesIO(data)) as tif:
        series = tif.series[0]
        expected = series.asarray()
        got = io._decode_tiff_series(tif, series, data, "x.tif")
    assert got is not None and got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_short_strip_falls_back_to_tifffile():
    """A strip shorter than declared is left to tifffile (after the bounded check)."""
    rows = np.arange(64 * 40, dtype=np.uint8)
    data = tiff_with_strip(64, 64, 8, zlib.compress(rows.tobytes()))  # 40 of 64 rows
    with tifffile.TiffFile(_io.BytesIO(data)) as tif:
        assert io._decode_tiff_series(tif, tif.series[0], data, "x.tif") is None
    try:
        loaded = read(data)
    except InputError as exc:
        assert "could not decode" in str(exc)
    else:
        np.testing.assert_array_equal(loaded.array.reshape(-1)[:rows.size], rows)


@pytest.mark.parametrize("tag,head", [(b"zTXt", b"comment\x00\x00"), (b"iCCP", b"icc\x00\x00")])
def test_png_compressed_text_and_profile_bombs_stay_small(tmp_path, tag, head):
    """Pillow caps decompressed text and ICC chunks (PngImagePlugin.MAX_TEXT_CHUNK, 1 MB)."""
    def chunk(kind, payload):
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    png = png_bytes(Image.fromarray((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)))
    data = png[:33] + chunk(tag, head + zlib_zeros(256 * MB)) + png[33:]
    outcome, peak = peak_of_read(tmp_path, data)
    assert outcome[0] == "refused" and "too large" in outcome[1], outcome
    assert peak < 48
