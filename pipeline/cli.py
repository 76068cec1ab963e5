"""Command line: run a recipe on a batch of images, or export it as a script.

::

    python -m pipeline run recipe.json IMAGE... --out DIR [--jobs N] [--dask ADDRESS]
                                                [--max-mb N] [--max-pixels N]
    python -m pipeline export-script recipe.json [-o script.py]

``run`` processes the images in parallel (:func:`pipeline.parallel.map_items`: ``--jobs``
local workers, default ``PIPEX_JOBS`` or the CPUs this process may use; or the workers of the
dask.distributed scheduler ``--dask`` / ``PIPEX_DASK_ADDRESS`` names, falling back to local
workers with a message when it cannot be reached). This process reads the files and writes
the results; workers only compute, so a cluster's workers need no access to the files.
It writes ``DIR/<stem>_labels.tif`` for each image (the label image, with the recipe,
library versions and the input's content hash as JSON in its description) and one
``DIR/measurements.csv``: an ``image`` column first, then the measurements of every object of
every image, one row each; then one summary row per input image, whose ``label`` is empty:
``objects`` (count), ``area_fraction`` (object pixels / all pixels), ``mean_area`` (in the
recipe's unit), and ``error``, the reason an image failed; provenance in ``#`` comment lines.
Every file is written under a temporary name and renamed when complete: a name without
``.part`` is a finished result. It prints one line per image, in the order given, and a
progress bar when standard output is a terminal.

Exit codes: 0 when every image was processed; 1 when an image could not be read or processed
(the others still are); 2 for a bad command line or a bad recipe (nothing is processed).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import io as _io
from . import measure as _measure
from . import parallel as _parallel
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
    run.add_argument("--jobs", "-j", type=_positive_int, default=None, metavar="N",
                     help="images processed at once (default: PIPEX_JOBS, or the CPUs this "
                          "process may use)")
    run.add_argument("--prefer", choices=("processes", "threads"), default="processes",
                     help="local workers: processes (default: the recipe's Python parts hold "
                          "the GIL, see bench/README.md) or threads (no start-up cost)")
    run.add_argument("--dask", metavar="ADDRESS", default=None,
                     help="run on the workers of this dask.distributed scheduler, e.g. "
                          "tcp://10.0.0.5:8786 (default: PIPEX_DASK_ADDRESS; local workers "
                          "when it cannot be reached)")

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


_SUMMARY = ("objects", "area_fraction", "mean_area", "error")


def _combine(tables, summaries) -> _measure.Measurements:
    """One table: every image's objects (``image`` column first), then one summary per image.

    Images of different dimensions have different columns (e.g. ``centroid-2``): the union is
    kept, empty where a column does not apply. A column whose unit differs between images
    (area in px² and px³) gets both units in its header. Summary rows (empty ``label``) fill
    only ``image`` and the :data:`_SUMMARY` columns.
    """
    names = ["image"]
    units = {"image": ""}

    def add(column, unit):
        if column not in units:
            names.append(column)
            units[column] = unit
        elif unit not in units[column].split(" or "):
            units[column] = f"{units[column]} or {unit}"

    for _, table in tables:
        for column, unit in table.units.items():
            add(column, unit)
    for column in _SUMMARY:
        given = [summary["units"][column] for _, summary in summaries
                 if column in summary.get("units", {})]
        for unit in given or [""]:
            add(column, unit)
    columns = {name: [] for name in names}
    notes = []
    for image, table in tables:
        n = table.n_objects
        columns["image"] += [image] * n
        for name in names[1:]:
            values = table.columns.get(name)
            columns[name] += np.asarray(values).tolist() if values is not None else [""] * n
        notes += [f"{image}: {note}" for note in table.notes]
    for image, summary in summaries:
        columns["image"].append(image)
        for name in names[1:]:
            value = summary.get(name, "")
            columns[name].append("" if value is None else value)
    return _measure.Measurements(
        columns={name: np.array(values, dtype=object) for name, values in columns.items()},
        units=units, notes=tuple(notes))


@dataclass(frozen=True)
class _Unreadable:
    """An input whose file could not be read (the reason travels to the batch's results)."""

    message: str


def _read_bytes(path: Path, max_bytes: int):
    """The file's bytes (the checks of :func:`pipeline.io.read_image_file`), or _Unreadable."""
    name = _io._display_name(path.name)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise InputError(f"{name} is not a regular file.")
        _io._check_file_size(size, max_bytes)
        with open(path, "rb") as fh:
            return fh.read(max_bytes + 1)
    except FileNotFoundError:
        return _Unreadable(f"{name} was not found.")
    except InputError as exc:
        return _Unreadable(str(exc))
    except OSError as exc:
        return _Unreadable(f"could not read {name}: {exc.strerror or exc}.")


@dataclass(frozen=True)
class _ProcessImage:
    """The work on one image, run by a worker: decode, run the recipe, encode the labels.

    Called with ``(name, data)`` (the file's name and bytes, or :class:`_Unreadable`);
    returns a dict with the TIFF bytes, the measurements and the image's summary. Raises
    InputError for an image that cannot be used (the batch lists it and goes on).
    """

    recipe: dict
    max_bytes: int
    max_pixels: int

    def __call__(self, item):
        name, data = item
        if isinstance(data, _Unreadable):
            raise InputError(data.message)
        t0 = time.perf_counter()
        try:
            loaded = _io.read_image_bytes(data, name, max_bytes=self.max_bytes,
                                          max_pixels=self.max_pixels)
            # a recipe that picks a channel of a colour file takes it from its channels
            result = _recipe.run(loaded.array, self.recipe, channels=loaded.channels)
        except MemoryError:
            raise InputError("not enough memory to process this image") from None
        labels = result.labels
        image = result.image  # the image segmented: the app's (and the script's) input hash
        meta = {"name": loaded.name, "id": _io.content_hash(image),
                "shape": list(image.shape), "dtype": str(image.dtype)}
        provenance = record(meta, _recipe.step_names(self.recipe), recipe=self.recipe,
                            notes=list(loaded.notes), command="python -m pipeline run")
        options = self.recipe["measure"]
        sizes = np.unique(labels[labels > 0], return_counts=True)[1]
        area_unit = _measure._unit_of("area", options["unit"], labels.ndim)
        summary = {
            "objects": int(result.measurements.n_objects),
            "area_fraction": float(np.count_nonzero(labels)) / labels.size,
            "mean_area": (float(sizes.mean()) * options["pixel_size"] ** labels.ndim
                          if sizes.size else None),
            "units": {"mean_area": area_unit},
        }
        return {"tiff": _io.labels_to_tiff_bytes(labels, provenance),
                "measurements": result.measurements, "meta": meta, "summary": summary,
                "seconds": time.perf_counter() - t0}


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, stream, total: int):
        self.stream = stream
        self.total = total
        self.enabled = total > 0 and hasattr(stream, "isatty") and stream.isatty()
        self.t0 = time.perf_counter()
        self.shown = False

    def draw(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / total) if total else width
        seconds = time.perf_counter() - self.t0
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} images, "
                          f"{seconds:.0f} s")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.enabled and self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _write_atomic(path: Path, data) -> None:
    """Write `data` (bytes or str) to `path` through ``path.part``: complete or absent."""
    part = path.with_name(path.name + ".part")
    try:
        if isinstance(data, str):
            with open(part, "w", encoding="utf-8", newline="") as fh:
                fh.write(data)
        else:
            with open(part, "wb") as fh:
                fh.write(data)
        os.replace(part, path)
    except BaseException:
        try:
            part.unlink()
        except OSError:
            pass
        raise


def _run(args) -> int:
    try:
        recipe = _recipe.read_file(args.recipe)
    except InputError as exc:
        _error(str(exc))
        return EXIT_USAGE
    try:
        jobs = args.jobs if args.jobs is not None else _parallel.default_jobs()
        address = args.dask if args.dask is not None else \
            (os.environ.get("PIPEX_DASK_ADDRESS") or "").strip() or None
        backend = _parallel.Backend(jobs=jobs, prefer=args.prefer, dask_address=address)
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
    names = _output_names(paths)
    n = len(paths)
    results = [None] * n  # per image: ("ok", result, tif path) or ("failed", reason)
    printed = 0
    bar = _Progress(sys.stdout, n)

    def report_in_order():
        # one line per image, in the order given, as soon as the images before it are done
        nonlocal printed
        while printed < n and results[printed] is not None:
            path, (shown, _) = paths[printed], names[printed]
            entry = results[printed]
            bar.clear()
            if entry[0] == "ok":
                _, value, tif = entry
                k = value["summary"]["objects"]
                print(f"{shown}: {k} object{'s' if k != 1 else ''} in "
                      f"{value['seconds']:.2f} s -> {tif}", flush=True)
            else:
                _error(_about(path, entry[1]))
            printed += 1

    def on_result(index, value):
        if isinstance(value, _parallel.Failed):
            results[index] = ("failed", value.error)
        else:
            tif = out / f"{names[index][1]}_labels.tif"
            try:
                _write_atomic(tif, value["tiff"])
            except OSError as exc:
                results[index] = ("failed",
                                  f"could not write the result: {exc.strerror or exc}")
            else:
                value = dict(value, tiff=None)  # written: free the bytes
                results[index] = ("ok", value, tif)
        report_in_order()

    items = ((path.name, _read_bytes(path, max_bytes)) for path in paths)
    if backend.dask_address is not None and backend.client() is None:
        print(f"note: {backend.message}", file=sys.stderr, flush=True)
    try:
        with backend:
            _parallel.map_items(
                _ProcessImage(recipe, max_bytes, args.max_pixels), items, total=n,
                backend=backend, label="batch", progress=bar.draw, on_error="return",
                on_result=on_result)
    except KeyboardInterrupt:
        bar.clear()
        _error("interrupted: the files listed above are complete; no other was written")
        return 130
    bar.clear()
    tables, summaries, inputs, failed = [], [], [], 0
    for path, (shown, _), entry in zip(paths, names, results):
        if entry[0] == "ok":
            _, value, tif = entry
            tables.append((shown, value["measurements"]))
            summaries.append((shown, value["summary"]))
            meta = value["meta"]
            inputs.append({"image": shown, "file": str(path), "input_hash": meta["id"],
                           "shape": meta["shape"], "dtype": meta["dtype"], "labels": tif.name,
                           "objects": value["summary"]["objects"]})
        else:
            failed += 1
            summaries.append((shown, {"error": entry[1]}))
    if tables:
        provenance = {
            "generator": "Pipeline Explorer",
            "command": "python -m pipeline run",
            "created": _now(),
            "recipe": recipe,
            "inputs": inputs,
            "failed": [{"image": shown, "file": str(path), "error": entry[1]}
                       for path, (shown, _), entry in zip(paths, names, results)
                       if entry[0] != "ok"],
            "versions": library_versions(),
        }
        csv_path = out / _CSV_NAME
        text = _measure.to_csv(_combine(tables, summaries), provenance)
        try:
            _write_atomic(csv_path, text)
        except OSError as exc:
            _error(f"could not write {csv_path}: {exc.strerror or exc}")
            return EXIT_IMAGE_FAILED
        print(f"measurements of {len(tables)} image{'s' if len(tables) != 1 else ''} "
              f"-> {csv_path}")
    if failed:
        _error(f"{failed} of {n} image{'s' if n != 1 else ''} could not be processed")
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
