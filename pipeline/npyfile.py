"""Memory maps of ``.npy`` files, their header read without ``np.load``.

``np.load`` (and ``np.lib.format.open_memmap`` in a reading mode) parses an ``.npy`` header
with ``ast.literal_eval``, and CPython 3.11's compiler is not safe to call from several
threads at once: "SystemError: AST constructor recursion depth mismatch" was raised when two
requests of a threaded worker read images together. :func:`map_npy` reads the header of the
files this package writes itself — a plain array: a dtype string, C or Fortran order, a shape
— and maps the data with ``np.memmap``. The store (:mod:`pipeline.store`) and the shared
arrays of the parallel backend (:mod:`pipeline.parallel`) read their files with it.
"""

from __future__ import annotations

import os
import re

import numpy as np

from .errors import InputError

__all__ = ["map_npy"]

_MAGIC = b"\x93NUMPY"
# (bytes of the header-length field, the header's encoding) per format version
_VERSIONS = {1: (2, "latin1"), 2: (4, "latin1"), 3: (4, "utf8")}
_DESCR = re.compile(r"'descr':\s*'([^']+)'")
_ORDER = re.compile(r"'fortran_order':\s*(True|False)")
_SHAPE = re.compile(r"'shape':\s*\(([\d,\s]*)\)")
_MODES = ("r", "r+", "c")


def map_npy(file, mode: str = "r") -> np.memmap:
    """The array of an ``.npy`` file, memory-mapped.

    Parameters
    ----------
    file : str, os.PathLike or binary file object
        The file, or an open binary file positioned at its start (its ``name`` is mapped).
    mode : {'r', 'r+', 'c'}, optional
        ``np.memmap``'s mode: read-only, read-write, or copy-on-write (writes change a private
        copy, never the file).

    Returns
    -------
    numpy.memmap

    Raises
    ------
    InputError
        If `mode` is not one of the above, or `file` is not an ``.npy`` file of a plain array
        (version 1, 2 or 3; a dtype given as a string, not a structured one).
    OSError
        If the file cannot be opened or read.
    """
    if mode not in _MODES:
        raise InputError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as fh:
            return map_npy(fh, mode)
    if not hasattr(file, "read") or not isinstance(getattr(file, "name", None), str):
        raise InputError(f"file must be a path or an open file with a name, "
                         f"got {type(file).__name__}")
    name = os.path.basename(file.name)
    head = file.read(8)
    version = _VERSIONS.get(head[6]) if len(head) == 8 and head[:6] == _MAGIC else None
    if version is None:
        raise InputError(f"file: {name} is not an .npy file (version 1, 2 or 3)")
    size, encoding = version
    length = int.from_bytes(file.read(size), "little")
    header = file.read(length).decode(encoding)
    descr, order, shape = _DESCR.search(header), _ORDER.search(header), _SHAPE.search(header)
    if descr is None or order is None or shape is None:
        raise InputError(f"file: the header of {name} does not describe a plain array "
                         f"({header.strip()[:200]!r})")
    dims = tuple(int(n) for n in shape.group(1).split(",") if n.strip())
    return np.memmap(file.name, dtype=np.dtype(descr.group(1)), mode=mode,
                     offset=8 + size + length, shape=dims,
                     order="F" if order.group(1) == "True" else "C")
