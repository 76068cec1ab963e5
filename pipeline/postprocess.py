"""Post-processing: from the object mask to a clean label image, and overlays of the labels.

The recipe's ``postprocess`` is an ordered list of operations from :data:`POSTPROCESS`:

* mask operations (:data:`MASK_OPS`, bool -> bool): ``closing``, ``opening``, ``fill_holes``;
* exactly one ``label`` (bool -> int32 labels, 0 = background);
* label operations (:data:`LABEL_OPS`, labels -> labels): ``remove_small_objects``,
  ``split_touching`` (:func:`split_touching`: a distance-transform watershed that separates
  touching objects), ``clear_border``, ``relabel_sequential``.

:func:`run_postprocess` checks that order and runs the list. As for every step, ``apply`` and
``code(src, dst, **params)`` write the same expression, so that an exported script gives the
same labels bit for bit.

``closing`` and ``opening`` are local (``Step.reach``: twice the footprint radius, a dilation
then an erosion or the reverse): :mod:`pipeline.parallel` may run them over overlapping blocks,
with a result identical to the whole call. ``fill_holes`` (a hole is decided by its connection
to the border), ``label``, ``remove_small_objects`` (object sizes), ``clear_border`` and
``relabel_sequential`` and ``split_touching`` are not local and always run on the whole
array.

The overlay helpers (:func:`label_overlay`, :func:`boundaries_overlay`,
:func:`bounding_boxes`) turn a 2D label image (one slice of a volume) into RGBA layers and
boxes for the display.
"""

from __future__ import annotations

import types
import warnings

import numpy as np
from scipy import ndimage as ndi
from skimage import color, feature, measure, morphology, segmentation

from .errors import InputError
from .steps import Param, Step

__all__ = [
    "POSTPROCESS",
    "MASK_OPS",
    "LABEL_OPS",
    "run_postprocess",
    "split_touching",
    "split_cost",
    "bind_split_connectivity",
    "check_split_connectivity",
    "MAX_SPLIT_OBJECTS",
    "MAX_SPLIT_CANDIDATES",
    "label_overlay",
    "boundaries_overlay",
    "bounding_boxes",
]

#: Operations on the boolean mask, before ``label``.
MASK_OPS = ("closing", "opening", "fill_holes")
#: Operations on the label image, after ``label``.
LABEL_OPS = ("remove_small_objects", "split_touching", "clear_border", "relabel_sequential")

#: Most objects :func:`split_touching` takes (peak_local_max looks for centres one object at a
#: time, in a Python loop).
MAX_SPLIT_OBJECTS = 100_000
#: Most candidate centres (local maxima of the distance map) :func:`split_touching` takes:
#: spacing them by ``min_distance`` builds a k-d tree of them.
MAX_SPLIT_CANDIDATES = 1_000_000


def _footprint_code(src, radius):
    r = int(radius)
    return f"morphology.disk({r}) if {src}.ndim == 2 else morphology.ball({r})"


def _check_radius(label, image, radius):
    """Refuse a footprint (2 radius + 1 wide) wider than the image along every axis."""
    if 2 * radius + 1 > max(image.shape):
        raise InputError(
            f"{label}: radius {radius} is larger than the image "
            f"({' x '.join(map(str, image.shape))} pixels)"
        )


# --------------------------------------------------------------------------- mask operations


def _closing(mask, *, radius):
    _check_radius("Closing", mask, radius)
    return morphology.closing(
        mask, morphology.disk(radius) if mask.ndim == 2 else morphology.ball(radius))


def _morphology_reach(params, ndim):
    # a dilation then an erosion (or the reverse), each reading `radius` pixels away
    return 2 * int(params["radius"])


def _morphology_blocks(label, function):
    def blocks(mask, *, radius):
        _check_radius(label, mask, radius)  # on the whole mask, as the whole call does
        return lambda block, edges: function(
            block, morphology.disk(radius) if block.ndim == 2 else morphology.ball(radius))
    return blocks


def _closing_code(src, dst, *, radius):
    return [f"{dst} = morphology.closing({src}, {_footprint_code(src, radius)})"]


def _opening(mask, *, radius):
    _check_radius("Opening", mask, radius)
    return morphology.opening(
        mask, morphology.disk(radius) if mask.ndim == 2 else morphology.ball(radius))


def _opening_code(src, dst, *, radius):
    return [f"{dst} = morphology.opening({src}, {_footprint_code(src, radius)})"]


def _fill_holes(mask):
    return ndi.binary_fill_holes(mask)


def _fill_holes_code(src, dst):
    return [f"{dst} = ndi.binary_fill_holes({src})"]


# --------------------------------------------------------------------------- label


def _label(mask, *, connectivity):
    if connectivity > mask.ndim:
        raise InputError(
            f"Label: connectivity must be at most {mask.ndim} for a {mask.ndim}D image, "
            f"got {connectivity}"
        )
    return measure.label(mask, connectivity=connectivity).astype(np.int32)


def _label_code(src, dst, *, connectivity):
    return [f"{dst} = measure.label({src}, connectivity={int(connectivity)}).astype(np.int32)"]


# --------------------------------------------------------------------------- label operations


def _max_size(min_size):
    """skimage >= 0.26 removes objects of at most ``max_size`` pixels: objects smaller than
    ``min_size`` are those of at most ``min_size - 1``."""
    return max(int(min_size) - 1, 0)


def _remove_small_objects(labels, *, min_size):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Only one label", UserWarning)
        return morphology.remove_small_objects(labels, max_size=_max_size(min_size))


def _remove_small_objects_code(src, dst, *, min_size):
    return [
        "with warnings.catch_warnings():  # a single object is fine: silence skimage's "
        "'Only one label' hint",
        "    warnings.filterwarnings('ignore', 'Only one label', UserWarning)",
        f"    {dst} = morphology.remove_small_objects({src}, max_size={_max_size(min_size)})"
        f"  # drops objects smaller than {int(min_size)} pixels",
    ]


def _clear_border(labels):
    return segmentation.clear_border(labels)


def _clear_border_code(src, dst):
    return [f"{dst} = segmentation.clear_border({src})"]


def _relabel_sequential(labels):
    return segmentation.relabel_sequential(labels)[0]


def _relabel_sequential_code(src, dst):
    return [f"{dst} = segmentation.relabel_sequential({src})[0]"]


# --------------------------------------------------------------------------- split touching


def _check_int(name, value, low, high):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"split_touching: {name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise InputError(f"split_touching: {name} must be between {low} and {high}, "
                         f"got {value}")
    return int(value)


def _check_split_args(labels, min_distance, sigma, connectivity):
    if not isinstance(labels, np.ndarray):
        raise InputError(f"split_touching: labels must be a numpy array, "
                         f"got {type(labels).__name__}")
    if labels.ndim not in (2, 3) or labels.size == 0:
        raise InputError(f"split_touching: labels must be a 2D image or a 3D volume, "
                         f"got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"split_touching: labels must be integers (0 = background), "
                         f"got {labels.dtype}")
    if labels.min() < 0:
        raise InputError("split_touching: labels must not be negative")
    min_distance = _check_int("min_distance", min_distance, 1, 100)
    connectivity = _check_int("connectivity", connectivity, 1, 3)
    if connectivity > labels.ndim:
        raise InputError(f"split_touching: connectivity must be at most {labels.ndim} for a "
                         f"{labels.ndim}D image, got {connectivity}")
    if isinstance(sigma, (bool, np.bool_)) or not isinstance(sigma, (int, float, np.number)) \
            or not np.isfinite(sigma) or not 0 <= sigma <= 20:
        raise InputError(f"split_touching: sigma must be a number between 0 and 20, "
                         f"got {sigma!r}")
    return min_distance, float(sigma), connectivity


def _distance_map(labels, sigma):
    distance = ndi.distance_transform_edt(labels > 0)
    if sigma > 0:
        distance = ndi.gaussian_filter(distance, sigma=sigma)
    return distance


def split_cost(labels, min_distance, sigma=0.0):
    """What :func:`split_touching` would work on: objects and candidate centres.

    Parameters
    ----------
    labels : ndarray of int, 2D or 3D
        Label image (0 = background).
    min_distance : int
        As in :func:`split_touching`.
    sigma : float, optional
        As in :func:`split_touching`.

    Returns
    -------
    objects : int
        Number of objects (distinct non-zero labels).
    candidates : int
        Pixels of objects that are the maximum of the distance map within
        ``2 * min_distance + 1`` pixels (the local maxima ``peak_local_max`` then spaces
        out): an upper estimate of its work.
    """
    min_distance, sigma, _ = _check_split_args(labels, min_distance, sigma, 1)
    return _split_cost(labels, _distance_map(labels, sigma), min_distance)


def _split_cost(labels, distance, min_distance):
    objects = int(np.count_nonzero(np.bincount(labels.ravel())[1:])) if labels.any() else 0
    peaks = ndi.maximum_filter(distance, size=2 * min_distance + 1, mode="nearest")
    candidates = int(np.count_nonzero((distance == peaks) & (labels > 0)))
    return objects, candidates


def split_touching(labels, min_distance=5, sigma=0.0, connectivity=1) -> np.ndarray:
    """Separate touching objects with a distance-transform watershed.

    Each object's distance to the background (:func:`scipy.ndimage.distance_transform_edt`,
    optionally smoothed by :func:`scipy.ndimage.gaussian_filter`) has a maximum near the
    centre of each round part; :func:`skimage.feature.peak_local_max` finds those centres
    (at least `min_distance` pixels apart, searched object by object, so every object keeps
    at least one) and :func:`skimage.segmentation.watershed` floods ``-distance`` from them
    inside the objects: two disks that overlap become two objects, cut along their neck.

    Parameters
    ----------
    labels : ndarray of int, 2D or 3D
        Label image (0 = background), e.g. the output of the ``label`` step.
    min_distance : int, optional
        Smallest distance between two centres, in pixels (1 to 100): larger values split
        less.
    sigma : float, optional
        Standard deviation of a Gaussian smoothing of the distance map, in pixels (0 to 20;
        0 = none): smoothing merges the centres of bumpy objects.
    connectivity : int, optional
        Neighbours through which a centre floods its object (1 = faces, up to the number of
        dimensions); use the ``label`` step's connectivity, so that a flood stays within its
        object and reaches all of it.

    Returns
    -------
    ndarray of int32
        New labels 1..N, one per centre (0 = background); every object pixel keeps a label.

    Raises
    ------
    InputError
        Naming the argument, for labels that are not a 2D or 3D non-negative integer array or
        a parameter out of range; and, before the work starts, for more than
        :data:`MAX_SPLIT_OBJECTS` objects or :data:`MAX_SPLIT_CANDIDATES` candidate centres
        (see :func:`split_cost`).
    """
    min_distance, sigma, connectivity = _check_split_args(labels, min_distance, sigma,
                                                          connectivity)
    if not labels.any():
        return labels.astype(np.int32)
    distance = _distance_map(labels, sigma)
    objects, candidates = _split_cost(labels, distance, min_distance)
    if objects > MAX_SPLIT_OBJECTS:
        raise InputError(
            f"Split touching objects: {objects:,} objects, more than {MAX_SPLIT_OBJECTS:,} "
            "this step takes: remove small objects first, or smooth the image.")
    if candidates > MAX_SPLIT_CANDIDATES:
        raise InputError(
            f"Split touching objects: {candidates:,} candidate centres, more than "
            f"{MAX_SPLIT_CANDIDATES:,}: raise min distance ({min_distance}) or smooth the "
            "distance map (sigma).")
    centres = feature.peak_local_max(distance, min_distance=min_distance, labels=labels,
                                     exclude_border=False)
    split_markers = np.zeros(labels.shape, dtype=np.int32)
    split_markers[tuple(centres.T)] = np.arange(1, len(centres) + 1, dtype=np.int32)
    return segmentation.watershed(-distance, split_markers, mask=labels > 0,
                                  connectivity=connectivity).astype(np.int32)


def _split_touching(labels, *, min_distance, sigma, connectivity):
    try:
        return split_touching(labels, min_distance, sigma, connectivity)
    except InputError as exc:
        text = str(exc)
        if text.startswith("split_touching: "):
            text = "Split touching objects: " + text[len("split_touching: "):]
        raise InputError(text) from None


def _split_touching_code(src, dst, *, min_distance, sigma, connectivity):
    lines = [f"distance = ndi.distance_transform_edt({src} > 0)"]
    if sigma > 0:
        lines.append(f"distance = ndi.gaussian_filter(distance, sigma={float(sigma)!r})")
    lines += [
        f"centres = feature.peak_local_max(distance, min_distance={int(min_distance)}, "
        f"labels={src}, exclude_border=False)",
        f"split_markers = np.zeros({src}.shape, dtype=np.int32)",
        "split_markers[tuple(centres.T)] = np.arange(1, len(centres) + 1, dtype=np.int32)",
        f"{dst} = segmentation.watershed(-distance, split_markers, mask={src} > 0, "
        f"connectivity={int(connectivity)}).astype(np.int32)",
    ]
    # as split_touching: labels without any object stay as they are
    return [f"if {src}.any():  # split touching objects"] + ["    " + line for line in lines] + [
        "else:", f"    {dst} = {src}.astype(np.int32)"]


# --------------------------------------------------------------------------- registry

_MORPHOLOGY = "from skimage import morphology"
_RADIUS = Param("radius", "int", 1, min=1, max=25,
                doc="Radius of the disk (2D) or ball (3D), in pixels")

POSTPROCESS = types.MappingProxyType({
    step.key: step
    for step in (
        Step(
            key="closing", stage="postprocess", label="Closing",
            function="skimage.morphology.closing", params=(_RADIUS,),
            apply=_closing, code=_closing_code, imports=(_MORPHOLOGY,),
            reach=_morphology_reach, blocks=_morphology_blocks("Closing", morphology.closing),
        ),
        Step(
            key="opening", stage="postprocess", label="Opening",
            function="skimage.morphology.opening", params=(_RADIUS,),
            apply=_opening, code=_opening_code, imports=(_MORPHOLOGY,),
            reach=_morphology_reach, blocks=_morphology_blocks("Opening", morphology.opening),
        ),
        Step(
            key="fill_holes", stage="postprocess", label="Fill holes",
            function="scipy.ndimage.binary_fill_holes",
            apply=_fill_holes, code=_fill_holes_code,
            imports=("from scipy import ndimage as ndi",),
        ),
        Step(
            key="label", stage="postprocess", label="Label",
            function="skimage.measure.label",
            params=(Param("connectivity", "int", 1, min=1, max=3,
                          doc="1: face neighbours touch; up to the number of dimensions: "
                              "also diagonal neighbours"),),
            apply=_label, code=_label_code,
            imports=("import numpy as np", "from skimage import measure"),
        ),
        Step(
            key="remove_small_objects", stage="postprocess", label="Remove small objects",
            function="skimage.morphology.remove_small_objects",
            params=(Param("min_size", "int", 64, min=0, max=10**9,
                          doc="Objects with fewer pixels (voxels) are removed"),),
            apply=_remove_small_objects, code=_remove_small_objects_code,
            imports=("import warnings", _MORPHOLOGY),
        ),
        Step(
            key="split_touching", stage="postprocess", label="Split touching objects",
            function="skimage.segmentation.watershed",
            params=(
                Param("min_distance", "int", 5, min=1, max=100,
                      doc="Smallest distance between two object centres, in pixels "
                          "(skimage.feature.peak_local_max)"),
                Param("sigma", "float", 0.0, min=0, max=20,
                      doc="Gaussian smoothing of the distance map, in pixels (0: none)"),
                Param("connectivity", "int", 1, min=1, max=3,
                      doc="Neighbours that flood an object: the label step's connectivity"),
            ),
            apply=_split_touching, code=_split_touching_code,
            imports=("import numpy as np", "from scipy import ndimage as ndi",
                     "from skimage import feature, segmentation"),
        ),
        Step(
            key="clear_border", stage="postprocess", label="Clear border",
            function="skimage.segmentation.clear_border",
            apply=_clear_border, code=_clear_border_code,
            imports=("from skimage import segmentation",),
        ),
        Step(
            key="relabel_sequential", stage="postprocess", label="Relabel 1..N",
            function="skimage.segmentation.relabel_sequential",
            apply=_relabel_sequential, code=_relabel_sequential_code,
            imports=("from skimage import segmentation",),
        ),
    )
})


# --------------------------------------------------------------------------- running a list


def _check_mask(mask):
    if not isinstance(mask, np.ndarray):
        raise InputError(f"postprocess: mask must be a numpy array, got {type(mask).__name__}")
    if mask.ndim not in (2, 3) or mask.size == 0:
        raise InputError(f"postprocess: mask must be a 2D image or a 3D volume, "
                         f"got shape {mask.shape}")
    if mask.dtype == np.bool_:
        return mask
    if np.issubdtype(mask.dtype, np.number) and np.isin(mask, (0, 1)).all():
        return mask.astype(bool)
    raise InputError(f"postprocess: mask must be boolean (True = object), got {mask.dtype}")


def bind_split_connectivity(ops):
    """`ops` with the label step's connectivity given to ``split_touching`` where it has none.

    A split floods each object through the neighbours that define it: its connectivity is
    the ``label`` step's. Entries that are not well-formed are left for the checks.

    Parameters
    ----------
    ops : list
        Post-processing operations as given (``{"name": ..., "params": {...}}``).

    Returns
    -------
    list
        A new list (the other entries as they were).
    """
    if not isinstance(ops, (list, tuple)):
        return ops
    connectivity = 1
    for op in ops:
        if isinstance(op, dict) and op.get("name") == "label" and isinstance(
                op.get("params"), dict) and "connectivity" in op["params"]:
            connectivity = op["params"]["connectivity"]
    out = []
    for op in ops:
        if isinstance(op, dict) and op.get("name") == "split_touching":
            params = op.get("params")
            if params is None:
                params = {}
            if isinstance(params, dict) and "connectivity" not in params:
                op = {**op, "params": {**params, "connectivity": connectivity}}
        out.append(op)
    return out


def check_split_connectivity(names_params, where="postprocess"):
    """Refuse a ``split_touching`` whose connectivity differs from the ``label`` step's.

    Parameters
    ----------
    names_params : list of (str, dict)
        Checked operations: name and complete parameters.
    where : str
        Prefix of the message.
    """
    label = [p["connectivity"] for name, p in names_params if name == "label"]
    for name, params in names_params:
        if name == "split_touching" and label and params["connectivity"] != label[0]:
            raise InputError(
                f"{where}: split_touching's connectivity ({params['connectivity']}) must be "
                f"the label step's ({label[0]}): a split floods each object through the "
                "neighbours that define it")


def _check_ops(ops):
    """Return ``[(step, checked params), ...]`` or raise InputError."""
    if not isinstance(ops, (list, tuple)):
        raise InputError("postprocess: operations must be a list of "
                         "{'name': ..., 'params': {...}}")
    ops = bind_split_connectivity(ops)
    steps = []
    for i, op in enumerate(ops, 1):
        if not isinstance(op, dict) or "name" not in op:
            raise InputError(f"postprocess: operation {i} must be a mapping with a 'name'")
        name = op["name"]
        step = POSTPROCESS.get(name) if isinstance(name, str) else None
        if step is None:
            raise InputError(f"postprocess: unknown operation {name!r} (operation {i}); "
                             f"choose among {', '.join(POSTPROCESS)}")
        params = op.get("params")
        if params is not None and not isinstance(params, dict):
            raise InputError(f"{step.label}: parameters must be a mapping such as "
                             f"{step.defaults()}, got {params!r}")
        steps.append((step, step.check(params)))
    names = [step.key for step, _ in steps]
    if names.count("label") != 1:
        raise InputError(f"postprocess: 'label' must appear exactly once, found it "
                         f"{names.count('label')} times")
    at = names.index("label")
    for name in names[at + 1:]:
        if name in MASK_OPS:
            raise InputError(f"postprocess: '{name}' works on the mask: put it before 'label'")
    for name in names[:at]:
        if name in LABEL_OPS:
            raise InputError(f"postprocess: '{name}' works on labels: put it after 'label'")
    check_split_connectivity([(step.key, params) for step, params in steps])
    return steps


def run_postprocess(mask, ops) -> np.ndarray:
    """Run a list of post-processing operations on an object mask.

    Parameters
    ----------
    mask : ndarray of bool, 2D or 3D
        The segmentation (True = object); 0/1 integer arrays are accepted.
    ops : list of dict
        ``[{"name": "closing", "params": {"radius": 1}}, ..., {"name": "label", ...}, ...]``:
        mask operations (:data:`MASK_OPS`), then exactly one ``label``, then label operations
        (:data:`LABEL_OPS`). Missing parameters take their defaults.

    Returns
    -------
    labels : ndarray of int32
        0 = background, 1.. = objects.

    Raises
    ------
    InputError
        For an unknown operation, a bad parameter, operations in the wrong order, a footprint
        larger than the image or a connectivity above the number of dimensions.
    """
    steps = _check_ops(ops)
    array = _check_mask(mask)
    for step, params in steps:
        array = step.apply(array, **params)
    return array.astype(np.int32, copy=False)


# --------------------------------------------------------------------------- overlays


def _check_labels2d(labels, where):
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"{where}: labels must be a 2D array (one slice), got shape "
                         f"{labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise InputError(f"{where}: labels must be integers, got {labels.dtype}")
    return labels


def _to_uint8(rgb):
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def label_overlay(labels2d, image2d_uint8, alpha=0.35) -> np.ndarray:
    """Objects coloured over the image, background transparent.

    Parameters
    ----------
    labels2d : ndarray of int, (M, N)
        Label image (0 = background).
    image2d_uint8 : ndarray of uint8, (M, N)
        The displayed grayscale image.
    alpha : float, optional
        Opacity of the label colours over the image, in [0, 1].

    Returns
    -------
    ndarray of uint8, (M, N, 4)
        RGBA: on objects, :func:`skimage.color.label2rgb` colours blended with the image
        (opaque); elsewhere fully transparent.
    """
    labels = _check_labels2d(labels2d, "label overlay")
    image = np.asarray(image2d_uint8)
    if image.shape != labels.shape:
        raise InputError(f"label overlay: image shape {image.shape} differs from labels "
                         f"shape {labels.shape}")
    if image.dtype != np.uint8:
        raise InputError(f"label overlay: image must be uint8 (the display image), "
                         f"got {image.dtype}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) \
            or not 0 <= alpha <= 1:
        raise InputError(f"label overlay: alpha must be between 0 and 1, got {alpha!r}")
    rgba = np.zeros(labels.shape + (4,), dtype=np.uint8)
    rgb = color.label2rgb(labels, image=image, alpha=float(alpha), bg_label=0, image_alpha=1,
                          kind="overlay")
    rgba[..., :3] = _to_uint8(rgb)
    rgba[..., 3] = np.where(labels > 0, 255, 0)
    return rgba


def boundaries_overlay(labels2d, color=(255, 0, 255)) -> np.ndarray:
    """Object outlines in one colour, everything else transparent.

    Parameters
    ----------
    labels2d : ndarray of int, (M, N)
        Label image (0 = background).
    color : tuple of 3 int, optional
        RGB colour of the outlines, each 0..255.

    Returns
    -------
    ndarray of uint8, (M, N, 4)
        RGBA, opaque `color` on the inner boundary pixels of each object
        (:func:`skimage.segmentation.find_boundaries`, ``mode='inner'``).
    """
    labels = _check_labels2d(labels2d, "boundaries overlay")
    try:
        rgb = tuple(int(c) for c in color)
    except (TypeError, ValueError):
        raise InputError(f"boundaries overlay: color must be 3 numbers 0-255, "
                         f"got {color!r}") from None
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise InputError(f"boundaries overlay: color must be 3 numbers 0-255, got {color!r}")
    edges = segmentation.find_boundaries(labels, mode="inner")
    rgba = np.zeros(labels.shape + (4,), dtype=np.uint8)
    rgba[edges] = rgb + (255,)
    return rgba


def bounding_boxes(labels2d) -> list:
    """Bounding box of each object.

    Parameters
    ----------
    labels2d : ndarray of int, (M, N)
        Label image (0 = background).

    Returns
    -------
    list of tuple
        ``(label, min_row, min_col, max_row, max_col)`` for each label present, in increasing
        label order; ``max_row`` / ``max_col`` are exclusive, as in ``regionprops``' bbox.
    """
    labels = _check_labels2d(labels2d, "bounding boxes").astype(np.intp, copy=False)
    if labels.size and labels.min() < 0:
        raise InputError("bounding boxes: labels must not be negative")
    boxes = []
    for i, slices in enumerate(ndi.find_objects(labels), 1):
        if slices is not None:
            rows, cols = slices
            boxes.append((i, rows.start, cols.start, rows.stop, cols.stop))
    return boxes
