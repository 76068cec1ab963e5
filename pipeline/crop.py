"""A crop of an image, to tune a recipe on a part of a large image first.

"Try on a crop first" (issue 9): the person zooms the segmentation view to a region and tunes
the recipe on that crop, where every step is fast; then applies the recipe to the whole
image (where a long segmentation runs as a background job with progress and Cancel). The
crop is the region shown: rows and columns of the displayed slice; a volume keeps every
slice along the axis it is sliced along.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError

__all__ = ["MIN_SIDE", "crop", "view_box"]

#: A crop is at least this many pixels along each of its two shown axes.
MIN_SIDE = 8


def _bounds(name, values, size):
    """Pixel indices [start, stop) covered by a displayed range of pixel centres."""
    if not isinstance(values, (list, tuple)) or len(values) != 2:
        raise InputError(f"{name} must be a range [from, to], got {values!r}")
    try:
        lo, hi = sorted(float(v) for v in values)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be two numbers, got {values!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"{name} must be finite numbers, got {values!r}")
    # pixel i spans [i - 0.5, i + 0.5]: those at least half inside the range
    start = max(0, int(math.floor(lo + 0.5)))
    stop = min(size, int(math.ceil(hi - 0.5)) + 1)
    return start, stop


def view_box(shape, x_range, y_range, axis=0):
    """The crop shown by a view: ``(rows, cols)`` of the displayed slice, each [start, stop).

    Parameters
    ----------
    shape : tuple of int
        The image's shape (2D, or 3D for a volume).
    x_range, y_range : sequence of 2 floats
        The displayed ranges of the view's x (columns) and y (rows) axes, in pixel
        coordinates (pixel centres at integers), in any order.
    axis : int, optional
        For a volume: the axis it is sliced along (the view shows the other two).

    Returns
    -------
    rows, cols : tuple of (int, int)

    Raises
    ------
    InputError
        If a range is not two finite numbers, the view is outside the image, smaller than
        :data:`MIN_SIDE` pixels along an axis, or the whole slice (nothing to crop).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise InputError(f"shape must be 2D or 3D, got {shape}")
    if len(shape) == 3:
        if isinstance(axis, bool) or axis not in (0, 1, 2):
            raise InputError(f"axis must be 0, 1 or 2, got {axis!r}")
        shown = [s for a, s in enumerate(shape) if a != axis]
    else:
        shown = list(shape)
    rows = _bounds("y_range", y_range, shown[0])
    cols = _bounds("x_range", x_range, shown[1])
    for name, (start, stop) in (("rows", rows), ("columns", cols)):
        if stop - start < MIN_SIDE:
            raise InputError(f"the view shows {max(0, stop - start)} {name} of the image: zoom "
                             f"to a region of at least {MIN_SIDE} × {MIN_SIDE} pixels")
    if rows == (0, shown[0]) and cols == (0, shown[1]):
        raise InputError("the view shows the whole image: zoom the segmentation view to the "
                         "region to tune on first")
    return rows, cols


def crop(image, rows, cols, axis=0):
    """The part of `image` in `rows` × `cols` of its displayed slices (a copy).

    Parameters
    ----------
    image : ndarray
        2D image, or 3D volume (every slice along `axis` is kept).
    rows, cols : tuple of (int, int)
        [start, stop) along the displayed slice's rows and columns (:func:`view_box`).
    axis : int, optional
        For a volume: the axis it is sliced along.

    Returns
    -------
    ndarray
        Same dtype as `image`.

    Raises
    ------
    InputError
        If `image` is not 2D/3D or a range is outside it or empty.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise InputError(f"image must be 2D or 3D, got {image.ndim} dimension(s)")
    axes = [0, 1] if image.ndim == 2 else [a for a in range(3) if a != axis]
    if image.ndim == 3 and (isinstance(axis, bool) or axis not in (0, 1, 2)):
        raise InputError(f"axis must be 0, 1 or 2, got {axis!r}")
    take = [slice(None)] * image.ndim
    for name, a, (start, stop) in (("rows", axes[0], rows), ("cols", axes[1], cols)):
        if not (0 <= int(start) < int(stop) <= image.shape[a]):
            raise InputError(f"{name} must be within 0 … {image.shape[a]}, got {(start, stop)}")
        take[a] = slice(int(start), int(stop))
    return np.ascontiguousarray(image[tuple(take)])
