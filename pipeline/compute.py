"""Cached compute steps, keyed by image id rather than by the array.

``joblib.Memory`` hashes every array argument on every call (about 0.4 s for 256 MB), so the
cached functions here take the image's content hash (``image_id``) and a *loader* that returns
the array; the loader is excluded from the cache key (``ignore=``) and only called on a miss.
Results are stored on disk, shared by all worker processes, and reloaded memory-mapped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from joblib import Memory

from . import randomwalker
from .render import histogram as _histogram_of
from .segment import SegmentParams, make_markers

__all__ = ["Compute", "SegmentResult"]


def _graph(image_id, beta, load_image):
    """Random-walker graph of an image (depends on the image and beta only)."""
    return randomwalker.build_graph(load_image(), beta=beta)


def _labels(image_id, vmin, vmax, beta, mode, tol, load_image, graph_fn):
    """Canonical random-walker labels for one parameter set (path independent)."""
    image = load_image()
    markers = make_markers(image, vmin, vmax)
    graph = graph_fn(image_id, beta, load_image)
    return randomwalker.solve(graph, markers, mode=mode, tol=tol)


def _histogram(image_id, bins, load_image):
    counts, edges = _histogram_of(load_image(), bins=bins)
    return counts, edges


@dataclass(frozen=True)
class SegmentResult:
    """Labels of one segmentation and how they were obtained."""

    labels: np.ndarray
    seconds: float
    cached: bool


class Compute:
    """The cached compute steps of one app instance.

    Parameters
    ----------
    cache_dir : str or Path
        Folder of the joblib cache (shared by all workers).
    bytes_limit : int, optional
        Size the cache is trimmed to by :meth:`trim`.
    """

    def __init__(self, cache_dir, bytes_limit: int = 8 * 1024**3):
        self.memory = Memory(location=str(cache_dir), verbose=0, mmap_mode="r")
        self.bytes_limit = int(bytes_limit)
        self._graph = self.memory.cache(_graph, ignore=["load_image"])
        self._labels = self.memory.cache(_labels, ignore=["load_image", "graph_fn"])
        self._histogram = self.memory.cache(_histogram, ignore=["load_image"])

    def segment(self, image_id: str, load_image, params: SegmentParams) -> SegmentResult:
        """Random-walker labels (1 background, 2 object) of an image for `params`.

        Parameters
        ----------
        image_id : str
            Content hash of the image.
        load_image : callable
            Returns the image; called only when the result is not cached.
        params : SegmentParams
            Thresholds and solver settings.
        """
        args = (image_id, params.vmin, params.vmax, params.beta, params.mode, params.tol)
        cached = self._labels.check_call_in_cache(*args, load_image, self._graph)
        t0 = time.perf_counter()
        labels = self._labels(*args, load_image, self._graph)
        return SegmentResult(labels=labels, seconds=time.perf_counter() - t0, cached=cached)

    def histogram(self, image_id: str, load_image, bins: int = 256):
        """Histogram (counts, edges) of an image, cached by image id."""
        return self._histogram(image_id, bins, load_image)

    def trim(self) -> None:
        """Evict least recently used cache entries beyond ``bytes_limit``."""
        self.memory.reduce_size(bytes_limit=self.bytes_limit)
