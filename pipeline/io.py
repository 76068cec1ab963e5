"""Reading images into validated arrays, and writing results.

Every way an image enters the app goes through this module: the bundled samples
(:func:`load_sample`), browser uploads (:func:`decode_upload`), files of the lab's data folder
(:func:`read_image_file`) and raw bytes (:func:`read_image_bytes`). All of them

* detect the format from the file's first bytes (PNG, JPEG or TIFF), never from its name;
* refuse files larger than ``max_bytes`` before reading or decoding them;
* refuse images with more than ``max_pixels`` pixels from the header, *before* any pixel
  data is decoded (decompression bombs are rejected without allocating), and images whose
  decoding and conversion would take more than 8 bytes per allowed pixel (colour files
  count their copies);
* check every compressed TIFF strip or tile that could expand beyond 16 MB with a bounded
  decompressor before tifffile decodes it (compression bombs: a strip that expands beyond
  what its page needs is refused), and refuse TIFFs of more than 65536 pages;
* convert colour images to grayscale, squeeze singleton axes and check the result with
  :func:`validate_image`;
* raise :class:`~pipeline.errors.InputError`, with a message meant for the user, for anything
  that cannot be used; no Pillow or tifffile exception escapes.

A TIFF of the data folder (a path on disk, :func:`read_image_file`) is never read into memory
whole: uncompressed, contiguous image data in native byte order is memory-mapped
(``TiffFile.asarray(out="memmap")``, a read-only :class:`numpy.memmap` of the file, no copy);
anything else is decoded page by page (strip by strip) into one preallocated array, the
compressed data read through a read-only memory map of the file. Its image series (OME-TIFF
images, the series of a multi-series file) are listed by :func:`tiff_series`; ``series=``
chooses the one read.

The result is a :class:`LoadedImage`: the array, a display name and notes describing what was
converted.
"""

from __future__ import annotations

import base64
import binascii
import io as _io
import json
import math
import mmap
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import MappingProxyType

import blake3
import numpy as np

from .errors import InputError

__all__ = [
    "LoadedImage",
    "SAMPLE_NAMES",
    "SUPPORTED_EXTENSIONS",
    "load_sample",
    "blobs_3d",
    "read_image_bytes",
    "decode_upload",
    "read_image_file",
    "list_data_files",
    "resolve_data_file",
    "validate_image",
    "color_channels",
    "content_hash",
    "labels_to_tiff_bytes",
    "png_bytes",
    "VoxelSize",
    "voxel_size",
    "TiffSeriesInfo",
    "tiff_series",
]

#: Samples offered in the loader. All ship with scikit-image (no download) except
#: ``blobs3d``, which is generated (:func:`blobs_3d`). ``cells3d`` is left out: it needs a
#: network download (pooch).
SAMPLE_NAMES = (
    "coins",
    "camera",
    "cell",
    "moon",
    "page",
    "text",
    "horse",
    "microaneurysms",
    "immunohistochemistry",
    "blobs3d",
)

#: File name extensions listed from the data folder (the format itself is detected from the
#: file's content).
SUPPORTED_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF

# Formats we recognise only to say what the file is.
_OTHER_MAGICS = MappingProxyType({
    b"GIF87a": "a GIF image",
    b"GIF89a": "a GIF image",
    b"BM": "a BMP image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a ZIP archive",
    b"\x89HDF": "an HDF5 file",
    b"ZISRAWFILE": "a Zeiss CZI file",
    b"\x00\x00\x00\x0cjP  ": "a JPEG 2000 image",
})

_ACCEPTED = "PNG, JPEG or TIFF image"

_MIB = 1024 * 1024

#: Pixels converted at a time (colour to gray, checks): bounds the temporary copies.
_BLOCK_PIXELS = 2**20

#: Memory a decode may take, in bytes per pixel allowed by ``max_pixels``: what a float64
#: image at the pixel limit takes (1 GB at the default 2**27 pixels). Checked from the header
#: before decoding, with the copies and conversions counted (:func:`_check_decoded_bytes`).
_BYTES_PER_ALLOWED_PIXEL = 8

#: A compressed TIFF strip or tile that could expand beyond this many bytes (its size times
#: the codec's largest expansion) is decoded once with a bounded decompressor before
#: tifffile decodes it, to prove it holds no more than its page needs.
_UNCHECKED_SEGMENT_BYTES = 16 * 1024 * 1024

#: Largest expansion of each TIFF compression we can bound: deflate ≈ 1032:1, PackBits 64:1
#: (2 bytes → 128). LZMA and zstd have no useful bound: always checked.
_SEGMENT_RATIO = MappingProxyType({8: 1032, 32946: 1032, 32773: 64})

#: Memory an LZMA stream may ask for (its dictionary), in bytes.
_LZMA_MEMLIMIT = 256 * 1024 * 1024

#: Most image directories (pages) a TIFF may have: each becomes a Python object in tifffile.
_MAX_TIFF_PAGES = 65536

#: Largest magnitude of a floating-point pixel value: beyond it, squared differences
#: (variances, random-walker weights) overflow float64 (1e302 gave "Factor is exactly
#: singular").
MAX_FLOAT_MAGNITUDE = 1e100
#: Smallest range of a floating-point image: below it, squared differences underflow (an
#: image spanning 1e-200 segmented as constant).
MIN_FLOAT_RANGE = 1e-100


# --------------------------------------------------------------------------------------------
# Result type


@dataclass(frozen=True)
class LoadedImage:
    """An image ready for the pipeline.

    Parameters
    ----------
    array : ndarray
        2D ``(H, W)`` or 3D ``(Z, Y, X)`` grayscale image, C-contiguous, native byte order.
        The original dtype is kept except for the conversions listed in `notes`.
    name : str
        File or sample name, for display.
    notes : tuple of str
        User-facing notes on what was converted, e.g. colour to grayscale.
    channels : ndarray or None
        For a colour image, its red, green and blue channels before the conversion to gray
        (``(H, W, 3)`` or ``(Z, Y, X, 3)``, see :func:`color_channels`): a recipe may pick
        one, or a weighted combination, instead of the luminance. None for a gray image.
    voxel_size : VoxelSize or None
        The size of a pixel / voxel the file's metadata gives (TIFF: :func:`voxel_size`),
        None when it says nothing.
    """

    array: np.ndarray
    name: str
    notes: tuple[str, ...] = ()
    channels: np.ndarray | None = None
    voxel_size: "VoxelSize | None" = None


# --------------------------------------------------------------------------------------------
# Small helpers


def _format_size(n_bytes: int) -> str:
    """Human-readable size, e.g. ``80.0 MB``, ``12.3 kB`` or ``512 bytes`` (1 MB = 2**20)."""
    if n_bytes >= _MIB:
        return f"{n_bytes / _MIB:.1f} MB"
    if n_bytes >= 1024:
        return f"{n_bytes / 1024:.1f} kB"
    return f"{n_bytes} bytes"


def _format_limit(n_bytes: int) -> str:
    """Like :func:`_format_size` but without a useless ``.0`` (``64 MB``)."""
    if n_bytes >= _MIB:
        return f"{n_bytes / _MIB:.4g} MB"
    if n_bytes >= 1024:
        return f"{n_bytes / 1024:.4g} kB"
    return f"{n_bytes} bytes"


def _format_shape(shape) -> str:
    return " × ".join(str(int(s)) for s in shape)


def _check_limit(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def display_name(filename) -> str:
    """A file name as messages show it: without any directory part (browsers may send
    ``C:\\fakepath\\x.png``), printable characters only, at most 200 of them.

    Parameters
    ----------
    filename : str
        The name the browser (or the data folder) gave; anything else gives ``"image"``.

    Returns
    -------
    str
    """
    if not isinstance(filename, str) or not filename.strip():
        return "image"
    name = PureWindowsPath(PurePosixPath(filename.strip()).name).name or "image"
    name = "".join(c for c in name if c.isprintable())
    return name[:200] or "image"


_display_name = display_name


def _check_file_size(size: int, max_bytes: int) -> None:
    if size == 0:
        raise InputError(f"the file is empty (0 bytes): expected a {_ACCEPTED}.")
    if size > max_bytes:
        raise InputError(
            f"file is {_format_size(size)}, the limit is {_format_limit(max_bytes)}: "
            "crop or downsample the image, or ask the administrator to raise the limit."
        )


def _check_pixels(n_pixels: int, shape, max_pixels: int) -> None:
    if n_pixels > max_pixels:
        raise InputError(
            f"image is {_format_shape(shape)} = {n_pixels:,} pixels, the limit is "
            f"{max_pixels:,} pixels: crop or downsample it first."
        )


def _check_squeezed_ndim(shape) -> None:
    """Reject more than 3 non-singleton axes from the header, before decoding."""
    kept = tuple(s for s in shape if s != 1)
    if len(kept) > 3:
        raise InputError(
            f"4D images are not supported (shape {_format_shape(shape)}): load a single 2D "
            "image (Y, X) or a 3D stack (Z, Y, X), e.g. one channel and one time point."
        )


def _decode_error(name: str, kind: str, exc: BaseException) -> InputError:
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    if "imagecodecs" in detail:
        return InputError(
            f"could not decode {name}: its TIFF compression is not supported by this server "
            "(it needs the 'imagecodecs' package). Save it uncompressed or with "
            "deflate/zlib compression."
        )
    return InputError(f"could not decode {name} as {kind} (file truncated or corrupt): {detail}")


def _decode_budget(max_pixels: int) -> int:
    return max(_BYTES_PER_ALLOWED_PIXEL * int(max_pixels), 64 * _MIB)


def _check_decoded_bytes(n_bytes: int, shape, max_pixels: int) -> None:
    """Refuse a decode whose estimated peak memory (decoded data, copies, conversions) is over
    the budget that `max_pixels` implies, before anything is decoded."""
    budget = _decode_budget(max_pixels)
    if n_bytes > budget:
        raise InputError(
            f"decoding this {_format_shape(shape)} image would take about "
            f"{_format_size(n_bytes)} of memory, the limit is {_format_limit(budget)}: crop or "
            "downsample it, or save it as grayscale (colour, 16-bit colour and 64-bit pixels "
            "take more memory per pixel)."
        )


# --------------------------------------------------------------------------------------------
# Validation and conversions


def _row_blocks(array: np.ndarray, channels_last: bool = True):
    """Views of `array` covering it in blocks of whole rows, about ``_BLOCK_PIXELS`` each.

    The leading axes (a stack's planes) are walked one plane at a time; each view keeps the
    trailing axes (columns, and the channels when `channels_last`).
    """
    spatial = array.shape[:-1] if channels_last else array.shape
    width = spatial[-1]
    rows = max(1, _BLOCK_PIXELS // max(1, width))
    for lead in np.ndindex(spatial[:-2]):
        plane = array[lead]
        for start in range(0, spatial[-2], rows):
            yield lead + (slice(start, start + rows),), plane[start:start + rows]


def _rgb_to_gray(array: np.ndarray, notes: list) -> np.ndarray:
    """Grayscale from an RGB(A) array whose last axis holds the channels.

    Converted in blocks of rows, so that the temporary float copies (four channels in
    float32 or float64, then three) stay small: the peak is the input plus the output, not
    seven times the input (an 11000 × 11000 RGBA PNG took 5.2 GB, now about 1 GB).
    """
    from skimage import color, util

    channels = array.shape[-1]
    kind = "RGBA" if channels == 4 else "RGB"
    top = 1.0 if np.issubdtype(array.dtype, np.floating) else np.iinfo(array.dtype).max
    gray_channels = True
    for _, block in _row_blocks(array):
        rgb = block[..., :3]
        if (channels == 4 and not np.all(block[..., 3] == top)) or not (
                np.array_equal(rgb[..., 0], rgb[..., 1])
                and np.array_equal(rgb[..., 0], rgb[..., 2])):
            gray_channels = False
            break
    if gray_channels:
        notes.append(f"{kind} image with identical colour channels: the gray values are used "
                     "as they are.")
        return np.ascontiguousarray(array[..., 0])
    as_integer = array.dtype.kind in "ui"
    float_type = np.float32 if as_integer or array.dtype.itemsize <= 4 else np.float64
    gray = np.empty(array.shape[:-1], dtype=float_type)
    for index, block in _row_blocks(array):
        as_float = util.img_as_float32(block) if as_integer else block.astype(float_type,
                                                                               copy=False)
        if channels == 4:
            as_float = color.rgba2rgb(as_float)
        gray[index] = color.rgb2gray(as_float)
    if channels == 4:
        notes.append("RGBA image: transparency blended onto white (skimage.color.rgba2rgb), "
                     "then converted to grayscale (skimage.color.rgb2gray), on a 0…1 scale.")
    else:
        notes.append("RGB image converted to grayscale (skimage.color.rgb2gray), on a 0…1 scale.")
    return gray


def _standardize(array, *, color=None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Convert and check an image; return it with the notes describing the conversions.

    `color` says whether the last axis holds colour channels: True, False, or None to guess
    (last axis of length 3 or 4 on an array with 3 or 4 axes).
    """
    notes: list[str] = []
    if not isinstance(array, np.ndarray):
        try:
            array = np.asarray(array)
        except Exception as exc:  # noqa: BLE001 - anything not array-like
            raise InputError(f"not an image array: {type(exc).__name__}") from None
    dtype = array.dtype
    if dtype.kind not in "biuf":
        raise InputError(
            f"pixel type {dtype} is not supported: images must hold integer, floating-point "
            "or boolean values (not complex numbers, text or objects)."
        )
    if array.size == 0:
        raise InputError(f"the image has no pixels (shape {_format_shape(array.shape)}).")
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    if dtype.kind == "b":
        array = array.astype(np.uint8) * np.uint8(255)
        notes.append("Black-and-white image converted to uint8 (0 and 255).")
    elif dtype.kind == "f" and dtype.itemsize < 4:
        array = array.astype(np.float32)
        notes.append(f"{dtype} image converted to float32.")
    elif dtype.kind == "f" and dtype.itemsize > 8:
        array = array.astype(np.float64)
        notes.append(f"{dtype} image converted to float64.")

    if any(s == 1 for s in array.shape) and array.ndim > 2:
        before = array.shape
        squeezed = tuple(s for s in array.shape if s != 1)
        if len(squeezed) >= 2:
            array = array.reshape(squeezed)
            notes.append(f"Axes of length 1 removed: shape {_format_shape(before)} → "
                         f"{_format_shape(squeezed)}.")

    if color is None:
        color = array.ndim in (3, 4) and array.shape[-1] in (3, 4)
    if color:
        if array.ndim not in (3, 4) or array.shape[-1] not in (3, 4):
            raise InputError(f"colour image of shape {_format_shape(array.shape)} is not "
                             "supported: expected (H, W, 3|4) or (Z, H, W, 3|4).")
        array = _rgb_to_gray(array, notes)

    if array.ndim > 3:
        raise InputError(
            f"4D images are not supported (shape {_format_shape(array.shape)}): load a single "
            "2D image (Y, X) or a 3D stack (Z, Y, X), e.g. one channel and one time point."
        )
    if array.ndim < 2:
        raise InputError(
            f"the image is {array.ndim}D (shape {_format_shape(array.shape)}): expected a 2D "
            "image (Y, X) or a 3D stack (Z, Y, X)."
        )
    if min(array.shape) < 2:
        raise InputError(
            f"the image is {_format_shape(array.shape)} pixels: every axis needs at least 2 "
            "pixels."
        )

    lo, hi = array.min(), array.max()
    if array.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InputError(
            f"the image contains NaN or infinite values ({bad:,} of {array.size:,} pixels): "
            "replace them (e.g. with 0) before loading; only finite values can be segmented."
        )
    if array.dtype.kind == "f" and max(-float(lo), float(hi)) > MAX_FLOAT_MAGNITUDE:
        big = max(-float(lo), float(hi))
        raise InputError(
            f"the image's values reach {big:.3g}: values beyond ±{MAX_FLOAT_MAGNITUDE:g} "
            "cannot be segmented (their squared differences overflow). Rescale the image "
            f"before loading it, e.g. divide it by 1e{math.floor(math.log10(big)) - 3}."
        )
    if array.dtype.kind == "f" and 0 < float(hi) - float(lo) < MIN_FLOAT_RANGE:
        span = float(hi) - float(lo)
        raise InputError(
            f"the image's values span only {span:.3g} (from {float(lo):.6g}): differences "
            f"below {MIN_FLOAT_RANGE:g} cannot be segmented (they vanish when squared). "
            f"Rescale the image before loading it, e.g. multiply it by "
            f"1e{-math.floor(math.log10(span))}."
        )
    if lo == hi:
        value = str(int(lo)) if array.dtype.kind in "ui" else f"{float(lo):g}"
        raise InputError(f"every pixel has the value {value}: nothing to segment.")
    return np.ascontiguousarray(array), tuple(notes)


def validate_image(array: np.ndarray) -> np.ndarray:
    """Check an array and convert it to an image the pipeline accepts.

    Conversions: boolean → uint8 (0 and 255); float16 → float32; axes of length 1 removed;
    RGB or RGBA (last axis of length 3 or 4 on an array with 3 or 4 axes) → grayscale with
    :func:`skimage.color.rgb2gray` (RGBA first blended onto white with
    :func:`skimage.color.rgba2rgb`; colour images whose channels are all equal keep their gray
    values and dtype); non-native byte order → native.

    Parameters
    ----------
    array : ndarray
        Candidate image.

    Returns
    -------
    ndarray
        2D ``(H, W)`` or 3D ``(Z, Y, X)`` C-contiguous array, dtype kept unless converted.

    Raises
    ------
    InputError
        If the array is empty; has a complex, object or text dtype; is not 2D or 3D after the
        conversions ("4D images are not supported …"); has an axis shorter than 2; contains
        NaN or infinite values; holds floating-point values beyond ±1e100
        (:data:`MAX_FLOAT_MAGNITUDE`) or spans less than 1e-100 (:data:`MIN_FLOAT_RANGE`),
        where squared differences overflow or vanish; or is constant ("every pixel has the
        value 7: nothing to segment").
    """
    return _standardize(array)[0]


def color_channels(array) -> np.ndarray | None:
    """The red, green and blue channels of a decoded colour image, or None.

    What a channel choice (``pipeline.channels``) picks from instead of the luminance: the
    decoded values, before any conversion to gray (alpha dropped, axes of length 1 removed,
    native byte order, booleans as 0 / 255, float16 as float32).

    Parameters
    ----------
    array : ndarray
        A decoded image whose last axis may hold colour channels.

    Returns
    -------
    ndarray or None
        C-contiguous ``(H, W, 3)`` or ``(Z, Y, X, 3)``; None if `array` is not a 2D or 3D
        image with 3 or 4 channels last, or if its three channels are identical (a gray image
        stored as colour: nothing to choose).
    """
    array = np.asarray(array)
    if array.dtype.kind not in "biuf" or array.ndim not in (3, 4) \
            or array.shape[-1] not in (3, 4):
        return None
    rgb = array[..., :3]
    spatial = tuple(s for s in rgb.shape[:-1] if s != 1)
    if len(spatial) not in (2, 3):
        return None
    rgb = rgb.reshape(spatial + (3,))
    if rgb.dtype.kind == "b":
        rgb = rgb.astype(np.uint8) * np.uint8(255)
    elif rgb.dtype.kind == "f" and rgb.dtype.itemsize < 4:
        rgb = rgb.astype(np.float32)
    elif rgb.dtype.kind == "f" and rgb.dtype.itemsize > 8:
        rgb = rgb.astype(np.float64)
    if not rgb.dtype.isnative:
        rgb = rgb.astype(rgb.dtype.newbyteorder("="))
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return None
    return np.ascontiguousarray(rgb)


# --------------------------------------------------------------------------------------------
# Samples


def blobs_3d(length: int = 128, seed: int = 0) -> np.ndarray:
    """A generated 3D sample: noisy, blurred binary blobs.

    Parameters
    ----------
    length : int, optional
        Side of the cube, in voxels (at least 8).
    seed : int, optional
        Seed of the blobs and of the noise; the result is deterministic.

    Returns
    -------
    ndarray of float32, shape (length, length, length)
        Values roughly in 0…1: blobs (``skimage.data.binary_blobs(n_dim=3,
        volume_fraction=0.3)``) blurred with a Gaussian (sigma ``2 * length / 128``) plus
        Gaussian noise
        (standard deviation 0.1).
    """
    from scipy import ndimage
    from skimage import data

    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 8:
        raise InputError(f"length must be an integer of at least 8, got {length!r}")
    rng = np.random.default_rng(seed)
    blobs = data.binary_blobs(length=int(length), n_dim=3, volume_fraction=0.3,
                              rng=int(rng.integers(2**31)))
    # The blur follows the blob size (length * 0.1), so every length looks alike.
    volume = ndimage.gaussian_filter(blobs.astype(np.float32), sigma=2.0 * length / 128)
    volume += rng.normal(0.0, 0.1, size=volume.shape).astype(np.float32)
    return volume


def load_sample(name: str) -> LoadedImage:
    """Load one of the bundled samples.

    Parameters
    ----------
    name : str
        One of :data:`SAMPLE_NAMES`.

    Returns
    -------
    LoadedImage
        The validated sample; colour samples are converted to grayscale (see its notes).

    Raises
    ------
    InputError
        If `name` is not a known sample.
    """
    if name not in SAMPLE_NAMES:
        raise InputError(f"unknown sample {name!r}: choose one of {', '.join(SAMPLE_NAMES)}.")
    if name == "blobs3d":
        array = blobs_3d()
        source = ("Generated 3D sample: blurred skimage.data.binary_blobs(length=128, n_dim=3, "
                  "volume_fraction=0.3) with Gaussian noise.")
    else:
        from skimage import data

        array = getattr(data, name)()
        source = f"Sample skimage.data.{name}()."
    channels = color_channels(array)
    array, notes = _standardize(array)
    return LoadedImage(array, name, (source, *notes), channels=channels)


# --------------------------------------------------------------------------------------------
# Decoding


def _sniff(data: bytes) -> str | None:
    head = bytes(data[:16])
    if head.startswith(_PNG_MAGIC):
        return "PNG"
    if head.startswith(_JPEG_MAGIC):
        return "JPEG"
    if head.startswith(_TIFF_MAGICS):
        return "TIFF"
    return None


def _not_an_image(name: str, data: bytes) -> InputError:
    head = bytes(data[:16])
    what = next((kind for magic, kind in _OTHER_MAGICS.items() if head.startswith(magic)), None)
    if what is None and head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1"):
        what = "a HEIC image"
    if what is None and head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        what = "a WebP image"
    found = f" (it looks like {what})" if what else ""
    return InputError(f"{name} is not a {_ACCEPTED}{found}: save it as PNG, JPEG or TIFF.")


def _png_header(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from the PNG IHDR chunk, or None if it is not where expected."""
    if len(data) >= 26 and data[12:16] == b"IHDR":
        return data[24], data[25]
    return None


def _read_pillow(data: bytes, name: str, kind: str, max_pixels: int):
    from PIL import JpegImagePlugin, PngImagePlugin

    notes: list[str] = []
    factory = PngImagePlugin.PngImageFile if kind == "PNG" else JpegImagePlugin.JpegImageFile
    try:
        # The plugin class is used directly, not Image.open: Pillow's process-wide
        # MAX_IMAGE_PIXELS check (and its warning) is replaced by the per-call `max_pixels`
        # check below, made from the header before any pixel data is decoded.
        im = factory(_io.BytesIO(data))
        width, height = im.size
        _check_pixels(width * height, (height, width), max_pixels)
        _check_decoded_bytes(width * height * _pillow_bytes_per_pixel(im.mode),
                             (height, width), max_pixels)
        if getattr(im, "n_frames", 1) > 1:
            notes.append(f"Animated {kind} with {im.n_frames} frames: only the first is used.")
        mode = im.mode
        color = False
        if mode in ("P", "PA"):
            im, mode, color = _from_palette(im, notes)
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
            mode = "RGB"
        if mode == "LA":
            array = _pillow_array(im)[..., 0]
            notes.append("Gray + alpha image: the alpha channel is ignored.")
        elif mode in ("RGB", "RGBA"):
            array = _pillow_array(im)
            color = True
        else:  # "1", "L", "I", "I;16", "I;16B", "F"
            array = _pillow_array(im)
        im.close()
        del im  # Pillow's copy of the pixels goes before the conversions
    except InputError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - no Pillow exception type may escape
        raise _decode_error(name, kind, exc) from None

    header = _png_header(data) if kind == "PNG" else None
    if header is not None:
        bit_depth, color_type = header
        if bit_depth == 16 and color_type in (2, 6):
            notes.append("16-bit colour PNG read with 8 bits per channel.")
        if bit_depth == 16 and color_type == 0 and array.dtype.kind in "iu":
            array = array.astype(np.uint16)  # older Pillow reads 16-bit gray as int32
    return array, color, notes


#: Bytes per pixel of each Pillow mode: in Pillow's own storage (its "RGB" takes 4), and
#: once copied into numpy.
_PILLOW_CORE_BYTES = MappingProxyType({"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2,
                                       "I;16L": 2, "I;16N": 2, "I": 4, "F": 4})
_NUMPY_BYTES = MappingProxyType({"1": 1, "L": 1, "LA": 2, "P": 1, "RGB": 3, "RGBA": 4,
                                 "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4,
                                 "F": 4})


def _pillow_array(im) -> np.ndarray:
    """The pixels of a Pillow image as a numpy array, copied a block of rows at a time.

    ``np.asarray(im)`` goes through ``im.tobytes()``, which joins the encoded chunks into
    one bytes object: twice the image in memory on top of Pillow's own copy.
    """
    width, height = im.size
    rows = max(1, _BLOCK_PIXELS // max(1, width))
    first = np.asarray(im.crop((0, 0, width, min(rows, height))))
    array = np.empty((height,) + first.shape[1:], dtype=first.dtype)
    array[:first.shape[0]] = first
    for start in range(first.shape[0], height, rows):
        array[start:start + rows] = np.asarray(im.crop((0, start, width,
                                                        min(start + rows, height))))
    return array


def _pillow_bytes_per_pixel(mode: str) -> int:
    """Peak bytes per pixel of :func:`_read_pillow` for an image of `mode`, from its header.

    The phases: Pillow's decoded image (plus a converted one for palette, CMYK, YCbCr…), the
    numpy copy of it, then for colour the red, green and blue channels kept
    (:func:`color_channels`) and the float32 gray image (the Pillow image closed by then).
    """
    core = _PILLOW_CORE_BYTES.get(mode, 4)
    if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        target = "RGBA"  # the largest a conversion gives
        core += 4
    else:
        target = mode
    copy = _NUMPY_BYTES.get(target, 4)
    colour = 3 + 4 if target in ("RGB", "RGBA") else 0
    return max(core + copy, copy + colour)


def _from_palette(im, notes: list):
    """Palette image → ('L' image, 'L', False) if its colours are grays, else RGB(A)."""
    has_alpha = im.mode == "PA" or "transparency" in im.info
    palette = im.getpalette() or []
    rgb = np.asarray(palette, dtype=np.uint8).reshape(-1, 3) if palette else None
    if not has_alpha and rgb is not None and len(rgb) and (
            np.array_equal(rgb[:, 0], rgb[:, 1]) and np.array_equal(rgb[:, 0], rgb[:, 2])):
        notes.append("Palette image with gray colours converted to 8-bit grayscale.")
        return im.convert("L"), "L", False
    notes.append("Palette (indexed colour) image expanded to its colours.")
    mode = "RGBA" if has_alpha else "RGB"
    return im.convert(mode), mode, True


def _check_series_index(series) -> int:
    if isinstance(series, bool) or not isinstance(series, (int, np.integer)) or series < 0:
        raise InputError(f"series must be a non-negative integer (0 for the first image "
                         f"series of a file), got {series!r}")
    return int(series)


def _pick_series(all_series, index: int, name: str):
    if index >= len(all_series):
        count = len(all_series)
        listed, choice = ("", "0") if count == 1 else (f" (0 … {count - 1})",
                                                       f"between 0 and {count - 1}")
        raise InputError(f"series {index} is out of range: {name} has {count} image "
                         f"series{listed}; choose series {choice}.")
    return all_series[index]


def _check_series_pages(tif, series, name: str) -> None:
    """Every page of `series` must be an image of this very file (no page of another file of
    a multi-file OME series, no missing page tifffile would fill with zeros)."""
    for page in series.pages:
        if page is None:
            raise InputError(f"could not decode {name} as TIFF (file truncated or corrupt): "
                             "some of its image pages are missing.")
        if page.parent is not tif:
            raise InputError(f"{name} refers to image data in other files: load a single, "
                             "self-contained TIFF file.")


def _memmap_series(tif, series):
    """A read-only :class:`numpy.memmap` of `series` in its file, or None when its image data
    cannot be mapped as they are: compressed, tiled, with a predictor or bit order, in
    pieces, or in the other byte order (mapping would then need a byte-swapped copy)."""
    page = series.keyframe
    if (series.dataoffset is None or page.dtype is None or int(page.compression) != 1
            or not page.is_memmappable):
        return None
    stored = np.dtype(tif.byteorder + np.dtype(page.dtype).char)
    if not stored.isnative and stored.itemsize > 1:
        return None
    array = tif.asarray(series=series, out="memmap")
    return array if isinstance(array, np.memmap) else None


def _read_tiff(data, name: str, max_pixels: int, *, series_index: int = 0, path=None):
    """Decode one image series of a TIFF: (array, color, notes, voxel size).

    `data` is the file's content: bytes, or a read-only :class:`mmap.mmap` of the file at
    `path`. With a `path`, uncompressed contiguous image data is memory-mapped
    (:func:`_memmap_series`) instead of decoded; otherwise every page is decoded into one
    preallocated array (:func:`_decode_tiff_series`, or tifffile's page-by-page
    ``asarray`` after :func:`_check_tiff_segments`).
    """
    import tifffile

    notes: list[str] = []
    _check_tiff_pages(data, name)
    source = os.fspath(path) if path is not None else _io.BytesIO(data)
    try:
        # _multifile=False: an OME-TIFF naming other files is read as this file alone;
        # tifffile never opens a file the OME-XML names (it could be anywhere)
        with tifffile.TiffFile(source, _multifile=False) as tif:
            all_series = tif.series
            if not all_series:
                raise InputError(f"{name} is a TIFF file without any image.")
            series = _pick_series(all_series, series_index, name)
            shape = tuple(int(s) for s in series.shape)
            if len(all_series) > 1:
                if path is None and series_index == 0:
                    notes.append(f"TIFF with {len(all_series)} image series: only the first "
                                 "is used.")
                else:
                    info = _series_info(series_index, series)
                    named = f"“{info.name}”, " if info.name else ""
                    notes.append(f"TIFF with {len(all_series)} image series: series "
                                 f"{series_index} ({named}{_format_shape(info.shape)}, "
                                 f"{info.dtype}) is shown.")
            axes = series.axes
            page = series.keyframe
            photometric = int(page.photometric)
            s_axis = axes.find("S")
            color = (s_axis >= 0 and photometric in (2, 6)  # RGB, YCbCr
                     and shape[s_axis] in (3, 4))
            spatial = tuple(s for i, s in enumerate(shape) if not (color and i == s_axis))
            _check_pixels(math.prod(spatial), spatial, max_pixels)
            _check_squeezed_ndim(spatial)
            _check_decoded_bytes(_tiff_peak_bytes(series, spatial, color, photometric),
                                 spatial, max_pixels)
            _check_series_pages(tif, series, name)
            array = _memmap_series(tif, series) if path is not None else None
            if array is None:
                array = _decode_tiff_series(tif, series, data, name)
            if array is None:
                _check_tiff_segments(tif, series, data, name)
                array = series.asarray()  # page by page into one array tifffile allocates
            colormap = page.colormap if photometric == 3 else None
            found = _series_voxel_size(tif, series_index, series)
    except InputError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - no tifffile exception type may escape
        raise _decode_error(name, "TIFF", exc) from None

    if array.shape != shape:  # never expected; keep the axis bookkeeping honest
        raise InputError(f"could not decode {name} as TIFF (file truncated or corrupt): "
                         f"expected shape {shape}, got {array.shape}")
    if s_axis >= 0:
        # Colour samples go last (rgb2gray), other samples first (a stack axis).
        array = np.moveaxis(array, s_axis, -1 if color else 0)
    if colormap is not None and array.dtype.kind == "u":
        array, color = _apply_tiff_colormap(array, np.asarray(colormap), notes)
    return array, color, notes, found


def _check_tiff_pages(data, name) -> int:
    """The number of image directories of a TIFF, checked: a broken chain or more than
    :data:`_MAX_TIFF_PAGES` raise :class:`InputError` naming the file."""
    n_pages = _tiff_directory_count(data)
    if n_pages is None:
        raise InputError(f"could not decode {name} as TIFF (file truncated or corrupt): "
                         "its chain of image directories is broken.")
    if n_pages > _MAX_TIFF_PAGES:
        raise InputError(f"{name} has {n_pages:,} TIFF pages, the limit is "
                         f"{_MAX_TIFF_PAGES:,}: split the file, or save the stack with fewer, "
                         "larger pages.")
    return n_pages


def _tiff_directory_count(data: bytes) -> int | None:
    """Number of image file directories (IFDs, pages) of a TIFF, or None if their chain
    leaves the file or loops.

    tifffile silently stops at a broken link, which would load a truncated stack as fewer
    slices; this walk catches it, and counts the pages before tifffile makes an object of
    each (the walk stops one past :data:`_MAX_TIFF_PAGES`).
    """
    order = "<" if data[:2] == b"II" else ">"
    if data[2:4] in (b"+\x00", b"\x00+"):  # BigTIFF
        first, count_fmt, entry_size, offset_fmt = 8, "Q", 20, "Q"
    else:
        first, count_fmt, entry_size, offset_fmt = 4, "H", 12, "I"
    count_size, offset_size = struct.calcsize(count_fmt), struct.calcsize(offset_fmt)
    n = len(data)
    seen = set()
    try:
        offset = struct.unpack_from(order + offset_fmt, data, first)[0]
        while offset and len(seen) <= _MAX_TIFF_PAGES:
            if offset in seen or offset + count_size > n:
                return None
            seen.add(offset)
            count = struct.unpack_from(order + count_fmt, data, offset)[0]
            end = offset + count_size + count * entry_size + offset_size
            if end > n:
                return None
            offset = struct.unpack_from(order + offset_fmt, data, end - offset_size)[0]
    except struct.error:
        return None
    return len(seen) or None


def _tiff_peak_bytes(series, spatial, color: bool, photometric: int) -> int:
    """Peak bytes of reading a TIFF series: the decoded array, then its conversion."""
    decoded = math.prod(int(s) for s in series.shape) * np.dtype(series.dtype).itemsize
    pixels = math.prod(spatial)
    if photometric == 3:  # palette: indices → uint16 colours → gray
        return decoded + pixels * (3 * 2 + 4)
    if color:  # the red, green and blue channels kept, and the gray image
        itemsize = np.dtype(series.dtype).itemsize
        return decoded + pixels * (3 * itemsize + (4 if itemsize <= 4 else 8))
    return decoded


def _segment_bytes(page) -> int:
    """Bytes one decoded strip or tile of `page` holds at most (tifffile's segment shape)."""
    itemsize = max(1, -(-int(page.bitspersample) // 8))
    if page.is_tiled:
        count = int(page.tiledepth or 1) * int(page.tilelength) * int(page.tilewidth)
    else:
        count = int(page.imagedepth or 1) * min(int(page.rowsperstrip), int(page.imagelength)) \
            * int(page.imagewidth)
    if int(page.planarconfig) == 1:  # contiguous samples
        count *= int(page.samplesperpixel)
    return count * itemsize


def _inflated_size(compression: int, raw: bytes, limit: int) -> int | None:
    """Bytes `raw` decodes to with `compression`, counting no further than ``limit + 1``.

    The output is produced a megabyte at a time and dropped, so memory stays small whatever
    the stream claims. None for a compression this cannot decode (tifffile decides).
    """
    import lzma
    import zlib

    chunk = 8 * _MIB
    total = 0
    if compression in (8, 32946):  # deflate / zlib
        inflater = zlib.decompressobj()
        pending = raw
        while total <= limit:
            total += len(inflater.decompress(pending, min(chunk, limit + 1 - total)))
            pending = inflater.unconsumed_tail
            if inflater.eof or not pending:
                break
        return total
    if compression == 34925:  # LZMA (xz or legacy .lzma container)
        inflater = lzma.LZMADecompressor(memlimit=_LZMA_MEMLIMIT)
        pending = raw
        while total <= limit and not inflater.eof:
            total += len(inflater.decompress(pending, min(chunk, limit + 1 - total)))
            pending = b""
            if inflater.needs_input:
                break
        return total
    if compression == 32773:  # PackBits: the headers give the length, nothing to inflate
        position, size = 0, len(raw)
        while position < size and total <= limit:
            header = raw[position]
            if header < 128:  # a literal run of header + 1 bytes
                total += header + 1
                position += header + 2
            elif header > 128:  # one byte repeated 257 - header times
                total += 257 - header
                position += 2
            else:  # 128: no operation
                position += 1
        return total
    return None


def _bounded_inflate(compression: int, raw, limit: int) -> bytes:
    """The decoded bytes of a deflate or LZMA segment, at most ``limit + 1`` of them."""
    import lzma
    import zlib

    if compression == 34925:
        return lzma.LZMADecompressor(memlimit=_LZMA_MEMLIMIT).decompress(raw, limit + 1)
    return zlib.decompressobj().decompress(raw, limit + 1)


def _decode_tiff_series(tif, series, data: bytes, name: str):
    """Decode a deflate or LZMA TIFF series in one bounded pass, or None to let tifffile do it.

    Each strip or tile is inflated once by a decompressor that stops one byte past the
    segment's size (a longer one is a bomb, refused), undone from the horizontal predictor,
    and copied to its place: the same array as ``series.asarray()``, without inflating the
    data twice (once to check it, once in tifffile). Layouts beyond the common ones
    (floating-point or other predictors, bit orders, sizes not a whole number of bytes,
    volumes, short segments) return None.
    """
    page = series.keyframe
    compression = int(page.compression)
    dtype = np.dtype(page.dtype) if page.dtype is not None else None
    spp = int(page.samplesperpixel)
    if (compression not in (8, 32946, 34925) or dtype is None or dtype.kind not in "iuf"
            or int(page.bitspersample) != 8 * dtype.itemsize
            or int(page.predictor) not in (1, 2) or int(page.fillorder) != 1
            or int(page.planarconfig) not in (1, 2) or int(page.imagedepth or 1) != 1
            or (page.is_tiled and int(page.tiledepth or 1) != 1)
            or (int(page.predictor) == 2 and dtype.kind == "f")
            or any(p is None or p.parent is not tif for p in series.pages)):
        return None
    height, width = int(page.imagelength), int(page.imagewidth)
    if page.is_tiled:
        seg_rows, seg_cols = int(page.tilelength), int(page.tilewidth)
    else:
        seg_rows, seg_cols = min(int(page.rowsperstrip), height), width
    planes = spp if int(page.planarconfig) == 2 else 1  # samples stored plane by plane
    per_segment = spp // planes
    across = -(-width // seg_cols)
    per_plane = -(-height // seg_rows) * across
    n_segments = per_plane * planes
    limit = seg_rows * seg_cols * per_segment * dtype.itemsize
    stored = dtype.newbyteorder(tif.byteorder)
    pages = list(series.pages)
    if math.prod(series.shape) != len(pages) * height * width * spp:
        return None
    # tifffile's page shape: (samples, rows, columns) for planes, (rows, columns, samples)
    out = np.empty((len(pages), planes, height, width, per_segment), dtype=dtype)
    view = memoryview(data)
    for number, frame in enumerate(pages):
        offsets, counts = frame.dataoffsets, frame.databytecounts
        if len(offsets) != n_segments or len(counts) != n_segments:
            return None
        for index, (offset, count) in enumerate(zip(offsets, counts, strict=True)):
            plane, index = divmod(index, per_plane)
            top, left = (index // across) * seg_rows, (index % across) * seg_cols
            rows, cols = min(seg_rows, height - top), min(seg_cols, width - left)
            try:
                raw = _bounded_inflate(compression, view[int(offset):int(offset) + int(count)],
                                       limit)
            except Exception as exc:  # noqa: BLE001 - zlib.error, lzma.LZMAError: corrupt
                raise _decode_error(name, "TIFF", exc) from None
            if len(raw) > limit:
                where = f" on page {number + 1}" if len(pages) > 1 else ""
                raise _bomb(page, where, limit, int(count))
            full = seg_rows if page.is_tiled else rows
            if len(raw) < full * seg_cols * per_segment * dtype.itemsize:
                return None  # a short segment: tifffile knows how to read it
            segment = np.frombuffer(raw, stored, count=full * seg_cols * per_segment).reshape(
                full, seg_cols, per_segment)
            if int(page.predictor) == 2:
                segment = np.cumsum(segment, axis=1, dtype=stored)
            out[number, plane, top:top + rows, left:left + cols] = segment[:rows, :cols]
    return out.reshape(series.shape)


def _bomb(page, where, limit, count) -> InputError:
    """The refusal of a segment that expands too far (the caller names the file)."""
    return InputError(
        f"a compressed {'tile' if page.is_tiled else 'strip'}{where} expands beyond the "
        f"{_format_size(limit)} its image needs ({_format_size(count)} compressed): refused "
        "as a decompression bomb. Save the image again, uncompressed or with deflate "
        "compression."
    )


def _check_tiff_segments(tif, series, data: bytes, name: str) -> None:
    """Refuse a TIFF whose compressed strips or tiles expand beyond what their page needs.

    tifffile inflates each strip or tile whole (its fallback decoders ignore the expected
    size), so a 2 MB deflate strip of a 64 × 64 image took 4.2 GB. Every page of `series`
    is checked before decoding: a segment that could expand beyond
    :data:`_UNCHECKED_SEGMENT_BYTES` (its size times the codec's largest ratio, see
    :data:`_SEGMENT_RATIO`) is inflated once by a bounded decompressor that stops one byte past
    the segment's declared size.
    """
    keyframe = series.keyframe
    compression = int(keyframe.compression)
    if compression == 1:
        return
    limit = _segment_bytes(keyframe)
    ratio = _SEGMENT_RATIO.get(compression)
    view = memoryview(data)
    for number, page in enumerate(series.pages, 1):
        if page is None:
            continue
        if page.parent is not tif:  # e.g. another file of a multi-file OME series
            raise InputError(f"{name} refers to image data in other files: load a single, "
                             "self-contained TIFF file.")
        if len(page.dataoffsets) != len(page.databytecounts):
            raise InputError(f"could not decode {name} as TIFF (file truncated or corrupt): "
                             "its strip or tile offsets and byte counts disagree.")
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            offset, count = int(offset), int(count)
            if count == 0 or (ratio is not None and count * ratio <= max(
                    limit, _UNCHECKED_SEGMENT_BYTES)):
                continue
            try:
                size = _inflated_size(compression, view[offset:offset + count], limit)
            except Exception as exc:  # noqa: BLE001 - zlib.error, lzma.LZMAError: corrupt data
                raise _decode_error(name, "TIFF", exc) from None
            if size is not None and size > limit:
                where = f" on page {number}" if len(series.pages) > 1 else ""
                raise _bomb(keyframe, where, limit, count)


def _apply_tiff_colormap(indices, colormap, notes):
    if colormap.ndim != 2 or colormap.shape[0] != 3 or int(indices.max()) >= colormap.shape[1]:
        raise InputError("could not decode the TIFF palette (file truncated or corrupt).")
    if np.array_equal(colormap[0], colormap[1]) and np.array_equal(colormap[0], colormap[2]):
        gray = colormap[0]
        if np.all(gray % 257 == 0):
            gray = (gray // 257).astype(np.uint8)
        notes.append("Palette TIFF with gray colours converted to grayscale.")
        return gray[indices], False
    notes.append("Palette (indexed colour) TIFF expanded to its colours.")
    return np.moveaxis(colormap[:, indices], 0, -1), True


def read_image_bytes(data: bytes, filename: str, *, max_bytes: int,
                     max_pixels: int, series: int = 0) -> LoadedImage:
    """Decode a PNG, JPEG or TIFF file held in memory.

    Parameters
    ----------
    data : bytes
        Content of the file. The format is detected from its first bytes, not from
        `filename`.
    filename : str
        Name of the file, for messages and display (directories are dropped).
    max_bytes : int
        Largest accepted file size in bytes.
    max_pixels : int
        Largest accepted number of pixels (voxels for a stack), checked from the header
        before the pixel data is decoded.
    series : int, optional
        Which image series of a TIFF to read (see :func:`tiff_series`); 0, the first, by
        default. A PNG or JPEG has only series 0.

    Returns
    -------
    LoadedImage
        Validated grayscale image (see :func:`validate_image`) with conversion notes.

    Raises
    ------
    InputError
        If the file is empty, too large, not a PNG/JPEG/TIFF image, has too many pixels,
        cannot be decoded (truncated or corrupt), fails :func:`validate_image`, or has no
        series `series`.
    """
    max_bytes = _check_limit("max_bytes", max_bytes)
    max_pixels = _check_limit("max_pixels", max_pixels)
    series = _check_series_index(series)
    name = _display_name(filename)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"{name}: expected the bytes of a file, got {type(data).__name__}.")
    data = bytes(data)
    _check_file_size(len(data), max_bytes)
    return _decode(data, name, max_pixels, series)


def _decode(data, name: str, max_pixels: int, series: int, path=None) -> LoadedImage:
    """Decode a file's content (bytes, or a read-only memory map of the file at `path`)."""
    kind = _sniff(data)
    if kind is None:
        raise _not_an_image(name, data)
    found = None
    if kind == "TIFF":
        array, color, notes, found = _read_tiff(data, name, max_pixels, series_index=series,
                                                path=path)
    else:
        if series:
            _pick_series((None,), series, name)  # the message: one series only
        array, color, notes = _read_pillow(bytes(data), name, kind, max_pixels)
    channels = color_channels(array) if color else None
    array, more = _standardize(array, color=color)
    return LoadedImage(array, name, tuple(notes) + more, channels=channels, voxel_size=found)


def decode_upload(contents: str, filename: str, *, max_bytes: int,
                  max_pixels: int) -> LoadedImage:
    """Decode a file uploaded with ``dcc.Upload``.

    Parameters
    ----------
    contents : str
        Data URL ``"data:<mime>;base64,<payload>"`` as sent by the browser. The MIME type is
        ignored (the format is detected from the content).
    filename : str
        Name of the uploaded file.
    max_bytes : int
        Largest accepted file size; checked from the length of the payload before it is
        decoded.
    max_pixels : int
        Largest accepted number of pixels, see :func:`read_image_bytes`.

    Returns
    -------
    LoadedImage

    Raises
    ------
    InputError
        If `contents` is not a base64 data URL, the file is too large, or
        :func:`read_image_bytes` refuses it.
    """
    max_bytes = _check_limit("max_bytes", max_bytes)
    name = _display_name(filename)
    if not isinstance(contents, str) or not contents.startswith("data:"):
        raise InputError(f"the upload of {name} is malformed (expected a base64 data URL): "
                         "try again, or choose another file.")
    comma = contents.find(",", 0, 1024)
    header = contents[5:comma] if comma >= 0 else ""
    if comma < 0 or header.rsplit(";", 1)[-1].strip().lower() != "base64":
        raise InputError(f"the upload of {name} is malformed (expected a base64 data URL): "
                         "try again, or choose another file.")
    n_chars = len(contents) - comma - 1
    if n_chars % 4:
        raise InputError(f"the upload of {name} is malformed (base64 data of invalid length).")
    padding = len(contents[-2:]) - len(contents[-2:].rstrip("=")) if n_chars else 0
    _check_file_size(n_chars // 4 * 3 - padding, max_bytes)
    try:
        data = base64.b64decode(contents[comma + 1:], validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"the upload of {name} is malformed (invalid base64 data).") from None
    return read_image_bytes(data, name, max_bytes=max_bytes, max_pixels=max_pixels)


def read_image_file(path, *, max_bytes: int, max_pixels: int, series: int = 0) -> LoadedImage:
    """Read an image file from disk.

    A TIFF is not read into memory: uncompressed, contiguous image data in native byte order
    is memory-mapped (the array is a read-only view of a :class:`numpy.memmap` of the file:
    do not rewrite the file in place while it is in use); anything else is decoded page by
    page into one array, from a read-only memory map of the file. The checks are those of
    :func:`read_image_bytes`. PNG and JPEG files are read whole, then decoded.

    Parameters
    ----------
    path : str or Path
        The file (use :func:`resolve_data_file` for names chosen by a user).
    max_bytes : int
        Largest accepted file size; checked before the file is read.
    max_pixels : int
        Largest accepted number of pixels, see :func:`read_image_bytes`.
    series : int, optional
        Which image series of a TIFF to read (:func:`tiff_series` lists them); 0 by default.

    Returns
    -------
    LoadedImage
        Named after the file's name.

    Raises
    ------
    InputError
        If the file does not exist, cannot be read, has no series `series`, or
        :func:`read_image_bytes` would refuse its content.
    """
    max_bytes = _check_limit("max_bytes", max_bytes)
    max_pixels = _check_limit("max_pixels", max_pixels)
    series = _check_series_index(series)
    path = Path(path)
    name = _display_name(path.name)
    with _open_file(path, name, max_bytes) as data:
        return _decode(data, name, max_pixels, series,
                       path=path if _sniff(data) == "TIFF" else None)


class _open_file:
    """``with _open_file(path, name, max_bytes) as data``: a read-only memory map of a file
    (its content, as a bytes-like object nothing is copied from until it is read), after the
    size checks. Closed on exit, unless a view of it is still alive (an exception's
    traceback may hold one): it is then closed when that view goes."""

    def __init__(self, path: Path, name: str, max_bytes: int):
        self._map = None
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise InputError(f"{name} is not a regular file.")
            _check_file_size(size, max_bytes)
            with open(path, "rb") as fh:
                self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise InputError(f"{name} was not found.") from None
        except InputError:
            raise
        except (OSError, ValueError) as exc:  # ValueError: mmap of a file emptied meanwhile
            detail = getattr(exc, "strerror", None) or exc
            raise InputError(f"could not read {name}: {detail}.") from None
        if len(self._map) > max_bytes:  # it grew since the check
            size = len(self._map)
            self._close()
            _check_file_size(size, max_bytes)

    def _close(self):
        try:
            self._map.close()
        except BufferError:  # exported views still alive: closed with the last of them
            pass

    def __enter__(self):
        return self._map

    def __exit__(self, *exc):
        self._close()
        return False


# --------------------------------------------------------------------------------------------
# The lab's data folder


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _has_supported_extension(name: str) -> bool:
    return name.lower().endswith(SUPPORTED_EXTENSIONS)


def list_data_files(data_dir, *, max_files: int = 10_000) -> list[str]:
    """List the image files of the data folder.

    Hidden files and folders (name starting with ``.``) are skipped, symbolic links to
    folders are not followed, and symbolic links to files outside `data_dir` are left out.

    Parameters
    ----------
    data_dir : str or Path
        The data folder.
    max_files : int, optional
        Stop after this many files (the first ones in sorted walk order).

    Returns
    -------
    list of str
        Sorted paths relative to `data_dir`, with ``/`` separators, of files whose extension
        is one of :data:`SUPPORTED_EXTENSIONS` (case-insensitive). Empty if the folder does
        not exist.
    """
    root = Path(data_dir)
    if not root.is_dir():
        return []
    real_root = root.resolve()
    found: list[str] = []
    for current, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for filename in sorted(filenames):
            if _is_hidden(filename) or "\\" in filename or not _has_supported_extension(filename):
                continue
            path = Path(current, filename)
            try:
                real = path.resolve()
                if not real.is_relative_to(real_root) or not real.is_file():
                    continue
            except (OSError, RuntimeError):  # broken link, loop, permission
                continue
            found.append(path.relative_to(root).as_posix())
            if len(found) >= max_files:
                return sorted(found)
    return sorted(found)


def resolve_data_file(data_dir, relpath) -> Path:
    """The file of the data folder named by a path relative to it.

    Parameters
    ----------
    data_dir : str or Path
        The data folder.
    relpath : str
        Path relative to `data_dir`, ``/``-separated, as listed by :func:`list_data_files`.

    Returns
    -------
    Path
        The resolved (symlink-free) path of the file, inside `data_dir`.

    Raises
    ------
    InputError
        If `relpath` is empty, absolute, contains ``..``, backslashes or hidden components,
        does not have a supported extension, resolves (through symbolic links) outside
        `data_dir`, or is not an existing file.
    """
    if not isinstance(relpath, str) or not relpath.strip():
        raise InputError("no data file chosen: pick a file of the data folder.")
    refused = f"{relpath!r} is not a file of the data folder"
    if "\x00" in relpath or "\\" in relpath:
        raise InputError(f"{refused}: the name contains forbidden characters.")
    pure = PurePosixPath(relpath)
    if pure.is_absolute() or PureWindowsPath(relpath).drive or relpath.startswith("~"):
        raise InputError(f"{refused}: absolute paths are not accepted, only paths relative to "
                         "the data folder.")
    if ".." in pure.parts:
        raise InputError(f"{refused}: '..' is not accepted in paths.")
    if any(_is_hidden(part) for part in pure.parts):
        raise InputError(f"{refused}: hidden files and folders are not offered.")
    if not _has_supported_extension(pure.name):
        raise InputError(f"{refused}: only {', '.join(SUPPORTED_EXTENSIONS)} files are "
                         "offered.")
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError("the data folder does not exist on the server.")
    real_root = root.resolve()
    try:
        real = (real_root / pure).resolve()
    except (OSError, RuntimeError):
        raise InputError(f"{refused}: it cannot be resolved.") from None
    if not real.is_relative_to(real_root):
        raise InputError(f"{refused}: it points outside the data folder.")
    if not real.is_file():
        raise InputError(f"{relpath!r} was not found in the data folder.")
    return real


# --------------------------------------------------------------------------------------------
# Hashing and writing


def content_hash(array: np.ndarray) -> str:
    """Hash of an image's content, used as its id.

    Parameters
    ----------
    array : ndarray

    Returns
    -------
    str
        32 hex digits: BLAKE3 (a cryptographic hash: on a shared server no one can make
        another image with a given id) over the dtype string, the shape and the
        C-contiguous bytes. One core hashes 64 MB in ~11 ms (BLAKE2b took ~65 ms, on both
        cores ~35 ms), so that the load's description, made at once, has the other core.
        Equal arrays of equal dtype and shape give equal hashes.
    """
    array = np.ascontiguousarray(array)
    h = blake3.blake3(f"{array.dtype.str}|{tuple(int(s) for s in array.shape)}|".encode())
    if array.size:
        h.update(memoryview(array.reshape(-1)).cast("B"))
    return h.hexdigest(length=16)


def labels_to_tiff_bytes(labels: np.ndarray, metadata: dict | None = None) -> bytes:
    """Encode a label image as a TIFF file.

    Parameters
    ----------
    labels : ndarray
        2D ``(H, W)`` or 3D ``(Z, Y, X)`` non-negative integer (or boolean) labels.
    metadata : dict, optional
        JSON-serialisable description (parameters, source image...), stored as JSON in the
        ImageDescription tag of the first page (``json.loads(tif.pages[0].description)``).

    Returns
    -------
    bytes
        Deflate-compressed TIFF, in the smallest of uint8, uint16, uint32 that holds the
        labels; a 3D array is written as a stack of Z pages.

    Raises
    ------
    InputError
        If the labels are not 2D/3D non-negative integers below 2**32, or `metadata` is not
        JSON-serialisable.
    """
    import tifffile

    labels = np.asarray(labels)
    if labels.dtype.kind == "b":
        labels = labels.astype(np.uint8)
    if labels.dtype.kind not in "iu":
        raise InputError(f"labels must be integers, got {labels.dtype}.")
    if labels.ndim not in (2, 3) or labels.size == 0:
        raise InputError(f"labels must be a non-empty 2D or 3D array, got shape "
                         f"{labels.shape}.")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= 2**32:
        raise InputError(f"labels must be between 0 and 2**32 - 1, got {lo} … {hi}.")
    dtype = np.uint8 if hi < 2**8 else np.uint16 if hi < 2**16 else np.uint32
    description = None
    if metadata is not None:
        try:
            # tifffile reads a JSON description as its own "shaped" metadata, which must
            # carry the shape: include it so that tifffile.imread works on the file.
            description = json.dumps({**metadata, "shape": list(labels.shape)},
                                     ensure_ascii=True, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise InputError(f"metadata must be JSON-serialisable: {exc}") from None
    buffer = _io.BytesIO()
    tifffile.imwrite(buffer, np.ascontiguousarray(labels, dtype=dtype),
                     photometric="minisblack", metadata=None, description=description,
                     compression="zlib")
    return buffer.getvalue()


def png_bytes(array: np.ndarray, *, compress_level: int = 6, metadata: dict | None = None) -> bytes:
    """Encode an 8-bit image as PNG.

    Parameters
    ----------
    array : ndarray of uint8
        ``(H, W)`` gray, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA.
    compress_level : int, optional
        zlib level 0 (none, fastest) … 9 (smallest).
    metadata : dict, optional
        JSON-serialisable provenance, stored as the PNG text chunk ``provenance``
        (``Image.open(f).text["provenance"]``).

    Returns
    -------
    bytes

    Raises
    ------
    InputError
        If the array is not uint8 of one of these shapes.
    """
    from PIL import Image

    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise InputError(f"PNG export needs a uint8 array, got {array.dtype}.")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))) \
            or min(array.shape[:2]) < 1:
        raise InputError(f"PNG export needs an (H, W), (H, W, 3) or (H, W, 4) array, got shape "
                         f"{array.shape}.")
    if isinstance(compress_level, bool) or compress_level not in range(10):
        raise InputError(f"compress_level must be an integer 0…9, got {compress_level!r}")
    pnginfo = None
    if metadata is not None:
        from PIL.PngImagePlugin import PngInfo

        try:
            text = json.dumps(metadata, ensure_ascii=True, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise InputError(f"metadata must be JSON-serialisable: {exc}") from None
        pnginfo = PngInfo()
        pnginfo.add_text("provenance", text)
    buffer = _io.BytesIO()
    options = {"format": "PNG", "compress_level": int(compress_level), "pnginfo": pnginfo}
    indexed = _palette(array) if array.ndim == 3 else None
    if indexed is None:
        Image.fromarray(np.ascontiguousarray(array)).save(buffer, **options)
    else:  # few colours (an overlay): 1 byte per pixel, ~4x faster to encode, ~3x smaller
        index, colors = indexed
        image = Image.frombytes("P", (index.shape[1], index.shape[0]), index.tobytes())
        image.putpalette(colors[:, :3].reshape(-1).tobytes(), rawmode="RGB")
        if colors.shape[1] == 4:
            options["transparency"] = colors[:, 3].tobytes()
        image.save(buffer, **options)
    return buffer.getvalue()


_MAX_PALETTE = 16


def _palette(array):
    """(index image, colours) if an RGB(A) image has at most 16 colours, else None.

    The check looks at a sparse sample first, so an image with many colours (a photo, a
    label2rgb blend) costs ~0.1 ms; an overlay whose sampled colours differ in one byte
    (:func:`_palette_by_byte`) ~3 ms per 1M pixels; otherwise ~8 ms per colour.
    """
    channels = array.shape[2]
    if channels == 3:
        packed = np.zeros(array.shape[:2] + (4,), dtype=np.uint8)
        packed[..., :3] = array
    else:
        packed = np.ascontiguousarray(array)
    flat = packed.view(np.uint32).reshape(-1)
    sampled = np.unique(flat[:: max(1, flat.size // 2048)])
    if sampled.size > _MAX_PALETTE:
        return None
    fast = _palette_by_byte(packed, flat, sampled)
    if fast is not None:
        index, table = fast
        return index.reshape(array.shape[:2]), table[:, :channels]
    index = np.zeros(flat.size, dtype=np.uint8)
    colors = []
    rest = flat
    while rest.size:
        if len(colors) == _MAX_PALETTE:
            return None
        color = rest[0]
        index[flat == color] = len(colors)
        colors.append(color)
        rest = rest[rest != color]
    table = np.array(colors, dtype=np.uint32).view(np.uint8).reshape(-1, 4)[:, :channels]
    return index.reshape(array.shape[:2]), table


def _palette_by_byte(packed, flat, sampled):
    """(index, RGBA table) of the sampled colours, found through one byte of each pixel
    that tells them apart (a table lookup per pixel: 1M-pixel overlay 24 -> 3 ms), or None
    when no byte does or the image holds a colour the sample missed (:func:`_palette`'s
    loop then finds every colour)."""
    table = sampled.view(np.uint8).reshape(-1, 4)
    for k in range(4):
        if np.unique(table[:, k]).size != sampled.size:
            continue
        lut = np.zeros(256, dtype=np.uint8)
        lut[table[:, k]] = np.arange(sampled.size, dtype=np.uint8)
        index = np.take(lut, packed.reshape(-1, 4)[:, k])
        if np.array_equal(np.take(sampled, index), flat):
            return index, table
        return None
    return None


# --------------------------------------------------------------------------------------------
# Metadata: the voxel size of a TIFF / OME-TIFF


@dataclass(frozen=True)
class VoxelSize:
    """The physical size of a voxel, as a file's metadata gives it.

    Parameters
    ----------
    z, y, x : float or None
        Size along each axis in `unit`; None where the file does not say.
    unit : str
        Length unit (``"µm"`` for microns, however the file spells it).
    source : str
        Where it was read: ``"OME"``, ``"ImageJ"`` or ``"TIFF resolution"``.
    """

    z: float | None
    y: float | None
    x: float | None
    unit: str
    source: str

    def spacing(self) -> tuple:
        """``(z, y, x)`` with a missing size replaced by a known one (x for y and the
        reverse; the in-plane size for z)."""
        y = self.y if self.y is not None else self.x
        x = self.x if self.x is not None else self.y
        z = self.z if self.z is not None else x
        return tuple(float(v) if v is not None else 1.0 for v in (z, y, x))


_MICRONS = ("µm", "um", "micron", "microns", "micrometer", "micrometre", "\\u00b5m", "\u03bcm")
_OME_PIXELS = re.compile(r"<(?:\w+:)?Pixels\b([^>]*)>")
_XML_ATTRIBUTE = re.compile(r'([A-Za-z_][\w.-]*)\s*=\s*"([^"]*)"')
_CENTIMETER = 3  # ResolutionUnit


def _unit_name(unit) -> str:
    text = str(unit or "").strip()
    return "µm" if text.lower() in _MICRONS else text


def _positive(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _ome_voxel_size(xml: str, index: int = 0, n_series: int = 1):
    """The voxel size of the `index`-th image of an OME-XML: its ``Pixels`` element when the
    XML has one per series of the file (tifffile reads one series per OME image with data),
    the first for series 0; None otherwise (rather none than another image's)."""
    found = list(_OME_PIXELS.finditer(xml or ""))
    if index < len(found) and (index == 0 or len(found) == n_series):
        match = found[index]
    else:
        return None
    attrs = dict(_XML_ATTRIBUTE.findall(match.group(1)))
    sizes = {a: _positive(attrs.get(f"PhysicalSize{a.upper()}")) for a in "zyx"}
    if not any(sizes.values()):
        return None
    units = {_unit_name(attrs.get(f"PhysicalSize{a.upper()}Unit", "µm")) for a in "zyx"
             if sizes[a] is not None}
    if len(units) != 1:
        return None  # mixed units: rather none than a wrong one
    return VoxelSize(sizes["z"], sizes["y"], sizes["x"], units.pop(), "OME")


def _resolution(page, name):
    tag = page.tags.get(name)
    if tag is None:
        return None
    value = tag.value
    try:
        pixels_per_unit = value[0] / value[1] if isinstance(value, tuple) else float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return 1.0 / pixels_per_unit if _positive(pixels_per_unit) else None


def voxel_size(source, series: int = 0) -> VoxelSize | None:
    """The voxel size a TIFF file's metadata gives, if any.

    Read, in this order: OME-XML (``Pixels`` ``PhysicalSizeX/Y/Z`` and their units, microns
    when no unit is given; of the OME image of `series`); ImageJ metadata (``spacing``: the z
    step; ``unit``; the ``XResolution`` / ``YResolution`` tags: pixels per unit); the TIFF
    resolution tags with ``ResolutionUnit`` centimetre (converted to µm), of the series' first
    page. Resolution in inches (or with no unit, outside ImageJ) is ignored: it is a print
    resolution (72 dpi), not a pixel size.

    Parameters
    ----------
    source : bytes or str or Path
        The file's content, or its path (only the headers are read).
    series : int, optional
        The image series (see :func:`tiff_series`); 0 by default.

    Returns
    -------
    VoxelSize or None
        None for a file that is not a TIFF, has no such metadata, no such series, or cannot
        be parsed: the metadata is optional and never stops a load.
    """
    import tifffile

    series = _check_series_index(series)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if bytes(source[:4]) not in _TIFF_MAGICS:
            return None
        handle = _io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        handle = os.fspath(source)
    else:
        raise InputError(f"voxel_size: source must be the bytes or the path of a file, got "
                         f"{type(source).__name__}")
    try:
        with tifffile.TiffFile(handle, _multifile=False) as tif:
            all_series = tif.series
            chosen = all_series[series] if series < len(all_series) else None
            if chosen is None and series:
                return None
            return _series_voxel_size(tif, series, chosen)
    except Exception:  # noqa: BLE001 - metadata is optional: a file we cannot parse has none
        return None


def _series_voxel_size(tif, index: int, series) -> VoxelSize | None:
    """The voxel size of series `index` (`series`, or None for a file tifffile finds no
    series in) of an open TIFF; None when its metadata says nothing or cannot be parsed."""
    try:
        if tif.is_ome:
            found = _ome_voxel_size(tif.ome_metadata, index, len(tif.series))
            if found is not None:
                return found
        if series is not None and series.keyframe is not None:
            page = series.keyframe
        else:
            page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
        x, y = _resolution(page, "XResolution"), _resolution(page, "YResolution")
        if tif.is_imagej:
            meta = tif.imagej_metadata or {}
            z = _positive(meta.get("spacing"))
            unit = _unit_name(meta.get("unit", ""))
            if (x or y or z) and unit:
                return VoxelSize(z, y, x, unit, "ImageJ")
            return None
        unit_tag = page.tags.get("ResolutionUnit")
        if (x or y) and unit_tag is not None and int(unit_tag.value) == _CENTIMETER:
            return VoxelSize(None, y and y * 1e4, x and x * 1e4, "µm", "TIFF resolution")
    except Exception:  # noqa: BLE001 - metadata is optional: a file we cannot parse has none
        return None
    return None


# --------------------------------------------------------------------------------------------
# The image series of a TIFF (OME-TIFF images, multi-series files)


@dataclass(frozen=True)
class TiffSeriesInfo:
    """One image series of a TIFF file, as :func:`tiff_series` lists it.

    Parameters
    ----------
    index : int
        Its position in the file (``series=`` of :func:`read_image_file`).
    shape : tuple of int
        Its shape as stored (tifffile's, before singleton axes are removed).
    dtype : str
        Its pixel type, e.g. ``"uint16"``.
    axes : str
        tifffile's axes letters, e.g. ``"ZYX"``, ``"YXS"`` (S: samples, colour channels).
    name : str
        Its name (an OME image's ``Name``), empty when it has none.
    kind : str
        The metadata it was found from: ``"ome"``, ``"imagej"``, ``"shaped"``,
        ``"generic"``, …
    """

    index: int
    shape: tuple
    dtype: str
    axes: str
    name: str
    kind: str

    def label(self) -> str:
        """How a menu shows it: ``1: “GFP” — 60 × 512 × 512 uint16``."""
        name = f"“{self.name}” — " if self.name else ""
        return f"{self.index}: {name}{_format_shape(self.shape)} {self.dtype}"


def _series_info(index: int, series) -> TiffSeriesInfo:
    """A tifffile series described (its name printable, at most 200 characters)."""
    name = display_name(series.name) if getattr(series, "name", "") else ""
    return TiffSeriesInfo(index, tuple(int(v) for v in series.shape), str(series.dtype),
                          str(series.axes), "" if name == "image" else name,
                          str(getattr(series, "kind", "") or ""))



def tiff_series(path, *, max_bytes: int) -> tuple[TiffSeriesInfo, ...]:
    """The image series of a TIFF file on disk, from its headers (no pixel data is read).

    An OME-TIFF lists one series per OME image, a multi-series TIFF (e.g. written by several
    ``tifffile.imwrite(..., append=True)``, or pages of different shapes) one per series
    tifffile recognises; pyramid levels are not series (level 0 is read).

    Parameters
    ----------
    path : str or Path
        The file (use :func:`resolve_data_file` for names chosen by a user).
    max_bytes : int
        Largest accepted file size; checked before the file is read.

    Returns
    -------
    tuple of TiffSeriesInfo
        Empty for a PNG or JPEG file (one image, no series to choose).

    Raises
    ------
    InputError
        If the file does not exist, cannot be read, is too large, is not an image, has more
        than 65536 pages or a broken chain of pages, or tifffile cannot parse it.
    """
    import tifffile

    max_bytes = _check_limit("max_bytes", max_bytes)
    path = Path(path)
    name = _display_name(path.name)
    with _open_file(path, name, max_bytes) as data:
        kind = _sniff(data)
        if kind is None:
            raise _not_an_image(name, data)
        if kind != "TIFF":
            return ()
        _check_tiff_pages(data, name)
        try:
            with tifffile.TiffFile(os.fspath(path), _multifile=False) as tif:
                found = [_series_info(index, series)
                         for index, series in enumerate(tif.series)]
        except InputError:
            raise
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - no tifffile exception type may escape
            raise _decode_error(name, "TIFF", exc) from None
    if not found:
        raise InputError(f"{name} is a TIFF file without any image.")
    return tuple(found)
