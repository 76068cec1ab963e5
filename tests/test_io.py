"""Tests of pipeline.io: decoding, limits, validation, data folder, hashing and export.

Every fixture file is built in tmp_path (or in memory); nothing binary is committed.
"""

from __future__ import annotations

import base64
import io as _io
import json
import os
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage import color, util

from pipeline import io
from pipeline.errors import InputError

LIMITS = dict(max_bytes=64 * 2**20, max_pixels=2**27)


# --------------------------------------------------------------------------------------------
# Fixture builders


def gradient(shape=(40, 50), dtype=np.uint8, scale=1):
    """A non-constant image with every value distinct along the rows."""
    yy, xx = np.indices(shape[-2:])
    base = (yy * 3 + xx * 2) * scale
    if len(shape) == 3:
        base = base[None] + 7 * np.arange(shape[0])[:, None, None]
    return base.astype(dtype)


def rgb_image(shape=(30, 40)):
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=shape + (3,), dtype=np.uint8)


def pil_bytes(image, fmt, **kwargs) -> bytes:
    buffer = _io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png(array, **kwargs) -> bytes:
    return pil_bytes(Image.fromarray(array), "PNG", **kwargs)


def tiff(array, **kwargs) -> bytes:
    buffer = _io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def read(data, name="image.bin", **limits):
    return io.read_image_bytes(data, name, **{**LIMITS, **limits})


def data_url(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def png_chunk(tag: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(tag + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", crc)


def png_bomb(width=100_000, height=100_000) -> bytes:
    """A valid-looking, tiny 8-bit gray PNG whose header declares width x height pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4, 9)  # a few zero rows of a zero image
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def tiff_bomb_header(width=100_000, height=100_000) -> bytes:
    """A hand-made deflate TIFF declaring width x height uint8 pixels in one tiny strip."""
    strip = zlib.compress(b"\x00" * 65536, 9)
    entries = [  # (tag, type, value); type 3 SHORT, 4 LONG
        (256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1),
        (273, 4, None), (277, 3, 1), (278, 4, height), (279, 4, len(strip)),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    strip_offset = 8 + ifd_size
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, kind, value in entries:
        value = strip_offset if value is None else value
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, 1) + packed
    out += struct.pack("<I", 0) + strip
    return bytes(out)


@pytest.fixture(scope="module")
def tiff_zlib_bomb() -> bytes:
    """A real deflate TIFF written by tifffile: 8192 x 8192 zeros (64 MB) in well under 1 MB."""
    buffer = _io.BytesIO()
    tile = np.zeros((1024, 1024), np.uint8)
    with tifffile.TiffWriter(buffer) as writer:
        writer.write(shape=(8192, 8192), dtype=np.uint8, compression="zlib", tile=(1024, 1024),
                     data=(tile for _ in range(64)))
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Formats and conversions


def test_png_gray_8bit_round_trip():
    image = gradient()
    loaded = read(png(image), "gray.png")
    assert loaded.name == "gray.png"
    assert loaded.array.dtype == np.uint8
    np.testing.assert_array_equal(loaded.array, image)
    assert loaded.notes == ()
    assert loaded.array.flags.c_contiguous


def test_png_16bit_keeps_uint16():
    image = gradient(dtype=np.uint16, scale=300)
    assert image.max() > 255
    loaded = read(png(image), "deep.png")
    assert loaded.array.dtype == np.uint16
    np.testing.assert_array_equal(loaded.array, image)


def test_png_rgb_converted_with_rgb2gray():
    rgb = rgb_image()
    loaded = read(png(rgb), "colour.png")
    assert loaded.array.shape == rgb.shape[:2]
    expected = color.rgb2gray(util.img_as_float32(rgb))
    np.testing.assert_allclose(loaded.array, expected, rtol=1e-6)
    assert any("rgb2gray" in note for note in loaded.notes)


def test_png_rgba_blended_then_gray():
    rgba = np.dstack([rgb_image(), np.full((30, 40), 128, np.uint8)])
    loaded = read(png(rgba), "rgba.png")
    assert loaded.array.ndim == 2 and loaded.array.dtype.kind == "f"
    expected = color.rgb2gray(color.rgba2rgb(util.img_as_float32(rgba)))
    np.testing.assert_allclose(loaded.array, expected, rtol=1e-5)
    assert any("rgba2rgb" in note for note in loaded.notes)


def test_rgb_with_equal_channels_keeps_gray_values():
    gray = gradient()
    loaded = read(png(np.dstack([gray] * 3)), "grey-as-rgb.png")
    assert loaded.array.dtype == np.uint8
    np.testing.assert_array_equal(loaded.array, gray)
    assert any("identical colour channels" in note for note in loaded.notes)


def test_palette_png_converted():
    rgb = rgb_image()
    data = pil_bytes(Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE), "PNG")
    loaded = read(data, "palette.png")
    assert loaded.array.ndim == 2 and loaded.array.dtype.kind == "f"
    assert any("Palette" in note for note in loaded.notes)


def test_gray_palette_png_becomes_uint8():
    gray = gradient()
    indexed = Image.frombytes("P", gray.shape[::-1], gray.tobytes())
    indexed.putpalette([v for i in range(256) for v in (i, i, i)])
    loaded = read(pil_bytes(indexed, "PNG"), "graypal.png")
    assert loaded.array.dtype == np.uint8
    np.testing.assert_array_equal(loaded.array, gray)
    assert any("gray colours" in note for note in loaded.notes)


def test_one_bit_png_becomes_uint8_0_255():
    mask = gradient() % 2 == 0
    loaded = read(pil_bytes(Image.fromarray(mask), "PNG"), "mask.png")
    assert loaded.array.dtype == np.uint8
    assert set(np.unique(loaded.array)) == {0, 255}


def test_jpeg_gray_and_rgb():
    gray = gradient((64, 64))
    loaded = read(pil_bytes(Image.fromarray(gray), "JPEG", quality=95), "gray.jpg")
    assert loaded.array.dtype == np.uint8 and loaded.array.shape == (64, 64)
    assert np.abs(loaded.array.astype(int) - gray).mean() < 3
    loaded = read(pil_bytes(Image.fromarray(rgb_image((64, 64))), "JPEG"), "colour.jpeg")
    assert loaded.array.shape == (64, 64)


def test_tiff_2d_uint16():
    image = gradient(dtype=np.uint16, scale=500)
    loaded = read(tiff(image), "a.tif")
    assert loaded.array.dtype == np.uint16
    np.testing.assert_array_equal(loaded.array, image)


def test_tiff_big_endian_float_becomes_native():
    image = gradient(dtype=np.float32) / 7
    loaded = read(tiff(image, byteorder=">"), "be.tiff")
    assert loaded.array.dtype == np.float32 and loaded.array.dtype.isnative
    np.testing.assert_array_equal(loaded.array, image)


def test_tiff_3d_stack():
    stack = gradient((5, 32, 40), dtype=np.uint16)
    loaded = read(tiff(stack, photometric="minisblack"), "stack.tif")
    assert loaded.array.shape == (5, 32, 40)
    np.testing.assert_array_equal(loaded.array, stack)


def test_tiff_rgb_interleaved_and_planar():
    rgb = rgb_image()
    expected = color.rgb2gray(util.img_as_float32(rgb))
    for data in (tiff(rgb, photometric="rgb"),
                 tiff(np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")):
        loaded = read(data, "rgb.tif")
        assert loaded.array.shape == (30, 40)
        np.testing.assert_allclose(loaded.array, expected, rtol=1e-6)


def test_singleton_axes_are_squeezed():
    image = gradient(dtype=np.uint16)
    loaded = read(tiff(image[None], photometric="minisblack"), "one.tif")
    assert loaded.array.shape == image.shape
    assert io.validate_image(image[..., None]).shape == image.shape


def test_format_comes_from_content_not_extension():
    image = gradient(dtype=np.uint16)
    loaded = read(tiff(image), "really-a-tiff.png")
    np.testing.assert_array_equal(loaded.array, image)


@pytest.mark.parametrize("data, name", [
    (b"just some text, not pixels\n" * 20, "notes.tif"),
    (b"hello", "fake.png"),
    (np.random.default_rng(0).bytes(5000), "random.png"),
])
def test_not_an_image(data, name):
    with pytest.raises(InputError, match="not a PNG, JPEG or TIFF image"):
        read(data, name)


def test_other_format_is_named():
    data = pil_bytes(Image.fromarray(gradient()), "GIF")
    with pytest.raises(InputError, match="not a PNG, JPEG or TIFF image.*GIF"):
        read(data, "anim.gif")


def test_empty_file():
    with pytest.raises(InputError, match="empty"):
        read(b"", "empty.png")


@pytest.mark.parametrize("make", [
    lambda: png(gradient((60, 70))),
    lambda: tiff(gradient((60, 70), dtype=np.uint16)),
    lambda: tiff(gradient((3, 60, 70), dtype=np.uint16), compression="zlib",
                 photometric="minisblack"),
    lambda: pil_bytes(Image.fromarray(rgb_image((60, 70))), "JPEG"),
])
def test_truncated_files(make):
    data = make()
    with pytest.raises(InputError, match=r"could not decode .*\(file truncated or corrupt\)"):
        read(data[: len(data) // 2], "cut")


@pytest.mark.parametrize("make", [
    lambda: png(rgb_image((20, 24))),
    lambda: tiff(gradient((2, 20, 24), dtype=np.uint16), photometric="minisblack"),
    lambda: pil_bytes(Image.fromarray(gradient((20, 24))), "JPEG"),
])
def test_every_truncation_or_corruption_gives_input_error(make):
    """Whatever is cut or flipped, only InputError comes out (never a Pillow/tifffile type)."""
    data = make()
    rng = np.random.default_rng(3)
    variants = [data[:cut] for cut in range(1, len(data), max(1, len(data) // 60))]
    for _ in range(40):
        corrupt = bytearray(data)
        for pos in rng.integers(8, len(data), size=4):
            corrupt[pos] ^= 0xFF
        variants.append(bytes(corrupt))
    for variant in variants:
        try:
            read(variant, "damaged")
        except InputError:
            pass


def test_corrupt_body_with_valid_magic():
    data = b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).bytes(3000)
    with pytest.raises(InputError, match="could not decode"):
        read(data, "broken.png")


def test_unsupported_tiff_compression_message():
    data = bytearray(tiff(gradient(dtype=np.uint16), compression="zlib"))
    # Patch the Compression tag value (8, deflate) to 5 (LZW, needs imagecodecs).
    with tifffile.TiffFile(_io.BytesIO(bytes(data))) as tif:
        tag = tif.pages[0].tags["Compression"]
        offset = tag.valueoffset
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        data[offset:offset + 2] = struct.pack("<H", 5)
        with pytest.raises(InputError, match="needs the .imagecodecs. package"):
            read(bytes(data), "lzw.tif")


# --------------------------------------------------------------------------------------------
# Validation rules


def test_tiff_float_with_nan():
    image = gradient(dtype=np.float32)
    image[3, 4] = np.nan
    with pytest.raises(InputError, match="contains NaN or infinite values"):
        read(tiff(image), "nan.tif")


def test_infinite_values_refused():
    image = gradient(dtype=np.float64)
    image[0, 0] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        io.validate_image(image)


def test_constant_image():
    with pytest.raises(InputError, match="every pixel has the value 7: nothing to segment"):
        read(png(np.full((20, 30), 7, np.uint8)), "flat.png")
    with pytest.raises(InputError, match="every pixel has the value 0.5"):
        io.validate_image(np.full((4, 4), 0.5))
    with pytest.raises(InputError, match="every pixel has the value 1234567:"):
        io.validate_image(np.full((4, 4), 1234567, np.int32))


def test_4d_tiff_refused():
    data = tiff(np.arange(2 * 3 * 8 * 9, dtype=np.uint16).reshape(2, 3, 8, 9), imagej=True)
    with pytest.raises(InputError, match="4D images are not supported"):
        read(data, "hyperstack.tif")
    with pytest.raises(InputError, match="4D images are not supported"):
        io.validate_image(np.arange(2 * 3 * 5 * 6).reshape(2, 3, 5, 6))


@pytest.mark.parametrize("array, message", [
    (np.zeros((3, 4), np.complex64), "complex"),
    (np.array([[object(), 1], [2, 3]], dtype=object), "not supported"),
    (np.zeros((0, 5), np.uint8), "no pixels"),
    (np.arange(10), "1D"),
    (np.arange(10).reshape(1, 10), "at least 2"),
    (np.arange(20).reshape(2, 1, 10)[:, :, :1], "at least 2"),
])
def test_validate_refuses(array, message):
    with pytest.raises(InputError, match=message):
        io.validate_image(array)


def test_validate_conversions():
    assert io.validate_image(np.arange(12, dtype=np.int64).reshape(3, 4)).dtype == np.int64
    out = io.validate_image(np.eye(3, dtype=bool))
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 255}
    assert io.validate_image(np.eye(3, dtype=np.float16)).dtype == np.float32
    rgb = io.validate_image(rgb_image((6, 7)))
    assert rgb.shape == (6, 7)
    stack = io.validate_image(np.random.default_rng(0).random((4, 6, 7, 3)))
    assert stack.shape == (4, 6, 7)


# --------------------------------------------------------------------------------------------
# Size limits and decompression bombs


def test_file_larger_than_max_bytes():
    data = png(rgb_image((100, 100)))
    with pytest.raises(InputError, match=r"file is [\d.]+ kB, the limit is 1000 bytes"):
        read(data, "big.png", max_bytes=1000)


def test_size_message_in_megabytes(tmp_path):
    path = tmp_path / "huge.tif"
    with open(path, "wb") as fh:  # sparse: no 80 MB actually written
        fh.truncate(80 * 2**20)
    with pytest.raises(InputError, match=r"file is 80\.0 MB, the limit is 64 MB"):
        io.read_image_file(path, **LIMITS)


def test_too_many_pixels():
    with pytest.raises(InputError, match=r"40 × 50 = 2,000 pixels, the limit is 1,000 pixels"):
        read(png(gradient()), "a.png", max_pixels=1000)
    stack = gradient((5, 20, 20), dtype=np.uint16)
    with pytest.raises(InputError, match="the limit is 1,999 pixels"):
        read(tiff(stack, photometric="minisblack"), "s.tif", max_pixels=1999)
    assert read(tiff(stack, photometric="minisblack"), "s.tif", max_pixels=2000).array.size == 2000


def _rejected_fast(data, name, max_pixels=2**27):
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="pixels, the limit is") as info:
            read(data, name, max_pixels=max_pixels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # refused from the header: nothing was decoded
    return info


def test_png_decompression_bomb():
    data = png_bomb()
    assert len(data) < 10_000
    info = _rejected_fast(data, "bomb.png")
    assert "100000 × 100000" in str(info.value)


def test_tiff_decompression_bomb_handmade():
    data = tiff_bomb_header()
    assert len(data) < 2_000
    _rejected_fast(data, "bomb.tif")


def test_tiff_decompression_bomb_tifffile(tiff_zlib_bomb):
    assert len(tiff_zlib_bomb) < 1_000_000
    _rejected_fast(tiff_zlib_bomb, "zeros.tif", max_pixels=8192 * 8192 - 1)


def test_pillow_global_limit_not_used_nor_changed():
    """Our max_pixels decides, not PIL.Image.MAX_IMAGE_PIXELS, which stays untouched."""
    before = Image.MAX_IMAGE_PIXELS
    data = png(gradient())
    assert read(data, "a.png", max_pixels=2000).array.size == 2000
    assert Image.MAX_IMAGE_PIXELS == before


# --------------------------------------------------------------------------------------------
# Uploads


def test_decode_upload_round_trip():
    image = gradient()
    loaded = io.decode_upload(data_url(png(image)), "C:\\fakepath\\cells.png", **LIMITS)
    assert loaded.name == "cells.png"
    np.testing.assert_array_equal(loaded.array, image)


def test_decode_upload_ignores_mime_type():
    image = gradient(dtype=np.uint16)
    loaded = io.decode_upload(data_url(tiff(image), "application/octet-stream"), "x.png",
                              **LIMITS)
    np.testing.assert_array_equal(loaded.array, image)


def test_decode_upload_too_large_is_refused_before_decoding(monkeypatch):
    def no_decode(*args, **kwargs):
        raise AssertionError("b64decode called on a too-large upload")

    monkeypatch.setattr(io.base64, "b64decode", no_decode)
    data = png(rgb_image((60, 60)))
    with pytest.raises(InputError, match=r"file is [\d.]+ kB, the limit is 1000 bytes"):
        io.decode_upload(data_url(data), "big.png", max_bytes=1000, max_pixels=2**27)


def test_decode_upload_size_is_exact():
    data = png(gradient())
    url = data_url(data)
    assert io.decode_upload(url, "a.png", max_bytes=len(data), max_pixels=2**27)
    with pytest.raises(InputError, match="the limit is"):
        io.decode_upload(url, "a.png", max_bytes=len(data) - 1, max_pixels=2**27)


@pytest.mark.parametrize("contents", [
    None,
    "",
    "hello",
    "data:image/png,notbase64",
    "data:image/png;base64",
    "data:image/png;base64,abc",  # length not a multiple of 4
    "data:image/png;base64,ab$d",
    "data:image/png;base64,\u00e9\u00e9\u00e9\u00e9",
])
def test_decode_upload_malformed(contents):
    with pytest.raises(InputError, match="malformed"):
        io.decode_upload(contents, "x.png", **LIMITS)


def test_decode_upload_empty_file():
    with pytest.raises(InputError, match="empty"):
        io.decode_upload("data:application/octet-stream;base64,", "x.png", **LIMITS)


# --------------------------------------------------------------------------------------------
# Files and the data folder


def test_read_image_file(tmp_path):
    image = gradient(dtype=np.uint16)
    path = tmp_path / "img.tiff"
    path.write_bytes(tiff(image))
    loaded = io.read_image_file(path, **LIMITS)
    assert loaded.name == "img.tiff"
    np.testing.assert_array_equal(loaded.array, image)
    with pytest.raises(InputError, match="not found"):
        io.read_image_file(tmp_path / "missing.png", **LIMITS)
    with pytest.raises(InputError, match="not a regular file"):
        io.read_image_file(tmp_path, **LIMITS)


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "data"
    outside = tmp_path / "outside"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    outside.mkdir()
    image = png(gradient())
    for rel in ["a.png", "B.TIF", "sub/c.jpg", "sub/deeper/d.tiff", "sub/e.jpeg",
                ".hidden/h.png", ".dot.png", "notes.txt", "sub/readme.md"]:
        (root / rel).write_bytes(image)
    (outside / "secret.png").write_bytes(image)
    os.symlink(outside / "secret.png", root / "link-out.png")
    os.symlink(outside, root / "dir-out")
    os.symlink(root / "a.png", root / "sub" / "link-in.png")
    os.symlink(root / "missing.png", root / "broken.png")
    return root


def test_list_data_files(data_dir, tmp_path):
    assert io.list_data_files(data_dir) == [
        "B.TIF", "a.png", "sub/c.jpg", "sub/deeper/d.tiff", "sub/e.jpeg", "sub/link-in.png",
    ]
    assert io.list_data_files(tmp_path / "nope") == []
    assert len(io.list_data_files(data_dir, max_files=2)) == 2


def test_listed_files_resolve(data_dir):
    for rel in io.list_data_files(data_dir):
        path = io.resolve_data_file(data_dir, rel)
        assert path.is_file()
        assert io.read_image_file(path, **LIMITS).array.shape == (40, 50)


@pytest.mark.parametrize("relpath, message", [
    ("../outside/secret.png", r"'\.\.' is not accepted"),
    ("sub/../../outside/secret.png", r"'\.\.' is not accepted"),
    ("/etc/passwd.png", "absolute paths are not accepted"),
    ("C:/data/x.png", "absolute paths are not accepted"),
    ("link-out.png", "outside the data folder"),
    ("dir-out/secret.png", "outside the data folder"),
    (".hidden/h.png", "hidden"),
    ("sub\\c.jpg", "forbidden characters"),
    ("notes.txt", "only .png"),
    ("missing.png", "not found"),
    ("", "no data file chosen"),
    (None, "no data file chosen"),
])
def test_resolve_data_file_refuses(data_dir, relpath, message):
    with pytest.raises(InputError, match=message):
        io.resolve_data_file(data_dir, relpath)


def test_resolve_absolute_path_inside_is_still_refused(data_dir):
    with pytest.raises(InputError, match="absolute"):
        io.resolve_data_file(data_dir, str(data_dir / "a.png"))


def test_resolve_returns_path_inside(data_dir):
    path = io.resolve_data_file(data_dir, "sub/link-in.png")
    assert path == (data_dir / "a.png").resolve()


# --------------------------------------------------------------------------------------------
# Samples


def test_samples_load():
    assert "coins" in io.SAMPLE_NAMES and "blobs3d" in io.SAMPLE_NAMES
    assert "cells3d" not in io.SAMPLE_NAMES  # needs a download
    for name in io.SAMPLE_NAMES:
        loaded = io.load_sample(name)
        assert loaded.name == name
        assert loaded.array.ndim in (2, 3)
        assert loaded.notes
    assert io.load_sample("blobs3d").array.shape == (128, 128, 128)


def test_unknown_sample():
    with pytest.raises(InputError, match="unknown sample"):
        io.load_sample("lena")


def test_blobs_3d():
    a = io.blobs_3d(length=32, seed=0)
    assert a.dtype == np.float32 and a.shape == (32, 32, 32)
    np.testing.assert_array_equal(a, io.blobs_3d(length=32, seed=0))
    assert not np.array_equal(a, io.blobs_3d(length=32, seed=1))
    lo, hi = np.percentile(a, [1, 99])
    assert -0.5 < lo < 0.2 and 0.8 < hi < 1.5


# --------------------------------------------------------------------------------------------
# Hash and export


def test_content_hash():
    image = gradient()
    h = io.content_hash(image)
    assert len(h) == 32 and int(h, 16) >= 0
    assert io.content_hash(image.copy()) == h
    assert io.content_hash(np.asfortranarray(image)) == h
    changed = image.copy()
    changed[5, 5] += 1
    assert io.content_hash(changed) != h
    assert io.content_hash(image.reshape(50, 40)) != h
    assert io.content_hash(image.view(np.int8)) != h


def test_labels_tiff_round_trip_2d_with_metadata():
    labels = (gradient() % 3).astype(np.int64)
    meta = {"vmin": 10.5, "vmax": 120, "image": "coins", "note": "µm"}
    data = io.labels_to_tiff_bytes(labels, meta)
    with tifffile.TiffFile(_io.BytesIO(data)) as tif:
        back = tif.asarray()
        assert json.loads(tif.pages[0].description) == {**meta, "shape": list(labels.shape)}
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)


def test_labels_tiff_3d_stack_and_dtypes():
    labels = np.zeros((4, 10, 12), np.int32)
    labels[1, 2, 3] = 300
    data = io.labels_to_tiff_bytes(labels)
    with tifffile.TiffFile(_io.BytesIO(data)) as tif:
        assert len(tif.pages) == 4
        back = tif.asarray()
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, labels)
    big = np.array([[0, 70000], [1, 2]])
    assert tifffile.imread(_io.BytesIO(io.labels_to_tiff_bytes(big))).dtype == np.uint32
    three = np.zeros((3, 5, 6), np.uint8)  # not mistaken for an RGB image
    assert tifffile.imread(_io.BytesIO(io.labels_to_tiff_bytes(three))).shape == (3, 5, 6)


@pytest.mark.parametrize("labels, metadata, message", [
    (np.array([[-1, 0], [1, 2]]), None, "between 0"),
    (np.zeros((2, 2), np.float32), None, "integers"),
    (np.zeros(4, np.uint8), None, "2D or 3D"),
    (np.zeros((2, 2), np.uint8), {"x": object()}, "JSON"),
])
def test_labels_tiff_refuses(labels, metadata, message):
    with pytest.raises(InputError, match=message):
        io.labels_to_tiff_bytes(labels, metadata)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("n_colors, palette", [(1, True), (2, True), (16, True), (17, False),
                                               (5000, False)])
def test_png_bytes_overlays_with_few_colours_are_palette_images(channels, n_colors, palette):
    rng = np.random.default_rng(n_colors)
    colors = rng.integers(0, 256, (n_colors, channels), dtype=np.uint8)
    colors[:, 0] = np.arange(n_colors) % 256  # distinct colours
    colors[:, 1] = np.arange(n_colors) // 256
    array = colors[rng.permutation(np.arange(60 * 90) % n_colors).reshape(60, 90)]
    image = Image.open(_io.BytesIO(io.png_bytes(array)))
    assert (image.mode == "P") == palette
    if image.mode == "P":
        image = image.convert("RGBA" if channels == 4 else "RGB")
    np.testing.assert_array_equal(np.asarray(image), array)


def test_png_bytes_round_trip():
    for array in (gradient(), rgb_image(), np.dstack([rgb_image(), gradient((30, 40))])):
        back = np.asarray(Image.open(_io.BytesIO(io.png_bytes(array))))
        np.testing.assert_array_equal(back, array)
    with pytest.raises(InputError, match="uint8"):
        io.png_bytes(np.zeros((3, 3), np.uint16))
    with pytest.raises(InputError, match="shape"):
        io.png_bytes(np.zeros((3, 3, 2), np.uint8))


@pytest.mark.parametrize("case", ["rare colour", "no telling byte", "rare colour, same byte"])
def test_png_bytes_palette_keeps_every_colour_the_sample_misses(case):
    """The palette is found through one byte of each pixel when the sampled colours differ
    there; a colour the sparse sample missed, or colours no single byte tells apart, go
    through the loop over colours: the image decodes to the same pixels."""
    array = np.zeros((300, 400, 4), np.uint8)
    if case == "no telling byte":
        colours = [(1, 1, 0, 255), (1, 2, 0, 255), (2, 1, 0, 255), (2, 2, 0, 255)]
    else:
        colours = [(0, 0, 0, 0), (200, 30, 30, 115), (30, 30, 200, 115)]
    for i, colour in enumerate(colours):
        array[:, i * 400 // len(colours):] = colour
    if case == "rare colour":
        array[123, 217] = (9, 250, 9, 115)  # red byte 9: not a sampled colour's
    elif case == "rare colour, same byte":
        array[123, 217] = (200, 99, 99, 115)  # red byte of a sampled colour
    image = Image.open(_io.BytesIO(io.png_bytes(array)))
    assert image.mode == "P"
    np.testing.assert_array_equal(np.asarray(image.convert("RGBA")), array)
    index, table = io._palette(array)
    np.testing.assert_array_equal(table[index], array)


def test_content_hash_names_the_content_its_dtype_and_shape():
    """A change of any byte (the first, the last), of the dtype or of the shape changes the
    id; equal content gives an equal id, from a view or a copy alike."""
    image = np.arange(11_100, dtype=np.uint8).reshape(111, 100)
    first = io.content_hash(image)
    assert io.content_hash(image.copy()) == first
    assert io.content_hash(np.asfortranarray(image)) == first  # the C-order bytes
    for flat in (0, 999, 1000, 11_099):
        changed = image.copy()
        changed.flat[flat] ^= 1
        assert io.content_hash(changed) != first
    assert io.content_hash(image.reshape(100, 111)) != first
    assert io.content_hash(image.view(np.int8)) != first
    assert len(first) == 32 and int(first, 16) >= 0
    assert io.content_hash(np.zeros((0, 3))) != io.content_hash(np.zeros((3, 0)))
    assert io.content_hash(np.zeros(4, bool)) != io.content_hash(np.zeros(4, np.uint8))
