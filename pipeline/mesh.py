"""A volume seen in 3D: surfaces of its labelled regions and three orthogonal planes.

:func:`surface_mesh` runs :func:`skimage.measure.marching_cubes` on each of the largest
labelled regions of a 3D label image and returns triangle meshes in physical units (the
voxel size, ``spacing``, is passed to ``marching_cubes``). The work is bounded before it
starts: the number of triangles is estimated from the regions' boundary faces (about two
triangles per voxel face at full resolution, measured on spheres and on ``blobs_3d``) and the
sampling step (as marching cubes' ``step_size``) is the smallest one that keeps the estimate under
``max_triangles``; the voxels visited are bounded by ``max_voxels`` the same way; at most
``max_regions`` regions are drawn (the largest ones).

:func:`plane`, :func:`plane_stride` and :func:`contour_overlay` give the orthogonal views: one
plane of the volume through a cursor point, strided so that at most :data:`MAX_PLANE_PIXELS`
pixels are shown, and the regions' outlines
(:func:`skimage.segmentation.find_boundaries`) in their colours.

Colours: region ``L`` gets ``LABEL_COLORS[(L - 1) % 10]``, the colour cycle of
:func:`skimage.color.label2rgb` (the 2D "label colours" overlay); for sequential labels
(``skimage.measure.label``'s output) this is the colour ``label2rgb`` gives the region on the
whole volume. Pure numpy / scikit-image: no dash, flask or plotly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.color import color_dict
from skimage.measure import marching_cubes
from skimage.segmentation import find_boundaries

from .errors import InputError

__all__ = [
    "DEFAULT_MAX_TRIANGLES",
    "DEFAULT_MAX_REGIONS",
    "DEFAULT_MAX_VOXELS",
    "MAX_PLANE_PIXELS",
    "TRIANGLES_PER_FACE",
    "LABEL_COLOR_NAMES",
    "LABEL_COLORS",
    "PLANES",
    "RegionSurface",
    "SurfaceMesh",
    "check_spacing",
    "label_rgb",
    "label_hex",
    "boundary_faces",
    "estimate_triangles",
    "surface_mesh",
    "plane_stride",
    "plane",
    "contour_overlay",
]

#: Triangles of the whole surface, at most (about 4.8 MB sent to the browser as binary arrays).
DEFAULT_MAX_TRIANGLES = 200_000
#: Regions drawn, at most (the largest ones).
DEFAULT_MAX_REGIONS = 50
#: Voxels given to marching cubes (the regions' bounding boxes sampled at the chosen step; 4
#: bytes each), at most.
DEFAULT_MAX_VOXELS = 16 * 2**20
#: Pixels of one orthogonal plane sent to the browser, at most (larger planes are strided).
MAX_PLANE_PIXELS = 2**20
#: Triangles per voxel face of a region's boundary at step 1: 2.0 on spheres, 2.08 on the
#: 501 regions of ``blobs_3d(128)`` (2.4 on thresholded white noise); fewer at coarser steps
#: (1.4 at step 2).
TRIANGLES_PER_FACE = 2.1

#: The colour cycle of :func:`skimage.color.label2rgb` (``skimage.color.colorlabel``).
LABEL_COLOR_NAMES = ("red", "blue", "yellow", "magenta", "green", "indigo", "darkorange",
                     "cyan", "pink", "yellowgreen")
#: The same colours as uint8 RGB rows.
LABEL_COLORS = np.array([[round(255 * c) for c in color_dict[name]]
                         for name in LABEL_COLOR_NAMES], dtype=np.uint8)
LABEL_COLORS.setflags(write=False)
#: The orthogonal planes through a point ``(z, y, x)``: name → (fixed axis, row axis, column
#: axis). ``"yx"`` is the plane at ``z``, ``"zx"`` at ``y``, ``"zy"`` at ``x``.
PLANES = {"zy": (2, 0, 1), "zx": (1, 0, 2), "yx": (0, 1, 2)}


# --------------------------------------------------------------------------------------------
# Checks


def _positive_int(name, value, minimum=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be a whole number, got {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def check_spacing(spacing, ndim=3, name="spacing") -> tuple:
    """A voxel size checked: `ndim` positive finite numbers (one per axis).

    Parameters
    ----------
    spacing : sequence of float or None
        Size of a voxel along each axis, ``(z, y, x)`` for a volume; None means 1 along
        every axis.
    ndim : int, optional
        Number of axes.
    name : str, optional
        The argument's name, for messages.

    Returns
    -------
    tuple of float

    Raises
    ------
    InputError
        Naming `name`, if `spacing` is not `ndim` positive finite numbers.
    """
    if spacing is None:
        return (1.0,) * ndim
    if isinstance(spacing, (str, bytes, dict)) or not hasattr(spacing, "__len__"):
        raise InputError(f"{name} must be {ndim} positive numbers (one per axis), "
                         f"got {spacing!r}")
    if len(spacing) != ndim:
        raise InputError(f"{name} must have {ndim} values (one per axis), got "
                         f"{len(spacing)}: {list(spacing)!r}")
    values = []
    for v in spacing:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)):
            raise InputError(f"{name} must be {ndim} positive numbers, got {list(spacing)!r}")
        v = float(v)
        if not math.isfinite(v) or v <= 0:
            raise InputError(f"{name} must be {ndim} positive finite numbers, got "
                             f"{list(spacing)!r}")
        values.append(v)
    return tuple(values)


def _check_labels3d(labels, name="labels"):
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"{name} must be a 3D label volume, got shape {labels.shape}")
    if labels.dtype == np.bool_:
        return labels.view(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{name} must be integers (0 = background), got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise InputError(f"{name} must not be negative")
    if labels.dtype.itemsize >= 8 and labels.dtype.kind == "u":
        labels = labels.astype(np.int64)  # np.bincount and find_objects refuse uint64
    return labels


# --------------------------------------------------------------------------------------------
# Colours


def label_rgb(labels) -> np.ndarray:
    """RGB colour (uint8) of each label: ``LABEL_COLORS[(label - 1) % 10]`` (0 gives black).

    Parameters
    ----------
    labels : int or ndarray of int

    Returns
    -------
    ndarray of uint8, shape ``labels.shape + (3,)``
    """
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise InputError(f"labels must be integers, got {labels.dtype}")
    index = (labels.astype(np.int64) - 1) % len(LABEL_COLORS)
    rgb = np.take(LABEL_COLORS, index, axis=0)  # a copy
    rgb[labels == 0] = 0
    return rgb


def label_hex(label: int) -> str:
    """``#rrggbb`` colour of one label (see :func:`label_rgb`)."""
    r, g, b = (int(c) for c in label_rgb(int(label)))
    return f"#{r:02x}{g:02x}{b:02x}"


# --------------------------------------------------------------------------------------------
# Surfaces


@dataclass(frozen=True)
class RegionSurface:
    """The triangle mesh of one region.

    Attributes
    ----------
    label : int
    vertices : ndarray of float32, (n, 3)
        ``(z, y, x)`` positions in physical units (voxel index times spacing).
    faces : ndarray of int32, (m, 3)
        Indices into `vertices`.
    color : str
        ``#rrggbb`` (:func:`label_hex`).
    voxels : int
        Size of the region, in voxels.
    """

    label: int
    vertices: np.ndarray
    faces: np.ndarray
    color: str
    voxels: int


@dataclass(frozen=True)
class SurfaceMesh:
    """Surfaces of the largest regions of a label volume, and what they cost.

    Attributes
    ----------
    regions : tuple of RegionSurface
        Largest region first.
    n_regions : int
        Regions in the volume (non-zero labels present).
    step : int
        Sampling step of the masks (1 = every voxel); small regions are sampled more
        finely (at least two samples across their thinnest side).
    triangles : int
        Triangles of all `regions`.
    estimated_triangles : int
        The estimate at step 1 the step was chosen from.
    seconds : float
        Time spent, estimate included.
    spacing : tuple of float
        Voxel size used, ``(z, y, x)``.
    skipped : int
        Regions among the largest ones with no surface at this step (thinner than a step).
    """

    regions: tuple
    n_regions: int
    step: int
    triangles: int
    estimated_triangles: int
    seconds: float
    spacing: tuple
    skipped: int = 0

    @property
    def n_shown(self) -> int:
        """Regions drawn."""
        return len(self.regions)


def boundary_faces(mask) -> int:
    """Number of voxel faces between a 3D mask and the outside (padded with background)."""
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1)
    return int(sum(np.count_nonzero(np.diff(padded, axis=a)) for a in range(padded.ndim)))


def estimate_triangles(faces: int, step: int = 1) -> int:
    """Triangles marching cubes makes of a surface of `faces` voxel faces, at `step`.

    :data:`TRIANGLES_PER_FACE` per face at step 1, 1.5 per face at coarser steps (1.40
    measured at step 2, 1.30 at step 3), divided by ``step ** 2``: an upper estimate for
    smooth regions (noise makes up to 15 % more).
    """
    faces = _positive_int("faces", faces, minimum=0)
    step = _positive_int("step", step)
    per_face = TRIANGLES_PER_FACE if step == 1 else 1.5
    return int(math.ceil(per_face * faces / step ** 2))


def _region_step(shape, step):
    """The step of one region's crop: `step`, but fine enough for a small region to keep a
    surface (a region is sampled at least twice across its thinnest side)."""
    return max(1, min(step, (min(shape) - 2) // 2))


def _largest(labels, max_regions):
    """(labels of the largest regions, their sizes, regions present)."""
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    present = np.flatnonzero(counts)
    order = present[np.argsort(-counts[present], kind="stable")][:max_regions]
    return order, counts[order], int(present.size)


def surface_mesh(labels, spacing=None, *, max_triangles=DEFAULT_MAX_TRIANGLES,
                 max_regions=DEFAULT_MAX_REGIONS, max_voxels=DEFAULT_MAX_VOXELS) -> SurfaceMesh:
    """Triangle meshes of the largest labelled regions of a volume.

    Runs :func:`skimage.measure.marching_cubes` (level 0.5, ``spacing=step * spacing``) on
    each region's mask cropped to its bounding box, padded with one background voxel (a
    region touching the border gets a closed surface) and sampled every `step` voxels (what
    marching cubes' ``step_size`` does, without a float copy of the whole crop).

    Parameters
    ----------
    labels : ndarray of int, (Z, Y, X)
        Label volume (0 = background); a boolean mask is one region.
    spacing : sequence of 3 float, optional
        Voxel size ``(z, y, x)``; vertices are in these units. Default 1.
    max_triangles : int, optional
        Cap on the triangles of the whole mesh: the step is the smallest whose estimate
        (:func:`estimate_triangles`) stays under it; a run that still exceeds it is redone
        at the next step (twice at most). Small regions keep a step fine enough for them to
        keep a surface (at least two samples across), so a cap below a few triangles per
        region cannot be met.
    max_regions : int, optional
        Regions drawn, at most: the largest ones (by voxel count).
    max_voxels : int, optional
        Cap on the voxels visited (bounding boxes of the drawn regions, divided by
        ``step ** 3``).

    Returns
    -------
    SurfaceMesh

    Raises
    ------
    InputError
        If `labels` is not a 3D integer volume, `spacing` is not 3 positive numbers, or a cap
        is not a positive whole number.
    """
    t0 = time.perf_counter()
    labels = _check_labels3d(labels)
    spacing = check_spacing(spacing, 3)
    max_triangles = _positive_int("max_triangles", max_triangles)
    max_regions = _positive_int("max_regions", max_regions)
    max_voxels = _positive_int("max_voxels", max_voxels)
    chosen, sizes, n_regions = _largest(labels, max_regions)
    if not len(chosen):
        return SurfaceMesh((), 0, 1, 0, 0, time.perf_counter() - t0, spacing)
    objects = ndi.find_objects(labels)
    crops = []
    for lab in chosen:
        box = objects[lab - 1]
        mask = np.pad(labels[box] == lab, 1)
        crops.append((int(lab), tuple(s.start - 1 for s in box), mask, boundary_faces(mask)))
    estimate = sum(estimate_triangles(c[3]) for c in crops)

    def cost(step):
        steps = [_region_step(c[2].shape, step) for c in crops]
        return (sum(estimate_triangles(c[3], k) for c, k in zip(crops, steps)),
                sum(c[2].size / k ** 3 for c, k in zip(crops, steps)))

    step = 1
    while True:
        triangles, voxels = cost(step)
        if (triangles <= max_triangles and voxels <= max_voxels) or step >= max(labels.shape):
            break
        step += 1
    sizes = dict(zip(chosen.tolist(), sizes.tolist()))
    for _attempt in range(3):  # one run, a second one if the estimate was too low
        regions, skipped = _meshes(crops, sizes, spacing, step)
        triangles = sum(len(r.faces) for r in regions)
        if triangles <= max_triangles or step >= max(labels.shape):
            break
        step += 1
    return SurfaceMesh(tuple(regions), n_regions, step, triangles, estimate,
                       time.perf_counter() - t0, spacing, skipped)


def _meshes(crops, sizes, spacing, step):
    regions, skipped = [], 0
    for lab, origin, mask, _faces in crops:
        k = _region_step(mask.shape, step)
        # every k-th voxel (marching cubes' step_size, without a float copy of the whole
        # crop), closed on the far side by one more background sample
        sample = mask if k == 1 else np.pad(mask[::k, ::k, ::k], ((0, 1),) * 3)
        sample = sample.astype(np.float32)
        try:
            verts, faces, _normals, _values = marching_cubes(
                sample, 0.5, spacing=tuple(k * s for s in spacing), allow_degenerate=False)
        except (RuntimeError, ValueError):  # no surface at this step (a thin region)
            skipped += 1
            continue
        verts += np.asarray(origin, dtype=np.float64) * np.asarray(spacing)
        regions.append(RegionSurface(lab, verts.astype(np.float32), faces.astype(np.int32),
                                     label_hex(lab), int(sizes[lab])))
    return regions, skipped


# --------------------------------------------------------------------------------------------
# Orthogonal planes


def plane_stride(shape, max_pixels=MAX_PLANE_PIXELS) -> int:
    """Smallest stride ``f`` with ``ceil(h / f) * ceil(w / f) <= max_pixels``.

    Parameters
    ----------
    shape : tuple of 2 int
        ``(h, w)`` of a plane.
    max_pixels : int, optional

    Returns
    -------
    int
        1 if the plane fits as it is.
    """
    if len(shape) != 2:
        raise InputError(f"shape must be the (height, width) of a plane, got {shape!r}")
    h, w = (_positive_int("shape", s) for s in shape)
    max_pixels = _positive_int("max_pixels", max_pixels)
    f = max(1, int(math.sqrt(h * w / max_pixels)))
    while math.ceil(h / f) * math.ceil(w / f) > max_pixels:
        f += 1
    return f


def plane(volume, name, point, stride=1) -> np.ndarray:
    """One orthogonal plane of a volume through a point, strided.

    Parameters
    ----------
    volume : ndarray, (Z, Y, X)
    name : {"zy", "zx", "yx"}
        Rows and columns of the plane (:data:`PLANES`): ``"yx"`` is the plane at ``z``.
    point : sequence of 3 int
        ``(z, y, x)``, each within the volume.
    stride : int, optional
        Every `stride`-th pixel along both axes.

    Returns
    -------
    ndarray
        A view of `volume`.
    """
    volume = np.asarray(volume) if not isinstance(volume, np.ndarray) else volume
    if volume.ndim != 3:
        raise InputError(f"volume must be 3D, got shape {volume.shape}")
    if name not in PLANES:
        raise InputError(f"name must be one of {', '.join(PLANES)}, got {name!r}")
    if len(point) != 3:
        raise InputError(f"point must be (z, y, x), got {point!r}")
    stride = _positive_int("stride", stride)
    point = tuple(_positive_int("point", p, minimum=0) for p in point)
    for axis, (p, n) in enumerate(zip(point, volume.shape)):
        if p >= n:
            raise InputError(f"point {point} is outside the volume of shape {volume.shape} "
                             f"(axis {axis})")
    fixed = PLANES[name][0]
    index = [slice(None, None, stride)] * 3
    index[fixed] = point[fixed]
    return volume[tuple(index)]


def contour_overlay(labels2d, fill_alpha=0.0) -> np.ndarray:
    """Regions' outlines in their colours (:func:`label_rgb`), optionally filled.

    Parameters
    ----------
    labels2d : ndarray of int, (M, N)
        One plane of a label volume (0 = background).
    fill_alpha : float, optional
        Opacity of the regions' interiors, 0 (outlines only) to 1.

    Returns
    -------
    ndarray of uint8, (M, N, 4)
        RGBA: opaque outlines (:func:`skimage.segmentation.find_boundaries`,
        ``mode="inner"``), interiors at `fill_alpha`, background transparent.
    """
    labels = np.asarray(labels2d)
    if labels.ndim != 2:
        raise InputError(f"labels2d must be a 2D plane, got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise InputError(f"labels2d must be integers, got {labels.dtype}")
    if isinstance(fill_alpha, bool) or not isinstance(fill_alpha, (int, float)) \
            or not 0 <= fill_alpha <= 1:
        raise InputError(f"fill_alpha must be between 0 and 1, got {fill_alpha!r}")
    labels = labels.astype(np.int64, copy=False)
    out = np.zeros(labels.shape + (4,), dtype=np.uint8)
    inside = labels > 0
    if not inside.any():
        return out
    out[..., :3] = label_rgb(labels)
    out[..., 3] = np.where(inside, np.uint8(round(255 * fill_alpha)), 0)
    out[find_boundaries(labels, mode="inner") & inside, 3] = 255
    return out
