"""Callbacks of Pipeline Explorer.

Each module has a ``register(app, services)`` that wires thin callbacks; their bodies are
module-level functions taking plain values, so tests call them directly.
"""

from . import (channels, crop, discovery, display, downloads, fastpath, guard, loading,
               measure, params, recipe_io, scribbles, thresholds, visibility, volume, zoom)


def register_all(app, services):
    """Register every callback of the app."""
    for module in (guard, loading, channels, crop, params, display, thresholds, fastpath,
                   measure, discovery, recipe_io, downloads, zoom, volume, scribbles, visibility):
        module.register(app, services)
