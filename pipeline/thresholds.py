"""Automatic thresholds: global histogram methods and local binarization.

:func:`global_thresholds` runs scikit-image's seven histogram-based threshold methods on an
image, to suggest values for the ``vmin`` / ``vmax`` sliders and to compare methods; a method
that fails on an image (``threshold_minimum`` needs two histogram peaks) reports why instead
of raising. :func:`local_binarization` applies Niblack's or Sauvola's local threshold, and
:func:`binarize` a single global one.
"""

from __future__ import annotations

import math
import types
import warnings

import numpy as np
from skimage import filters

from .errors import InputError

__all__ = [
    "GLOBAL_METHODS",
    "LOCAL_METHODS",
    "THRESHOLD_FUNCTIONS",
    "MAX_SAMPLE",
    "global_thresholds",
    "local_binarization",
    "binarize",
]

#: Global (histogram) threshold methods, alphabetical as in skimage.filters.try_all_threshold.
GLOBAL_METHODS = ("isodata", "li", "mean", "minimum", "otsu", "triangle", "yen")
#: Local threshold methods.
LOCAL_METHODS = ("niblack", "sauvola")
#: The scikit-image function of each method, for the documentation links of the UI.
THRESHOLD_FUNCTIONS = types.MappingProxyType(
    {name: f"skimage.filters.threshold_{name}" for name in GLOBAL_METHODS + LOCAL_METHODS}
)
#: Global thresholds of larger images are computed on a strided subsample of this size at most.
MAX_SAMPLE = 2_000_000
#: Largest window of the local methods, in pixels.
MAX_WINDOW = 1001
#: Integer images whose range holds more values than this are thresholded as floats (256
#: histogram bins) instead of with one bin per value.
MAX_INTEGER_BINS = 2**16


def _check_image(image, where):
    try:
        arr = np.asarray(image)
    except Exception:  # pragma: no cover - exotic array-likes
        raise InputError(f"{where}: image must be an array of numbers") from None
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer)
                                     or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"{where}: image must be an array of real numbers, got {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise InputError(f"{where}: image must be a 2D image or a 3D volume, "
                         f"got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{where}: image is empty (shape {arr.shape})")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise InputError(f"{where}: image contains NaN or infinite values")
    return arr


def _sample(image):
    """All values, or every k-th value (C order) so that at most MAX_SAMPLE remain."""
    values = image.ravel()
    if values.size > MAX_SAMPLE:
        values = values[:: math.ceil(values.size / MAX_SAMPLE)]
    return values


def _short(exc) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def global_thresholds(image) -> dict:
    """Every global threshold method of :data:`GLOBAL_METHODS` on `image`.

    Parameters
    ----------
    image : ndarray, 2D or 3D
        Grayscale image (any real dtype), e.g. the filtered image.

    Returns
    -------
    dict
        ``{method: threshold}`` in the order of :data:`GLOBAL_METHODS`; the threshold is a
        float, or a string ``"failed: <reason>"`` for a method that does not work on this
        image (e.g. ``minimum`` on a histogram with a single peak). One failing method
        never prevents the others.

    Notes
    -----
    Images of more than :data:`MAX_SAMPLE` (2 million) pixels are thresholded on a
    deterministic subsample: every ``k``-th pixel in C order, ``k = ceil(size / 2e6)``.
    Histogram thresholds hardly change, and the result is the same on every call. Smaller
    images give exactly ``float(skimage.filters.threshold_<method>(image))``, except integer
    images whose range exceeds :data:`MAX_INTEGER_BINS` values: these are thresholded as
    float64 (256 bins), as skimage would otherwise allocate a bin per possible value.

    Raises
    ------
    InputError
        If `image` is not a finite 2D/3D array of real numbers.
    """
    values = _sample(_check_image(image, "thresholds"))
    low, high = values.min(), values.max()
    if low == high:
        reason = f"failed: the image is constant (every pixel is {float(low):g})"
        return {name: reason for name in GLOBAL_METHODS}
    if values.dtype.kind in "iu" and int(high) - int(low) >= MAX_INTEGER_BINS:
        # skimage's histogram of an integer image has one bin per possible value: a 4x4
        # int32 image holding 10**8 took 4.9 GB. As floats, the methods use 256 bins.
        values = values.astype(np.float64)
    result = {}
    for name in GLOBAL_METHODS:
        function = getattr(filters, f"threshold_{name}")
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                value = float(function(values))
        except Exception as exc:  # a method that cannot threshold this histogram
            result[name] = f"failed: {_short(exc)}"
            continue
        result[name] = value if math.isfinite(value) else "failed: no finite threshold"
    return result


def _number(value, label) -> float:
    """`value` as a float, or InputError "<label> must be a number, got ..." (booleans too)."""
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{label} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{label} must be a number, got {value!r}") from None


def local_binarization(image, method, window_size=15, k=0.2, r=None) -> np.ndarray:
    """Binarize with a local threshold: ``image > threshold_<method>(image, window_size, k)``.

    Parameters
    ----------
    image : ndarray, 2D or 3D
        Grayscale image.
    method : {'niblack', 'sauvola'}
        Local threshold method.
    window_size : int, optional
        Side of the (square / cubic) window, odd, from 3 to :data:`MAX_WINDOW`.
    k : float, optional
        Weight of the local standard deviation, in [-2, 2] (Niblack often uses a negative
        ``k`` for bright objects; Sauvola 0.2 to 0.5).
    r : float, optional
        Sauvola's dynamic range of the standard deviation, in the image's intensity units.
        scikit-image's default is half the range of the array's dtype, which for an integer
        image converted to float64 in its own units (0..255) is 1, not 127.5: every pixel
        fell below its threshold. Give half the range of the image's original type (e.g.
        127.5 for 8-bit); ignored by Niblack.

    Returns
    -------
    ndarray of bool
        True where the pixel is above its local threshold.

    Raises
    ------
    InputError
        For an unknown method, an even / too small / too large window or a bad `k`.
    """
    if method not in LOCAL_METHODS:
        raise InputError(f"local threshold: method must be one of {', '.join(LOCAL_METHODS)}; "
                         f"got {method!r}")
    where = f"{method}"
    if isinstance(window_size, (bool, np.bool_)) or not isinstance(window_size,
                                                                 (int, np.integer)):
        raise InputError(f"{where}: window_size must be a whole number, got {window_size!r}")
    window_size = int(window_size)
    if window_size < 3 or window_size % 2 == 0:
        raise InputError(f"{where}: window_size must be an odd number of at least 3, "
                         f"got {window_size}")
    if window_size > MAX_WINDOW:
        raise InputError(f"{where}: window_size must be at most {MAX_WINDOW}, got {window_size}")
    k = _number(k, f"{where}: k")
    if not -2 <= k <= 2:
        raise InputError(f"{where}: k must be between -2 and 2, got {k!r}")
    image = _check_image(image, where)
    if method == "sauvola":
        if r is not None:
            r = _number(r, f"{where}: r")
            if not (math.isfinite(r) and r > 0):
                raise InputError(f"{where}: r must be a positive number, got {r!r}")
        return image > filters.threshold_sauvola(image, window_size=window_size, k=k, r=r)
    return image > filters.threshold_niblack(image, window_size=window_size, k=k)


def binarize(image, threshold) -> np.ndarray:
    """``image > threshold``.

    Parameters
    ----------
    image : ndarray
        Grayscale image.
    threshold : float
        Finite threshold, in the image's intensity units.

    Returns
    -------
    ndarray of bool
    """
    threshold = _number(threshold, "threshold: threshold")
    if not math.isfinite(threshold):
        raise InputError(f"threshold: threshold must be finite, got {threshold!r}")
    return _check_image(image, "threshold") > threshold
