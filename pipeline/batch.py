"""A recipe over many images: the work of ``python -m pipeline run`` and of the Batch tab.

Both run the same pieces, so a batch made in the browser and one made on the command line
give the same label images and the same tables:

* :func:`read_bytes` reads a file in the process that holds the files (its size checked before
  it is read); a file that cannot be read becomes an :class:`Unreadable` that travels to the
  worker, which lists it with its reason;
* :class:`ProcessImage` is the work on one image, run by a worker (a local process or a dask
  worker: it needs no access to the files): decode, run the recipe, encode the label TIFF with
  its provenance (which names how the batch was made, ``command``), measure, summarise;
* :func:`output_names` makes each input's output stem unique within the batch;
* :func:`combine` makes the one table of a batch: every object of every image, then one
  summary row per image (``objects``, ``area_fraction``, ``mean_area``, ``error``);
* :func:`write_atomic` writes a file complete or not at all (through ``NAME.part``).

Pure numpy / scikit-image / tifffile code: no dash, no flask.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import io as _io
from . import measure as _measure
from . import recipe as _recipe
from .errors import InputError
from .provenance import library_versions, record

__all__ = ["CLI_COMMAND", "SUMMARY_COLUMNS", "TAB_COMMAND", "ProcessImage", "Unreadable",
           "combine", "output_names", "read_bytes", "write_atomic"]

#: What the provenance of a batch's outputs says made them.
CLI_COMMAND = "python -m pipeline run"
TAB_COMMAND = "Pipeline Explorer Batch tab"

#: Columns of an image's summary row in :func:`combine`'s table.
SUMMARY_COLUMNS = ("objects", "area_fraction", "mean_area", "error")


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Unreadable:
    """An input whose file could not be read: the reason, for the batch's results.

    Parameters
    ----------
    message : str
        Why, for the user (e.g. ``"a.png was not found."``).
    """

    message: str


def read_bytes(path, max_bytes: int):
    """The bytes of an image file, with the checks of :func:`pipeline.io.read_image_file`.

    Parameters
    ----------
    path : str or Path
        The file.
    max_bytes : int
        Largest file accepted: a larger one is not read.

    Returns
    -------
    bytes or Unreadable
        The file's bytes, or why it could not be read (missing, not a regular file, empty,
        over `max_bytes`, an OS error).

    Raises
    ------
    InputError
        If `path` is not a path or `max_bytes` is not a whole number >= 1.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"path must be a file path, got {type(path).__name__}")
    max_bytes = _check_positive_int(max_bytes, "max_bytes")
    path = Path(path)
    name = _io._display_name(path.name)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise InputError(f"{name} is not a regular file.")
        _io._check_file_size(size, max_bytes)
        with open(path, "rb") as fh:
            return fh.read(max_bytes + 1)
    except FileNotFoundError:
        return Unreadable(f"{name} was not found.")
    except InputError as exc:
        return Unreadable(str(exc))
    except OSError as exc:
        return Unreadable(f"could not read {name}: {exc.strerror or exc}.")


def output_names(paths) -> list:
    """The name shown and the output stem of each input, stems unique within the batch.

    Parameters
    ----------
    paths : sequence of str or Path
        The inputs, in order.

    Returns
    -------
    list of (str, str)
        Per input: its file name (its whole path when two inputs share a name) and a stem
        for its outputs (``coins``, then ``coins-2``, ... for repeated stems).

    Raises
    ------
    InputError
        If `paths` is not a sequence of paths.
    """
    if isinstance(paths, (str, bytes, os.PathLike)) or not hasattr(paths, "__iter__"):
        raise InputError(f"paths must be a list of file paths, got {type(paths).__name__}")
    paths = list(paths)
    for i, path in enumerate(paths):
        if not isinstance(path, (str, os.PathLike)):
            raise InputError(f"paths[{i}] must be a file path, got {type(path).__name__}")
    paths = [Path(p) for p in paths]
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


def combine(tables, summaries) -> _measure.Measurements:
    """One table of a batch: every image's objects (``image`` column first), then one summary
    row per image.

    Images of different dimensions have different columns (e.g. ``centroid-2``): the union is
    kept, empty where a column does not apply. A column whose unit differs between images
    (area in px² and px³) gets both units in its header. Summary rows (empty ``label``) fill
    only ``image`` and the :data:`SUMMARY_COLUMNS`.

    Parameters
    ----------
    tables : list of (str, pipeline.measure.Measurements)
        Name of each processed image and its measurements.
    summaries : list of (str, dict)
        Name of each image (processed or failed) and its summary: the
        :data:`SUMMARY_COLUMNS` it has, and ``units`` (column -> unit).

    Returns
    -------
    pipeline.measure.Measurements

    Raises
    ------
    InputError
        If `tables` or `summaries` are not lists of pairs of the types above.
    """
    for name, given, kind in (("tables", tables, _measure.Measurements),
                              ("summaries", summaries, dict)):
        if not isinstance(given, (list, tuple)) or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[1], kind)
                for p in given):
            raise InputError(f"{name} must be a list of (image name, {kind.__name__}) pairs")
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
    for column in SUMMARY_COLUMNS:
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


def write_atomic(path, data) -> None:
    """Write `data` to `path` through ``path.part``: the file is complete or absent.

    Parameters
    ----------
    path : str or Path
        The file to write (its folder must exist).
    data : bytes or str
        Its content (a str is written as UTF-8, newlines unchanged).

    Raises
    ------
    InputError
        If `data` is neither bytes nor str.
    OSError
        If the file cannot be written (nothing is left behind).
    """
    if not isinstance(data, (bytes, bytearray, memoryview, str)):
        raise InputError(f"data must be bytes or str, got {type(data).__name__}")
    path = Path(path)
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


@dataclass(frozen=True)
class ProcessImage:
    """The work on one image of a batch, run by a worker: decode, run the recipe, encode.

    Called with ``(name, data)``: the file's name and its bytes (or an :class:`Unreadable`).

    Parameters
    ----------
    recipe : dict
        A recipe (validated here).
    max_bytes : int
        Largest file accepted.
    max_pixels : int
        Largest image accepted, in pixels / voxels (checked from the header before decoding).
    command : str, optional
        How the batch was made, named in each label TIFF's provenance:
        :data:`CLI_COMMAND` (default) or :data:`TAB_COMMAND`.
    versions : dict, optional
        The library versions written in the provenance; default
        :func:`pipeline.provenance.library_versions`, read once here (not once per image).

    Returns
    -------
    dict
        ``tiff`` (the label image's TIFF bytes, with the recipe, library versions, input's
        content hash and `command` as JSON in its description), ``measurements``
        (:class:`pipeline.measure.Measurements`), ``meta`` (``name``, ``id``: the content
        hash of the image segmented, ``shape``, ``dtype``), ``summary`` (``objects``,
        ``area_fraction``, ``mean_area``, ``units``) and ``seconds``.

    Raises
    ------
    InputError
        When called on an image that cannot be used (unreadable, undecodable, too large, a
        step that fails on it, out of memory): the batch lists it and goes on. At
        construction, if an argument is invalid.
    """

    recipe: dict
    max_bytes: int
    max_pixels: int
    command: str = CLI_COMMAND
    versions: dict = field(default=None)

    def __post_init__(self):
        if not isinstance(self.recipe, dict):
            raise InputError(f"recipe must be a dict, got {type(self.recipe).__name__}")
        object.__setattr__(self, "recipe", _recipe.validate(self.recipe))
        object.__setattr__(self, "max_bytes", _check_positive_int(self.max_bytes, "max_bytes"))
        object.__setattr__(self, "max_pixels",
                           _check_positive_int(self.max_pixels, "max_pixels"))
        if not isinstance(self.command, str) or not self.command.strip():
            raise InputError(f"command must be a non-empty string, got {self.command!r}")
        if self.versions is None:
            object.__setattr__(self, "versions", library_versions())
        elif not isinstance(self.versions, dict):
            raise InputError(f"versions must be a dict, got {type(self.versions).__name__}")

    def __call__(self, item):
        name, data = item
        if isinstance(data, Unreadable):
            raise InputError(data.message)
        t0 = time.perf_counter()
        try:
            # the image series the recipe was tuned on (the app's Series menu; 0: the first)
            loaded = _io.read_image_bytes(data, name, max_bytes=self.max_bytes,
                                          max_pixels=self.max_pixels,
                                          series=_recipe.series_of(self.recipe))
            # a recipe that picks a channel of a colour file takes it from its channels
            result = _recipe.run(loaded.array, self.recipe, channels=loaded.channels)
        except MemoryError:
            raise InputError("not enough memory to process this image") from None
        labels = result.labels
        image = result.image  # the image segmented: the app's (and the script's) input hash
        meta = {"name": loaded.name, "id": _io.content_hash(image),
                "shape": list(image.shape), "dtype": str(image.dtype)}
        provenance = record(meta, _recipe.step_names(self.recipe), versions=self.versions,
                            recipe=self.recipe, notes=list(loaded.notes), command=self.command)
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
