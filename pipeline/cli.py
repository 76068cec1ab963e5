"""Command line: run a recipe on a batch of images, or export it as a script.

::

    python -m pipeline run recipe.json IMAGE... --out DIR [--max-mb N] [--max-pixels N]
    python -m pipeline export-script recipe.json [-o script.py]

``run`` writes ``DIR/<stem>_labels.tif`` for each image (the label image, with the recipe,
library versions and the input's content hash as JSON in its description) and one
``DIR/measurements.csv`` (an ``image`` column first, then the measurements of every object of
every image; provenance in ``#`` comment lines), and prints one line per image.

Exit codes: 0 when every image was processed; 1 when an image could not be read or processed
(the others still are); 2 for a bad command line or a bad recipe (nothing is processed).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import io as _io
from . import measure as _measure
from . import recipe as _recipe
from . import script as _script
from .errors import InputError
from .provenance import library_versions, record

__all__ = ["main", "build_parser"]

EXIT_OK = 0
EXIT_IMAGE_FAILED = 1
EXIT_USAGE = 2

_DEFAULT_MAX_MB = 64.0
_DEFAULT_MAX_PIXELS = 2**27
_CSV_NAME = "measurements.csv"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m pipeline``."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Pipeline Explorer without the browser: run a saved recipe on images, or "
                    "export it as a standalone Python script.",
        epilog="Exit codes: 0 = every image processed; 1 = some image could not be read or "
               "processed (the others were); 2 = bad command line or recipe.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run a recipe on one or more images",
        description="Run a recipe (saved from the app with 'Save recipe') on images. Writes "
                    "OUT/<stem>_labels.tif per image and OUT/measurements.csv for all of them.")
    run.add_argument("recipe", help="recipe file (JSON)")
    run.add_argument("images", nargs="+", metavar="IMAGE",
                     help="PNG, JPEG or TIFF image files (2D images or 3D stacks)")
    run.add_argument("--out", "-o", required=True, metavar="DIR",
                     help="output folder (created if needed)")
    run.add_argument("--max-mb", type=_positive_float, default=_DEFAULT_MAX_MB, metavar="N",
                     help=f"largest image file accepted, in MB (default {_DEFAULT_MAX_MB:g})")
    run.add_argument("--max-pixels", type=_positive_int, default=_DEFAULT_MAX_PIXELS,
                     metavar="N", help="largest image accepted, in pixels/voxels "
                                       f"(default {_DEFAULT_MAX_PIXELS})")

    export = commands.add_parser(
        "export-script", help="write a recipe as a standalone Python script",
        description="Write a Python script that runs the recipe on an image given on its "
                    "command line: python script.py IMAGE [--out DIR].")
    export.add_argument("recipe", help="recipe file (JSON)")
    export.add_argument("-o", "--output", metavar="SCRIPT", default="-",
                        help="script file to write (default: print it)")
    return parser


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _about(path: Path, message: str) -> str:
    """`message` about the file `path`, naming it once (``data/x.png is not a PNG ...``)."""
    if message.startswith(path.name + " ") or message.startswith(path.name + ":"):
        return f"{path}{message[len(path.name):]}"
    return f"{path}: {message}"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# run


def _output_names(paths) -> list:
    """Display name and output stem of each image, made unique within the batch."""
    names = [p.name for p in paths]
    stems, used = [], set()
    for path in paths:
        stem = path.stem or "image"
        candidate, n = stem, 2
        while candidate in used:
            candidate = f"{stem}-{n}"
            n += 1
        used.add(candidate)
        stems.append(candidate)
    duplicated = {n for n in names if names.count(n) > 1}
    shown = [str(p) if p.name in duplicated else p.name for p in paths]
    return list(zip(shown, stems))


def _combine(tables) -> _measure.Measurements:
    """One table of every image's measurements, with an ``image`` column first.

    Images of different dimensions have different columns (e.g. ``centroid-2``): the union is
    kept, empty where a column does not apply. A column whose unit differs between images
    (area in px² and px³) gets both units in its header.
    """
    names = ["image"]
    units = {"image": ""}
    for _, table in tables:
        for column, unit in table.units.items():
            if column not in units:
                names.append(column)
                units[column] = unit
            elif unit not in units[column].split(" or "):
                units[column] = f"{units[column]} or {unit}"
    columns = {name: [] for name in names}
    notes = []
    for image, table in tables:
        n = table.n_objects
        columns["image"] += [image] * n
        for name in names[1:]:
            values = table.columns.get(name)
            columns[name] += np.asarray(values).tolist() if values is not None else [""] * n
        notes += [f"{image}: {note}" for note in table.notes]
    return _measure.Measurements(
        columns={name: np.array(values, dtype=object) for name, values in columns.items()},
        units=units, notes=tuple(notes))


def _run(args) -> int:
    try:
        recipe = _recipe.read_file(args.recipe)
    except InputError as exc:
        _error(str(exc))
        return EXIT_USAGE
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _error(f"cannot create the output folder {str(out)!r}: {exc.strerror or exc}")
        return EXIT_USAGE
    max_bytes = int(args.max_mb * 1024 * 1024)
    paths = [Path(p) for p in args.images]
    steps = _recipe.step_names(recipe)
    tables, inputs, failed = [], [], 0
    for path, (shown, stem) in zip(paths, _output_names(paths)):
        t0 = time.perf_counter()
        try:
            loaded = _io.read_image_file(path, max_bytes=max_bytes, max_pixels=args.max_pixels)
            result = _recipe.run(loaded.array, recipe)
            meta = {"name": loaded.name, "id": _io.content_hash(loaded.array),
                    "shape": list(loaded.array.shape), "dtype": str(loaded.array.dtype)}
            provenance = record(meta, steps, recipe=recipe, notes=list(loaded.notes),
                                command="python -m pipeline run")
            tif = out / f"{stem}_labels.tif"
            tif.write_bytes(_io.labels_to_tiff_bytes(result.labels, provenance))
        except InputError as exc:
            failed += 1
            _error(_about(path, str(exc)))
            continue
        except MemoryError:
            failed += 1
            _error(f"{path}: not enough memory to process this image")
            continue
        except OSError as exc:
            failed += 1
            _error(f"{path}: could not write the result: {exc.strerror or exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop the batch
            failed += 1
            _error(f"{path}: unexpected error: {type(exc).__name__}: {exc}")
            continue
        seconds = time.perf_counter() - t0
        n = result.measurements.n_objects
        tables.append((shown, result.measurements))
        inputs.append({"image": shown, "file": str(path), "input_hash": meta["id"],
                       "shape": meta["shape"], "dtype": meta["dtype"], "labels": tif.name,
                       "objects": n})
        print(f"{shown}: {n} object{'s' if n != 1 else ''} in {seconds:.2f} s -> {tif}",
              flush=True)
    if tables:
        provenance = {
            "generator": "Pipeline Explorer",
            "command": "python -m pipeline run",
            "created": _now(),
            "recipe": recipe,
            "inputs": inputs,
            "versions": library_versions(),
        }
        csv_path = out / _CSV_NAME
        text = _measure.to_csv(_combine(tables), provenance)
        try:
            with open(csv_path, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
        except OSError as exc:
            _error(f"could not write {csv_path}: {exc.strerror or exc}")
            return EXIT_IMAGE_FAILED
        print(f"measurements of {len(tables)} image{'s' if len(tables) != 1 else ''} "
              f"-> {csv_path}")
    if failed:
        _error(f"{failed} of {len(paths)} image{'s' if len(paths) != 1 else ''} could not be "
               "processed")
        return EXIT_IMAGE_FAILED
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# export-script


def _export(args) -> int:
    try:
        recipe = _recipe.read_file(args.recipe)
    except InputError as exc:
        _error(str(exc))
        return EXIT_USAGE
    provenance = {
        "generator": "Pipeline Explorer",
        "command": "python -m pipeline export-script",
        "created": _now(),
        "recipe_file": Path(args.recipe).name,
        "versions": library_versions(),
    }
    source = _script.to_script(recipe, provenance)
    if args.output == "-":
        sys.stdout.write(source)
        return EXIT_OK
    target = Path(args.output)
    try:
        target.write_text(source, encoding="utf-8")
        os.chmod(target, 0o755)
    except OSError as exc:
        _error(f"could not write {str(target)!r}: {exc.strerror or exc}")
        return EXIT_USAGE
    print(f"wrote {target}: run it with  python {target} IMAGE --out DIR")
    return EXIT_OK


def main(argv=None) -> int:
    """Run the command line; returns the exit code.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 = success; 1 = some image failed; 2 = bad command line or recipe.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "export-script":
        return _export(args)
    parser.print_help(sys.stderr)
    return EXIT_USAGE
