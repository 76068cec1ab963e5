"""Markers drawn by hand: object and background scribbles rasterised with ``skimage.draw``.

A scribble (a *stroke*) is a polyline in image pixel coordinates, drawn on the image in the
app (or written in a recipe)::

    {"label": 2, "path": [[x0, y0], [x1, y1], ...], "width": 5.0}

``label`` is the marker it paints (1 = background, 2 = object, as
:func:`pipeline.segment.make_markers`); ``x`` is the column and ``y`` the row of a pixel
centre; ``width`` is the stroke's width in pixels. On a 3D image a stroke also names the
slice it was drawn on: ``"axis"`` (0, 1 or 2) and ``"index"``; its ``x`` / ``y`` are then the
column / row of that slice (``pipeline.render.take_slice``).

A stroke covers the pixels of the centre line between consecutive points
(:func:`skimage.draw.line`), a band of its width around each segment
(:func:`skimage.draw.polygon`) and a disk of its width at each point
(:func:`skimage.draw.disk`: round caps and joins). Scribbles are painted over the vmin / vmax
markers in order, so a scribble overrides the thresholds and, where strokes of both labels
cross, the later stroke wins (:func:`paint_scribbles`).

The work is bounded: at most :data:`MAX_STROKES` strokes, :data:`MAX_POINTS` points in all,
widths up to :data:`MAX_WIDTH` pixels, and every point within the image (give or take the
stroke's width), so a stroke's segments are never longer than the image's diagonal.
"""

from __future__ import annotations

import math

import numpy as np
from skimage import draw

from .errors import InputError

__all__ = [
    "LABELS",
    "MAX_POINTS",
    "MAX_STROKES",
    "MAX_WIDTH",
    "check_fit",
    "check_scribbles",
    "paint_scribbles",
    "paint_stroke",
]

#: Most strokes a recipe may hold.
MAX_STROKES = 200
#: Most points all the strokes of a recipe may hold together (a saved recipe, indented
#: JSON, takes ~65 bytes a point: 10,000 keep it under the 1 MB a recipe may be).
MAX_POINTS = 10_000
#: Widest stroke, in pixels.
MAX_WIDTH = 50.0
#: The labels a stroke may paint: 1 = background, 2 = object.
LABELS = {1: "background", 2: "object"}
#: Largest absolute coordinate accepted in a recipe (the image check is made when painting).
MAX_COORD = 1e6

_KEYS = ("label", "path", "width", "axis", "index")


def _kind(value) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return f"the text {value!r}"
    return "null" if value is None else repr(value)


def _integer(where, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{where} must be an integer, got {_kind(value)}")
    if not math.isfinite(float(value)) or float(value) != int(value):
        raise InputError(f"{where} must be an integer, got {value!r}")
    return int(value)


def _coordinate(where, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{where} must be a number, got {_kind(value)}")
    number = float(value)
    if not math.isfinite(number) or abs(number) > MAX_COORD:
        raise InputError(f"{where} must be a finite number of at most {MAX_COORD:g} in size, "
                         f"got {value!r}")
    return number


def check_scribbles(scribbles, where: str = "scribbles") -> list:
    """Check a list of strokes and return it normalised.

    Parameters
    ----------
    scribbles : list of dict
        Strokes ``{"label": 1 | 2, "path": [[x, y], ...], "width": px}``, with ``"axis"``
        and ``"index"`` for a stroke drawn on a slice of a 3D image.
    where : str
        How messages name the list (e.g. ``"recipe markers: scribbles"``).

    Returns
    -------
    list of dict
        Each stroke with ``label`` an int, ``path`` a list of ``[float, float]``, ``width`` a
        float and, when given, ``axis`` and ``index`` ints (keys in that order), so that equal
        strokes give equal recipes and cache keys.

    Raises
    ------
    InputError
        Naming the stroke and the problem: not a list, more than :data:`MAX_STROKES` strokes
        or :data:`MAX_POINTS` points, an unknown key, a label other than 1 or 2, an empty
        path, a point that is not two finite numbers, a width outside 1 … :data:`MAX_WIDTH`,
        ``axis`` without ``index`` (or the reverse), an axis other than 0, 1, 2 or a
        negative index.
    """
    if not isinstance(scribbles, (list, tuple)):
        raise InputError(f"{where} must be a list of strokes "
                         '[{"label": 1 or 2, "path": [[x, y], ...], "width": px}, ...], '
                         f"got {_kind(scribbles)}")
    if len(scribbles) > MAX_STROKES:
        raise InputError(f"{where}: {len(scribbles):,} strokes, the limit is {MAX_STROKES}: "
                         "clear some scribbles (or combine them into fewer strokes)")
    out, points = [], 0
    for n, stroke in enumerate(scribbles, 1):
        here = f"{where}: stroke {n}"
        if not isinstance(stroke, dict):
            raise InputError(f"{here} must be a mapping "
                             '{"label": 1 or 2, "path": [[x, y], ...], "width": px}, '
                             f"got {_kind(stroke)}")
        unknown = [k for k in stroke if k not in _KEYS]
        if unknown:
            raise InputError(f"{here}: unknown key {', '.join(repr(k) for k in unknown)}; "
                             f"expected {', '.join(_KEYS)}")
        for key in ("label", "path", "width"):
            if key not in stroke:
                raise InputError(f"{here}: {key} is missing")
        label = stroke["label"]
        if isinstance(label, bool) or label not in LABELS:
            raise InputError(f"{here}: label must be 1 (background) or 2 (object), "
                             f"got {_kind(label)}")
        label = int(label)
        width = _coordinate(f"{here}: width", stroke["width"])
        if not 1.0 <= width <= MAX_WIDTH:
            raise InputError(f"{here}: width must be between 1 and {MAX_WIDTH:g} pixels, "
                             f"got {width:g}")
        path = stroke["path"]
        if not isinstance(path, (list, tuple)) or not path:
            raise InputError(f"{here}: path must be a non-empty list of points [x, y], got "
                             f"{'an empty list' if isinstance(path, (list, tuple)) else _kind(path)}")
        points += len(path)
        if points > MAX_POINTS:
            raise InputError(f"{where}: more than {MAX_POINTS:,} points in all (at stroke {n}): "
                             "clear some scribbles or draw shorter strokes")
        checked = []
        for i, point in enumerate(path, 1):
            if not isinstance(point, (list, tuple)) or len(point) != 2:
                raise InputError(f"{here}: point {i} must be [x, y], got {_kind(point)}")
            checked.append([_coordinate(f"{here}: point {i} x", point[0]),
                            _coordinate(f"{here}: point {i} y", point[1])])
        entry = {"label": label, "path": checked, "width": width}
        if ("axis" in stroke) != ("index" in stroke):
            raise InputError(f"{here}: give both axis and index (the slice it was drawn on) "
                             "or neither")
        if "axis" in stroke:
            axis = _integer(f"{here}: axis", stroke["axis"])
            index = _integer(f"{here}: index", stroke["index"])
            if axis not in (0, 1, 2):
                raise InputError(f"{here}: axis must be 0, 1 or 2, got {axis}")
            if index < 0:
                raise InputError(f"{here}: index must be 0 or more, got {index}")
            entry["axis"], entry["index"] = axis, index
        out.append(entry)
    return out


def paint_stroke(plane, label, path, width):
    """Paint one stroke on a 2D marker array, in place (``skimage.draw``).

    The stroke covers the pixels of the line between consecutive points
    (``skimage.draw.line``), a band of `width` around each segment (``skimage.draw.polygon``)
    and a disk of diameter `width` at each point (``skimage.draw.disk``); what falls outside
    `plane` is dropped.

    Parameters
    ----------
    plane : ndarray, 2D
        Marker array (or a slice of one), written in place.
    label : int
        The value painted (1 = background, 2 = object).
    path : list of [x, y]
        Points in pixel coordinates: x the column, y the row.
    width : float
        Stroke width in pixels (1 or more).
    """
    rows, cols = plane.shape
    radius = width / 2
    xs = [float(p[0]) for p in path]
    ys = [float(p[1]) for p in path]
    for x, y in zip(xs, ys):  # round caps and joins
        rr, cc = draw.disk((y, x), max(radius, 0.5), shape=plane.shape)
        plane[rr, cc] = label
    for i in range(len(xs) - 1):
        x0, y0, x1, y1 = xs[i], ys[i], xs[i + 1], ys[i + 1]
        # the centre line: connected whatever the width
        rr, cc = draw.line(round(y0), round(x0), round(y1), round(x1))
        keep = (rr >= 0) & (rr < rows) & (cc >= 0) & (cc < cols)
        plane[rr[keep], cc[keep]] = label
        length = math.hypot(x1 - x0, y1 - y0)
        if length > 0 and radius > 0.5:  # the band of the stroke's width along the segment
            px, py = -(y1 - y0) / length * radius, (x1 - x0) / length * radius
            rr, cc = draw.polygon([y0 + py, y1 + py, y1 - py, y0 - py],
                                  [x0 + px, x1 + px, x1 - px, x0 - px], shape=plane.shape)
            plane[rr, cc] = label


def _plane_shape(shape, stroke, n):
    """(rows, cols) of the image plane a stroke is drawn on, checked against `shape`."""
    if len(shape) == 2:
        if "axis" in stroke:
            raise InputError(f"scribbles: stroke {n} names a slice (axis {stroke['axis']}, "
                             f"index {stroke['index']}) but the image is 2D")
        return tuple(shape)
    if "axis" not in stroke:
        raise InputError(f"scribbles: stroke {n} names no slice (axis, index) but the image "
                         "is 3D")
    axis, index = stroke["axis"], stroke["index"]
    if index >= shape[axis]:
        raise InputError(f"scribbles: stroke {n} is on slice {index} of axis {axis}, which "
                         f"has {shape[axis]} slices (0 … {shape[axis] - 1})")
    return tuple(s for i, s in enumerate(shape) if i != axis)


def check_fit(scribbles, shape) -> list:
    """Check that strokes fit an image of `shape`, without painting them.

    Parameters
    ----------
    scribbles : list of dict
        Strokes (see :func:`check_scribbles`; checked here).
    shape : tuple of int
        The image's shape (2D or 3D).

    Returns
    -------
    list of dict
        The normalised strokes.

    Raises
    ------
    InputError
        If a stroke names a slice on a 2D image (or none on a 3D one) or a slice out of
        range, or a point lies outside the image by more than the stroke's width (the
        scribbles of another image?).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise InputError(f"markers must be a 2D or 3D array, got shape {shape}")
    scribbles = check_scribbles(scribbles)
    for n, stroke in enumerate(scribbles, 1):
        rows, cols = _plane_shape(shape, stroke, n)
        margin = stroke["width"] + 1
        for i, (x, y) in enumerate(stroke["path"], 1):
            if not (-margin <= x <= cols - 1 + margin and -margin <= y <= rows - 1 + margin):
                raise InputError(
                    f"scribbles: stroke {n} point {i} (x={x:g}, y={y:g}) is outside the "
                    f"{cols} × {rows} image: were these scribbles drawn on another image?")
    return scribbles


def paint_scribbles(markers, scribbles) -> np.ndarray:
    """Paint strokes over markers, in order (the later stroke wins where they cross).

    Parameters
    ----------
    markers : ndarray of uint8, 2D or 3D
        Markers (e.g. from vmin / vmax: ``pipeline.segment.make_markers``); not modified.
    scribbles : list of dict
        Strokes (see :func:`check_scribbles`; checked here).

    Returns
    -------
    ndarray of uint8
        A copy of `markers` with every stroke painted: scribbles override the thresholds.

    Raises
    ------
    InputError
        If `markers` is not a 2D or 3D array, a stroke is invalid, a stroke names a slice on
        a 2D image (or none on a 3D one) or a slice out of range, or a point lies outside
        the image by more than the stroke's width (the scribbles of another image?).
    """
    markers = np.asarray(markers)
    scribbles = check_fit(scribbles, markers.shape)
    out = markers.astype(np.uint8, copy=True)
    for stroke in scribbles:
        plane = out if "axis" not in stroke else out[
            (slice(None),) * stroke["axis"] + (stroke["index"],)]
        paint_stroke(plane, stroke["label"], stroke["path"], stroke["width"])
    return out

