"""Provenance attached to every exported file: what was run, on what, with which versions."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as _md
import platform

__all__ = ["library_versions", "record"]

_LIBRARIES = ("pipeline-explorer", "numpy", "scipy", "scikit-image", "pyamg", "joblib",
              "tifffile", "pillow")


def library_versions() -> dict:
    """Installed versions of the libraries the results depend on."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = _md.version(name)
        except _md.PackageNotFoundError:
            versions[name] = None
    return versions


def record(meta: dict, steps: dict, versions: dict | None = None, **extra) -> dict:
    """A JSON-able provenance record.

    Parameters
    ----------
    meta : dict
        Image metadata (``id`` = content hash, ``name``, ``shape``, ``dtype``).
    steps : dict
        The steps and their parameters, e.g. ``{"random_walker": {...}}``.
    versions : dict, optional
        :func:`library_versions`, when the caller has read them already (a batch reads them
        once, not once per image); read here otherwise.
    **extra
        Further JSON-able fields.
    """
    return {
        "generator": "Pipeline Explorer",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": {k: meta.get(k) for k in ("name", "id", "shape", "dtype")
                  + (("series",) if meta.get("series") else ())},
        "input_hash": meta.get("id"),
        "steps": steps,
        "versions": library_versions() if versions is None else versions,
        **extra,
    }
