"""Measurements of the labelled objects: a table from regionprops, in physical units.

:func:`measure` runs :func:`skimage.measure.regionprops_table` on the label image (with the
loaded image as intensity image) and converts pixel units to physical ones: lengths
(perimeter, centroid, bounding box, diameters, axis lengths) are multiplied by
``pixel_size``, areas by ``pixel_size ** 2``; on a 3D label image regionprops' ``area`` is a
volume (number of voxels), so it and the other ``area_*`` properties are multiplied by
``pixel_size ** 3``. Dimensionless properties (eccentricity, solidity, ...) and intensities
are unchanged. With a voxel size (``spacing``, ``(z, y, x)`` in `unit`: anisotropic volumes)
the physical scaling is regionprops' own (``regionprops_table(..., spacing=...)``, scikit-image
>= 0.20) and ``pixel_size`` is not used: see :data:`SPACING_SUPPORT`. :func:`code_lines` writes
the same computation for the exported script, and :func:`to_csv` writes the table with its
units and provenance.
"""

from __future__ import annotations

import csv
import io
import json
import math
import types
from dataclasses import dataclass, field

import numpy as np
from skimage.measure import regionprops_table

from .errors import InputError

__all__ = [
    "MAX_PAGE_ROWS", "MAX_BINS", "NOISE_MIN_REGIONS", "filter_mask", "row_order", "rows_of",
    "page", "position", "distributions", "region_count_warning",
    "count_regions",
    "DEFAULT_PROPERTIES",
    "AVAILABLE_PROPERTIES",
    "PROPERTIES_2D_ONLY",
    "SPACING_SUPPORT",
    "check_spacing",
    "Measurements",
    "measure",
    "to_csv",
    "code_lines",
    "IMPORTS",
]

DEFAULT_PROPERTIES = (
    "label", "area", "perimeter", "centroid", "bbox", "eccentricity",
    "equivalent_diameter_area", "solidity", "intensity_mean", "intensity_min", "intensity_max",
)

# kind of each property: how it scales with the pixel size
_LENGTH, _AREA, _NONE, _INTENSITY, _ANGLE = "length", "area", "none", "intensity", "angle"
_KINDS = types.MappingProxyType({
    "label": _NONE,
    "area": _AREA,
    "area_bbox": _AREA,
    "area_convex": _AREA,
    "area_filled": _AREA,
    "num_pixels": _NONE,
    "perimeter": _LENGTH,
    "perimeter_crofton": _LENGTH,
    "centroid": _LENGTH,
    "centroid_weighted": _LENGTH,
    "bbox": _LENGTH,
    "axis_major_length": _LENGTH,
    "axis_minor_length": _LENGTH,
    "equivalent_diameter_area": _LENGTH,
    "feret_diameter_max": _LENGTH,
    "eccentricity": _NONE,
    "orientation": _ANGLE,
    "euler_number": _NONE,
    "extent": _NONE,
    "solidity": _NONE,
    "intensity_mean": _INTENSITY,
    "intensity_min": _INTENSITY,
    "intensity_max": _INTENSITY,
    "intensity_std": _INTENSITY,
})
#: Every property :func:`measure` accepts (all valid for regionprops_table).
AVAILABLE_PROPERTIES = tuple(_KINDS)
#: Properties scikit-image defines for 2D label images only.
PROPERTIES_2D_ONLY = ("perimeter", "perimeter_crofton", "eccentricity", "orientation")
_LENGTHS = tuple(p for p, kind in _KINDS.items() if kind == _LENGTH)
_AREAS = tuple(p for p, kind in _KINDS.items() if kind == _AREA)
_INTENSITIES = tuple(p for p, kind in _KINDS.items() if kind == _INTENSITY)
#: How each property takes a voxel size (``regionprops_table(spacing=...)``, scikit-image
#: 0.26): lengths, areas and volumes are scaled by regionprops itself; ``bbox`` stays in voxel
#: indices and is scaled here (each coordinate by its axis' size); ``perimeter`` and
#: ``perimeter_crofton`` raise NotImplementedError for anisotropic pixels (they are then not
#: measured, with a note); ratios, counts and intensities do not depend on it.
SPACING_SUPPORT = types.MappingProxyType({
    **{p: "regionprops" for p, kind in _KINDS.items() if kind in (_LENGTH, _AREA)},
    "bbox": "scaled here", "perimeter": "isotropic only", "perimeter_crofton": "isotropic only",
})
_ISOTROPIC_ONLY = ("perimeter", "perimeter_crofton")
_SUPERSCRIPT = types.MappingProxyType({2: "²", 3: "³"})
_MAX_UNIT = 16


@dataclass(frozen=True)
class Measurements:
    """A measurement table.

    Attributes
    ----------
    columns : dict of str to ndarray
        One 1D array per column, in order (``regionprops_table`` names: ``centroid-0``,
        ``bbox-3``, ...), one row per object.
    units : dict of str to str
        Unit of each column (``"µm"``, ``"µm²"``, ``"rad"``; ``""`` for dimensionless values
        and intensities).
    notes : tuple of str
        What the user should know about the table (e.g. properties dropped for a volume).
    """

    columns: dict = field(default_factory=dict)
    units: dict = field(default_factory=dict)
    notes: tuple = ()

    @property
    def n_objects(self) -> int:
        """Number of rows."""
        return len(next(iter(self.columns.values()))) if self.columns else 0


def _property_of(column: str) -> str:
    """``'centroid-0'`` -> ``'centroid'`` (property names contain no '-')."""
    return column.split("-", 1)[0]


def _check_properties(properties):
    if isinstance(properties, str) or not isinstance(properties, (list, tuple)):
        raise InputError("measure: properties must be a list of property names")
    if not properties:
        raise InputError("measure: choose at least one property")
    unknown = [p for p in properties if p not in _KINDS]
    if unknown:
        raise InputError(f"measure: unknown property {', '.join(map(repr, unknown))}; "
                         f"valid ones are {', '.join(AVAILABLE_PROPERTIES)}")
    if len(set(properties)) != len(properties):
        raise InputError("measure: a property is listed twice")
    return tuple(properties)


#: Pixel and voxel sizes accepted: any physical unit fits (1e-30 m to 1e30 km), and a
#: volume (size³ × 10^9 voxels) stays a finite float64.
SIZE_RANGE = (1e-30, 1e30)


def _check_pixel_size(pixel_size):
    if isinstance(pixel_size, (bool, np.bool_)):
        raise InputError(f"measure: pixel_size must be a number, got {pixel_size!r}")
    try:
        value = float(pixel_size)
    except (TypeError, ValueError):
        raise InputError(f"measure: pixel_size must be a number, got {pixel_size!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"measure: pixel_size must be a finite number above 0, "
                         f"got {pixel_size!r}")
    if not SIZE_RANGE[0] <= value <= SIZE_RANGE[1]:  # areas and volumes stay finite
        raise InputError(f"measure: pixel_size must be between {SIZE_RANGE[0]:g} and "
                         f"{SIZE_RANGE[1]:g} (choose the unit to fit), got {pixel_size!r}")
    return value


def check_spacing(spacing):
    """A voxel size ``(z, y, x)`` checked, as a tuple of 3 floats (None stays None).

    Raises
    ------
    InputError
        Naming ``spacing``, if it is not 3 positive finite numbers.
    """
    if spacing is None:
        return None
    if isinstance(spacing, (str, bytes, dict)) or not isinstance(spacing, (list, tuple,
                                                                         np.ndarray)):
        raise InputError(f"measure: spacing must be the voxel size (z, y, x): 3 positive "
                         f"numbers, got {spacing!r}")
    values = list(spacing)
    if len(values) != 3:
        raise InputError(f"measure: spacing must be the voxel size (z, y, x): 3 numbers, got "
                         f"{len(values)}: {values!r}")
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)) \
                or not math.isfinite(float(v)) or float(v) <= 0:
            raise InputError(f"measure: spacing must be the voxel size (z, y, x): 3 positive "
                             f"finite numbers, got {values!r}")
        if not SIZE_RANGE[0] <= float(v) <= SIZE_RANGE[1]:
            raise InputError(f"measure: spacing must be the voxel size (z, y, x): 3 numbers "
                             f"between {SIZE_RANGE[0]:g} and {SIZE_RANGE[1]:g}, got {values!r}")
        out.append(float(v))
    return tuple(out)


def _spacing_of(spacing, ndim):
    """The voxel size of `ndim` axes: ``(z, y, x)`` for a volume, ``(y, x)`` for an image."""
    return spacing[-ndim:]


def _spacing_notes(spacing, unit, ndim, dropped):
    shown = " × ".join(f"{v:g}" for v in _spacing_of(spacing, ndim))
    notes = [f"voxel size (z, y, x) {shown} {unit} (regionprops spacing; pixel size not used)"
             if ndim == 3 else
             f"pixel size (y, x) {shown} {unit}, from the voxel size (regionprops spacing; "
             "pixel size not used)"]
    if dropped:
        notes.append(f"{', '.join(dropped)}: measured by scikit-image for square pixels only, "
                     f"not measured with pixel size (y, x) {shown} {unit}")
    return notes


def _check_unit(unit):
    if not isinstance(unit, str) or not unit.strip():
        raise InputError(f"measure: unit must be a non-empty text such as 'µm', got {unit!r}")
    unit = unit.strip()
    if len(unit) > _MAX_UNIT:
        raise InputError(f"measure: unit must be at most {_MAX_UNIT} characters, got {unit!r}")
    if any(c in unit for c in ",\n\r[]\"#"):
        raise InputError(f"measure: unit must not contain commas, brackets, quotes, '#' or "
                         f"line breaks, got {unit!r}")
    if not unit.isprintable() or any(0xD800 <= ord(c) <= 0xDFFF for c in unit):
        # a NUL or a lone surrogate passed here, then broke the script export (500)
        raise InputError(f"measure: unit must be printable text, got {unit!r}")
    return unit


def _unit_of(prop, unit, ndim):
    kind = _KINDS[prop]
    if kind == _LENGTH:
        return unit
    if kind == _AREA:
        return unit + _SUPERSCRIPT[ndim]
    if kind == _ANGLE:
        return "rad"
    return ""


def measure(labels, intensity_image=None, properties=DEFAULT_PROPERTIES, pixel_size=1.0,
            unit="px", spacing=None) -> Measurements:
    """Measure every labelled object.

    Parameters
    ----------
    labels : ndarray of int, 2D or 3D
        Label image (0 = background), e.g. from :func:`pipeline.postprocess.run_postprocess`.
    intensity_image : ndarray, same shape, optional
        The image the intensities are read from (the loaded image). Without it the
        intensity properties are dropped (with a note).
    properties : sequence of str, optional
        Names from :data:`AVAILABLE_PROPERTIES`, in the order of the columns.
    pixel_size : float, optional
        Size of a pixel (voxel side) in `unit`, > 0.
    unit : str, optional
        Length unit, e.g. ``"µm"`` (at most 16 characters).
    spacing : sequence of 3 float, optional
        Voxel size ``(z, y, x)`` in `unit` (``(y, x)`` of it is used for a 2D image). When
        given, regionprops scales the properties itself (``regionprops_table(...,
        spacing=...)``), ``bbox`` is scaled per axis and `pixel_size` is not used; perimeters
        of anisotropic 2D pixels are not measured (scikit-image refuses them), with a note.

    Returns
    -------
    Measurements
        Columns scaled to `unit`: lengths times `pixel_size`, areas times ``pixel_size**2``
        (volumes, for 3D labels, times ``pixel_size**3``); or by `spacing`.

    Raises
    ------
    InputError
        For a bad label image, mismatching shapes, an unknown property, a pixel size that is
        not a positive finite number or a bad unit.

    Notes
    -----
    On a 3D label image, the 2D-only properties (:data:`PROPERTIES_2D_ONLY`) are dropped and
    the result's ``notes`` say so.
    """
    properties = _check_properties(properties)
    pixel_size = _check_pixel_size(pixel_size)
    unit = _check_unit(unit)
    spacing = check_spacing(spacing)
    labels = np.asarray(labels)
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"measure: labels must be an integer label image (run 'label' on a "
                         f"mask first), got {labels.dtype}")
    if labels.ndim not in (2, 3):
        raise InputError(f"measure: labels must be a 2D image or a 3D volume, "
                         f"got shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise InputError("measure: labels must not be negative")
    notes = []
    if intensity_image is not None:
        intensity_image = np.asarray(intensity_image)
        if intensity_image.shape != labels.shape:
            raise InputError(f"measure: the intensity image's shape {intensity_image.shape} "
                             f"differs from the labels' shape {labels.shape}")
    else:
        dropped = [p for p in properties if p in _INTENSITIES or p == "centroid_weighted"]
        if dropped:
            notes.append(f"no intensity image: {', '.join(dropped)} not measured")
            properties = tuple(p for p in properties if p not in dropped)
    ndim = labels.ndim
    if ndim == 3:
        dropped = [p for p in properties if p in PROPERTIES_2D_ONLY]
        if dropped:
            notes.append(f"{', '.join(dropped)}: defined for 2D images only, not measured "
                         "on this volume")
            properties = tuple(p for p in properties if p not in dropped)
        if any(_KINDS[p] == _AREA for p in properties):
            notes.append(f"3D: area (and area_*) is a volume, in {unit}³")
    sizes = None
    if spacing is not None:
        sizes = _spacing_of(spacing, ndim)
        dropped = [p for p in properties if p in _ISOTROPIC_ONLY] if len(set(sizes)) > 1 else []
        properties = tuple(p for p in properties if p not in dropped)
        notes += _spacing_notes(spacing, unit, ndim, dropped)
    if not properties:
        raise InputError("measure: none of the chosen properties can be measured here")
    table = regionprops_table(labels, intensity_image=intensity_image, properties=properties,
                              **({} if sizes is None else {"spacing": sizes}))
    columns, units = {}, {}
    for column, values in table.items():
        prop = _property_of(column)
        if sizes is not None:
            if prop == "bbox":  # voxel indices: each coordinate times its axis' size
                values = values * sizes[int(column.split("-")[1]) % ndim]
        elif prop in _LENGTHS:
            values = values * pixel_size
        elif prop in _AREAS:
            values = values * pixel_size ** ndim
        columns[column] = values
        units[column] = _unit_of(prop, unit, ndim)
    return Measurements(columns=columns, units=units, notes=tuple(notes))


def code_lines(properties, pixel_size, unit, *, labels="labels", image="image",
               dst="table", spacing=None) -> list:
    """Lines of Python computing the same columns as :func:`measure`.

    The lines use ``from skimage.measure import regionprops_table`` (see :data:`IMPORTS`)
    and the names `labels` (label image) and `image` (intensity image); they bind `dst`
    to the ``{column: array}`` dict of :func:`measure`'s ``columns``. The 2D-only
    properties are skipped at run time when the labels are 3D.

    Parameters
    ----------
    properties : sequence of str
        As for :func:`measure`.
    pixel_size : float
        Size of a pixel, in `unit`.
    unit : str
        Length unit (used in the comments).
    labels, image, dst : str, optional
        Variable names.
    spacing : sequence of 3 float, optional
        Voxel size ``(z, y, x)``, as for :func:`measure`.

    Returns
    -------
    list of str
    """
    properties = _check_properties(properties)
    pixel_size = _check_pixel_size(pixel_size)
    unit = _check_unit(unit)
    spacing = check_spacing(spacing)
    if spacing is not None:
        return _spacing_code_lines(properties, spacing, unit, labels, image, dst)
    two_d = tuple(p for p in properties if p in PROPERTIES_2D_ONLY)
    lengths = tuple(p for p in _LENGTHS if p in properties)
    areas = tuple(p for p in _AREAS if p in properties)
    lines = [
        f"# measurements (skimage.measure.regionprops_table), lengths in {unit}: "
        f"pixel size {pixel_size!r} {unit}",
        f"properties = {list(properties)!r}",
    ]
    if two_d:
        lines += [
            f"if {labels}.ndim == 3:  # defined for 2D images only",
            f"    properties = [p for p in properties if p not in {two_d!r}]",
        ]
    lines.append(f"{dst} = regionprops_table({labels}, intensity_image={image}, "
                 "properties=properties)")
    if lengths or areas:
        lines.append(f"for column in {dst}:")
        branch = "if"
        if lengths:
            lines += [
                f"    {branch} column.split('-', 1)[0] in {lengths!r}:  # lengths, in {unit}",
                f"        {dst}[column] = {dst}[column] * {pixel_size!r}",
            ]
            branch = "elif"
        if areas:
            lines += [
                f"    {branch} column.split('-', 1)[0] in {areas!r}:  # areas (volumes in 3D)",
                f"        {dst}[column] = {dst}[column] * {pixel_size!r} ** {labels}.ndim",
            ]
    return lines


def _spacing_code_lines(properties, spacing, unit, labels, image, dst):
    two_d = tuple(p for p in properties if p in PROPERTIES_2D_ONLY)
    lines = [
        f"# measurements (skimage.measure.regionprops_table), in {unit}: voxel size (z, y, x) "
        f"{spacing!r} {unit}",
        f"properties = {list(properties)!r}",
        f"spacing = {spacing!r}[-{labels}.ndim:]  # (y, x) of it for a 2D image",
    ]
    if two_d:
        lines += [
            f"if {labels}.ndim == 3:  # defined for 2D images only",
            f"    properties = [p for p in properties if p not in {two_d!r}]",
        ]
    isotropic = tuple(p for p in properties if p in _ISOTROPIC_ONLY)
    if isotropic and len(set(spacing[1:])) > 1:
        lines += [
            f"if {labels}.ndim == 2:  # skimage measures perimeters of square pixels only",
            f"    properties = [p for p in properties if p not in {isotropic!r}]",
        ]
    lines.append(f"{dst} = regionprops_table({labels}, intensity_image={image}, "
                 "properties=properties, spacing=spacing)")
    if "bbox" in properties:
        lines += [
            f"for column in {dst}:",
            "    if column.split('-', 1)[0] == 'bbox':  # voxel indices, times the voxel size",
            f"        {dst}[column] = {dst}[column] * spacing[int(column.split('-')[1]) % "
            f"{labels}.ndim]",
        ]
    return lines


#: Import lines needed by :func:`code_lines`.
IMPORTS = ("from skimage.measure import regionprops_table",)


def _format(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def to_csv(measurements: Measurements, provenance: dict | None = None) -> str:
    """The table as CSV text, with units in the header and provenance in comment lines.

    Parameters
    ----------
    measurements : Measurements
    provenance : dict, optional
        JSON-able record (:func:`pipeline.provenance.record`), written on one line
        ``# provenance: {...}``.

    Returns
    -------
    str
        Comment lines starting with ``# `` (title, provenance, notes), then a header row
        (``area [µm²]``; no brackets for dimensionless columns) and one row per object.
        Floats are written with ``repr`` precision (they read back exactly).
    """
    if not isinstance(measurements, Measurements):
        raise InputError("to_csv: expected the Measurements returned by measure()")
    out = io.StringIO()
    out.write("# Pipeline Explorer measurements\n")
    if provenance is not None:
        if not isinstance(provenance, dict):
            raise InputError("to_csv: provenance must be a dict")
        text = json.dumps(provenance, ensure_ascii=False, sort_keys=False, default=str)
        out.write(f"# provenance: {text}\n")
    for note in measurements.notes:
        out.write(f"# note: {note}\n")
    writer = csv.writer(out, lineterminator="\n")
    names = list(measurements.columns)
    writer.writerow([f"{name} [{measurements.units[name]}]" if measurements.units.get(name)
                     else name for name in names])
    arrays = [np.asarray(measurements.columns[name]) for name in names]
    for row in zip(*(a.tolist() for a in arrays)):
        writer.writerow([_format(v) for v in row])
    return out.getvalue()


def count_regions(labels) -> int:
    """Number of distinct regions (non-zero labels) of a label image.

    Not the highest label: after "remove small objects" the labels keep their numbers, and
    the highest was 898 on an image of 10 objects.

    Parameters
    ----------
    labels : ndarray of int
        Label image (0 is the background), 2D or 3D.

    Returns
    -------
    int
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_:
        raise InputError(f"labels must be an integer array, got {labels.dtype}")
    if labels.size == 0:
        return 0
    if labels.dtype == np.bool_:
        return int(labels.any())
    if labels.min() < 0:
        raise InputError("labels must not be negative")
    return int(np.count_nonzero(np.bincount(labels.ravel())[1:]))


# --- A big table served by pages: sort, filter, page, bin (the measurements grid) ----------

#: Most rows one page may hold (the grid asks for blocks of 100).
MAX_PAGE_ROWS = 1000
#: Most bins of a distribution.
MAX_BINS = 200
#: AG Grid number filter types and how each tests a column (``a``: the filter's value,
#: ``b``: ``filterTo`` of "inRange").
_NUMBER_TESTS = types.MappingProxyType({
    "equals": lambda v, a, b: v == a,
    "notEqual": lambda v, a, b: v != a,
    "lessThan": lambda v, a, b: v < a,
    "lessThanOrEqual": lambda v, a, b: v <= a,
    "greaterThan": lambda v, a, b: v > a,
    "greaterThanOrEqual": lambda v, a, b: v >= a,
    "inRange": lambda v, a, b: (v > min(a, b)) & (v < max(a, b)),
    "blank": lambda v, a, b: np.isnan(v),
    "notBlank": lambda v, a, b: ~np.isnan(v),
})
_NO_VALUE_TESTS = ("blank", "notBlank")


def _column(measurements, name, argument):
    if not isinstance(name, str) or name not in measurements.columns:
        raise InputError(f"{argument}: unknown column {name!r}; the table has "
                         f"{', '.join(measurements.columns)}")
    return np.asarray(measurements.columns[name], dtype=float)


def _filter_value(value, argument):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)) \
            or not math.isfinite(float(value)):
        raise InputError(f"{argument}: the filter value must be a finite number, got {value!r}")
    return float(value)


def _condition_mask(values, condition, argument):
    if not isinstance(condition, dict):
        raise InputError(f"{argument}: a filter condition must be a dict, got {condition!r}")
    kind = condition.get("type")
    if kind not in _NUMBER_TESTS:
        raise InputError(f"{argument}: unknown filter type {kind!r}; valid ones are "
                         f"{', '.join(_NUMBER_TESTS)}")
    if kind in _NO_VALUE_TESTS:
        a = b = None
    else:
        a = _filter_value(condition.get("filter"), argument)
        b = _filter_value(condition.get("filterTo"), argument) if kind == "inRange" else None
    with np.errstate(invalid="ignore"):
        return np.asarray(_NUMBER_TESTS[kind](values, a, b), dtype=bool)


def filter_mask(measurements, filter_model=None):
    """Rows passing an AG Grid filter model (number filters, one per column).

    Parameters
    ----------
    measurements : Measurements
    filter_model : dict, optional
        ``{column: {"filterType": "number", "type": "greaterThan", "filter": 100}}``, or a
        combined condition ``{"operator": "AND" | "OR", "conditions": [...]}`` per column (AG
        Grid's ``filterModel``). Types: ``equals``, ``notEqual``, ``lessThan``,
        ``lessThanOrEqual``, ``greaterThan``, ``greaterThanOrEqual``, ``inRange`` (with
        ``filterTo``, bounds excluded as AG Grid does), ``blank``, ``notBlank``.

    Returns
    -------
    ndarray of bool
        One value per row.

    Raises
    ------
    InputError
        Naming ``filter_model``, for an unknown column or type or a value that is not a
        finite number.
    """
    mask = np.ones(measurements.n_objects, dtype=bool)
    if filter_model is None:
        return mask
    if not isinstance(filter_model, dict):
        raise InputError(f"filter_model must be a dict of column filters, got {filter_model!r}")
    for name, spec in filter_model.items():
        argument = f"filter_model[{name!r}]"
        values = _column(measurements, name, "filter_model")
        if not isinstance(spec, dict):
            raise InputError(f"{argument}: must be a dict, got {spec!r}")
        if "conditions" in spec:
            conditions = spec["conditions"]
            operator = spec.get("operator", "AND")
            if operator not in ("AND", "OR") or not isinstance(conditions, list) \
                    or not conditions:
                raise InputError(f"{argument}: combined filters need operator AND or OR and "
                                 "a list of conditions")
            masks = [_condition_mask(values, c, argument) for c in conditions]
            mask &= (np.logical_and.reduce(masks) if operator == "AND"
                     else np.logical_or.reduce(masks))
        else:
            mask &= _condition_mask(values, spec, argument)
    return mask


def row_order(measurements, sort_model=None, filter_model=None):
    """Indices of the rows shown, filtered then sorted (AG Grid's models, done on the server).

    Parameters
    ----------
    measurements : Measurements
    sort_model : list of dict, optional
        ``[{"colId": "area", "sort": "desc"}, ...]``, the first entry sorting first; ties
        keep the table's order (by label). NaN values come last in both directions.
    filter_model : dict, optional
        See :func:`filter_mask`.

    Returns
    -------
    ndarray of intp
        Row indices into the table's columns.

    Raises
    ------
    InputError
        Naming ``sort_model`` or ``filter_model`` when one is malformed.
    """
    index = np.flatnonzero(filter_mask(measurements, filter_model))
    if not sort_model:
        return index
    if not isinstance(sort_model, (list, tuple)):
        raise InputError(f"sort_model must be a list of {{colId, sort}}, got {sort_model!r}")
    keys = []
    for item in sort_model:
        if not isinstance(item, dict) or item.get("sort") not in ("asc", "desc"):
            raise InputError(f"sort_model: each entry needs a colId and sort 'asc' or 'desc', "
                             f"got {item!r}")
        values = _column(measurements, item.get("colId"), "sort_model")[index]
        key = -values if item["sort"] == "desc" else values
        keys.append(np.where(np.isnan(key), np.inf, key))  # NaN last
    # np.lexsort sorts by the last key first; stable, so ties keep the label order
    order = np.lexsort(tuple(reversed(keys)))
    return index[order]


def _plain(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN / inf
    return value


def rows_of(measurements, index):
    """The rows at `index` as JSON-ready dicts (``{column: value}``; NaN as None)."""
    index = np.asarray(index, dtype=np.intp)
    names = list(measurements.columns)
    lists = [np.asarray(measurements.columns[n])[index].tolist() for n in names]
    return [{n: _plain(v) for n, v in zip(names, values)} for values in zip(*lists)]


def _check_row(value, argument):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < 0:
        raise InputError(f"{argument} must be a row number (an integer >= 0), got {value!r}")
    return int(value)


def page(measurements, start, end, sort_model=None, filter_model=None):
    """One page of the table, filtered and sorted on the server.

    Parameters
    ----------
    measurements : Measurements
    start, end : int
        First row and the row after the last (``end - start`` at most
        :data:`MAX_PAGE_ROWS`), in the filtered and sorted order.
    sort_model, filter_model : optional
        See :func:`row_order`.

    Returns
    -------
    rows : list of dict
        At most ``end - start`` rows (fewer at the end of the table).
    count : int
        Number of rows passing the filter (the grid's row count).

    Raises
    ------
    InputError
        Naming ``start`` / ``end`` when they are not row numbers in order or the page is
        longer than :data:`MAX_PAGE_ROWS`; see :func:`row_order` for the models.
    """
    start, end = _check_row(start, "start"), _check_row(end, "end")
    if end < start:
        raise InputError(f"end ({end}) must not be below start ({start})")
    if end - start > MAX_PAGE_ROWS:
        raise InputError(f"end - start must be at most {MAX_PAGE_ROWS} rows, got "
                         f"{end - start}")
    order = row_order(measurements, sort_model, filter_model)
    return rows_of(measurements, order[start:end]), int(order.size)


def position(measurements, label, sort_model=None, filter_model=None):
    """Row number of the region `label` in the filtered and sorted order (None: not shown).

    Parameters
    ----------
    measurements : Measurements
        With a ``label`` column.
    label : int
    sort_model, filter_model : optional
        See :func:`row_order`.

    Returns
    -------
    int or None
    """
    if "label" not in measurements.columns:
        return None
    order = row_order(measurements, sort_model, filter_model)
    where = np.flatnonzero(np.asarray(measurements.columns["label"])[order] == int(label))
    return int(where[0]) if where.size else None


def distributions(measurements, index=None, bins=60):
    """Histograms of every numeric column over the rows at `index`, binned on the server.

    Parameters
    ----------
    measurements : Measurements
    index : ndarray of int, optional
        Rows counted (e.g. those passing the grid's filter); all rows by default.
    bins : int, optional
        Number of equal bins between each column's finite minimum and maximum (1 to
        :data:`MAX_BINS`); a column of whole numbers spanning at most `bins` values (areas
        in pixels, counts) gets one bin per value, centred on it.

    Returns
    -------
    dict of str to dict
        ``{column: {"lo": float, "hi": float, "counts": [int, ...]}}`` for every column but
        ``label`` (``counts`` empty when the column has no finite value). Bin ``i`` covers
        ``lo + i * (hi - lo) / len(counts)`` to the next edge.

    Raises
    ------
    InputError
        Naming ``bins``, if it is not an integer from 1 to :data:`MAX_BINS`.
    """
    if isinstance(bins, (bool, np.bool_)) or not isinstance(bins, (int, np.integer)) \
            or not 1 <= bins <= MAX_BINS:
        raise InputError(f"bins must be an integer from 1 to {MAX_BINS}, got {bins!r}")
    out = {}
    for name, column in measurements.columns.items():
        if name == "label":
            continue
        values = np.asarray(column)
        if index is not None:
            values = values[np.asarray(index, dtype=np.intp)]
        as_float = values.astype(float)
        values = as_float[np.isfinite(as_float)]
        if not values.size:
            out[name] = {"lo": 0.0, "hi": 0.0, "counts": []}
            continue
        lo, hi = float(values.min()), float(values.max())
        n = int(bins)
        if hi - lo + 1 <= bins and np.array_equal(values, np.round(values)):
            n = int(hi - lo + 1)  # whole numbers (areas in pixels): one bin per value
            lo, hi = lo - 0.5, hi + 0.5
        elif hi == lo:
            n, lo, hi = 1, lo - 0.5, hi + 0.5
        counts, _ = np.histogram(values, bins=n, range=(lo, hi))
        out[name] = {"lo": lo, "hi": hi, "counts": counts.tolist()}
    return out


#: Fewest regions that may be called implausible.
NOISE_MIN_REGIONS = 1000


def region_count_warning(n_regions, n_pixels, median_pixels=None):
    """A warning when a segmentation has implausibly many regions for its image, else None.

    Many tiny regions are the signature of noise segmented as objects: at least
    :data:`NOISE_MIN_REGIONS` regions and either fewer than 100 pixels per region on
    average (background included) or a median region of at most 10 pixels.

    Parameters
    ----------
    n_regions : int
        Number of regions.
    n_pixels : int
        Pixels (voxels) of the image, > 0.
    median_pixels : float, optional
        Median number of pixels of a region.

    Returns
    -------
    str or None
        E.g. ``"95,239 regions in 16,777,216 pixels (one per 176) — noise? try a filter or
        remove small objects"``.

    Raises
    ------
    InputError
        Naming ``n_regions`` or ``n_pixels`` when they are not counts.
    """
    n_regions = _check_row(n_regions, "n_regions")
    n_pixels = _check_row(n_pixels, "n_pixels")
    if n_pixels == 0:
        raise InputError("n_pixels must be above 0")
    if n_regions < NOISE_MIN_REGIONS:
        return None
    crowded = n_pixels / n_regions < 100
    tiny = median_pixels is not None and float(median_pixels) <= 10
    if not (crowded or tiny):
        return None
    size = (f"median region {float(median_pixels):,.0f} pixels" if tiny else
            f"one per {n_pixels / n_regions:,.0f} pixels")
    return (f"{n_regions:,} regions in {n_pixels:,} pixels ({size}) — noise? try a filter "
            "or remove small objects")
