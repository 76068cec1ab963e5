"""Turning arrays into what the browser shows.

Display scaling (:func:`display_range`, :func:`to_uint8`), PNG data URIs
(:func:`png_data_uri`), the marker and segmentation overlays (RGBA images laid over the gray
image), slicing of 3D stacks and the intensity histogram. Pure numpy / scikit-image / Pillow:
the figures themselves are built in ``components``.

Colours: the markers use the Okabe–Ito blue / orange pair (distinguishable with the common
colour-vision deficiencies), the segmentation contour is magenta, away from both and from any
gray.
"""

from __future__ import annotations

import base64
import math
from types import MappingProxyType

import numpy as np

from .errors import InputError
from .io import png_bytes
from .segment import BACKGROUND, OBJECT

__all__ = [
    "MARKER_COLORS",
    "MARKER_HEX",
    "SEGMENTATION_COLOR",
    "SEGMENTATION_HEX",
    "OVERLAY_STYLES",
    "PNG_COMPRESS_LEVEL",
    "take_slice",
    "DISPLAY_MAX_PIXELS",
    "display_factor",
    "reduce_mean",
    "reduce_nearest",
    "display_range",
    "to_uint8",
    "png_data_uri",
    "jpeg_data_uri",
    "JPEG_QUALITY",
    "marker_overlay",
    "pack_values16",
    "segmentation_overlay",
    "histogram",
]


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


#: Marker label → RGB colour: 1 background (blue), 2 object (orange), Okabe–Ito palette.
MARKER_COLORS = MappingProxyType({BACKGROUND: (0, 114, 178), OBJECT: (230, 159, 0)})
#: The same colours as ``#rrggbb`` strings, for figures and CSS.
MARKER_HEX = MappingProxyType({label: _hex(rgb) for label, rgb in MARKER_COLORS.items()})
#: Colour of the segmentation overlay (contour or fill).
SEGMENTATION_COLOR = (255, 0, 255)
SEGMENTATION_HEX = _hex(SEGMENTATION_COLOR)
#: Styles accepted by :func:`segmentation_overlay`.
OVERLAY_STYLES = ("contour", "fill")
#: zlib level of the PNG data URIs. Measured on coins, camera, a 1411² gray image and 1024²
#: overlays: level 1 is 2–4x faster than the default 6 (e.g. 35 ms vs 154 ms for 1411²) for
#: 5–20 % larger images; level 0 doubles or triples the size.
PNG_COMPRESS_LEVEL = 1
#: Quality of the JPEG data URIs of a large image's display level (:func:`jpeg_data_uri`):
#: the noisy 2048² bench image's 1024² level is 396 kB in 4 ms against 795 kB in 88 ms as a
#: PNG (level 1).
JPEG_QUALITY = 90

_SUBSAMPLE = 2**20  # values used by display_range
_CHUNK = 2**22  # elements per block in histogram


def _check_alpha(alpha) -> float:
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise InputError(f"alpha must be a number between 0 and 1, got {alpha!r}") from None
    if not 0.0 <= value <= 1.0:
        raise InputError(f"alpha must be between 0 and 1, got {alpha!r}")
    return value


def _check_2d(name, array) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise InputError(f"{name} must be a 2D array (one slice), got shape {array.shape}")
    return array


def _as_index(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return int(value)
        raise InputError(f"{name} must be an integer, got {value!r}")
    return int(value)


def take_slice(array, axis: int, index: int) -> np.ndarray:
    """One 2D slice of a stack.

    Parameters
    ----------
    array : ndarray
        2D image or 3D stack ``(Z, Y, X)``.
    axis : int
        Axis across which to slice (0, 1 or 2); ignored for a 2D image.
    index : int
        Position of the slice along `axis`, ``0 … shape[axis] - 1``; ignored for a 2D image.

    Returns
    -------
    ndarray
        The 2D image itself, or a view of the slice.

    Raises
    ------
    InputError
        If the array is not 2D or 3D, or `axis` / `index` are out of range.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        return array
    if array.ndim != 3:
        raise InputError(f"expected a 2D image or a 3D stack, got shape {array.shape}")
    axis = _as_index("axis", axis)
    if axis not in (0, 1, 2):
        raise InputError(f"axis must be 0, 1 or 2 for a 3D stack, got {axis}")
    index = _as_index("slice index", index)
    n = array.shape[axis]
    if not 0 <= index < n:
        raise InputError(f"slice index {index} is out of range: axis {axis} has {n} slices "
                         f"(0 … {n - 1}).")
    return array[(slice(None),) * axis + (index,)]


#: Most pixels of an image sent to the browser: a larger 2D image (or slice) is shown at a
#: reduced display level (:func:`display_factor`), every view and overlay alike; what is
#: computed, measured, downloaded and exported stays at full resolution.
DISPLAY_MAX_PIXELS = 2 ** 21


def display_factor(shape, max_pixels: int = DISPLAY_MAX_PIXELS) -> int:
    """The smallest integer factor `f` with which an image of 2D `shape` shown on blocks of
    ``f`` × ``f`` pixels has at most `max_pixels` blocks (1: shown whole).

    Parameters
    ----------
    shape : tuple of 2 ints
        Rows and columns of the shown image.
    max_pixels : int, optional
        Most blocks (pixels sent to the browser).

    Raises
    ------
    InputError
        If `shape` is not two positive integers or `max_pixels` is below 1.
    """
    try:
        rows, cols = (int(n) for n in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be two integers, got {shape!r}") from None
    if rows < 1 or cols < 1:
        raise InputError(f"shape must be positive, got {shape!r}")
    if int(max_pixels) < 1:
        raise InputError(f"max_pixels must be at least 1, got {max_pixels!r}")
    factor = max(1, math.isqrt(rows * cols // int(max_pixels)))
    while -(-rows // factor) * -(-cols // factor) > max_pixels:
        factor += 1
    return factor


def _blocks_of(name, array, factor) -> tuple[np.ndarray, int]:
    array = _check_2d(name, array)
    factor = int(factor)
    if factor < 1:
        raise InputError(f"factor must be at least 1, got {factor}")
    return array, factor


def reduce_mean(image2d, factor: int) -> np.ndarray:
    """Mean of each `factor` × `factor` block of `image2d` (blocks at the far edges hold
    fewer pixels: their mean is over those), in `image2d`'s dtype (rounded for integers).

    The gray image of a reduced display level; block ``(i, j)`` is shown centred at pixel
    ``(factor * i + (factor - 1) / 2, factor * j + (factor - 1) / 2)``
    (``components.figures.seg_geometry``).
    """
    image2d, factor = _blocks_of("image2d", image2d, factor)
    if factor == 1:
        return image2d
    rows, cols = image2d.shape
    small_int = image2d.dtype.kind in "ub" or (image2d.dtype.kind == "i"
                                                and image2d.dtype.itemsize <= 2)
    # exact sums, in 32-bit integers for 8/16-bit images (fast), else float64
    acc = np.int32 if small_int and factor <= 128 else np.int64 if small_int else np.float64
    starts_r, starts_c = np.arange(0, rows, factor), np.arange(0, cols, factor)
    full_r, full_c = rows // factor, cols // factor
    sums = np.empty((starts_r.size, starts_c.size), dtype=acc)
    core = image2d[:full_r * factor, :full_c * factor]
    by_rows = core[0::factor].astype(acc)  # strided adds: far faster than a 4D reduction
    for k in range(1, factor):
        by_rows += core[k::factor]
    block = by_rows[:, 0::factor].copy()
    for k in range(1, factor):
        block += by_rows[:, k::factor]
    sums[:full_r, :full_c] = block
    if full_r < starts_r.size:  # the last, shorter row of blocks
        sums[full_r, :] = np.add.reduceat(image2d[full_r * factor:].sum(axis=0, dtype=acc),
                                          starts_c)
    if full_c < starts_c.size:  # the last, narrower column of blocks
        sums[:full_r, full_c] = image2d[:full_r * factor, full_c * factor:].sum(
            axis=1, dtype=acc).reshape(full_r, factor).sum(axis=1)
    counts = np.outer(np.diff(np.r_[starts_r, rows]), np.diff(np.r_[starts_c, cols]))
    out = sums / counts
    if np.issubdtype(image2d.dtype, np.integer):
        return np.rint(out).astype(image2d.dtype)
    return out.astype(image2d.dtype)


def reduce_nearest(array2d, factor: int) -> np.ndarray:
    """The pixel nearest each `factor` × `factor` block's centre (its last pixel for an
    edge block that is shorter): labels, markers and masks at a reduced display level, with
    the blocks of :func:`reduce_mean`."""
    array2d, factor = _blocks_of("array2d", array2d, factor)
    if factor == 1:
        return array2d
    rows, cols = array2d.shape
    r = np.minimum(np.arange(0, rows, factor) + factor // 2, rows - 1)
    c = np.minimum(np.arange(0, cols, factor) + factor // 2, cols - 1)
    return array2d[np.ix_(r, c)]


def _subsample(image: np.ndarray) -> np.ndarray:
    """At most about ``_SUBSAMPLE`` values of `image`, deterministic, spread over all of it."""
    if image.size <= _SUBSAMPLE:
        return image.reshape(-1)
    step = -(-image.size // _SUBSAMPLE)
    # A step sharing no factor with the row length visits every column.
    while math.gcd(step, image.shape[-1]) != 1:
        step += 1
    flat = np.arange(0, image.size, step)
    if image.flags.c_contiguous:  # the same values, without unravelling a million indices
        return image.reshape(-1)[flat]
    return image[np.unravel_index(flat, image.shape)]


def _finite(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return values[np.isfinite(values)]
    return values


#: Integer samples spanning at most this many values get their percentiles from their counts.
_COUNTED_SPAN = 1 << 16


def _percentiles(sample: np.ndarray, qs) -> tuple[float, ...]:
    """``np.percentile(sample, qs)`` (its default, linear method), as floats. An integer
    sample of a small span (8- and 16-bit images) is counted instead of partitioned — the
    same values (the two order statistics around each percentile, interpolated as numpy
    does), in a fifth of the time on a million values."""
    if sample.dtype.kind not in "iu" or sample.size < 2:
        return tuple(float(v) for v in np.percentile(sample, qs))
    first, last = int(sample.min()), int(sample.max())
    if last - first >= _COUNTED_SPAN:
        return tuple(float(v) for v in np.percentile(sample, qs))
    values = sample.astype(np.intp, copy=False)
    counts = np.bincount(values - first if first else values, minlength=last - first + 1)
    ends = np.cumsum(counts)  # order statistic k is the first value whose end passes k

    def order(k):
        return float(first + int(np.searchsorted(ends, k, side="right")))

    out = []
    for q in qs:
        at = q / 100 * (sample.size - 1)
        k = math.floor(at)
        t = at - k
        a, b = order(k), order(min(k + 1, sample.size - 1))
        # numpy's _lerp: a + (b - a) t, or b - (b - a)(1 - t) from t = 0.5 on
        out.append(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)
    return tuple(out)


def display_range(image) -> tuple[float, float]:
    """Robust display range of an image.

    Parameters
    ----------
    image : ndarray
        Image or stack, any numeric dtype.

    Returns
    -------
    (float, float)
        The 0.5th and 99.5th percentiles of the finite values (computed on a deterministic
        subsample of about a million values for large arrays); the finite minimum and
        maximum if these are equal; ``(0.0, 1.0)`` if there is no finite value. The two may
        be equal for a constant image.
    """
    image = np.asarray(image)
    if image.dtype.kind == "b":
        image = image.view(np.uint8)
    if image.size == 0:
        return 0.0, 1.0
    sample = _finite(_subsample(image))
    if sample.size:
        lo, hi = _percentiles(sample, (0.5, 99.5))
        if lo < hi:
            return lo, hi
    values = _finite(image) if image.dtype.kind == "f" else image
    if values.size == 0:
        return 0.0, 1.0
    return float(values.min()), float(values.max())


def to_uint8(image2d, lo, hi) -> np.ndarray:
    """Scale an image linearly to 0…255 for display.

    Parameters
    ----------
    image2d : ndarray
        Image (usually one 2D slice).
    lo, hi : float
        Values shown as black and white; values outside are clipped. If ``hi <= lo``,
        pixels above `lo` are white and the others black.

    Returns
    -------
    ndarray of uint8
        Same shape as `image2d`; NaN shows as black.
    """
    image = np.asarray(image2d)
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        raise InputError(f"display range must be two numbers, got {lo!r}, {hi!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"display range must be finite, got {lo!r}, {hi!r}")
    if image.dtype.kind == "b":
        image = image.view(np.uint8)
    if image.dtype.kind not in "iuf":
        raise InputError(f"cannot display an image of dtype {image.dtype}")
    if image.dtype == np.uint8 and lo == 0.0 and hi == 255.0:
        return np.ascontiguousarray(image)
    if hi <= lo:
        return np.where(image > lo, np.uint8(255), np.uint8(0))
    scaled = image.astype(np.float32)  # a copy, worked on in place
    scaled -= np.float32(lo)
    scaled *= np.float32(255.0 / (hi - lo))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    scaled += np.float32(0.5)
    if image.dtype.kind == "f":
        np.nan_to_num(scaled, copy=False, nan=0.0)
    return scaled.astype(np.uint8)


def png_data_uri(array) -> str:
    """PNG data URI of an 8-bit image, for ``go.Image(source=…)``.

    Parameters
    ----------
    array : ndarray of uint8
        ``(H, W)`` gray, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA.

    Returns
    -------
    str
        ``"data:image/png;base64,…"``, encoded with zlib level :data:`PNG_COMPRESS_LEVEL`.

    Raises
    ------
    InputError
        If the array is not uint8 of one of these shapes.
    """
    data = png_bytes(array, compress_level=PNG_COMPRESS_LEVEL)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def jpeg_data_uri(array, quality: int = JPEG_QUALITY) -> str:
    """JPEG data URI of an 8-bit gray image, for ``go.Image(source=…)``: the base of a large
    image at its display level (already block means: lossy), half the size of a PNG and
    encoded 20x faster. Overlays, labels and small images stay PNG (exact).

    Raises
    ------
    InputError
        If the array is not a 2D uint8 array.
    """
    import io as _io

    from PIL import Image

    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise InputError(f"a JPEG is made of a 2D uint8 image, got {array.dtype} "
                         f"{array.shape}")
    buf = _io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="JPEG", quality=int(quality))
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def marker_overlay(markers2d, alpha: float = 0.45) -> np.ndarray:
    """RGBA image of the markers.

    Parameters
    ----------
    markers2d : ndarray of int
        2D markers: 1 background, 2 object, anything else unmarked.
    alpha : float, optional
        Opacity of the marked pixels, 0…1.

    Returns
    -------
    ndarray of uint8, shape (H, W, 4)
        Marked pixels in :data:`MARKER_COLORS` with opacity `alpha`; the others fully
        transparent.
    """
    markers = _check_2d("markers", markers2d)
    a = round(_check_alpha(alpha) * 255)
    lut = np.zeros((256, 4), dtype=np.uint8)  # label -> RGBA; a table lookup is fastest
    for label, rgb in MARKER_COLORS.items():
        lut[label] = (*rgb, a)
    if markers.dtype != np.uint8:
        known = np.isin(markers, tuple(MARKER_COLORS))
        markers = np.where(known, markers, 0).astype(np.uint8)
    return np.take(lut, markers, axis=0)


def pack_values16(values2d) -> tuple[np.ndarray, float, float]:
    """Pack a 2D image's values into the red and green bytes of an RGB image (16 bits).

    So that a browser can threshold the values itself (the markers of a vmin / vmax move
    are drawn in the page before the server answers): a value is
    ``lo + (256 * red + green) * scale``. Integer-valued images whose range fits in 16 bits
    are packed exactly (``scale == 1``); others to 1/65535 of their range.

    Parameters
    ----------
    values2d : ndarray
        2D real image with finite values.

    Returns
    -------
    rgb : ndarray of uint8, shape (H, W, 3)
        High byte in red, low byte in green, blue zero.
    lo, scale : float
        Offset and step of the packed values.

    Raises
    ------
    InputError
        If `values2d` is not 2D, not real, or has non-finite values.
    """
    values = _check_2d("values2d", values2d)
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
            or values.dtype == bool):
        raise InputError(f"values2d must be real numbers, got dtype {values.dtype}")
    values = values.astype(np.float64, copy=False)
    if values.size == 0 or not np.isfinite(values).all():
        raise InputError("values2d must be non-empty with finite values")
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo
    if span <= 65535 and np.array_equal(values, np.round(values)):
        scale = 1.0
        q = values - lo
    else:
        scale = span / 65535 if span > 0 else 1.0
        q = np.round((values - lo) / scale)
    q = np.clip(q, 0, 65535).astype(np.uint16)
    rgb = np.zeros(values.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = q >> 8
    rgb[..., 1] = q & 0xFF
    return rgb, lo, scale


def segmentation_overlay(labels2d, style: str = "contour", alpha: float = 0.35) -> np.ndarray:
    """RGBA image of the segmented object.

    Parameters
    ----------
    labels2d : ndarray of int
        2D labels; the object is label 2.
    style : {"contour", "fill"}, optional
        ``"contour"``: the object's boundary, opaque, 2 pixels wide
        (:func:`skimage.segmentation.find_boundaries` with ``mode="thick"``: the pixels on
        both sides of the object's edge, readable at 1:1 and when zoomed out).
        ``"fill"``: every object pixel with opacity `alpha`.
    alpha : float, optional
        Opacity of the fill, 0…1 (the contour is always opaque).

    Returns
    -------
    ndarray of uint8, shape (H, W, 4)
        In :data:`SEGMENTATION_COLOR`; transparent elsewhere.

    Raises
    ------
    InputError
        For an unknown `style`, a non-2D array or `alpha` outside 0…1.
    """
    from skimage.segmentation import find_boundaries

    labels = _check_2d("labels", labels2d)
    if style not in OVERLAY_STYLES:
        raise InputError(f"unknown overlay style {style!r}: choose 'contour' or 'fill'.")
    a = _check_alpha(alpha)
    obj = labels == OBJECT
    lut = np.zeros((2, 4), dtype=np.uint8)
    if style == "contour":
        lut[1] = (*SEGMENTATION_COLOR, 255)
        drawn = find_boundaries(obj, mode="thick")
    else:
        lut[1] = (*SEGMENTATION_COLOR, round(a * 255))
        drawn = obj
    return np.take(lut, drawn.view(np.uint8), axis=0)


def _blocks(image: np.ndarray):
    flat = image.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        yield flat[start:start + _CHUNK]


def histogram(image, bins: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Intensity histogram over the finite range of an image.

    Parameters
    ----------
    image : ndarray
        Image or stack, any numeric dtype; NaN and infinite values are left out.
    bins : int, optional
        Largest number of bins.

    Returns
    -------
    counts : ndarray of int64
        Number of pixels per bin; sums to the number of finite pixels.
    edges : ndarray of float64
        ``len(counts) + 1`` bin edges. Floating-point images: `bins` equal bins from the
        minimum to the maximum. Integer images: bins of a whole number of values, centred on
        integers (``min - 0.5``, …), so that no bin holds more distinct values than another;
        one bin per value when the range has at most `bins` values.
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise InputError(f"bins must be a positive integer, got {bins!r}")
    bins = int(bins)
    image = np.asarray(image)
    if image.dtype.kind == "b":
        image = image.view(np.uint8)
    if image.dtype.kind not in "iuf":
        raise InputError(f"cannot compute the histogram of an image of dtype {image.dtype}")
    if image.size == 0:
        return np.zeros(bins, np.int64), np.linspace(0.0, 1.0, bins + 1)

    if image.dtype.kind in "iu":
        lo, hi = int(image.min()), int(image.max())
        width = -(-(hi - lo + 1) // bins)  # ceil: values per bin
        n_bins = -(-(hi - lo + 1) // width)
        counts = np.zeros(n_bins, np.int64)
        for block in _blocks(image):
            # Offsets from the minimum, in a type where they cannot overflow.
            if image.dtype == np.uint64:
                offset = block - np.uint64(lo)
            else:
                offset = block.astype(np.int64) - lo
            index = (offset // width).astype(np.intp)
            counts += np.bincount(index, minlength=n_bins)
        edges = lo - 0.5 + width * np.arange(n_bins + 1, dtype=np.float64)
        return counts, edges

    lo, hi = image.min(), image.max()
    finite_only = not (np.isfinite(lo) and np.isfinite(hi))
    if finite_only:
        values = image[np.isfinite(image)]
        if values.size == 0:
            return np.zeros(bins, np.int64), np.linspace(0.0, 1.0, bins + 1)
        lo, hi = values.min(), values.max()
        image = values
    lo, hi = float(lo), float(hi)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    counts = np.zeros(bins, np.int64)
    edges = None
    for block in _blocks(image):
        c, edges = np.histogram(block, bins=bins, range=(lo, hi))
        counts += c
    return counts, np.asarray(edges, dtype=np.float64)


def composite(gray, layers) -> np.ndarray:
    """Blend RGBA overlays over a grayscale image, as the browser shows them.

    Parameters
    ----------
    gray : ndarray of uint8, shape (H, W)
        The displayed image.
    layers : sequence of ndarray of uint8, shape (H, W, 4)
        Overlays, bottom first (e.g. from :func:`marker_overlay`, :func:`segmentation_overlay`).

    Returns
    -------
    rgb : ndarray of uint8, shape (H, W, 3)
    """
    gray = _check_2d("gray", gray)
    out = np.repeat(gray[..., None].astype(np.float32), 3, axis=-1)
    for layer in layers:
        layer = np.asarray(layer)
        if layer.shape != gray.shape + (4,):
            raise InputError(
                f"layers must be RGBA arrays of shape {gray.shape + (4,)}, got {layer.shape}")
        alpha = layer[..., 3:4].astype(np.float32) / 255
        out = out * (1 - alpha) + layer[..., :3].astype(np.float32) * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
