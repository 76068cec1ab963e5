"""Markers from two thresholds and the parameters of random-walker segmentation.

The talk's recipe: pixels darker than ``vmin`` are background markers, pixels brighter than
``vmax`` are object markers, and :func:`skimage.segmentation.random_walker` decides the rest.
"""

from __future__ import annotations

import math
import numpy as np
from skimage import filters

from .errors import InputError
from .scribbles import paint_scribbles

__all__ = [
    "intensity_scale",
    "BACKGROUND",
    "OBJECT",
    "make_markers",
    "default_thresholds",
    "threshold_range",
    "threshold_step",
]

BACKGROUND = 1
OBJECT = 2


def _finite_number(name, value):
    if isinstance(value, bool) or value is None:
        raise InputError(f"{name} must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return value


def _round(value, digits=6):
    """Round to `digits` significant digits so that equal settings give equal cache keys."""
    if value == 0:
        return 0.0
    return float(f"{value:.{digits}g}")


def _beyond(image, threshold: float, *, above: bool) -> np.ndarray:
    """``image > threshold`` (`above`) or ``image < threshold``, as a new boolean array.

    An integer image is compared with the integer threshold that selects the same pixels
    (``x < t`` ⇔ ``x < ceil(t)``, ``x > t`` ⇔ ``x > floor(t)``), clamped to its dtype's
    range: no conversion of every pixel to float (2x faster on uint8)."""
    if image.dtype.kind in "ui":
        info = np.iinfo(image.dtype)
        edge = math.floor(threshold) if above else math.ceil(threshold)
        if above and edge >= info.max or not above and edge <= info.min:
            return np.zeros(image.shape, dtype=bool)
        if above and edge < info.min or not above and edge > info.max:
            return np.ones(image.shape, dtype=bool)
        edge = image.dtype.type(edge)
    else:
        edge = threshold
    return np.greater(image, edge) if above else np.less(image, edge)


def make_markers(image, vmin, vmax, *, check=True, scribbles=None) -> np.ndarray:
    """Markers for random walker from two thresholds (and strokes drawn by hand).

    Parameters
    ----------
    image : ndarray
        Grayscale image, 2D or 3D.
    vmin, vmax : float
        Pixels ``< vmin`` become background markers (1), pixels ``> vmax`` object markers (2);
        the rest is 0 (to be decided by the random walker).
    check : bool
        Raise if a label has no pixel.
    scribbles : list of dict, optional
        Strokes drawn by hand (:mod:`pipeline.scribbles`), painted over the threshold markers
        in order with ``skimage.draw`` (:func:`pipeline.scribbles.paint_scribbles`): they
        override the thresholds, and the later stroke wins where strokes cross. None or an
        empty list: the threshold markers alone.

    Returns
    -------
    markers : ndarray of uint8, same shape as `image`

    Raises
    ------
    InputError
        If ``vmin >= vmax``, a stroke is invalid or outside the image, or, with `check`, if
        a marker label is empty.
    """
    image = np.asarray(image)
    vmin = _finite_number("vmin", vmin)
    vmax = _finite_number("vmax", vmax)
    if vmin >= vmax:
        raise InputError(f"vmin ({vmin:g}) must be below vmax ({vmax:g}).")
    # below and above are disjoint (vmin < vmax): 2 * above + below, without a masked
    # assignment (6x faster on 4096², where the coarse preview of every move makes them)
    markers = _beyond(image, vmax, above=True).view(np.uint8) << 1
    markers |= _beyond(image, vmin, above=False).view(np.uint8)
    if scribbles:
        markers = paint_scribbles(markers, scribbles)
    drawn = " and no background stroke is drawn" if scribbles else ""
    if check:
        if not (markers == BACKGROUND).any():
            raise InputError(
                f"No background marker: no pixel is below vmin = {vmin:g}"
                f"{drawn}. Raise vmin{' or draw a background stroke' if scribbles else ''}."
            )
        if not (markers == OBJECT).any():
            raise InputError(
                f"No object marker: no pixel is above vmax = {vmax:g}"
                f"{drawn.replace('background', 'object')}. Lower vmax"
                f"{' or draw an object stroke' if scribbles else ''}.")
        if not (markers == 0).any():
            raise InputError(
                "Every pixel is already a marker: nothing is left for the random walker. "
                "Move vmin and vmax apart."
            )
    return markers


def block_markers(image, vmin, vmax, factor) -> np.ndarray:
    """The markers of the `factor`-wide blocks of `image` (the last blocks partial) for the
    thresholds `vmin` < `vmax`: 1 (background) where a block holds background markers of
    :func:`make_markers` and no object marker, 2 (object) the other way round, else 0 — what
    coarsening the full-resolution markers gives, found from each block's minimum and
    maximum (``randomwalker.block_extrema``) with no full-size markers: a block holds a
    background marker iff its minimum is below `vmin`, an object marker iff its maximum is
    above `vmax` (the same comparisons as :func:`make_markers`; NaN pixels are no markers).

    Parameters
    ----------
    image : ndarray
        Grayscale image, 2D or 3D.
    vmin, vmax : float
        The thresholds (``vmin < vmax``).
    factor : int
        Block width along every axis (>= 1).

    Returns
    -------
    ndarray of uint8, shape ``ceil(image.shape / factor)``
    """
    from .randomwalker import block_extrema, block_labels  # (the heavier import)

    vmin = _finite_number("vmin", vmin)
    vmax = _finite_number("vmax", vmax)
    if vmin >= vmax:
        raise InputError(f"vmin ({vmin:g}) must be below vmax ({vmax:g}).")
    low, high = block_extrema(image, factor)
    return block_labels(_beyond(low, vmin, above=False), _beyond(high, vmax, above=True))


def _nice_step(span: float) -> float:
    """The round number (1, 2 or 5 × 10**k) nearest to ``span / 1000`` on a log scale."""
    raw = span / 1000 if span > 0 else 1.0
    exponent = math.floor(math.log10(raw))
    candidates = [m * 10.0 ** e for e in (exponent, exponent + 1) for m in (1, 2, 5)]
    best = min(candidates, key=lambda c: abs(math.log10(c / raw)))
    return _round(best, 3)


def _extrema(image, extrema) -> tuple[float, float]:
    """``(min, max)`` of `image`, or `extrema` if given (the caller's, read once)."""
    if extrema is None:
        return float(np.min(image)), float(np.max(image))
    if len(extrema) != 2:
        raise InputError(f"extrema must be a (min, max) pair, got {extrema!r}.")
    return float(extrema[0]), float(extrema[1])


def threshold_step(image, extrema=None) -> float:
    """Slider step for thresholds: 1 for integer images; for float images a round number
    (1, 2 or 5 × 10**k) of about range/1000, so that typed round values stay on the grid.
    `extrema`: the image's ``(min, max)`` if known (not read again)."""
    image = np.asarray(image)
    if np.issubdtype(image.dtype, np.integer):
        return 1.0
    lo, hi = _extrema(image, extrema)
    return _nice_step(hi - lo)


def threshold_range(image, extrema=None) -> tuple[float, float]:
    """Bounds of the threshold slider: the image's range for integer images; for float
    images the range widened to multiples of ten steps (a float image in −0.00027 … 0.9987
    gets −0.01 … 1), so that the grid of :func:`threshold_step` starts at a round number and
    the round values a person types (0, 1) are on it and inside it. `extrema`: the image's
    ``(min, max)`` if known (not read again)."""
    image = np.asarray(image)
    lo, hi = _extrema(image, extrema)
    if np.issubdtype(image.dtype, np.integer):
        return lo, hi
    unit = 10 * threshold_step(image, (lo, hi))
    return _round(math.floor(lo / unit) * unit, 12), _round(math.ceil(hi / unit) * unit, 12)


def default_thresholds(image, extrema=None) -> tuple[float, float]:
    """A first guess of (vmin, vmax): halfway between Otsu's threshold and each class mean.

    Otsu's threshold splits the histogram into two classes; the markers start halfway between
    the threshold and the mean of each class (on coins: 83 and 130, 25 objects).

    Parameters
    ----------
    image : ndarray
        Grayscale image, not constant.
    extrema : (float, float), optional
        The image's minimum and maximum if known (a float image's are not read again).

    Returns
    -------
    vmin, vmax : float
    """
    image = np.asarray(image)
    sample = image.ravel()
    if sample.size > 2_000_000:  # a deterministic subsample is plenty for a histogram threshold
        # copied once: the histogram, the masks and the means below then read contiguous
        # values (512x512x128 uint16: 30 -> 12 ms)
        sample = np.ascontiguousarray(sample[:: sample.size // 1_000_000])
    if sample.dtype.kind in "iu" and int(sample.max()) - int(sample.min()) >= 2**16:
        # skimage's histogram of an integer image has a bin per possible value: an int32
        # image holding 10**8 took 4.8 GB; 256 bins over the range are plenty for Otsu
        t = float(filters.threshold_otsu(sample.astype(np.float64), nbins=256))
    else:
        t = float(filters.threshold_otsu(sample))
    low_mean = float(sample[sample <= t].mean())
    high = sample[sample > t]
    high_mean = float(high.mean()) if high.size else float(sample.max())
    vmin, vmax = (low_mean + t) / 2, (t + high_mean) / 2
    if np.issubdtype(image.dtype, np.integer):
        vmin, vmax = math.floor(vmin), math.ceil(vmax)
    else:
        # on the slider's grid (:func:`threshold_range`, :func:`threshold_step`)
        extrema = _extrema(image, extrema)
        step, lo = threshold_step(image, extrema), threshold_range(image, extrema)[0]
        vmin, vmax = (lo + round((v - lo) / step) * step for v in (vmin, vmax))
    return _round(vmin), _round(vmax)


def intensity_scale(dtype) -> float:
    """The value skimage maps to 1.0 when it converts an image of `dtype` to float.

    ``skimage.util.img_as_float`` (which ``random_walker`` applies first) divides integer images
    by their type's maximum (255 for uint8, 65535 for uint16) and leaves float images as they
    are. The pipeline keeps intensities in the image's own units, so the random-walker step
    divides by this to give beta its skimage meaning.
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0
