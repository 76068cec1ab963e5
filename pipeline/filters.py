"""Filters applied to the image before the markers are set.

The recipe runner converts the loaded image to float64 (``image.astype(np.float64)``) and
then applies one filter from :data:`FILTERS`. Every filter returns a float64 array of the
same shape **in the same intensity units as its input**: nothing is rescaled to [0, 1],
because the thresholds ``vmin`` / ``vmax`` are then chosen on the filtered image. For the
same reason the strength parameters of the edge-preserving filters (``weight`` of total
variation, ``sigma_color`` of the bilateral filter, ``h`` of non-local means) are in
*intensity units*: on an 8-bit image (0..255) ``h=10`` is a mild denoising, on an image
scaled to 0..1 the same value flattens everything.

Each :class:`~pipeline.steps.Step` has an ``apply`` and a ``code`` that write the same
expression: ``code(src, dst, **params)`` returns the lines of plain Python that an exported
script runs, using only the names bound by the step's ``imports``, and gives the same array
as ``apply`` bit for bit. Filters work on 2D images and 3D volumes; the bilateral filter of
scikit-image is 2D only, so volumes are filtered plane by plane along axis 0.

Local filters declare their *reach* (``Step.reach``): :mod:`pipeline.parallel` runs them over
overlapping blocks and the stitched result is identical, bit for bit, to the whole call
(``tests/test_parallel.py``). Gaussian: scipy's kernel radius ``int(4 sigma + 0.5)`` (we
declare ``ceil(4 sigma)``, never smaller), mode ``'nearest'`` at the array's edges as in the
whole call; its 1-D passes (``Step.separable``) let a volume run without overlap instead; median: the footprint radius; bilateral: half its window, with the image's global
maximum and minimum restored in each block (scikit-image scales its colour table by them);
non-local means (fast mode): patch radius + search distance + 1, exact only where its integral
images are (integer-valued images, see :func:`_nl_means_blocks`); total variation is not local
(a global iteration and stopping criterion) and always runs whole.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, morphology, restoration

from .errors import InputError
from .steps import Param, Step

__all__ = ["FILTERS", "apply_filter"]

# Upper bound of the intensity-unit parameters: only there to refuse absurd values.
_MAX_INTENSITY = 1e9
# Lower bound of strictly positive parameters (Param bounds are inclusive).
_TINY = 1e-6


def _f(value) -> str:
    """``repr`` of `value` as a Python float (exact round trip, no ``np.float64(...)``)."""
    return repr(float(value))


# --------------------------------------------------------------------------- none


def _none(image):
    return image


def _none_code(src, dst):
    return [] if src == dst else [f"{dst} = {src}"]


# --------------------------------------------------------------------------- gaussian


def _gaussian(image, *, sigma):
    return filters.gaussian(image, sigma=sigma, preserve_range=True)


def _gaussian_reach(params, ndim):
    # scipy.ndimage.gaussian_filter's radius is int(truncate * sigma + 0.5) with skimage's
    # truncate=4.0; ceil(4 sigma) is never smaller. The separable passes (axis 0, then 1, ...)
    # only read rows inside this reach, so a block's core sees exactly the whole call's values.
    return math.ceil(4.0 * params["sigma"])


@dataclass(frozen=True)
class _GaussianPass:
    """One 1-D pass of :func:`_gaussian` along `axis`: ``run(source, out)``.

    ``filters.gaussian(image, sigma=sigma, preserve_range=True)`` on float64 is
    ``scipy.ndimage.gaussian_filter(image, sigma, mode='nearest', cval=0, truncate=4.0)``
    (scikit-image converts nothing: float64 stays float64, the output is a new float64 array),
    which runs ``gaussian_filter1d(input, sigma, axis, 0, output, mode, cval, truncate)`` for
    each axis in order, the first from the image into the output, the next ones in place in
    the output. Each line along `axis` is filtered on its own (its values read into a line
    buffer of doubles: any real input dtype gives the same doubles as its float64 copy).
    """

    axis: int
    sigma: float

    def __call__(self, source, out):
        ndi.gaussian_filter1d(source, self.sigma, self.axis, 0, out, "nearest", 0.0, 4.0)
        return out


def _gaussian_separable(image, *, sigma):
    """The passes of :func:`_gaussian` (see :class:`_GaussianPass`), in the whole call's order:
    scipy skips an axis whose sigma is at most 1e-15 (never here: sigma >= 0.01)."""
    return tuple((axis, _GaussianPass(axis, sigma)) for axis in range(image.ndim)
                 if sigma > 1e-15)


def _gaussian_code(src, dst, *, sigma):
    return [f"{dst} = filters.gaussian({src}, sigma={_f(sigma)}, preserve_range=True)"]


# --------------------------------------------------------------------------- median


def _median(image, *, radius):
    return filters.median(
        image, footprint=morphology.disk(radius) if image.ndim == 2 else morphology.ball(radius)
    )


def _median_reach(params, ndim):
    return int(params["radius"])


def _median_code(src, dst, *, radius):
    r = int(radius)
    return [
        f"{dst} = filters.median({src}, footprint=morphology.disk({r}) if {src}.ndim == 2 "
        f"else morphology.ball({r}))"
    ]


# --------------------------------------------------------------------------- total variation


def _tv(image, *, weight):
    return restoration.denoise_tv_chambolle(image, weight=weight)


def _tv_code(src, dst, *, weight):
    return [f"{dst} = restoration.denoise_tv_chambolle({src}, weight={_f(weight)})"]


# --------------------------------------------------------------------------- bilateral


def _check_bilateral(image):
    low = float(np.min(image))
    if low < 0:
        raise InputError(
            f"Bilateral: the image has negative values (minimum {low:g}); scikit-image's "
            "denoise_bilateral weighs them wrongly. Choose another filter (e.g. Non-local "
            "means) for this image."
        )
    return low


def _bilateral(image, *, sigma_color, sigma_spatial):
    _check_bilateral(image)
    if image.ndim == 2:
        return restoration.denoise_bilateral(
            image, sigma_color=sigma_color, sigma_spatial=sigma_spatial, mode="reflect",
            channel_axis=None)
    return np.stack([
        restoration.denoise_bilateral(
            plane, sigma_color=sigma_color, sigma_spatial=sigma_spatial, mode="reflect",
            channel_axis=None)
        for plane in image
    ])


def _bilateral_half_window(sigma_spatial):
    # denoise_bilateral's default win_size, and the half of it its loops visit
    return (max(5, 2 * int(math.ceil(3 * sigma_spatial)) + 1) - 1) // 2


def _bilateral_reach(params, ndim):
    if ndim == 3:
        return (0, None, None)  # plane by plane: blocks are stacks of whole planes
    return _bilateral_half_window(params["sigma_spatial"])


def _bilateral_blocks(image, *, sigma_color, sigma_spatial):
    """Blocks of a 2D bilateral filter, bit-identical to the whole call.

    ``denoise_bilateral`` scales its colour lookup table by the image's maximum (and returns
    a constant image unchanged): a block must see the whole image's maximum and minimum.
    Two slices holding them are appended beyond the block's overlap on a side where the block
    was cut (never at the image's edge, whose reflection must stay the whole call's); they are
    farther than the window from every pixel of the block's core, and cut off again.
    """
    low = _check_bilateral(image)
    if image.ndim == 3:
        return lambda block, edges: _bilateral(block, sigma_color=sigma_color,
                                               sigma_spatial=sigma_spatial)
    high = float(np.max(image))

    def run(block, edges):
        if float(block.min()) == low and float(block.max()) == high:
            return _bilateral(block, sigma_color=sigma_color, sigma_spatial=sigma_spatial)
        for axis, (at_start, at_end) in enumerate(edges):
            if at_start and at_end:
                continue
            shape = list(block.shape)
            shape[axis] = 2
            extra = np.empty(shape, dtype=block.dtype)
            first = [slice(None)] * block.ndim
            first[axis] = 0
            second = [slice(None)] * block.ndim
            second[axis] = 1
            extra[tuple(first)] = high
            extra[tuple(second)] = low
            n = block.shape[axis]
            if not at_end:
                padded = np.concatenate([block, extra], axis=axis)
                keep = slice(0, n)
            else:
                padded = np.concatenate([extra, block], axis=axis)
                keep = slice(2, 2 + n)
            out = _bilateral(padded, sigma_color=sigma_color, sigma_spatial=sigma_spatial)
            index = [slice(None)] * block.ndim
            index[axis] = keep
            return np.ascontiguousarray(out[tuple(index)])
        # a block touching every edge is the whole image, whose minimum and maximum it has
        raise AssertionError("bilateral block covers the whole image")  # pragma: no cover

    return run


def _bilateral_code(src, dst, *, sigma_color, sigma_spatial):
    call = (f"restoration.denoise_bilateral({{}}, sigma_color={_f(sigma_color)}, "
            f"sigma_spatial={_f(sigma_spatial)}, mode='reflect', channel_axis=None)")
    return [
        f"if {src}.ndim == 2:",
        f"    {dst} = {call.format(src)}",
        "else:  # denoise_bilateral is 2D only: filter a volume plane by plane (axis 0)",
        f"    {dst} = np.stack([{call.format('plane')} for plane in {src}])",
    ]


# --------------------------------------------------------------------------- non-local means


def _nl_means(image, *, h, patch_size, patch_distance):
    return restoration.denoise_nl_means(
        image, h=h, patch_size=patch_size, patch_distance=patch_distance, fast_mode=True,
        preserve_range=True, channel_axis=None)


def _nl_means_reach(params, ndim):
    # the fast algorithm pads by patch radius + distance + 1 (s is made odd first)
    size = int(params["patch_size"])
    size += 1 - size % 2
    return size // 2 + int(params["patch_distance"]) + 1


def _nl_means_blocks(image, *, h, patch_size, patch_distance):
    """Blocks of non-local means, or why they would differ from the whole call.

    The fast mode sums squared differences over *integral images* of the whole padded image:
    each patch distance is a difference of large prefix sums whose rounding depends on where
    the sum started, so a block's distances differ in the last bits from the whole call's, on
    float data. They are exact (and the blocks bit-identical) when every sum is an exact
    integer: an integer-valued image (e.g. any 8-bit or 16-bit image converted to float64)
    whose largest possible prefix sum, (max - min)^2 times the padded size times 8, is below
    2^53.
    """
    if not np.array_equal(image, np.floor(image)):
        return ("its integral images are exact only on integer-valued images (this one has "
                "fractional values)")
    pad = _nl_means_reach({"patch_size": patch_size, "patch_distance": patch_distance},
                          image.ndim)
    span = float(np.max(image)) - float(np.min(image))
    padded = math.prod(n + 2 * pad for n in image.shape)
    if span * span * padded * 8 >= 2.0**53:
        return ("its integral images would exceed 2^53 on this image (large intensity range "
                "and size): blocks would not be exact")
    return lambda block, edges: _nl_means(block, h=h, patch_size=patch_size,
                                          patch_distance=patch_distance)


def _nl_means_code(src, dst, *, h, patch_size, patch_distance):
    return [
        f"{dst} = restoration.denoise_nl_means({src}, h={_f(h)}, "
        f"patch_size={int(patch_size)}, patch_distance={int(patch_distance)}, "
        "fast_mode=True, preserve_range=True, channel_axis=None)"
    ]


# --------------------------------------------------------------------------- registry

_SKIMAGE = "from skimage import filters, morphology, restoration"

FILTERS = types.MappingProxyType({
    step.key: step
    for step in (
        Step(
            key="none", stage="filter", label="None", function="",
            apply=_none, code=_none_code, imports=(),
        ),
        Step(
            key="gaussian", stage="filter", label="Gaussian",
            function="skimage.filters.gaussian",
            params=(Param("sigma", "float", 1.0, min=0.01, max=50.0,
                          doc="Standard deviation of the Gaussian kernel, in pixels"),),
            apply=_gaussian, code=_gaussian_code, imports=(_SKIMAGE,), reach=_gaussian_reach,
            separable=_gaussian_separable,
            examples=("https://scikit-image.org/docs/stable/auto_examples/filters/"
                      "plot_unsharp_mask.html",),
        ),
        Step(
            key="median", stage="filter", label="Median",
            function="skimage.filters.median",
            params=(Param("radius", "int", 1, min=1, max=25,
                          doc="Radius of the disk (2D) or ball (3D) neighbourhood, in pixels"),),
            apply=_median, code=_median_code, imports=(_SKIMAGE,), reach=_median_reach,
        ),
        Step(
            key="tv", stage="filter", label="Total variation",
            function="skimage.restoration.denoise_tv_chambolle",
            params=(Param("weight", "float", 10.0, min=_TINY, max=_MAX_INTENSITY,
                          doc="Denoising strength, in intensity units (e.g. 10 on a 0-255 "
                              "image; larger = flatter)"),),
            apply=_tv, code=_tv_code, imports=(_SKIMAGE,),
            examples=("https://scikit-image.org/docs/stable/auto_examples/filters/"
                      "plot_denoise.html",),
        ),
        Step(
            key="bilateral", stage="filter", label="Bilateral (plane by plane in 3D)",
            function="skimage.restoration.denoise_bilateral",
            params=(
                Param("sigma_color", "float", 10.0, min=_TINY, max=_MAX_INTENSITY,
                      doc="Intensity difference that still averages, in intensity units"),
                Param("sigma_spatial", "float", 1.0, min=0.1, max=10.0,
                      doc="Spatial extent of the averaging, in pixels"),
            ),
            apply=_bilateral, code=_bilateral_code,
            imports=("import numpy as np", _SKIMAGE),
            reach=_bilateral_reach, blocks=_bilateral_blocks,
            examples=("https://scikit-image.org/docs/stable/auto_examples/filters/"
                      "plot_denoise.html",),
        ),
        Step(
            key="nl_means", stage="filter", label="Non-local means",
            function="skimage.restoration.denoise_nl_means",
            params=(
                Param("h", "float", 10.0, min=_TINY, max=_MAX_INTENSITY,
                      doc="Cut-off distance between patches, in intensity units "
                          "(about the noise level)"),
                Param("patch_size", "int", 5, min=1, max=15,
                      doc="Side of the patches compared, in pixels"),
                Param("patch_distance", "int", 6, min=1, max=15,
                      doc="How far patches are searched, in pixels"),
            ),
            apply=_nl_means, code=_nl_means_code, imports=(_SKIMAGE,),
            reach=_nl_means_reach, blocks=_nl_means_blocks,
            examples=("https://scikit-image.org/docs/stable/auto_examples/filters/"
                      "plot_nonlocal_means.html",),
        ),
    )
})


#: What a filter says of an image holding a NaN or an infinity.
_NOT_FINITE = "filter: image contains NaN or infinite values"


def _check_image(image, *, finite=True):
    """`image` if it is a filter's input (a non-empty 2D or 3D float64 array, with only
    finite values when `finite`; :mod:`pipeline.parallel` checks those block by block while
    its separable passes run), else :class:`InputError`."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"filter: image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.float64:
        raise InputError(
            f"filter: image must be float64 (convert it with image.astype(np.float64)), "
            f"got {image.dtype}"
        )
    if image.ndim not in (2, 3):
        raise InputError(
            f"filter: image must be a 2D image or a 3D volume, got shape {image.shape}"
        )
    if image.size == 0:
        raise InputError(f"filter: image is empty (shape {image.shape})")
    if finite and not np.isfinite(image).all():
        raise InputError(_NOT_FINITE)
    return image


def apply_filter(image, name, params=None) -> np.ndarray:
    """Check the filter `name` and its parameters, then apply it.

    Parameters
    ----------
    image : ndarray of float64, 2D or 3D
        The image converted to float64 (the recipe runner does this).
    name : str
        A key of :data:`FILTERS` (``'none'``, ``'gaussian'``, ...).
    params : dict, optional
        Parameters of the filter; missing ones take their defaults.

    Returns
    -------
    ndarray of float64
        The filtered image, same shape, same intensity units.

    Raises
    ------
    InputError
        For an unknown filter, a bad parameter (naming the filter and the parameter) or an
        image that is not a finite 2D/3D float64 array.
    """
    step = FILTERS.get(name) if isinstance(name, str) else None
    if step is None:
        raise InputError(f"filter: unknown filter {name!r}; choose one of {', '.join(FILTERS)}")
    if params is not None and not isinstance(params, dict):
        raise InputError(f"{step.label}: parameters must be a mapping such as "
                         f"{step.defaults()}, got {params!r}")
    checked = step.check(params)
    return step.apply(_check_image(image), **checked)
