"""Export a recipe as a standalone, reproducible Python script.

:func:`to_script` writes a script that runs one recipe on an image given on its command line
(``python script.py IMAGE [--out DIR]``) and writes ``DIR/<stem>_labels.tif`` and
``DIR/<stem>_measurements.csv``. Each step of the pipeline is written out as plain
scikit-image / scipy / numpy code: the lines of the step's ``code(...)``, the same expression
its ``apply`` runs, in the data flow of :func:`pipeline.recipe.run`. With the same library
versions the script's labels are identical, bit for bit, to the app's and the CLI's.

Three things come from the ``pipeline`` package rather than being written out:

* reading the image (:func:`pipeline.io.read_image_file`): detection of the format from the
  file's content, colour / palette / alpha to grayscale, 16-bit PNG, byte order and axis
  squeezing have too many cases for a few plain lines to match the app in every one of them
  (a recipe that picks a channel takes it from the reader's ``channels``, as the app does);
* the fast random walker (:mod:`pipeline.randomwalker`), when the recipe uses it (the script
  shows the equivalent :func:`skimage.segmentation.random_walker` call in a comment);
* writing the label TIFF (:func:`pipeline.io.labels_to_tiff_bytes`) and the provenance record
  (:func:`pipeline.provenance.record`), so that the files match the app's downloads.
"""

from __future__ import annotations

import inspect
import json
import pprint
import sys
import textwrap

import numpy as np

from . import channels as _channels
from . import filters as _filters
from . import measure as _measure
from . import postprocess as _postprocess
from . import scribbles as _scribbles
from . import segmentation as _segmentation
from .errors import InputError
from .recipe import describe, series_of, step_names, validate

__all__ = ["to_script"]

# Imports of the script's own code (argument parsing, CSV, files, pipeline I/O).
_BASE_IMPORTS = (
    "import argparse",
    "import csv",
    "import json",
    "import sys",
    "from pathlib import Path",
    "import numpy as np",
    "from pipeline.errors import InputError",
    "from pipeline.io import content_hash, labels_to_tiff_bytes, read_image_file",
    "from pipeline.provenance import record",
)

_INDENT = "    "

# Imports of pipeline.scribbles.paint_stroke, whose source a script with strokes holds.
_STROKE_IMPORTS = ("import math", "import numpy as np", "from skimage import draw")


# --------------------------------------------------------------------------------------------
# Helpers


def _import_key(line: str):
    """Sort key: standard library, third party, then the project; plain imports first."""
    module = line.split()[1].split(".")[0]
    if module == "pipeline":
        group = 2
    elif module in getattr(sys, "stdlib_module_names", ()) or module == "__future__":
        group = 0
    else:
        group = 1
    return group, line.startswith("from "), line.split()[1], line


def _merge_imports(lines) -> list:
    """Deduplicate import lines; merge ``from M import a`` and ``from M import b``."""
    plain, names = set(), {}
    for line in lines:
        line = " ".join(line.split())
        if not line:
            continue
        words = line.split(" ", 3)
        if words[0] == "from" and len(words) == 4 and words[2] == "import" \
                and "(" not in words[3]:
            targets = names.setdefault(words[1], set())
            targets.update(t.strip() for t in words[3].split(",") if t.strip())
        elif words[0] in ("import", "from"):
            plain.add(line)
        else:
            raise ValueError(f"not an import line: {line!r}")
    merged = set(plain)
    for module, targets in names.items():
        merged.add(f"from {module} import {', '.join(sorted(targets))}")
    ordered = sorted(merged, key=_import_key)
    out, group = [], None
    for line in ordered:
        if group is not None and _import_key(line)[0] != group:
            out.append("")
        group = _import_key(line)[0]
        out.append(line)
    return out


def _literal(value, indent: int = 0) -> str:
    """A Python literal of JSON-like data, pretty-printed (floats round-trip exactly)."""
    text = pprint.pformat(value, width=96 - indent, sort_dicts=False, compact=True)
    return text.replace("\n", "\n" + " " * indent)


def _json_block(value) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return "\n".join(_INDENT + line for line in text.splitlines())


def _plain_json(value):
    """`value` as plain JSON types (anything else as text), or raise for NaN / infinity."""
    try:
        return json.loads(json.dumps(value, default=str, allow_nan=False))
    except ValueError as exc:
        raise InputError(f"provenance must be JSON-serialisable: {exc}") from None


def _table_layout(options: dict) -> tuple[dict, dict]:
    """Units of each measurement column and the table's notes, for 2D and for 3D labels.

    Both depend only on the measurement options and the number of dimensions, not on the
    data: they are taken from :func:`pipeline.measure.measure` on a small synthetic label
    image, so that the script's CSV has exactly the header of :func:`pipeline.measure.to_csv`.
    """
    units, notes = {}, {}
    for ndim in (2, 3):
        units[ndim], notes[ndim] = {}, []
        if ndim == 3 and all(p in _measure.PROPERTIES_2D_ONLY for p in options["properties"]):
            continue  # nothing to measure on a volume: measure() refuses, so will the script
        labels = np.zeros((7,) * ndim, dtype=np.int32)
        labels[(slice(2, 5),) * ndim] = 1
        table = _measure.measure(labels, intensity_image=labels.astype(np.float64),
                                 properties=options["properties"],
                                 pixel_size=options["pixel_size"], unit=options["unit"],
                                 spacing=options.get("spacing"))
        units[ndim], notes[ndim] = dict(table.units), list(table.notes)
    return units, notes


def _check_docstring_safe(text: str) -> str:
    """Make `text` safe inside a raw triple-quoted docstring."""
    text = text.replace('"""', '\\"\\"\\"')
    if text.endswith("\\"):
        text += " "
    return text


# --------------------------------------------------------------------------------------------
# The pipeline's lines


def _shown_recipe(recipe: dict) -> dict:
    """The recipe as the docstring shows it: hand-drawn strokes counted, not listed (they
    are in ``RECIPE``)."""
    drawn = recipe["markers"].get("scribbles")
    if not drawn:
        return recipe
    return {**recipe, "markers": {**recipe["markers"],
                                  "scribbles": f"{len(drawn)} strokes (see RECIPE)"}}


def _load_lines(recipe: dict) -> list:
    """The end of ``load_image(path)``: the loaded image, or the channel the recipe picks."""
    series = series_of(recipe)
    read = ("read_image_file(path, max_bytes=max(size, 1), max_pixels=MAX_PIXELS"
            + (f", series={series})" if series else ")"))
    # the image series the recipe was tuned on (the app's Series menu)
    note = [f"# image series {series} of the file, as in the app's Series menu"] if series else []
    section = recipe.get("image")
    if section is None:
        return [*note, f"return {read}.array"]
    step = _channels.CHANNELS[section["name"]]
    what = _channels.describe(section)
    return [
        *note,
        f"loaded = {read}",
        f"# image: {what} of the colour file instead of its luminance ({step.label})",
        "channels = loaded.channels  # red, green, blue, as decoded",
        "if channels is None:",
        f"    raise InputError(f\"{{path.name}} has no colour channels (it is grayscale): the "
        f"recipe uses the {what}\")",
        *step.code("loaded.array", "image", **section["params"]),
        "return image",
    ]


def _pipeline_lines(recipe: dict) -> tuple[list, list]:
    """Body lines of ``run_pipeline(image)`` and the import lines they need."""
    imports = list(_measure.IMPORTS)
    lines = [
        "# The loaded image (grayscale, original dtype) is converted to float64 and filtered.",
        "filtered = image.astype(np.float64)",
    ]
    f = recipe["filter"]
    step = _filters.FILTERS[f["name"]]
    if f["name"] == "none":
        lines.append("# filter: none")
    else:
        lines.append(f"# filter: {step.label} ({step.function})")
    lines += step.code("filtered", "filtered", **f["params"])
    imports += step.imports

    lines += [
        "",
        "# markers: 1 (background) below vmin, 2 (object) above vmax, 0 = to be decided",
        "markers = np.zeros(filtered.shape, dtype=np.uint8)",
        "markers[filtered < VMIN] = 1",
        "markers[filtered > VMAX] = 2",
    ]
    if recipe["markers"].get("scribbles"):
        lines += [
            "# hand-drawn markers: each stroke painted over them in order (the later wins),",
            "# on its slice of a 3D image (skimage.draw.line, .polygon, .disk)",
            'for stroke in RECIPE["markers"]["scribbles"]:',
            '    plane = markers if "axis" not in stroke else markers[',
            '        (slice(None),) * stroke["axis"] + (stroke["index"],)]',
            '    paint_stroke(plane, stroke["label"], stroke["path"], stroke["width"])',
        ]
        imports += list(_STROKE_IMPORTS)
    lines += [
        "check_markers(markers)",
        "",
    ]

    s = recipe["segmentation"]
    step = _segmentation.SEGMENTERS[s["name"]]
    lines.append(f"# segmentation: {step.label} ({step.function})")
    lines += step.code("filtered", "markers", "mask", vmin=recipe["markers"]["vmin"],
                       vmax=recipe["markers"]["vmax"], **s["params"])
    imports += step.imports

    lines += ["", "# post-processing: mask operations, label, label operations"]
    src = "mask"
    for op in recipe["postprocess"]:
        step = _postprocess.POSTPROCESS[op["name"]]
        dst = "labels" if op["name"] == "label" or src == "labels" else "mask"
        lines.append(f"# {step.label} ({step.function})")
        lines += step.code(src, dst, **op["params"])
        imports += step.imports
        src = dst
    lines += ["labels = labels.astype(np.int32, copy=False)", ""]

    m = recipe["measure"]
    lines += _measure.code_lines(m["properties"], m["pixel_size"], m["unit"], labels="labels",
                                 image="image", dst="table", spacing=m.get("spacing"))
    lines.append("return labels, table")
    return lines, imports


# --------------------------------------------------------------------------------------------
# The script


_TEMPLATE = '''\
#!/usr/bin/env python3
r"""Pipeline Explorer recipe, exported as a standalone script.

Usage::

    python {script} IMAGE [--out DIR]

reads IMAGE (PNG, JPEG or TIFF; a 2D image or a 3D stack), runs the pipeline

    {pipeline}

and writes ``DIR/<stem>_labels.tif`` (the label image; the recipe and provenance as JSON in
its ImageDescription tag) and ``DIR/<stem>_measurements.csv`` (one row per object). With the
same versions of the libraries it gives the same labels as Pipeline Explorer, bit for bit.
It needs the ``pipeline`` package of Pipeline Explorer (installed, or on PYTHONPATH) for
reading the image{rw_note} and writing the label TIFF.

Recipe::

{recipe_json}

Provenance (when the script was exported)::

{provenance_json}
"""

{imports}

RECIPE = {recipe_literal}

STEPS = {steps_literal}

PROVENANCE = {provenance_literal}

VMIN = {vmin!r}
VMAX = {vmax!r}

# Units of the measurement columns and notes of the table, for 2D images and 3D volumes (as in
# the app's CSV download).
UNITS = {units_literal}
NOTES = {notes_literal}

# The app refuses images larger than its upload limits; a script run on your own files has no
# such limit.
MAX_PIXELS = 2**40


def load_image(path):
    """The image of a PNG, JPEG or TIFF file, exactly as Pipeline Explorer loads it.

    For a grayscale file this is ``tifffile.imread(path)`` (TIFF) or ``skimage.io.imread(path)``
    (PNG, JPEG) with axes of length 1 removed. The app's reader is used, rather than these
    calls, because it also converts colour images (``skimage.color.rgb2gray``), palettes,
    transparency, 16-bit PNG and byte order in one precise way: the same array as in the app,
    bit for bit, for every file it accepts.
    """
    path = Path(path)
    size = path.stat().st_size if path.is_file() else 1
{load_return}


def check_markers(markers):
    """Refuse markers that leave nothing to segment (as ``pipeline.segment.make_markers``)."""
    if not (markers == 1).any():
        raise InputError(f"No background marker: no pixel is below vmin = {{VMIN:g}}. "
                         "Raise vmin.")
    if not (markers == 2).any():
        raise InputError(f"No object marker: no pixel is above vmax = {{VMAX:g}}. "
                         "Lower vmax.")
    if not (markers == 0).any():
        raise InputError("Every pixel is already a marker: nothing is left for the "
                         "segmentation. Move vmin and vmax apart.")
{helpers}

def run_pipeline(image):
    """Labels (int32, 0 = background) and measurement table ({{column: values}}) of an image."""
{body}


def write_csv(path, table, ndim, provenance):
    """The measurement table as CSV, as the app's download (``pipeline.measure.to_csv``)."""
    units = UNITS[ndim]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        fh.write("# Pipeline Explorer measurements\\n")
        text = json.dumps(provenance, ensure_ascii=False, sort_keys=False, default=str)
        fh.write(f"# provenance: {{text}}\\n")
        for note in NOTES[ndim]:
            fh.write(f"# note: {{note}}\\n")
        writer = csv.writer(fh, lineterminator="\\n")
        writer.writerow([f"{{name}} [{{units[name]}}]" if units.get(name) else name
                         for name in table])
        columns = [np.asarray(values).tolist() for values in table.values()]
        for row in zip(*columns):
            writer.writerow([repr(v) if isinstance(v, float) else str(v) for v in row])


def main(argv=None):
    """Command line: ``python {script} IMAGE [--out DIR]``; returns the exit code."""
    parser = argparse.ArgumentParser(
        description="Run an exported Pipeline Explorer recipe on one image.")
    parser.add_argument("image", help="PNG, JPEG or TIFF image (2D, or a 3D stack)")
    parser.add_argument("--out", default=".", help="output folder (default: current folder)")
    args = parser.parse_args(argv)
    path = Path(args.image)
    try:
        image = load_image(path)
        labels, table = run_pipeline(image)
    except InputError as exc:
        print(f"error: {{path.name}}: {{exc}}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {{"name": path.name, "id": content_hash(image), "shape": list(image.shape),
            "dtype": str(image.dtype)}}
    provenance = record(meta, STEPS, recipe=RECIPE, exported=PROVENANCE,
                        script=Path(__file__).name)
    tif = out / f"{{path.stem}}_labels.tif"
    tif.write_bytes(labels_to_tiff_bytes(labels, provenance))
    csv_path = out / f"{{path.stem}}_measurements.csv"
    write_csv(csv_path, table, labels.ndim, provenance)
    n = len(next(iter(table.values()))) if table else 0
    print(f"{{path.name}}: {{n}} objects -> {{tif}}, {{csv_path}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def to_script(recipe, provenance: dict | None = None) -> str:
    """A standalone Python script that runs `recipe` on an image.

    Parameters
    ----------
    recipe : dict
        A recipe (validated here).
    provenance : dict, optional
        JSON-able record of where the recipe comes from (e.g. the image it was tuned on,
        library versions at export time); written in the script's docstring and in the
        ``exported`` field of every provenance record the script writes.

    Returns
    -------
    str
        Python source: shebang, a docstring with the recipe and provenance, the imports
        (the union of every step's ``imports``), ``load_image(path)``, ``run_pipeline(image)``
        (each step's ``code(...)`` lines in pipeline order), ``write_csv`` and ``main(argv)``
        for ``python script.py IMAGE [--out DIR]``.

    Raises
    ------
    InputError
        If the recipe is not valid.
    """
    recipe = validate(recipe)
    provenance = _plain_json(provenance if provenance is not None else {})
    body, step_imports = _pipeline_lines(recipe)
    imports = _merge_imports(list(_BASE_IMPORTS) + list(step_imports))
    units, notes = _table_layout(recipe["measure"])
    rw = recipe["segmentation"]["name"] == "random_walker"
    source = _TEMPLATE.format(
        script="script.py",
        pipeline=_check_docstring_safe("\n    ".join(textwrap.wrap(
            describe(recipe), width=88, break_long_words=False, break_on_hyphens=False))),
        rw_note=", the fast random walker (pipeline.randomwalker)" if rw else "",
        recipe_json=_check_docstring_safe(_json_block(_shown_recipe(recipe))),
        provenance_json=_check_docstring_safe(_json_block(provenance)),
        imports="\n".join(imports),
        recipe_literal=_literal(recipe, len("RECIPE = ")),
        provenance_literal=_literal(provenance, len("PROVENANCE = ")),
        vmin=recipe["markers"]["vmin"],
        vmax=recipe["markers"]["vmax"],
        units_literal=_literal(units, len("UNITS = ")),
        notes_literal=_literal(notes, len("NOTES = ")),
        body="\n".join(_INDENT + line if line else "" for line in body),
        steps_literal=_literal(step_names(recipe), len("STEPS = ")),
        load_return="\n".join(_INDENT + line for line in _load_lines(recipe)),
        helpers=("\n\n" + inspect.getsource(_scribbles.paint_stroke)
                 if recipe["markers"].get("scribbles") else ""),
    )
    compile(source, "<exported script>", "exec")  # a bug here must never ship a broken script
    return source
