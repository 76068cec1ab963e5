"""Segmentation methods: from the filtered image and its markers to a mask of the object.

Every method of :data:`SEGMENTERS` receives the filtered image, the markers made from the two
thresholds (:func:`pipeline.segment.make_markers`: 1 = background, below ``vmin``; 2 = object,
above ``vmax``; 0 = undecided) and the thresholds themselves, and returns a boolean mask
(True = object). The methods differ in how they decide the undecided pixels:

``random_walker``
    A random walker from each undecided pixel reaches an object marker before a background
    marker with probability > 1/2 (:mod:`pipeline.randomwalker`, the fast two-label
    equivalent of :func:`skimage.segmentation.random_walker`).
``watershed``
    Markers grow along the gradient (Sobel) landscape until they meet.
``threshold``
    A single threshold halfway between ``vmin`` and ``vmax`` (markers unused).
``hysteresis``
    Pixels above ``vmin`` connected to pixels above ``vmax`` (markers unused).

``apply(image, markers, *, vmin, vmax, **params)`` and ``code(src, markers, dst, *, vmin,
vmax, **params)`` write the same expression, so that an exported script gives the same mask
bit for bit.
"""

from __future__ import annotations

import math
import types

import numpy as np
from skimage import filters, segmentation

from .errors import InputError
from .randomwalker import MODES
from .randomwalker import random_walker as fast_random_walker
from .steps import Param, Step

__all__ = ["SEGMENTERS", "segment", "agreement"]


def _f(value) -> str:
    """``repr`` of `value` as a Python float (exact round trip, no ``np.float64(...)``)."""
    return repr(float(value))


# --------------------------------------------------------------------------- random walker


def _random_walker(image, markers, *, vmin, vmax, beta, mode, tol, intensity_scale):
    return fast_random_walker(image / intensity_scale, markers, beta=beta, mode=mode,
                              tol=tol) == 2


def _random_walker_code(src, markers, dst, *, vmin, vmax, beta, mode, tol, intensity_scale):
    opts = f"beta={_f(beta)}, mode={str(mode)!r}, tol={_f(tol)}"
    lines = [
        f"{dst} = fast_random_walker({src} / {_f(intensity_scale)}, {markers}, {opts}) == 2",
        f"# equivalent: skimage.segmentation.random_walker({src} / {_f(intensity_scale)}, "
        f"{markers}, {opts}) == 2 (same labels on >= 99.5 % of pixels)",
    ]
    if intensity_scale != 1.0:
        lines.append(f"# ({src} / {_f(intensity_scale)} is the [0, 1] scale skimage gives an "
                     "integer image: beta means what it means in skimage)")
    return lines


# --------------------------------------------------------------------------- watershed


def _watershed(image, markers, *, vmin, vmax):
    return segmentation.watershed(filters.sobel(image), markers) == 2


def _watershed_code(src, markers, dst, *, vmin, vmax):
    return [f"{dst} = segmentation.watershed(filters.sobel({src}), {markers}) == 2"]


# --------------------------------------------------------------------------- thresholds


def _threshold(image, markers, *, vmin, vmax):
    return image > (vmin + vmax) / 2


def _threshold_code(src, markers, dst, *, vmin, vmax):
    return [f"{dst} = {src} > ({_f(vmin)} + {_f(vmax)}) / 2"]


def _hysteresis(image, markers, *, vmin, vmax):
    return filters.apply_hysteresis_threshold(image, vmin, vmax)


def _hysteresis_code(src, markers, dst, *, vmin, vmax):
    return [f"{dst} = filters.apply_hysteresis_threshold({src}, {_f(vmin)}, {_f(vmax)})"]


# --------------------------------------------------------------------------- registry

SEGMENTERS = types.MappingProxyType({
    step.key: step
    for step in (
        Step(
            key="random_walker", stage="segment", label="Random walker",
            function="skimage.segmentation.random_walker",
            params=(
                Param("beta", "float", 130.0, min=0.001, max=1e5,
                      doc="Penalisation of intensity differences between neighbours"),
                Param("mode", "choice", "cg_mg", choices=MODES,
                      doc="Linear solver: cg_mg (multigrid), cg_j (Jacobi), bf (direct)"),
                Param("tol", "float", 1e-3, min=1e-8, max=0.1,
                      doc="Tolerance of the iterative solvers"),
                Param("intensity_scale", "float", 1.0, min=1e-12, max=2.0**64,
                      doc="The image is divided by this before the random walker, as skimage "
                          "rescales integer images to [0, 1] (255 for 8-bit, 65535 for "
                          "16-bit, 1 for float): beta then means what it means in skimage"),
            ),
            apply=_random_walker, code=_random_walker_code,
            imports=("from pipeline.randomwalker import random_walker as fast_random_walker",),
            examples=("https://scikit-image.org/docs/stable/auto_examples/segmentation/"
                      "plot_random_walker_segmentation.html",),
        ),
        Step(
            key="watershed", stage="segment", label="Watershed",
            function="skimage.segmentation.watershed",
            apply=_watershed, code=_watershed_code,
            imports=("from skimage import filters, segmentation",),
            examples=("https://scikit-image.org/docs/stable/auto_examples/segmentation/"
                      "plot_marked_watershed.html",),
        ),
        Step(
            key="threshold", stage="segment", label="Threshold (midpoint)",
            function="numpy.greater",
            apply=_threshold, code=_threshold_code, imports=(),
        ),
        Step(
            key="hysteresis", stage="segment", label="Hysteresis threshold",
            function="skimage.filters.apply_hysteresis_threshold",
            apply=_hysteresis, code=_hysteresis_code,
            imports=("from skimage import filters, segmentation",),
            examples=("https://scikit-image.org/docs/stable/auto_examples/filters/"
                      "plot_hysteresis.html",),
        ),
    )
})


def _number(where, name, value):
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise InputError(f"{where}: {name} must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: {name} must be a finite number, got {value!r}")
    return value


def _check_inputs(where, image, markers, vmin, vmax):
    if not isinstance(image, np.ndarray) or not (np.issubdtype(image.dtype, np.integer)
                                                 or np.issubdtype(image.dtype, np.floating)):
        raise InputError(f"{where}: image must be a numpy array of real numbers")
    if image.ndim not in (2, 3) or image.size == 0:
        raise InputError(f"{where}: image must be a 2D image or a 3D volume, "
                         f"got shape {image.shape}")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise InputError(f"{where}: image contains NaN or infinite values")
    if not isinstance(markers, np.ndarray) or markers.shape != image.shape:
        raise InputError(f"{where}: markers must be an array of the image's shape "
                         f"{image.shape}, got {np.shape(markers)}")
    if not np.issubdtype(markers.dtype, np.integer) or markers.min() < 0 or markers.max() > 2:
        raise InputError(f"{where}: markers must hold 0 (undecided), 1 (background) and "
                         "2 (object) only")
    vmin = _number(where, "vmin", vmin)
    vmax = _number(where, "vmax", vmax)
    if vmin >= vmax:
        raise InputError(f"{where}: vmin ({vmin:g}) must be below vmax ({vmax:g})")
    return vmin, vmax


def segment(image, markers, name, params=None, vmin=None, vmax=None) -> np.ndarray:
    """Check the segmentation method `name`, its parameters and inputs, then run it.

    Parameters
    ----------
    image : ndarray, 2D or 3D
        The filtered image.
    markers : ndarray of uint8, same shape
        0 = undecided, 1 = background, 2 = object (:func:`pipeline.segment.make_markers`).
    name : str
        A key of :data:`SEGMENTERS`.
    params : dict, optional
        Parameters of the method; missing ones take their defaults.
    vmin, vmax : float
        The thresholds the markers were made with (``vmin < vmax``).

    Returns
    -------
    ndarray of bool
        The object mask.

    Raises
    ------
    InputError
        For an unknown method, a bad parameter or mismatching inputs.
    """
    step = SEGMENTERS.get(name) if isinstance(name, str) else None
    if step is None:
        raise InputError(f"segmentation: unknown method {name!r}; choose one of "
                         f"{', '.join(SEGMENTERS)}")
    if params is not None and not isinstance(params, dict):
        raise InputError(f"{step.label}: parameters must be a mapping such as "
                         f"{step.defaults()}, got {params!r}")
    checked = step.check(params)
    vmin, vmax = _check_inputs(step.label, image, markers, vmin, vmax)
    return step.apply(image, markers, vmin=vmin, vmax=vmax, **checked)


def agreement(mask_a, mask_b) -> float:
    """Fraction of pixels on which two masks (or label images) agree.

    Parameters
    ----------
    mask_a, mask_b : ndarray, same shape

    Returns
    -------
    float
        In [0, 1].
    """
    a, b = np.asarray(mask_a), np.asarray(mask_b)
    if a.shape != b.shape:
        raise InputError(f"agreement: the masks have different shapes {a.shape} and {b.shape}")
    if a.size == 0:
        raise InputError("agreement: the masks are empty")
    return float(np.count_nonzero(a == b) / a.size)
