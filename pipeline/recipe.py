"""Recipes: the whole pipeline as a JSON document, checked, saved, loaded and run.

A recipe (format version 1, see ``docs/recipe.md``) names, optionally, the image of a colour
file to segment (``image``: a channel or a weighted combination instead of the luminance;
absent = the luminance, as in older recipes), a filter, the two marker thresholds,
a segmentation method, an ordered list of post-processing operations and the measurement
options. :func:`validate` checks one and returns it *normalised* (every parameter present,
converted to its type), so that equal pipelines give equal recipes: the app's undo history,
its cache keys, "Save recipe", the CLI and the exported script all work on normalised recipes.

Running a recipe is a chain of pure stage functions, which are the only code path from an
image to labels and measurements (the app caches each of them separately):

* :func:`image_stage`: loaded image (and its colour channels) → the image segmented
  (:mod:`pipeline.channels`; the loaded image itself without an ``image`` section);
* :func:`filter_stage`: image → ``image.astype(np.float64)`` → filter → *filtered*;
* :func:`marker_stage`: filtered → markers (1 below ``vmin``, 2 above ``vmax``, else 0;
  then the strokes drawn by hand, ``markers.scribbles``, painted over them);
* :func:`segment_stage`: (filtered, markers) → boolean object mask;
* :func:`postprocess_stage`: mask → mask operations → ``label`` → label operations → int32
  labels;
* :func:`measure_stage`: (labels, loaded image) → :class:`~pipeline.measure.Measurements`.

:func:`run` chains them and returns every intermediate result.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import channels as _channels
from . import filters as _filters
from . import measure as _measure
from . import postprocess as _postprocess
from . import scribbles as _scribbles
from . import segmentation as _segmentation
from .errors import InputError
from .segment import make_markers

__all__ = [
    "FORMAT",
    "VERSION",
    "MAX_BYTES",
    "SECTIONS",
    "RecipeResult",
    "default_recipe",
    "validate",
    "series_of",
    "with_series",
    "loads",
    "dumps",
    "read_file",
    "describe",
    "step_names",
    "image_stage",
    "filter_stage",
    "marker_stage",
    "segment_stage",
    "postprocess_stage",
    "measure_stage",
    "run",
    "MAX_STEPS",
    "MAX_TEXT",
    "MAX_COST",
    "estimate_cost",
    "check_cost",
]

#: Value of the ``format`` key of every recipe.
FORMAT = "pipeline-explorer-recipe"
#: The recipe format version this code reads and writes.
VERSION = 1
#: Largest recipe accepted by :func:`loads` and :func:`read_file`, in bytes (1 MB; a recipe
#: is a few kB).
MAX_BYTES = 1_000_000
#: The sections of a recipe, in pipeline order (after ``format`` and ``version``).
SECTIONS = ("filter", "markers", "segmentation", "postprocess", "measure")
#: Most post-processing operations a recipe may list (the app offers 8 kinds, each once).
MAX_STEPS = 20
#: Longest text a recipe may hold (a name, a unit, a key), in characters.
MAX_TEXT = 200
#: Deepest nesting of mappings and lists in a recipe (a valid one is 4 levels deep).
MAX_DEPTH = 8
#: Most values (texts, numbers, mappings, lists, keys) a recipe may hold (a valid one ~100),
#: apart from its strokes drawn by hand (``markers.scribbles``), counted on their own.
MAX_ITEMS = 5000
#: Most values the strokes drawn by hand may hold: 3 per point and at most 8 per stroke
#: (pipeline.scribbles' limits), plus their list.
MAX_SCRIBBLE_ITEMS = 3 * _scribbles.MAX_POINTS + 8 * _scribbles.MAX_STROKES + 1
#: Largest estimated cost of a recipe's filter and post-processing on an image, in
#: pixel-neighbour operations (:func:`estimate_cost`). One closing of radius 25 on a 2048²
#: image is 2.2e10 and took ~35 s on one core; radius 5 on the same image 2 s.
MAX_COST = 2.5e10

#: The optional first section: which image of a colour file (``pipeline.channels``).
IMAGE_SECTION = "image"
#: The optional section naming what to read of a file: ``{"series": k}``, the image series of
#: a multi-series TIFF (OME-TIFF) the recipe was made on (the Series menu); absent for the
#: first series, so that older recipes normalise as before.
INPUT_SECTION = "input"

_KEYS = ("format", "version", INPUT_SECTION, IMAGE_SECTION) + SECTIONS
_STEP_KEYS = ("name", "params")
_MEASURE_KEYS = ("properties", "pixel_size", "unit", "spacing")


# --------------------------------------------------------------------------------------------
# Small helpers


def _kind(value) -> str:
    """What a JSON value is, in words, for messages."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return f"the text {value!r}"
    if value is None:
        return "null"
    return repr(value)


def _choices(name, valid) -> str:
    """``"; choose one of a, b, c"`` with a "did you mean" hint for near misses."""
    hint = ""
    if isinstance(name, str):
        close = difflib.get_close_matches(name, list(valid), n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
    return f"{hint}; choose one of {', '.join(valid)}"


def _number(where: str, value) -> float:
    if isinstance(value, (bool, np.bool_)) or value is None or isinstance(
            value, (str, list, tuple, dict)):
        raise InputError(f"recipe {where} must be a number, got {_kind(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"recipe {where} must be a number, got {_kind(value)}") from None
    if not math.isfinite(number):
        raise InputError(f"recipe {where} must be a finite number, got {value!r}")
    return number


def _unknown_keys(where: str, given, expected) -> None:
    unknown = [k for k in given if k not in expected]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise InputError(f"recipe {where}: unknown key {names}; expected "
                         f"{', '.join(expected)}")


def _step(where: str, entry, registry, what: str) -> dict:
    """Check one ``{"name": ..., "params": {...}}`` entry against a registry of Steps."""
    if not isinstance(entry, dict):
        raise InputError(f'recipe {where} must be a mapping {{"name": ..., "params": {{...}}}}, '
                         f"got {_kind(entry)}")
    _unknown_keys(where, entry, _STEP_KEYS)
    if "name" not in entry:
        raise InputError(f"recipe {where} has no 'name'")
    name = entry["name"]
    step = registry.get(name) if isinstance(name, str) else None
    if step is None:
        raise InputError(f"recipe {where}: unknown {what} {name!r}{_choices(name, registry)}")
    params = entry.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InputError(f"recipe {where} ({name}): params must be a mapping of parameter "
                         f"names to values, got {_kind(params)}")
    try:
        checked = step.check(params)
    except InputError as exc:
        raise InputError(f"recipe {where} ({name}): {exc}") from None
    return {"name": name, "params": checked}


def _path(path) -> str:
    """``("postprocess", 2, "params", "mode")`` → ``postprocess operation 3 → params → mode``."""
    parts = []
    for i, key in enumerate(path):
        if isinstance(key, int):
            if i and path[i - 1] == "postprocess":
                parts[-1] = f"postprocess operation {key + 1}"
            else:
                parts.append(f"item {key + 1}")
        else:
            shown = str(key) if _plain(key) else repr(key)
            parts.append(shown if len(shown) <= 40 else shown[:39] + "…")
    return " → ".join(parts) or "recipe"


def _plain(text) -> bool:
    return isinstance(text, str) and len(text) <= MAX_TEXT and text.isprintable()


def _check_text(where: str, text: str) -> None:
    surrogate = next((c for c in text if 0xD800 <= ord(c) <= 0xDFFF), None)
    if surrogate is not None:
        raise InputError(f"recipe {where}: text holds {surrogate!r}, half of a character pair "
                         "(a lone surrogate), which is not valid Unicode: retype the text")
    if not text.isprintable():
        bad = next(c for c in text if not c.isprintable())
        raise InputError(f"recipe {where}: text must be printable, got {bad!r} (control "
                         "characters such as NUL, tabs or line breaks are not accepted)")
    if len(text) > MAX_TEXT:
        raise InputError(f"recipe {where}: text is {len(text):,} characters long, the limit "
                         f"is {MAX_TEXT}")


def _structure_ok(value, depth: int, budget: list) -> bool:
    """Fast walk: True if every text is plain and the nesting and size are within bounds."""
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        return False
    if isinstance(value, str):
        return len(value) <= MAX_TEXT and value.isprintable()  # no lone surrogate either
    if isinstance(value, dict):
        return all(isinstance(k, str) and len(k) <= MAX_TEXT and k.isprintable()
                   and _structure_ok(v, depth + 1, budget) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_structure_ok(v, depth + 1, budget) for v in value)
    return True


def _split_scribbles(recipe):
    """(the recipe without ``markers.scribbles``, the scribbles or None): the strokes drawn
    by hand are bounded by their own count of values (:data:`MAX_SCRIBBLE_ITEMS`)."""
    markers = recipe.get("markers") if isinstance(recipe, dict) else None
    if not isinstance(markers, dict) or "scribbles" not in markers:
        return recipe, None
    rest = {k: v for k, v in markers.items() if k != "scribbles"}
    return {**recipe, "markers": rest}, markers["scribbles"]


def _check_structure(recipe) -> None:
    """Every text of a recipe (keys too) printable, valid Unicode and short; the nesting and
    the number of values bounded (:data:`MAX_ITEMS`; the strokes drawn by hand
    :data:`MAX_SCRIBBLE_ITEMS`). Runs before any section is read; a second, slower walk names
    the problem."""
    rest, drawn = _split_scribbles(recipe)
    _check_values(rest, (), MAX_ITEMS)
    if drawn is not None:
        _check_values(drawn, ("markers", "scribbles"), MAX_SCRIBBLE_ITEMS)


def _check_values(recipe, start, limit) -> None:
    """:func:`_check_structure` of the part of a recipe at path `start`, with `limit` values."""
    if _structure_ok(recipe, len(start), [limit]):
        return
    stack = [(start, recipe)]
    count = 0
    while stack:
        path, value = stack.pop()
        count += 1
        if count > limit:
            if start:
                raise InputError(f"recipe {_path(start)} hold more than {limit:,} values: "
                                 "clear some scribbles or draw shorter strokes")
            raise InputError(f"recipe holds more than {limit:,} values: a recipe is a "
                             "small JSON file, is this one?")
        if len(path) > MAX_DEPTH:
            raise InputError(f"recipe {_path(path[:MAX_DEPTH])}: nested more than "
                             f"{MAX_DEPTH} levels deep")
        if isinstance(value, str):
            _check_text(_path(path), value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InputError(f"recipe {_path(path)}: keys must be text, got {key!r}")
                _check_text(f"key {_path(path + (key,))}", key)
                stack.append((path + (key,), item))
        elif isinstance(value, (list, tuple)):
            stack.extend((path + (i,), item) for i, item in enumerate(value))


# --------------------------------------------------------------------------------------------
# Sections


def _check_format_and_version(recipe) -> None:
    if not isinstance(recipe, dict):
        raise InputError("a recipe must be a mapping (a JSON object with 'format', 'version', "
                         f"'markers', ...), got {_kind(recipe)}")
    if "format" not in recipe:
        raise InputError(f"this is not a Pipeline Explorer recipe: the 'format' key is missing "
                         f"(expected \"format\": \"{FORMAT}\")")
    if recipe["format"] != FORMAT:
        raise InputError(f"this is not a Pipeline Explorer recipe: format is "
                         f"{_kind(recipe['format'])}, expected {FORMAT!r}")
    if "version" not in recipe:
        raise InputError(f"recipe version is missing (expected \"version\": {VERSION})")
    version = recipe["version"]
    if isinstance(version, float) and version.is_integer():
        version = int(version)
    if isinstance(version, bool) or not isinstance(version, int):
        raise InputError(f"recipe version must be a whole number, got {_kind(version)}")
    if version != VERSION:
        raise InputError(f"recipe version {version} is not supported (this app reads "
                         f"version {VERSION})")


def _markers(section) -> dict:
    if not isinstance(section, dict):
        raise InputError(f'recipe markers must be a mapping {{"vmin": ..., "vmax": ...}}, '
                         f"got {_kind(section)}")
    _unknown_keys("markers", section, ("vmin", "vmax", "scribbles"))
    for key in ("vmin", "vmax"):
        if key not in section:
            raise InputError(f"recipe markers: {key} is missing")
    vmin = _number("markers: vmin", section["vmin"])
    vmax = _number("markers: vmax", section["vmax"])
    if not vmin < vmax:
        raise InputError(f"recipe markers: vmin ({vmin:g}) must be below vmax ({vmax:g}): "
                         "pixels between them are the ones the segmentation decides")
    markers = {"vmin": vmin, "vmax": vmax}
    # strokes drawn by hand (pipeline.scribbles); none = kept out, so that older recipes and
    # their cache keys normalise as before
    scribbles = _scribbles.check_scribbles(section.get("scribbles", []),
                                           "recipe markers: scribbles")
    if scribbles:
        markers["scribbles"] = scribbles
    return markers


def _postprocess_list(section) -> list:
    if not isinstance(section, (list, tuple)):
        raise InputError(f'recipe postprocess must be a list of {{"name": ..., "params": '
                         f"{{...}}}} operations, got {_kind(section)}")
    if len(section) > MAX_STEPS:
        raise InputError(f"recipe postprocess has {len(section):,} operations, the limit is "
                         f"{MAX_STEPS}: each kind of operation is needed once at most")
    section = _postprocess.bind_split_connectivity(section)
    ops = [_step(f"postprocess operation {i}", op, _postprocess.POSTPROCESS, "operation")
           for i, op in enumerate(section, 1)]
    names = [op["name"] for op in ops]
    count = names.count("label")
    if count != 1:
        raise InputError(f"recipe postprocess: 'label' (which numbers the objects) must appear "
                         f"exactly once, found it {count} times")
    at = names.index("label")
    for i, name in enumerate(names, 1):
        if i - 1 > at and name in _postprocess.MASK_OPS:
            raise InputError(f"recipe postprocess operation {i}: '{name}' works on the mask: "
                             "put it before 'label'")
        if i - 1 < at and name in _postprocess.LABEL_OPS:
            raise InputError(f"recipe postprocess operation {i}: '{name}' works on labels: "
                             "put it after 'label'")
    _postprocess.check_split_connectivity([(op["name"], op["params"]) for op in ops],
                                          "recipe postprocess")
    return ops


def _check_series(where: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"{where} must be a whole number >= 0 (0 for a file's first image "
                         f"series), got {_kind(value)}")
    return int(value)


def _input(section) -> dict:
    if not isinstance(section, dict):
        raise InputError(f'recipe input must be a mapping {{"series": ...}}, got '
                         f'{_kind(section)}')
    _unknown_keys("input", section, ("series",))
    return {"series": _check_series("recipe input: series", section.get("series", 0))}


def _measure_options(section) -> dict:
    if not isinstance(section, dict):
        raise InputError(f'recipe measure must be a mapping {{"properties": [...], '
                         f'"pixel_size": ..., "unit": ...}}, got {_kind(section)}')
    _unknown_keys("measure", section, _MEASURE_KEYS)
    properties = section.get("properties", list(_measure.DEFAULT_PROPERTIES))
    pixel_size = _number("measure: pixel_size", section.get("pixel_size", 1.0))
    unit = section.get("unit", "px")
    if isinstance(properties, (list, tuple)):
        bad = [p for p in properties if not isinstance(p, str)]
        if bad:
            raise InputError(f"recipe measure: properties must be names (text), got "
                             f"{_kind(bad[0])}")
    spacing = section.get("spacing")  # the voxel size (z, y, x); absent in older recipes
    # code_lines checks the options exactly as measure() does (same messages), without data.
    try:
        _measure.code_lines(properties, pixel_size, unit, spacing=spacing)
    except InputError as exc:
        raise InputError(f"recipe {exc}") from None
    options = {"properties": list(properties), "pixel_size": float(pixel_size),
               "unit": unit.strip()}
    if spacing is not None:  # kept out when unset: older recipes normalise as before
        options["spacing"] = list(_measure.check_spacing(spacing))
    return options


# --------------------------------------------------------------------------------------------
# Public API: building, checking, reading and writing recipes


def default_recipe(vmin, vmax) -> dict:
    """The recipe the app starts from for an image.

    Parameters
    ----------
    vmin, vmax : float
        Marker thresholds (e.g. :func:`pipeline.segment.default_thresholds`), ``vmin < vmax``.

    Returns
    -------
    dict
        Normalised recipe: no filter, random walker with its default parameters,
        post-processing ``[label(connectivity=1)]``, the default measurements
        (:data:`pipeline.measure.DEFAULT_PROPERTIES`) in pixels (pixel size 1, unit ``px``).

    Raises
    ------
    InputError
        If vmin / vmax are not finite numbers with ``vmin < vmax``.
    """
    return validate({
        "format": FORMAT,
        "version": VERSION,
        "filter": {"name": "none", "params": {}},
        "markers": {"vmin": vmin, "vmax": vmax},
        "segmentation": {"name": "random_walker", "params": {}},
        "postprocess": [{"name": "label", "params": {"connectivity": 1}}],
        "measure": {"properties": list(_measure.DEFAULT_PROPERTIES), "pixel_size": 1.0,
                    "unit": "px"},
    })


def validate(recipe) -> dict:
    """Check a recipe and return it normalised.

    Parameters
    ----------
    recipe : dict
        A recipe, e.g. from :func:`loads`. ``format``, ``version`` and ``markers`` are
        required; a missing ``image`` means the luminance (the loaded image), a missing
        ``filter`` means no filter, a missing ``segmentation`` the random
        walker with default parameters, a missing ``postprocess`` ``[label]``, a missing
        ``measure`` (or a missing key of it) the defaults of :func:`default_recipe`.

    Returns
    -------
    dict
        A new recipe with every section present (``image`` only when it is not the
        luminance, so that older recipes normalise as before); every step's ``params``
        complete (defaults
        filled in) and converted to the parameter's type; ``vmin``, ``vmax`` and
        ``pixel_size`` as floats. ``validate(validate(r)) == validate(r)``.

    Raises
    ------
    InputError
        Naming the problem: not a mapping; ``format`` missing or wrong; ``version`` missing
        or unsupported ("recipe version 2 is not supported (this app reads version 1)");
        an unknown top-level key; an unknown filter, segmentation method or post-processing
        operation (listing the valid names); a bad parameter (naming the step and the
        parameter); vmin / vmax not finite or not ``vmin < vmax``; post-processing operations
        in the wrong order; bad measurement options; a text (value or key) that is not
        printable, holds a lone surrogate or is longer than :data:`MAX_TEXT` characters
        (naming where it is); more than :data:`MAX_STEPS` post-processing operations; a
        recipe nested deeper than 8 levels or holding more than 5000 values.
    """
    _check_format_and_version(recipe)
    _check_structure(recipe)
    unknown = [k for k in recipe if k not in _KEYS]
    if unknown:
        raise InputError(f"recipe: unknown key {', '.join(repr(k) for k in unknown)}; a "
                         f"version {VERSION} recipe has {', '.join(_KEYS)}")
    if "markers" not in recipe:
        raise InputError('recipe has no markers: add "markers": {"vmin": ..., "vmax": ...}')
    image = _step("image", recipe.get(IMAGE_SECTION, dict(_channels.DEFAULT)),
                  _channels.CHANNELS, "image stage")
    head = {"format": FORMAT, "version": VERSION}
    source = _input(recipe.get(INPUT_SECTION, {}))
    if source["series"]:  # kept out for the first series: older recipes normalise as before
        head[INPUT_SECTION] = source
    if not _channels.is_default(image):  # kept out for the luminance: older recipes (and
        head[IMAGE_SECTION] = image      # their cache keys) normalise as before
    return {
        **head,
        "filter": _step("filter", recipe.get("filter", {"name": "none"}), _filters.FILTERS,
                        "filter"),
        "markers": _markers(recipe["markers"]),
        "segmentation": _step("segmentation", recipe.get("segmentation",
                                                         {"name": "random_walker"}),
                              _segmentation.SEGMENTERS, "segmentation method"),
        "postprocess": _postprocess_list(recipe.get("postprocess", [{"name": "label"}])),
        "measure": _measure_options(recipe.get("measure", {})),
    }


def series_of(recipe) -> int:
    """The image series of a file that `recipe` reads (its ``input`` section; 0 = the first).

    Parameters
    ----------
    recipe : dict
        A normalised recipe (:func:`validate`).

    Returns
    -------
    int
        The series index, 0 when the recipe has no ``input`` section.
    """
    return int((recipe.get(INPUT_SECTION) or {}).get("series", 0))


def with_series(recipe, series) -> dict:
    """`recipe` reading image series `series` of each file (0: the first, section removed).

    The app adds the series of the image on the screen (a data-folder TIFF's Series menu)
    to the recipe it saves, exports as a script or runs over a folder, so that the batch,
    the command line and the script read the series the recipe was tuned on. The
    computation does not depend on it (the stages' cache keys do not read it).

    Parameters
    ----------
    recipe : dict
        A normalised recipe (:func:`validate`).
    series : int or None
        The image series; None or 0 for the first.

    Returns
    -------
    dict
        A new normalised recipe.

    Raises
    ------
    InputError
        If `series` is not a whole number >= 0.
    """
    series = 0 if series is None else _check_series("series", series)
    out = {k: v for k, v in recipe.items() if k != INPUT_SECTION}
    if not series:
        return out
    head = {k: out.pop(k) for k in ("format", "version") if k in out}
    return {**head, INPUT_SECTION: {"series": series}, **out}


def _reject_duplicate_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise InputError(f"recipe is not valid: the key {key!r} appears twice in the same "
                             "mapping")
        seen[key] = value
    return seen


def _reject_constant(name):
    raise InputError(f"recipe is not valid JSON: {name} is not a number JSON allows")


def loads(text) -> dict:
    """Parse and validate a recipe from JSON text.

    Parameters
    ----------
    text : str or bytes
        JSON document (UTF-8 if bytes), at most :data:`MAX_BYTES` (1 MB).

    Returns
    -------
    dict
        The normalised recipe (:func:`validate`).

    Raises
    ------
    InputError
        If the text is too large, not valid JSON ("recipe is not valid JSON: line 3 column 5:
        Expecting ',' delimiter"), repeats a key, or is not a valid recipe.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        size = len(text)
        if size > MAX_BYTES:
            raise InputError(_too_large(size))
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputError(f"recipe is not UTF-8 text (byte {exc.start}): is it really a "
                             "recipe file?") from None
    if not isinstance(text, str):
        raise InputError(f"recipe must be JSON text, got {type(text).__name__}")
    # characters <= UTF-8 bytes: a text of too many characters is refused without encoding it
    size = len(text) if len(text) > MAX_BYTES else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise InputError(_too_large(size))
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise InputError("recipe is empty: expected a JSON document")
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicate_keys,
                          parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"recipe is not valid JSON: line {exc.lineno} column {exc.colno}: "
                         f"{exc.msg}") from None
    except RecursionError:
        raise InputError("recipe is not valid: it is nested too deeply") from None
    return validate(data)


def _too_large(size: int) -> str:
    return (f"recipe is {size / 1e6:.1f} MB, the limit is {MAX_BYTES / 1e6:g} MB: a recipe "
            "is a small JSON file, is this one?")


def dumps(recipe) -> str:
    """The recipe as JSON text: validated, keys sorted, indented, ending with a newline.

    ``validate(loads(dumps(r))) == validate(r)`` for every valid recipe ``r``.

    Raises
    ------
    InputError
        If the recipe is not valid (see :func:`validate`).
    """
    return json.dumps(validate(recipe), indent=2, sort_keys=True, ensure_ascii=False,
                      allow_nan=False) + "\n"


def read_file(path) -> dict:
    """Read and validate a recipe file.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    dict
        The normalised recipe.

    Raises
    ------
    InputError
        Naming the file, if it cannot be read, is larger than :data:`MAX_BYTES` or is not a
        valid recipe.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"recipe file {str(path)!r} was not found") from None
    except IsADirectoryError:
        raise InputError(f"recipe file {str(path)!r} is a folder, not a file") from None
    except OSError as exc:
        raise InputError(f"could not read the recipe file {str(path)!r}: "
                         f"{exc.strerror or exc}") from None
    try:
        return loads(data)
    except InputError as exc:
        raise InputError(f"{path.name}: {exc}") from None


def _call(name: str, params: dict) -> str:
    """``gaussian(sigma=1.0)``."""
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in params.items())})"


def describe(recipe) -> str:
    """One line describing a recipe, for people.

    E.g. ``gaussian(sigma=1.0) → markers(vmin=83.0, vmax=131.0) → random_walker(beta=130.0,
    mode='cg_mg', tol=0.001) → label(connectivity=1) → measure(11 properties, pixel 1.0 px)``.

    Parameters
    ----------
    recipe : dict
        A recipe (validated here).

    Returns
    -------
    str
    """
    recipe = validate(recipe)
    parts = []
    if series_of(recipe):
        parts.append(f"series {series_of(recipe)}")
    if IMAGE_SECTION in recipe:
        parts.append(_channels.describe(recipe[IMAGE_SECTION]))
    if recipe["filter"]["name"] != "none":
        parts.append(_call(recipe["filter"]["name"], recipe["filter"]["params"]))
    markers = recipe["markers"]
    drawn = markers.get("scribbles")
    parts.append(_call("markers", {"vmin": markers["vmin"], "vmax": markers["vmax"]})
                 if not drawn else
                 _call("markers", {"vmin": markers["vmin"], "vmax": markers["vmax"]})[:-1]
                 + f", {len(drawn)} stroke{'s' if len(drawn) != 1 else ''} drawn)")
    parts.append(_call(recipe["segmentation"]["name"], recipe["segmentation"]["params"]))
    parts += [_call(op["name"], op["params"]) for op in recipe["postprocess"]]
    m = recipe["measure"]
    size = (f"voxel {' × '.join(f'{v:g}' for v in m['spacing'])}" if m.get("spacing")
            else f"pixel {m['pixel_size']!r}")
    parts.append(f"measure({len(m['properties'])} properties, {size} {m['unit']})")
    return " → ".join(parts)


def step_names(recipe) -> dict:
    """The names of a recipe's steps, for the ``steps`` of a provenance record.

    Parameters
    ----------
    recipe : dict
        A recipe (validated here).

    Returns
    -------
    dict
        ``{"filter": name, "segmentation": name, "postprocess": [names]}``, with
        ``"image"`` first when the recipe picks a channel or a weighted combination.
    """
    recipe = validate(recipe)
    names = {
        "filter": recipe["filter"]["name"],
        "segmentation": recipe["segmentation"]["name"],
        "postprocess": [op["name"] for op in recipe["postprocess"]],
    }
    if IMAGE_SECTION in recipe:
        names = {"image": recipe[IMAGE_SECTION]["name"], **names}
    return names


def _neighbours(name: str, params: dict, ndim: int) -> float:
    """Pixel-neighbour operations per pixel of one filter or post-processing step."""
    if name == "gaussian":  # separable: one pass per axis over 2 ceil(4 sigma) + 1 pixels
        return ndim * (2 * math.ceil(4 * params["sigma"]) + 1)
    if name == "median":
        return (2 * params["radius"] + 1) ** ndim
    if name == "tv":  # Chambolle's iterations (at most 200), a few operations each
        return 200 * 4 * ndim
    if name == "bilateral":  # skimage's window: max(5, 2 ceil(3 sigma_spatial) + 1)
        return max(5, 2 * math.ceil(3 * params["sigma_spatial"]) + 1) ** ndim
    if name == "nl_means":  # fast mode: the search window, a few operations per offset
        return 4 * (2 * params["patch_distance"] + 1) ** ndim
    if name in ("closing", "opening"):  # a dilation and an erosion by the footprint
        return 2 * (2 * params["radius"] + 1) ** ndim
    if name == "split_touching":  # distance transform, smoothing, peaks, watershed
        return 50 + ndim * (2 * math.ceil(4 * params["sigma"]) + 1) \
            + ndim * (2 * params["min_distance"] + 1)
    return 10  # linear steps: label, fill holes, remove small objects, ...


def estimate_cost(recipe, shape) -> float:
    """Estimated work of a recipe's filter and post-processing on an image of `shape`.

    Parameters
    ----------
    recipe : dict
        A recipe (validated here).
    shape : tuple of int
        The image's shape (2D or 3D).

    Returns
    -------
    float
        Pixel-neighbour operations: for each step, the number of pixels times the
        neighbourhood it reads per pixel (e.g. ``2 (2 r + 1)**ndim`` for a closing of
        radius ``r``). The segmentation is not counted (its cost depends on the data).
    """
    recipe = validate(recipe)
    shape = tuple(int(s) for s in shape)
    pixels, ndim = math.prod(shape), len(shape)
    steps = [recipe["filter"]] + list(recipe["postprocess"])
    return float(sum(pixels * _neighbours(step["name"], step["params"], ndim)
                     for step in steps))


def check_cost(recipe, shape) -> None:
    """Refuse a recipe whose estimated cost on an image of `shape` exceeds :data:`MAX_COST`.

    Raises
    ------
    InputError
        Naming the costliest step, e.g. "this recipe would take about 2.2e+10 pixel
        operations on a 2048 × 2048 image (closing(radius=25) most), the limit is 2.5e+10:
        use smaller radii or a smaller image".
    """
    cost = estimate_cost(recipe, shape)
    if cost <= MAX_COST:
        return
    recipe = validate(recipe)
    ndim = len(tuple(shape))
    steps = [recipe["filter"]] + list(recipe["postprocess"])
    worst = max(steps, key=lambda step: _neighbours(step["name"], step["params"], ndim))
    size = " × ".join(str(int(s)) for s in shape)
    raise InputError(
        f"this recipe would take about {cost:.2g} pixel operations on a {size} image "
        f"({_call(worst['name'], worst['params'])} most), the limit is {MAX_COST:.2g}: use "
        "smaller radii, windows or sigmas, fewer operations, or a smaller image (crop it)"
    )


# --------------------------------------------------------------------------------------------
# Running a recipe


@dataclass(frozen=True)
class RecipeResult:
    """Every intermediate result of :func:`run`.

    Attributes
    ----------
    filtered : ndarray of float64
        The image converted to float64 and filtered.
    markers : ndarray of uint8
        1 = background (below vmin), 2 = object (above vmax), 0 = decided by segmentation.
    mask : ndarray of bool
        The segmentation (True = object).
    labels : ndarray of int32
        The post-processed label image (0 = background).
    measurements : pipeline.measure.Measurements
        The measurement table of the labels, intensities read from the segmented image.
    image : ndarray or None
        The image segmented (:func:`image_stage`): the loaded image, or the channel (or
        weighted combination) the recipe picks.
    """

    filtered: np.ndarray
    markers: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    measurements: _measure.Measurements
    image: np.ndarray | None = None


def image_stage(image, recipe, channels=None) -> np.ndarray:
    """The image the pipeline segments: the loaded image, or a channel of its colour file.

    Parameters
    ----------
    image : ndarray, 2D or 3D
        The loaded image (grayscale: a colour file's luminance).
    recipe : dict
        A recipe (validated here).
    channels : ndarray, optional
        The colour channels of the file (``pipeline.io.LoadedImage.channels``); needed only
        when the recipe's ``image`` section picks a channel or weighted combination.

    Returns
    -------
    ndarray
        `image` itself without an ``image`` section (the luminance); else
        :func:`pipeline.channels.select`'s result.

    Raises
    ------
    InputError
        If the recipe picks a channel of an image without channels, or the chosen image is
        constant or not finite.
    """
    recipe = validate(recipe)
    section = recipe.get(IMAGE_SECTION)
    if section is None:
        return image
    return _channels.select(image, channels, section["name"], section["params"])


def filter_stage(image, recipe) -> np.ndarray:
    """Filtered image: ``apply_filter(image.astype(np.float64), ...)``.

    Parameters
    ----------
    image : ndarray, 2D or 3D
        The loaded image (grayscale, original dtype).
    recipe : dict
        A recipe (validated here).

    Returns
    -------
    ndarray of float64
        Same shape, in the image's intensity units.

    Raises
    ------
    InputError
        If the image does not hold real numbers, or the recipe's filter and post-processing
        would cost more than :data:`MAX_COST` on it (:func:`check_cost`), checked before
        anything runs.
    """
    recipe = validate(recipe)
    image = np.asarray(image)
    if image.dtype.kind not in "biuf":
        raise InputError(f"filter: the image must hold real numbers, got {image.dtype}")
    check_cost(recipe, image.shape)
    section = recipe["filter"]
    return _filters.apply_filter(image.astype(np.float64), section["name"], section["params"])


def marker_stage(filtered, recipe, *, check=True) -> np.ndarray:
    """Markers of the filtered image: 1 below ``vmin``, 2 above ``vmax``, 0 between, then
    the strokes drawn by hand (``markers.scribbles``, if any) painted over them in order
    (``skimage.draw``: :func:`pipeline.scribbles.paint_scribbles`).

    Parameters
    ----------
    filtered : ndarray, 2D or 3D
        The filtered image (:func:`filter_stage`).
    recipe : dict
        A recipe (validated here).
    check : bool
        Raise if a marker label is empty (False: the markers as they are, for an overlay).

    Raises
    ------
    InputError
        If no pixel is background, none object, or none left between them
        (:func:`pipeline.segment.make_markers`), or a stroke does not fit the image.
    """
    recipe = validate(recipe)
    m = recipe["markers"]
    return make_markers(filtered, m["vmin"], m["vmax"], check=check,
                        scribbles=m.get("scribbles"))


def segment_stage(filtered, markers, recipe) -> np.ndarray:
    """Boolean object mask from the filtered image and its markers.

    Runs :func:`pipeline.segmentation.segment` with the recipe's method, parameters and
    thresholds.
    """
    recipe = validate(recipe)
    section = recipe["segmentation"]
    return _segmentation.segment(np.asarray(filtered), np.asarray(markers), section["name"],
                                 section["params"], vmin=recipe["markers"]["vmin"],
                                 vmax=recipe["markers"]["vmax"])


def postprocess_stage(mask, recipe) -> np.ndarray:
    """int32 label image from the mask (:func:`pipeline.postprocess.run_postprocess`)."""
    recipe = validate(recipe)
    mask = np.asarray(mask)
    check_cost(recipe, mask.shape)
    return _postprocess.run_postprocess(mask, recipe["postprocess"])


def measure_stage(labels, image, recipe) -> _measure.Measurements:
    """Measurements of the labels, intensities from the loaded `image` (not the filtered one).
    """
    recipe = validate(recipe)
    options = recipe["measure"]
    return _measure.measure(labels, intensity_image=image, properties=options["properties"],
                            pixel_size=options["pixel_size"], unit=options["unit"],
                            spacing=options.get("spacing"))


def run(image, recipe, *, channels=None) -> RecipeResult:
    """Run a whole recipe on an image.

    Parameters
    ----------
    image : ndarray, 2D or 3D
        The loaded image (e.g. ``pipeline.io.read_image_file(...).array``).
    recipe : dict
        A recipe (validated here).
    channels : ndarray, optional
        The colour channels of the image's file (``LoadedImage.channels``), for a recipe
        whose ``image`` section picks a channel (:func:`image_stage`).

    Returns
    -------
    RecipeResult

    Raises
    ------
    InputError
        If the recipe is invalid or a stage cannot run on this image (e.g. no pixel below
        vmin).
    """
    recipe = validate(recipe)
    image = np.asarray(image_stage(np.asarray(image), recipe, channels))
    filtered = filter_stage(image, recipe)
    markers = marker_stage(filtered, recipe)
    mask = segment_stage(filtered, markers, recipe)
    labels = postprocess_stage(mask, recipe)
    measurements = measure_stage(labels, image, recipe)
    return RecipeResult(filtered=filtered, markers=markers, mask=mask, labels=labels,
                        measurements=measurements, image=image)
