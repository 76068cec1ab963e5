"""Command line: run a recipe on a batch of images, or export it as a script.

::

    python -m pipeline run recipe.json IMAGE... --out DIR [--jobs N] [--dask ADDRESS]
                                                [--max-mb N] [--max-pixels N]
    python -m pipeline export-script recipe.json [-o script.py]

``run`` processes the images in parallel (:func:`pipeline.parallel.map_items`: ``--jobs``
local workers, default ``PIPEX_JOBS`` or the CPUs this process may use, forked from this
process once it has imported the pipeline, so that they import nothing again; or the workers of the
dask.distributed scheduler ``--dask`` / ``PIPEX_DASK_ADDRESS`` names, falling back to local
workers with a message when it cannot be reached), each one with
:class:`pipeline.batch.ProcessImage`, as the app's Batch tab does. This process reads the
files and writes the results; workers only compute, so a cluster's workers need no access to the files.
It writes ``DIR/<stem>_labels.tif`` for each image (the label image, with the recipe,
library versions, the input's content hash and ``"command": "python -m pipeline run"`` as
JSON in its description) and one
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
from pathlib import Path

# light imports only: the pipeline (scikit-image, scipy) is imported by _run / _export, once
# the command line is known to be good; the local worker processes are forked from this one
# after it (they import nothing again)
from . import parallel as _parallel
from .errors import InputError

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


def _run(args) -> int:
    try:
        jobs = args.jobs if args.jobs is not None else _parallel.default_jobs()
        address = args.dask if args.dask is not None else \
            (os.environ.get("PIPEX_DASK_ADDRESS") or "").strip() or None
        # local worker processes forked from this one once it has imported the batch's code
        # (this process runs no other thread), each of them at no cost of imports: with
        # new interpreters, each one's imports (~0.5 s of CPU) made a --jobs 2 batch of
        # small images 1.6x faster than --jobs 1 instead of 1.8x (bench/bench_parallel.py)
        backend = _parallel.Backend(jobs=jobs, prefer=args.prefer, dask_address=address,
                                    start="fork")
    except InputError as exc:
        _error(str(exc))
        return EXIT_USAGE
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _error(f"cannot create the output folder {str(out)!r}: {exc.strerror or exc}")
        return EXIT_USAGE
    processes = backend.dask_address is None and backend.prefer == "processes" and \
        min(backend.jobs, len(args.images)) > 1
    try:
        from . import batch as _batch
        from . import measure as _measure
        from . import recipe as _recipe
        from .provenance import library_versions

        recipe = _recipe.read_file(args.recipe)
    except InputError as exc:
        _error(str(exc))
        return EXIT_USAGE
    max_bytes = int(args.max_mb * 1024 * 1024)
    paths = [Path(p) for p in args.images]
    names = _batch.output_names(paths)
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
                _batch.write_atomic(tif, value["tiff"])
            except OSError as exc:
                results[index] = ("failed",
                                  f"could not write the result: {exc.strerror or exc}")
            else:
                value = dict(value, tiff=None)  # written: free the bytes
                results[index] = ("ok", value, tif)
        report_in_order()

    items = ((path.name, _batch.read_bytes(path, max_bytes)) for path in paths)
    versions = library_versions()  # once, for every image's provenance and the table's
    if backend.dask_address is not None and backend.client() is None:
        print(f"note: {backend.message}", file=sys.stderr, flush=True)
    try:
        with backend:
            _parallel.map_items(
                _batch.ProcessImage(recipe, max_bytes, args.max_pixels,
                                    command=_batch.CLI_COMMAND, versions=versions),
                items, total=n,
                backend=backend, label="batch", progress=bar.draw, on_error="return",
                on_result=on_result)  # forked workers are killed at its end
        if processes:
            # loky workers (when another thread ran, e.g. a dask client's, nothing was
            # forked) have nothing more to do either: killed now, not waited for at exit
            _parallel.stop_local_workers()
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
            "command": _batch.CLI_COMMAND,
            "created": _now(),
            "recipe": recipe,
            "inputs": inputs,
            "failed": [{"image": shown, "file": str(path), "error": entry[1]}
                       for path, (shown, _), entry in zip(paths, names, results)
                       if entry[0] != "ok"],
            "versions": versions,
        }
        csv_path = out / _CSV_NAME
        text = _measure.to_csv(_batch.combine(tables, summaries), provenance)
        try:
            _batch.write_atomic(csv_path, text)
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
    from . import recipe as _recipe
    from . import script as _script
    from .provenance import library_versions

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
