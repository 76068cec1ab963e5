"""Property-based tests (hypothesis) of the two doors user data comes in by (issue 11).

* The decoder, :func:`pipeline.io.read_image_bytes`, on PNG and TIFF files mutated byte by
  byte (header fields, chunk lengths with their CRCs recomputed, IFD entries, truncations,
  splices) and on TIFFs built by hand with arbitrary tags and strips: it returns an image
  within the limits or raises :class:`InputError`, never anything else, and its memory stays
  bounded (Python / numpy allocations traced; the address space capped, so that a decode
  that would take gigabytes fails with MemoryError instead of taking the machine).
* The recipe validator, :func:`pipeline.recipe.validate` (and :func:`~pipeline.recipe.loads`)
  on arbitrary JSON-like data, arbitrary text and bytes, and on recipes near valid ones
  (real step names, parameters in and out of range, wrong types, odd texts): a valid recipe
  or InputError; a valid recipe is a fixed point of ``validate``, round-trips
  ``dumps`` / ``loads`` and a saved file (``read_file``), and exports a script that compiles.

Deterministic (``derandomize=True``) with modest example counts, no deadline.
"""

from __future__ import annotations

import collections
import functools
import io as _io
import json
import math
import struct
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline import channels, filters, io, measure, postprocess, recipe, segmentation
from pipeline.errors import InputError
from pipeline.script import to_script
from tests import test_hostile as hostile
from tests.test_hostile import address_space_headroom, packbits, tiff_with_strip

MB = 2**20
#: Limits the decoder is called with: a 1 MB file, a 2**18-pixel image (2 MB as float64).
MAX_BYTES, MAX_PIXELS = MB, 2**18
#: Most the traced allocations of one decode may peak at: the largest strip decoded without
#: the bomb check (io._UNCHECKED_SEGMENT_BYTES, 16 MB) and a few copies of the image.
PEAK_BOUND = 48 * MB
#: Address space one decode may add to the process (a hard stop, beyond the traced bound:
#: Pillow's and the codecs' own buffers are not traced).
ADDRESS_SPACE = 1024 * MB

FUZZ = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------------------------
# Seeds: small valid files of every kind the decoder handles


def _png(array, mode=None, **params):
    buffer = _io.BytesIO()
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def _tiff(array, **kwargs):
    buffer = _io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def _seeds():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 255, (24, 31), dtype=np.uint8)
    rgb = rng.integers(0, 255, (20, 18, 3), dtype=np.uint8)
    rgba = rng.integers(0, 255, (17, 21, 4), dtype=np.uint8)
    u16 = (rng.random((19, 23)) * 60000).astype(np.uint16)
    f32 = rng.random((16, 20)).astype(np.float32)
    stack = rng.integers(0, 4000, (3, 12, 14)).astype(np.uint16)
    return [
        ("gray.png", _png(u8)),
        ("rgb.png", _png(rgb)),
        ("rgba.png", _png(rgba)),
        ("palette.png", _png(rgb, "P")),
        ("16bit.png", _png(u16)),
        ("interlaced.png", _png(u8, optimize=False)),
        ("plain.tif", _tiff(u8)),
        ("zlib.tif", _tiff(u16, compression="zlib", predictor=True)),
        ("lzma.tif", _tiff(f32, compression="lzma")),
        ("tiles.tif", _tiff(np.pad(u16, ((0, 13), (0, 9))), compression="zlib", tile=(16, 16))),
        ("rgb.tif", _tiff(rgb, photometric="rgb", compression="zlib")),
        ("stack.tif", _tiff(stack, photometric="minisblack", compression="zlib")),
        ("planar.tif", _tiff(rgb, photometric="rgb", planarconfig="separate")),
        ("bigendian.tif", _tiff(u16, byteorder=">")),
        ("ome.tif", _tiff(stack, ome=True)),
        ("packbits.tif", tiff_with_strip(31, 24, 32773, packbits(u8.tobytes()))),
        ("float64.tif", _tiff(rng.random((10, 11)))),
        ("int32.tif", _tiff(rng.integers(-10**8, 10**8, (9, 13)).astype(np.int32))),
    ]


SEEDS = _seeds()

#: 32-bit values a mutation writes into a header: sizes, offsets and counts at their edges.
EDGE_VALUES = [0, 1, 2, 3, 7, 8, 255, 256, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
               0x80000000, 0xFFFFFFFF, 46341, 1 << 20, 1 << 24]


def _recrc_png(data: bytearray) -> bytearray:
    """Recompute the CRC of every PNG chunk (so that a mutated length, size or field reaches
    the decoder instead of failing its checksum)."""
    out = bytearray(data[:8])
    pos = 8
    while pos + 12 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        end = pos + 12 + length
        if end > len(data):
            break
        kind_and_payload = bytes(data[pos + 4:pos + 8 + length])
        out += data[pos:pos + 8 + length]
        out += struct.pack(">I", zlib.crc32(kind_and_payload) & 0xFFFFFFFF)
        pos = end
    out += data[pos:]
    return out


@st.composite
def mutated_files(draw):
    """A seed file with 1 to 8 mutations (mostly 1 or 2), half of them in its first 256 bytes
    (the header, the first IFD or chunks)."""
    name, data = draw(st.sampled_from(SEEDS))
    data = bytearray(data)
    for _ in range(draw(st.sampled_from([1, 1, 1, 1, 2, 2, 3, 8]))):
        if not data:
            break
        head = min(len(data) - 1, 255)
        pos = draw(st.one_of(st.integers(0, head), st.integers(0, len(data) - 1)))
        op = draw(st.sampled_from(["byte", "flip", "u16", "u32", "truncate", "insert",
                                   "delete", "duplicate"]))
        if op == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op in ("u16", "u32"):
            size = 2 if op == "u16" else 4
            value = draw(st.one_of(st.sampled_from(EDGE_VALUES), st.integers(0, 2**32 - 1)))
            order = "<" if data[:2] == b"II" else ">"
            packed = struct.pack(order + ("H" if size == 2 else "I"), value % (256 ** size))
            data[pos:pos + size] = packed
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        else:  # a part of the file repeated (chunks, IFD entries, strips)
            n = draw(st.integers(1, 512))
            data[pos:pos] = data[pos:pos + n] * draw(st.integers(1, 4))
    if name.endswith(".png") and draw(st.booleans()):
        data = _recrc_png(data)
    return name, bytes(data)


def mostly(good, bad, odds=8):
    """`good`, or `bad` once in `odds` draws or so (a value inside the range picks `bad`:
    hypothesis draws the ends of a range more often)."""
    return st.integers(0, odds - 1).flatmap(lambda i: bad if i == odds // 2 else good)


@functools.lru_cache(maxsize=None)
def _zeros_strip(compression, n_bytes):
    """A strip of `compression` that decodes to `n_bytes` zeros (a bomb when large)."""
    if compression == 34925:
        return hostile.lzma_zeros(n_bytes)
    if compression == 32773:
        return b"\x81\x00" * (n_bytes // 128)  # 2 bytes -> 128 zeros each
    if compression == 1:
        return b"\0" * min(n_bytes, MB)
    return hostile.zlib_zeros(n_bytes)


@st.composite
def hand_made_tiffs(draw):
    """A one-strip TIFF (on up to 3 pages) of arbitrary size, depth, compression and sample
    format, mostly ones the decoder knows, whose strip is random bytes, compressed random
    bytes or compressed zeros that expand to up to 64 MB (a bomb)."""
    width = draw(st.one_of(st.integers(1, 80), st.sampled_from(EDGE_VALUES)))
    height = draw(st.one_of(st.integers(1, 80), st.sampled_from(EDGE_VALUES)))
    bits = draw(mostly(st.sampled_from([8, 16, 32]), st.sampled_from([1, 4, 12, 24, 64, 0,
                                                                     255]), 4))
    compression = draw(mostly(st.sampled_from([8, 32946, 34925, 32773, 1]),
                              st.sampled_from([5, 7, 50000, 2, 3, 0, 65535]), 5))
    sampleformat = draw(mostly(st.just(3 if bits == 32 and draw(st.booleans()) else 1),
                               st.sampled_from([2, 4, 0]), 5))
    kind = draw(st.sampled_from(["raw", "zeros", "zeros", "random"]))
    if kind == "raw":
        strip = draw(st.binary(max_size=2048)) * draw(st.integers(1, 8))
    elif kind == "zeros":
        strip = _zeros_strip(compression, draw(st.sampled_from(
            [0, 1024, 64 * 1024, MB, 16 * MB, 64 * MB])))
    else:
        size = draw(st.integers(0, 64 * 1024))
        strip = zlib.compress(np.random.default_rng(size).bytes(size))
    pages = draw(st.integers(1, 3))
    return "made.tif", tiff_with_strip(width, height, compression, strip, bits=bits,
                                       sampleformat=sampleformat, pages=pages)


def _decode_bounded(data, name):
    """``read_image_bytes`` under the limits, its peak of traced allocations; an exception
    other than InputError propagates (and fails the property)."""
    tracemalloc.start()
    try:
        with address_space_headroom(ADDRESS_SPACE):
            try:
                loaded = io.read_image_bytes(data, name, max_bytes=MAX_BYTES,
                                             max_pixels=MAX_PIXELS)
            except InputError as exc:
                message = str(exc)
                assert message and "Traceback" not in message
                loaded = None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return loaded, peak


def _check_decoded(loaded, peak, data):
    assert peak < PEAK_BOUND + 4 * len(data), f"decode peaked at {peak / MB:.1f} MB"
    if loaded is None:
        return
    array = loaded.array
    assert isinstance(array, np.ndarray)
    assert array.ndim in (2, 3) and array.size <= MAX_PIXELS and array.size > 0
    assert array.dtype.kind in "uif" or array.dtype == bool, array.dtype
    if array.dtype.kind == "f":
        assert np.isfinite(array).all()


def test_mutated_png_and_tiff_decode_or_are_refused():
    outcomes = collections.Counter()

    @FUZZ
    @given(mutated_files())
    def check(file):
        name, data = file
        loaded, peak = _decode_bounded(data, name)
        _check_decoded(loaded, peak, data)
        outcomes["decoded" if loaded is not None else "refused"] += 1

    check()
    # both outcomes happen: the mutations do not only produce garbage
    assert outcomes["decoded"] >= 5 and outcomes["refused"] >= 5, outcomes


def test_hand_made_tiffs_decode_or_are_refused():
    outcomes = collections.Counter()

    @FUZZ
    @given(hand_made_tiffs())
    def check(file):
        name, data = file
        loaded, peak = _decode_bounded(data, name)
        _check_decoded(loaded, peak, data)
        outcomes["decoded" if loaded is not None else "refused"] += 1

    check()
    assert outcomes["refused"] >= 5, outcomes


@FUZZ
@given(st.sampled_from([b"II*\x00", b"MM\x00*", b"II+\x00", b"\x89PNG\r\n\x1a\n",
                        b"\xff\xd8\xff"]), st.binary(max_size=4096))
def test_any_bytes_after_a_magic_number_decode_or_are_refused(magic, rest):
    data = magic + rest
    loaded, peak = _decode_bounded(data, "x")
    _check_decoded(loaded, peak, data)


def test_the_seeds_themselves_decode():
    for name, data in SEEDS:
        loaded, peak = _decode_bounded(data, name)
        assert loaded is not None, name
        _check_decoded(loaded, peak, data)


# --------------------------------------------------------------------------------------------
# The recipe validator

json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=16)
#: Texts with what a recipe's text may not hold: control characters, lone surrogates,
#: bidirectional overrides, very long ones.
any_char = (st.characters() | st.integers(0xD800, 0xDFFF).map(chr)  # lone surrogates
            | st.integers(0, 0x1F).map(chr) | st.sampled_from("\u202e\u2066\ufeff\x7f"))
odd_texts = (st.text(any_char, max_size=12)
             | st.sampled_from(["", " ", "µm", "px", "a\x00b", "\ud800", "\u202e", "x" * 201,
                                "__import__('os')", '"""', "\n", "nm\t"]))


def _param_value(param):
    """A value for `param`: valid (default, bounds, in range, a choice) or not."""
    valid = [st.just(param.default)]
    if param.kind in ("float", "int"):
        lo, hi = param.min, param.max
        if param.kind == "int":
            valid.append(st.integers(int(lo), int(min(hi, lo + 1000))))
        else:
            valid.append(st.floats(lo, hi, allow_nan=False))
        valid += [st.just(lo), st.just(hi)]
        invalid = [st.just(lo - 1), st.just(hi * 2 + 1), st.just(float("nan")),
                   st.just(float("inf")), st.just(str(param.default)), st.just(True)]
    elif param.kind == "choice":
        valid.append(st.sampled_from(param.choices))
        invalid = [st.just("nope"), st.just(0)]
    else:
        valid.append(st.booleans())
        invalid = [st.just(1), st.just("true")]
    return st.one_of(*valid), st.one_of(*invalid, json_values)


@st.composite
def steps(draw, registry, name=None):
    """A step of `registry` (``{"name", "params"}``), its params mostly valid."""
    name = name or draw(st.sampled_from(sorted(registry)))
    params = {}
    for param in registry[name].params:
        if draw(st.integers(0, 9)) == 5:
            continue  # missing: its default
        good, bad = _param_value(param)
        params[param.name] = draw(bad if draw(st.integers(0, 29)) == 15 else good)
    if draw(st.integers(0, 59)) == 30:
        params[draw(st.text(max_size=6))] = draw(json_scalars)  # an unknown parameter
    step = {"name": name, "params": params}
    if draw(st.integers(0, 9)) == 5:
        del step["params"]
    return step


@st.composite
def postprocess_lists(draw):
    mask_ops = draw(st.lists(st.sampled_from(postprocess.MASK_OPS), max_size=4))
    label_ops = draw(st.lists(st.sampled_from(postprocess.LABEL_OPS), max_size=4,
                              unique=True))
    ops = ([draw(steps(postprocess.POSTPROCESS, n)) for n in mask_ops]
           + [draw(steps(postprocess.POSTPROCESS, "label"))]
           + [draw(steps(postprocess.POSTPROCESS, n)) for n in label_ops])
    if draw(st.integers(0, 9)) == 5:
        draw(st.randoms()).shuffle(ops)  # possibly in the wrong order
    return ops


@st.composite
def near_valid_recipes(draw):
    """Recipes built from the registries' real names and parameters, with junk in a few
    places (a wrong type, an odd text, an unknown key, a missing section)."""
    finite = st.floats(-1e6, 1e6, allow_nan=False)
    vmin = draw(mostly(finite, st.sampled_from([float("nan"), float("inf")])))
    vmax = draw(mostly(st.floats(0.001, 1e6).map(lambda d: vmin + d if math.isfinite(vmin)
                                                 else d), finite | st.just(-float("inf"))))
    r = {
        "format": draw(mostly(st.just(recipe.FORMAT), st.just("other"), 30)),
        "version": draw(mostly(st.just(recipe.VERSION), st.sampled_from([2, "1", None]), 30)),
        "filter": draw(steps(filters.FILTERS)),
        "markers": {"vmin": vmin, "vmax": vmax},
        "segmentation": draw(steps(segmentation.SEGMENTERS)),
        "postprocess": draw(postprocess_lists()),
        "measure": {
            "properties": draw(st.lists(mostly(
                st.sampled_from(sorted(measure.AVAILABLE_PROPERTIES)), odd_texts, 20),
                min_size=draw(mostly(st.just(1), st.just(0), 20)), max_size=8, unique=True)),
            "pixel_size": draw(mostly(st.floats(1e-6, 1e6), json_scalars)),
            "unit": draw(mostly(st.sampled_from(["px", "µm", "nm", "mm"]), odd_texts, 4)),
        },
    }
    if draw(st.integers(0, 4)) == 2:
        r[recipe.IMAGE_SECTION] = draw(steps(channels.CHANNELS))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # junk somewhere
        section = draw(st.sampled_from(["filter", "markers", "segmentation", "measure",
                                        "top", "drop"]))
        if section == "top":
            r[draw(odd_texts)] = draw(json_values)
        elif section == "drop":
            r.pop(draw(st.sampled_from(sorted(r))), None)
        elif isinstance(r.get(section), dict):
            r[section][draw(st.sampled_from(["name", "params", "vmin", "unit", "extra"]))] = \
                draw(json_values)
    return r


def _check_valid(v):
    """The properties of a recipe `validate` accepted."""
    assert recipe.validate(v) == v  # a fixed point
    text = recipe.dumps(v)
    assert recipe.loads(text) == v
    assert recipe.loads(text.encode("utf-8")) == v
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.json"
        path.write_text(text, encoding="utf-8")
        assert recipe.read_file(path) == v
    source = to_script(v)
    source.encode("utf-8")  # no lone surrogate reached it
    compile(source, "exported_script.py", "exec")
    assert isinstance(recipe.describe(v), str)


def _validate_or_refuse(data):
    try:
        v = recipe.validate(data)
    except InputError as exc:
        assert str(exc)
        str(exc).encode("utf-8", "backslashreplace")
        return None
    assert isinstance(v, dict)
    return v


RECIPES = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_near_valid_recipes_are_valid_or_refused_and_valid_ones_round_trip():
    outcomes = collections.Counter()

    @RECIPES
    @given(near_valid_recipes())
    def check(r):
        v = _validate_or_refuse(r)
        outcomes["valid" if v is not None else "refused"] += 1
        if v is not None:
            _check_valid(v)

    check()
    assert outcomes["valid"] >= 20 and outcomes["refused"] >= 20, outcomes


@RECIPES
@given(json_values)
def test_any_json_data_is_a_recipe_or_refused(data):
    v = _validate_or_refuse(data)
    if v is not None:
        _check_valid(v)


@RECIPES
@given(st.one_of(st.text(any_char, max_size=200),
                 st.binary(max_size=200),
                 json_values.map(lambda d: json.dumps(d)),
                 near_valid_recipes().map(lambda r: json.dumps(r, ensure_ascii=False))))
def test_any_text_or_bytes_load_as_a_recipe_or_are_refused(text):
    try:
        v = recipe.loads(text)
    except InputError as exc:
        assert str(exc)
        return
    _check_valid(v)
