"""Links from each step to the scikit-image documentation of the function it runs."""

from __future__ import annotations

import importlib
from dash import html

DOCS_ROOT = "https://scikit-image.org/docs/stable/api"


def doc_url(qualname: str) -> str:
    """API page of a scikit-image (or scipy / numpy) function, e.g. ``skimage.filters.gaussian``."""
    module = qualname.rsplit(".", 1)[0]
    if qualname.startswith("scipy."):
        return f"https://docs.scipy.org/doc/scipy/reference/generated/{qualname}.html"
    if qualname.startswith("numpy."):
        return f"https://numpy.org/doc/stable/reference/generated/{qualname}.html"
    return f"{DOCS_ROOT}/{module}.html#{qualname}"


def summary(qualname: str) -> str:
    """First line of the function's docstring ('' if it cannot be imported)."""
    module, name = qualname.rsplit(".", 1)
    try:
        func = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return ""
    doc = (func.__doc__ or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def doc_link(qualname: str):
    """The function's name linking to its API page, with its one-line summary as a tooltip."""
    return html.A(
        html.Code(qualname),
        href=doc_url(qualname),
        target="_blank",
        rel="noopener noreferrer",
        className="doc-link",
        title=summary(qualname),
    )
