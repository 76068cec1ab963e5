"""Cached compute stages, keyed by image id and recipe prefix, never by the array.

``joblib.Memory`` hashes every array argument on every call (about 0.4 s for 256 MB), so the
cached functions here take the image's content hash (``image_id``) and JSON keys of the
recipe stages they depend on; the arrays (and the full recipe) are passed in arguments that
are excluded from the key (``ignore=``) and only used on a miss. Each stage is cached on its
own, so a new vmin only recomputes markers onwards, and returning to earlier parameters (undo)
is a cache hit all along. Results are stored on disk, shared by all worker processes, and
reloaded memory-mapped.

Every stage runs the functions of :mod:`pipeline.recipe`, which are also what the CLI and the
exported script run, with two shortcuts that give identical results. The filter stage runs
through :func:`pipeline.parallel.filter_stage` on the app's :class:`pipeline.parallel.Backend`
(over overlapping blocks when the image is large enough for that to pay, whole otherwise); the
backend is an ignored argument, so the key does not depend on it, and the stage stores how it
ran (a :class:`pipeline.parallel.RunReport`) next to its result. Random walker's graph
Laplacian is cached per (filtered image, beta) and solved per markers with
:func:`pipeline.randomwalker.solve`, which gives bit-identical labels to
:func:`pipeline.randomwalker.random_walker`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import math
import os
import time
from pathlib import Path
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from joblib import Memory

from . import blocks as blockwise
from . import parallel, randomwalker, thresholds
from . import recipe as recipes
from .admission import try_lock
from .errors import Cancelled, InputError
from .render import histogram as _histogram_of
from .segment import block_markers, make_markers

__all__ = ["Compute", "FilterResult", "PipelineResult", "PreviewResult", "TimeLimit",
           "stage_keys"]


def stage_keys(recipe: dict) -> dict:
    """JSON keys of each stage: a stage's key includes the keys of the stages before it.

    The filter's key carries the recipe's ``image`` section (a channel of a colour file) when
    there is one; without it (the luminance) the key is what it always was.
    """
    dump = lambda obj: json.dumps(obj, sort_keys=True, separators=(",", ":"))  # noqa: E731
    image = recipe.get("image")
    return {
        "filter": dump(recipe["filter"] if image is None
                       else {"image": image, "filter": recipe["filter"]}),
        "markers": dump(recipe["markers"]),
        "segmentation": dump(recipe["segmentation"]),
        "postprocess": dump(recipe["postprocess"]),
        "measure": dump(recipe["measure"]),
    }


def _filtered(image_id, filter_key, recipe, load_image, backend):
    """(filtered image, the filter's RunReport as a dict): the report travels with the result
    in the cache, so every worker can say how the cached image was computed."""
    filtered, reports = parallel.filter_stage(load_image(), recipe, backend=backend)
    return filtered, asdict(reports[0])


def _report(saved: dict) -> parallel.RunReport:
    """The RunReport of a saved dict (fields a later version does not know are dropped)."""
    known = {f.name for f in fields(parallel.RunReport)}
    return parallel.RunReport(**{k: v for k, v in saved.items() if k in known})


def _graph(image_id, filter_key, beta, intensity_scale, load_filtered):
    return randomwalker.build_graph(load_filtered() / intensity_scale, beta=beta)


def _coarse_graph(image_id, filter_key, beta, intensity_scale, factor, load_filtered):
    """Graph of the filtered image's `factor`-wide block means (a reduced-grid preview)."""
    # the block means first, then scaled: no full-size copy of the image
    reduced = randomwalker.block_mean(load_filtered(), factor) / intensity_scale
    return randomwalker.build_graph(reduced, beta=beta)


def _segment(image_id, filter_key, markers_key, seg_key, recipe, load_image, filtered_fn,
             graph_fn, should_stop=None, progress=None):
    """(object mask, P(object) or None): random walker keeps its probability map, the warm
    start of the next live preview (:meth:`Compute.preview`). `should_stop` may stop the
    solve (:class:`~pipeline.errors.Cancelled`: nothing is cached); `progress` is called
    with ``("graph", 0.0)`` and ``("graph", 1.0)`` around the graph (built or read from the
    cache), then as :func:`pipeline.randomwalker.solve` says."""
    filtered = filtered_fn(image_id, filter_key, recipe, load_image)
    markers = recipes.marker_stage(filtered, recipe)
    seg = recipe["segmentation"]
    if seg["name"] == "random_walker":
        p = seg["params"]
        # the same arithmetic as SEGMENTERS["random_walker"].apply, with the graph cached
        if progress is not None:
            progress("graph", 0.0)
        graph = graph_fn(image_id, filter_key, p["beta"], p["intensity_scale"], lambda: filtered)
        if should_stop is not None and should_stop():  # between the graph and the solve
            raise Cancelled("the solve was superseded")
        if progress is not None:
            progress("graph", 1.0)
        labels, probability = randomwalker.solve(graph, markers, mode=p["mode"], tol=p["tol"],
                                                 return_probability=True,
                                                 should_stop=should_stop, progress=progress)
        return labels == 2, probability
    return recipes.segment_stage(filtered, markers, recipe), None


#: Set (by :meth:`Compute.blocks_allowed`) where a segmentation above the memory budget may
#: be solved by blocks when it is not cached (the exact background job); elsewhere it is
#: refused as before (:func:`pipeline.randomwalker.check_memory`).
_BLOCKS_ALLOWED = contextvars.ContextVar("pipex_blocks_allowed", default=False)
#: Separates the segmentation's key from its blocking in the key of a blockwise result: a
#: whole result and a blockwise one (or two blockings) never share a cache entry, down to
#: the labels and the measurements.
BLOCKS_KEY = "|blocks="
#: Values a slab preview's standard deviation is computed from (:meth:`Compute._filtered_std`).
STD_SAMPLE = 2_000_000


def _split_blocks(seg_key):
    """(the recipe's segmentation key, the blocking's JSON key or None)."""
    if BLOCKS_KEY in seg_key:
        base, blocking = seg_key.split(BLOCKS_KEY, 1)
        return base, blocking
    return seg_key, None


def _segment_blocks(image_id, filter_key, markers_key, seg_key, blocks_key, recipe,
                    load_image, filtered_fn, should_stop=None, progress=None):
    """(object mask, None, the :class:`pipeline.blocks.BlockReport` as a dict): the random
    walker of a recipe solved by blocks (:func:`pipeline.blocks.random_walker_blocks`: the
    image read block by block from the filtered image, with the same mode, beta, tol and
    intensity scale as the whole solve), with its agreement to a whole solve on a window.
    `progress` hears ``"blocks"`` and ``"agreement"``, then ``("solve", 1.0)``."""
    filtered = filtered_fn(image_id, filter_key, recipe, load_image)
    markers = recipes.marker_stage(filtered, recipe)
    p = recipe["segmentation"]["params"]
    key = json.loads(blocks_key)
    plan = blockwise.plan_blocks(filtered.shape, p["mode"], key["budget"],
                                 margin=key["margin"], chunks=tuple(key["chunks"]))
    labels, report = blockwise.random_walker_blocks(
        filtered, markers, beta=p["beta"], mode=p["mode"], tol=p["tol"],
        scale=p["intensity_scale"], plan=plan, should_stop=should_stop, progress=progress)
    if progress is not None:
        progress("solve", 1.0)
    return labels == 2, None, report.as_dict()


def _labels(image_id, filter_key, markers_key, seg_key, post_key, recipe, load_image, mask_fn):
    mask = mask_fn(image_id, filter_key, markers_key, seg_key, recipe, load_image)
    return recipes.postprocess_stage(np.asarray(mask), recipe)


def _measure(image_id, filter_key, markers_key, seg_key, post_key, measure_key, recipe,
             load_image, labels_fn):
    labels = labels_fn(image_id, filter_key, markers_key, seg_key, post_key, recipe, load_image)
    return recipes.measure_stage(np.asarray(labels), load_image(), recipe)


def _histogram(image_id, filter_key, bins, load_filtered):
    return _histogram_of(load_filtered(), bins=bins)


def _rendered(key, make):
    return make()


def _thresholds(image_id, filter_key, load_filtered):
    return thresholds.global_thresholds(load_filtered())


@dataclass(frozen=True)
class FilterResult:
    """The filtered image of a recipe and how it was obtained.

    Attributes
    ----------
    filtered : ndarray of float64
        Memory-mapped from the cache.
    report : pipeline.parallel.RunReport
        How the filter ran when it was last computed (blocks, workers, seconds).
    cached : bool
        Whether this call found it in the cache (then `report` describes an earlier run).
    """

    filtered: np.ndarray
    report: parallel.RunReport
    cached: bool


@dataclass(frozen=True)
class PipelineResult:
    """Arrays of one pipeline run (memory-mapped from the cache) and how they were obtained."""

    filtered: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    seconds: float
    cached: bool
    stages_cached: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PreviewResult:
    """An approximate object mask shown while the canonical segmentation runs.

    Path dependent (warm-started from another solution) or on a reduced grid (`factor` > 1,
    :func:`pipeline.randomwalker.coarse_preview`): never cached or exported. `mask` has the
    image's shape, or for a 2D image previewed on a reduced grid (`blocks`) the shape of
    that grid: element ``(i, j)`` is the block of pixels ``factor * i …`` (drawn at that
    resolution).
    """

    filtered: np.ndarray
    mask: np.ndarray
    seconds: float
    factor: int = 1
    blocks: bool = False
    #: a volume's shown slice only (:func:`pipeline.randomwalker.slab_preview`): `mask` is
    #: that slice, ``(axis, index, first slice, last slice)`` of the slab solved
    slab: tuple | None = None
    #: made before the full-resolution filter stage (:meth:`Compute.preview`'s quick route):
    #: `filtered` is then None, and `shown` the filtered shown slice (a volume's, or the 2D
    #: image's) if the preview computed it, else None (no markers to draw from)
    quick: bool = False
    shown: np.ndarray | None = None
    #: the filter ran on the reduced grid (an approximation of the filtered image's blocks)
    filtered_reduced: bool = False


class Compute:
    """The cached compute stages of one app instance.

    Parameters
    ----------
    cache_dir : str or Path
        Folder of the joblib cache (shared by all workers).
    bytes_limit : int, optional
        Size the cache is trimmed to by :meth:`trim`.
    backend : pipeline.parallel.Backend, optional
        Where the filter stage runs (default: local threads, as many as
        :func:`pipeline.parallel.default_jobs`). Not part of any cache key: the results are
        identical on every backend.
    """

    def __init__(self, cache_dir, bytes_limit: int = 8 * 1024**3, backend=None,
                 max_job_bytes=None):
        self.memory = Memory(location=str(cache_dir), verbose=0, mmap_mode="r")
        self.bytes_limit = int(bytes_limit)
        self.max_job_bytes = None if max_job_bytes is None else int(max_job_bytes)
        self.backend = parallel.Backend() if backend is None else backend
        self._shapes = {}  # (image id, filter key) -> the filtered image's shape
        self._stds = {}  # (image id, filter key) -> the filtered image's standard deviation
        self._filtered = self.memory.cache(_filtered,
                                           ignore=["recipe", "load_image", "backend"])
        self._graph = self.memory.cache(_graph, ignore=["load_filtered"])
        self._coarse_graph = self.memory.cache(_coarse_graph, ignore=["load_filtered"])
        self._segment = self.memory.cache(
            _segment, ignore=["recipe", "load_image", "filtered_fn", "graph_fn", "should_stop",
                              "progress"])
        self._segment_blocks = self.memory.cache(
            _segment_blocks, ignore=["recipe", "load_image", "filtered_fn", "should_stop",
                                     "progress"])
        self._labels = self.memory.cache(_labels, ignore=["recipe", "load_image", "mask_fn"])
        self._measure = self.memory.cache(_measure, ignore=["recipe", "load_image", "labels_fn"])
        self._histogram = self.memory.cache(_histogram, ignore=["load_filtered"])
        self._thresholds = self.memory.cache(_thresholds, ignore=["load_filtered"])
        self._rendered = self.memory.cache(_rendered, ignore=["make"])

    # Each stage call passes the functions of the stages before it, bound to this cache.
    def _filtered_fn(self, image_id, fk, recipe, load_image):
        return self._filtered_once(image_id, fk, recipe, load_image)[0]

    def _filtered_once(self, image_id, fk, recipe, load_image):
        """The cached filter stage ``(filtered, report)``, computed once at a time in every
        thread and worker: a new image's filter stage is wanted at once by the filter panel,
        the histogram, the thresholds and the exact job; the first computes it, the others
        wait and read it from the cache (on 4096² each computation is seconds of both
        cores)."""
        args = (image_id, fk, recipe, load_image, self.backend)
        if self._filtered.check_call_in_cache(*args):
            return self._filtered(*args)
        with self._solving(["filter", image_id, fk], None):
            return self._filtered(*args)

    def _mask_fn(self, image_id, fk, mk, sk, recipe, load_image, should_stop=None,
                 progress=None):
        sk, blocking = _split_blocks(sk)
        if blocking is not None:
            return self._blocks_mask(image_id, fk, mk, sk, blocking, recipe, load_image,
                                     should_stop, progress)
        args = (image_id, fk, mk, sk, recipe, load_image, self._filtered_fn, self._graph)
        if self._segment.check_call_in_cache(*args):
            return self._segment(*args)[0]
        if self.max_job_bytes is not None:
            self.check_memory(image_id, load_image, recipe)  # before any of the work
        # one solve of a segmentation at a time, in every thread and worker: a second
        # request for it (the release of a drag, a key press on the pair being prepared)
        # waits for the first and reads its result from the cache
        with self._solving([image_id, fk, mk, sk], should_stop):
            return self._segment(*args, should_stop=should_stop, progress=progress)[0]

    def _blocks_mask(self, image_id, fk, mk, sk, blocking, recipe, load_image, should_stop,
                     progress):
        """The object mask of a segmentation above the memory budget, solved by blocks:
        from the cache, or computed where :meth:`blocks_allowed` (else refused)."""
        args = (image_id, fk, mk, sk, blocking, recipe, load_image, self._filtered_fn)
        if self._segment_blocks.check_call_in_cache(*args):
            return self._segment_blocks(*args)[0]
        if not _BLOCKS_ALLOWED.get():
            self.check_memory(image_id, load_image, recipe)  # refused, saying what fits
        with self._solving([image_id, fk, mk, sk, blocking], should_stop):
            return self._segment_blocks(*args, should_stop=should_stop,
                                        progress=progress)[0]

    def _solving(self, key_parts, should_stop):
        """:func:`exclusive` on the lock file of the work named by `key_parts` (a
        segmentation's image and stage keys, or ``["filter", image, filter key]``): one
        computation of it at a time in every thread and worker. A segmentation's holder may
        take its filter stage's lock, never the other way round."""
        key = hashlib.blake2b(json.dumps(key_parts).encode(), digest_size=16).hexdigest()
        return exclusive(self.inflight_dir / key, should_stop)

    @contextlib.contextmanager
    def blocks_allowed(self):
        """Within the block (this thread or task), a random walker above ``max_job_bytes``
        that is not cached is solved by blocks (:mod:`pipeline.blocks`) instead of being
        refused: the exact background job runs its solve inside it."""
        token = _BLOCKS_ALLOWED.set(True)
        try:
            yield
        finally:
            _BLOCKS_ALLOWED.reset(token)

    def block_plan(self, recipe: dict, shape):
        """The :class:`pipeline.blocks.BlockPlan` of a (validated) recipe's random walker on
        an image of `shape` when a whole solve is above ``max_job_bytes`` and blocks fit;
        None otherwise (no budget, another method, a whole solve fits, or not even one
        block fits: then it is refused, :func:`pipeline.randomwalker.check_memory`)."""
        seg = recipe["segmentation"]
        if self.max_job_bytes is None or seg["name"] != "random_walker" or shape is None:
            return None
        mode = seg["params"]["mode"]
        try:
            if not blockwise.needs_blocks(shape, mode, self.max_job_bytes):
                return None
            return blockwise.plan_blocks(shape, mode, self.max_job_bytes)
        except InputError:
            return None

    def keys(self, image_id: str, load_image, recipe: dict, shape=None) -> dict:
        """:func:`stage_keys` of a (validated) recipe on this image, the segmentation's key
        carrying the blocking when it is solved by blocks (:meth:`block_plan`). `shape`:
        the filtered image's; default read from the cache (nothing computed: unknown when
        the filtered image is not cached, then the recipe's keys as they are)."""
        k = stage_keys(recipe)
        if self.max_job_bytes is None or recipe["segmentation"]["name"] != "random_walker":
            return k
        if shape is None:
            shape = self.filtered_shape(image_id, load_image, recipe)
        plan = self.block_plan(recipe, shape)
        if plan is not None:
            k["segmentation"] += BLOCKS_KEY + json.dumps(plan.key(), sort_keys=True)
        return k

    def filtered_shape(self, image_id: str, load_image, recipe: dict):
        """The shape of a (validated) recipe's filtered image if it is cached, else None
        (nothing computed). A filtered image's shape never changes: read once per process."""
        key = (image_id, stage_keys(recipe)["filter"])
        shape = self._shapes.get(key)
        if shape is None:
            filtered = self.cached_filtered(image_id, load_image, recipe)
            if filtered is None:
                return None
            if len(self._shapes) > 256:
                self._shapes.clear()
            shape = self._shapes[key] = tuple(filtered.shape)
        return shape

    def _computed_keys(self, image_id: str, load_image, recipe: dict) -> dict:
        """:meth:`keys`, the filtered image computed if need be (a run computes it anyway)."""
        if self.max_job_bytes is None or recipe["segmentation"]["name"] != "random_walker":
            return stage_keys(recipe)
        shape = self._filtered_fn(image_id, stage_keys(recipe)["filter"], recipe,
                                  load_image).shape
        return self.keys(image_id, load_image, recipe, shape)

    def block_report(self, image_id: str, load_image, recipe: dict):
        """The :class:`pipeline.blocks.BlockReport` of a cached blockwise segmentation of a
        (validated) recipe, or None (solved whole, or not cached)."""
        k = self.keys(image_id, load_image, recipe)
        sk, blocking = _split_blocks(k["segmentation"])
        if blocking is None:
            return None
        args = (image_id, k["filter"], k["markers"], sk, blocking, recipe, load_image,
                self._filtered_fn)
        if not self._segment_blocks.check_call_in_cache(*args):
            return None
        return blockwise.BlockReport.from_dict(self._segment_blocks(*args)[2])

    @property
    def inflight_dir(self) -> Path:
        """Folder of the lock files of the segmentations being solved."""
        path = Path(self.memory.location) / "inflight"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _labels_fn(self, image_id, fk, mk, sk, pk, recipe, load_image):
        return self._labels(image_id, fk, mk, sk, pk, recipe, load_image, self._mask_fn)

    def filtered(self, image_id: str, load_image, recipe: dict) -> np.ndarray:
        """The filtered image (float64) of a recipe."""
        k = stage_keys(recipe)
        return self._filtered_fn(image_id, k["filter"], recipe, load_image)

    def cached_filtered(self, image_id: str, load_image, recipe: dict):
        """The filtered image (float64) of a recipe if it is cached, else None (not computed)."""
        args = (image_id, stage_keys(recipe)["filter"], recipe, load_image, self.backend)
        if not self._filtered.check_call_in_cache(*args):
            return None
        return self._filtered(*args)[0]

    def filter_run(self, image_id: str, load_image, recipe: dict) -> FilterResult:
        """The filtered image of a recipe, with how it was computed and whether it was cached."""
        args = (image_id, stage_keys(recipe)["filter"], recipe, load_image, self.backend)
        cached = self._filtered.check_call_in_cache(*args)
        filtered, saved = self._filtered_once(*args[:4])
        return FilterResult(filtered=filtered, report=_report(saved), cached=cached)

    def run(self, image_id: str, load_image, recipe: dict, should_stop=None,
            progress=None) -> PipelineResult:
        """Filtered image, object mask and label image of a (validated) recipe.

        Parameters
        ----------
        image_id : str
            Content hash of the image.
        load_image : callable
            Returns the image; called only on a cache miss.
        recipe : dict
            A recipe normalised by :func:`pipeline.recipe.validate`.
        should_stop : callable, optional
            Asked during the random walker's solve; True stops it with
            :class:`~pipeline.errors.Cancelled` (nothing cached, the same key computes
            normally later).
        progress : callable, optional
            ``progress(stage, fraction)`` of a random walker being computed: ``"graph"``,
            then :func:`pipeline.randomwalker.solve`'s ``"setup"`` and ``"solve"`` (not
            called when the segmentation is cached or is another method).
        """
        filter_cached = self._filtered.check_call_in_cache(
            image_id, stage_keys(recipe)["filter"], recipe, load_image, self.backend)
        k = self._computed_keys(image_id, load_image, recipe)
        args = (image_id, k["filter"], k["markers"], k["segmentation"], k["postprocess"])
        cached = {
            "filter": filter_cached,
            "segmentation": self._segmentation_cached(image_id, load_image, recipe, k),
            "postprocess": self._labels.check_call_in_cache(*args, recipe, load_image,
                                                            self._mask_fn),
        }
        t0 = time.perf_counter()
        mask_fn = functools.partial(self._mask_fn, should_stop=should_stop, progress=progress)
        labels = self._labels(*args, recipe, load_image, mask_fn)
        mask = mask_fn(*args[:4], recipe, load_image)
        filtered = self._filtered_fn(image_id, k["filter"], recipe, load_image)
        return PipelineResult(filtered=filtered, mask=mask, labels=labels,
                              seconds=time.perf_counter() - t0, cached=all(cached.values()),
                              stages_cached=cached)

    def exact_cached(self, image_id: str, load_image, recipe: dict) -> bool:
        """Whether the segmentation of a (validated) recipe is in the cache (nothing is
        computed or loaded: `load_image` is never called)."""
        return self._segmentation_cached(image_id, load_image, recipe)

    def _segmentation_cached(self, image_id: str, load_image, recipe: dict, keys=None) -> bool:
        """Whether the segmentation of `recipe` (whole, or by blocks when :meth:`keys` say
        so) is cached."""
        k = self.keys(image_id, load_image, recipe) if keys is None else keys
        sk, blocking = _split_blocks(k["segmentation"])
        if blocking is not None:
            return bool(self._segment_blocks.check_call_in_cache(
                image_id, k["filter"], k["markers"], sk, blocking, recipe, load_image,
                self._filtered_fn))
        return bool(self._segment.check_call_in_cache(
            *self._segment_args(image_id, load_image, recipe)))

    def exact_seconds(self, image_id: str, load_image, recipe: dict, shape,
                      seconds_per_unknown=None):
        """Expected seconds of the exact segmentation of a (validated) recipe, before it runs.

        0.0 when it is cached; None for a method other than random walker (their cost is
        not estimated here). Otherwise :func:`pipeline.randomwalker.estimate_seconds`: the
        graph build if the graph is not cached, and the solve from the undecided pixels
        (counted from the markers when the filtered image is cached, else 30 % of
        `shape`); `seconds_per_unknown` (measured on an earlier solve of the same method)
        replaces the solve's constant.

        Parameters
        ----------
        image_id : str
            Content hash of the image.
        load_image : callable
            Returns the image (never called here: nothing is computed).
        recipe : dict
            A recipe normalised by :func:`pipeline.recipe.validate`.
        shape : tuple of int
            The image's shape.
        seconds_per_unknown : float, optional
            Seconds per undecided pixel of an earlier solve.
        """
        seg = recipe["segmentation"]
        if seg["name"] != "random_walker":
            return None
        if self.exact_cached(image_id, load_image, recipe):
            return 0.0
        p = seg["params"]
        graph_cached = self.graph_cached(image_id, recipe)
        unknown = None
        filtered = self.cached_filtered(image_id, load_image, recipe)
        if filtered is not None:
            try:
                unknown = int(np.count_nonzero(recipes.marker_stage(filtered, recipe) == 0))
            except InputError:
                unknown = None  # the solve will say why
        seconds = randomwalker.estimate_seconds(shape, p["mode"], unknown=unknown,
                                                graph=not graph_cached)
        if seconds_per_unknown is not None:
            n = math.prod(int(s) for s in shape)
            solve_only = randomwalker.estimate_seconds(shape, p["mode"], unknown=unknown,
                                                       graph=False)
            measured = float(seconds_per_unknown) * (0.3 * n if unknown is None else unknown)
            seconds += measured - solve_only
        return float(seconds)

    def graph_cached(self, image_id: str, recipe: dict) -> bool:
        """Whether the random-walker graph of a (validated) recipe is in the cache."""
        seg = recipe["segmentation"]
        if seg["name"] != "random_walker":
            return False
        p = seg["params"]
        return self._graph.check_call_in_cache(image_id, stage_keys(recipe)["filter"],
                                               p["beta"], p["intensity_scale"], None)

    def check_memory(self, image_id: str, load_image, recipe: dict) -> None:
        """Refuse a random-walker segmentation over ``max_job_bytes`` before it runs
        (:func:`pipeline.randomwalker.check_memory`: the message says what fits)."""
        seg = recipe["segmentation"]
        if self.max_job_bytes is None or seg["name"] != "random_walker":
            return
        shape = self._filtered_fn(image_id, stage_keys(recipe)["filter"], recipe,
                                  load_image).shape
        randomwalker.check_memory(shape, seg["params"]["mode"], self.max_job_bytes)

    def _segment_args(self, image_id: str, load_image, recipe: dict) -> tuple:
        k = stage_keys(recipe)
        return (image_id, k["filter"], k["markers"], k["segmentation"], recipe, load_image,
                self._filtered_fn, self._graph)

    def _cached_probability(self, image_id: str, load_image, recipe: dict):
        if _split_blocks(self.keys(image_id, load_image, recipe)["segmentation"])[1]:
            return None  # solved by blocks: no probability map is kept
        args = self._segment_args(image_id, load_image, recipe)
        if not self._segment.check_call_in_cache(*args):
            return None
        return self._segment(*args)[1]

    def preview(self, image_id: str, load_image, recipe: dict, nearby,
                shown=None, quick_only=False, slab_voxels=None) -> PreviewResult | None:
        """A live preview of a random-walker segmentation not computed yet, or None.

        Warm-starts :func:`pipeline.randomwalker.preview` from the probability map of the
        first recipe of `nearby` (e.g. the states around the current one in the undo
        history) that is in the cache and shares this recipe's graph (filter, beta,
        intensity scale). None if the method is not random walker, its exact result is
        cached already, the graph is not cached yet, no such solution exists, or the
        canonical solve is a 3D ``'cg_j'`` one (it converges in ~20 Jacobi-CG iterations,
        faster than the preview's 40): then the canonical solve is the only answer.
        An image of more than twice :data:`~pipeline.randomwalker.COARSE_PREVIEW_PIXELS`
        is previewed on a reduced grid instead (``factor`` > 1; no warm start needed, so a
        new image has a preview too).

        Parameters
        ----------
        image_id : str
            Content hash of the image.
        load_image : callable
            Returns the image; called only on a cache miss.
        recipe : dict
            A validated recipe.
        nearby : iterable of dict
            Validated recipes, most similar first.
        shown : tuple of int, optional
            ``(axis, index)`` of the slice of a volume the page shows: the preview is then
            that slice, solved exactly on the slab of slices around it
            (:func:`pipeline.randomwalker.slab_preview`; ``slab`` set), when the slab is at
            most :data:`~pipeline.randomwalker.SLAB_MAX_VOXELS`.
        quick_only : bool, optional
            Only a preview made from the image itself, before its filter stage (a new
            image: the shown slice's slab of a volume, a large image's reduced grid; see
            :meth:`_quick_preview`); None where that does not apply. Its cost is bounded by
            the slab's and the reduced grid's sizes, whatever the image's.
        slab_voxels : int, optional
            The largest slab of a volume's quick preview (default
            :data:`~pipeline.randomwalker.SLAB_MAX_VOXELS`): fewer slices around the shown
            one for a quicker first look.
        """
        seg = recipe["segmentation"]
        if seg["name"] != "random_walker":
            return None
        p = seg["params"]
        k = stage_keys(recipe)
        if self._segmentation_cached(image_id, load_image, recipe):
            return None  # the exact answer is at hand
        quick = self._quick_preview(image_id, load_image, recipe, shown, slab_voxels)
        if quick is not False:
            return quick
        if quick_only:
            return None
        slab = self._slab_preview(image_id, load_image, recipe, shown)
        if slab is not False:
            return slab
        coarse = self._coarse_preview(image_id, load_image, recipe)
        if coarse is not False:
            return coarse
        graph_args = (image_id, k["filter"], p["beta"], p["intensity_scale"],
                      lambda: self.filtered(image_id, load_image, recipe))
        if not self._graph.check_call_in_cache(*graph_args):
            return None
        t0 = time.perf_counter()
        graph = self._graph(*graph_args)
        if graph.ndim == 3 and p["mode"] == "cg_j":
            return None  # converges in ~20 iterations from scratch: no faster than a preview
        x0 = None
        for other in nearby:
            o = other["segmentation"]
            if (other["filter"] != recipe["filter"] or o["name"] != "random_walker"
                    or (o["params"]["beta"], o["params"]["intensity_scale"])
                    != (p["beta"], p["intensity_scale"])):
                continue
            x0 = self._cached_probability(image_id, load_image, other)
            if x0 is not None:
                break
        if x0 is None:
            return None
        filtered = self._filtered_fn(image_id, k["filter"], recipe, load_image)
        markers = recipes.marker_stage(filtered, recipe)
        mask = randomwalker.preview(graph, markers, x0) == 2
        return PreviewResult(filtered=filtered, mask=mask, seconds=time.perf_counter() - t0)

    def _filtered_std(self, image_id: str, fk: str, filtered) -> float:
        """The standard deviation of a filtered image, for a slab preview's graph (which
        scales beta by the whole image's, as the whole image's graph does): of an even
        subsample of about :data:`STD_SAMPLE` values (every n-th slice; deterministic;
        the whole 512×512×128 volume's took 0.18 s), kept in the cache (every worker)."""
        key = (image_id, fk)
        std = self._stds.get(key)
        if std is None:
            def make():
                step = max(1, math.ceil(filtered.size / STD_SAMPLE))
                return float(np.std(filtered[::step], dtype=np.float64))

            if len(self._stds) > 256:
                self._stds.clear()
            std = self._stds[key] = self._rendered(json.dumps(["std", image_id, fk]), make)
        return std

    def _slab_preview(self, image_id: str, load_image, recipe: dict, shown):
        """The shown slice of a volume from the slab around it (None if the slab keeps no
        markers of both labels), or False when not applicable (not a volume, no slice
        given, or not even one slice within :data:`~pipeline.randomwalker.SLAB_MAX_VOXELS`).
        Only the slab is read, scaled and marked: no whole-volume array is made."""
        if shown is None:
            return False
        k = stage_keys(recipe)
        filtered = self._filtered_fn(image_id, k["filter"], recipe, load_image)
        if filtered.ndim != 3:
            return False
        axis, index = int(shown[0] or 0), int(shown[1] or 0)
        if not (0 <= axis < 3 and 0 <= index < filtered.shape[axis]):
            return False
        half = randomwalker.slab_half_width(filtered.shape, axis)
        if half is None:
            return False
        t0 = time.perf_counter()
        std = self._filtered_std(image_id, k["filter"], filtered)
        lo, hi = _slab_bounds(filtered.shape[axis], index, half)
        sub = np.moveaxis(_take(filtered, axis, lo, hi), axis, 0)
        out = self._solve_slab(sub, recipe, index - lo, half, std)
        if out is None:
            return None
        return PreviewResult(filtered=filtered, mask=out == 2,
                             seconds=time.perf_counter() - t0, slab=(axis, index, lo, hi - 1))

    @staticmethod
    def _solve_slab(sub, recipe, middle, half, std):
        """Labels of slice `middle` of the slab `sub` (its slices along axis 0, the filtered
        image's values), or None (no markers of both labels in it)."""
        p = recipe["segmentation"]["params"]
        m = recipe["markers"]
        markers = make_markers(sub, m["vmin"], m["vmax"], check=False)
        scaled = np.asarray(sub, dtype=np.float64) / p["intensity_scale"]
        return randomwalker.slab_preview(scaled, markers, 0, middle, beta=p["beta"],
                                         std=std / p["intensity_scale"], half_width=half)

    def _quick_preview(self, image_id: str, load_image, recipe: dict, shown,
                       slab_voxels=None):
        """A preview before the full-resolution filter stage: for a recipe whose filtered
        image is not computed yet (a new image, a new filter), made from the image itself
        on what the preview needs only, so that the first overlay does not wait for the
        filter stage of the whole image (which the exact result still uses, as always).

        * a volume's shown slice (``shown``): the slab around it, filtered alone with the
          filter's reach around it along the slicing axis (a local filter gives the whole
          filter's values there; none: the image's values);
        * otherwise an image above twice :data:`~pipeline.randomwalker.COARSE_PREVIEW_PIXELS`
          (2D, or a volume whose slab does not fit): the reduced grid of
          :meth:`_coarse_preview`, from the image's block means; with a filter, the
          filter runs on the block means with its sizes divided by the block width
          (``filtered_reduced``: an approximation of the filtered image's blocks).

        False when not applicable (the filtered image is cached: the usual previews; strokes
        drawn by hand; a smaller image; a volume's slab that a global filter needs whole),
        None when the markers keep no two labels.
        """
        if recipe["markers"].get("scribbles"):
            return False  # painted in the whole image's coordinates: the usual route
        k = stage_keys(recipe)
        if self.filtered_shape(image_id, load_image, recipe) is not None:
            return False
        image = load_image()
        if image.ndim == 3 and shown is not None:
            slab = self._quick_slab(image_id, k, image, recipe, shown, slab_voxels)
            if slab is not False:
                return slab
        if image.size <= 2 * randomwalker.COARSE_PREVIEW_PIXELS:
            return False
        return self._quick_coarse(image_id, k, image, recipe)

    def _quick_slab(self, image_id, k, image, recipe, shown, slab_voxels=None):
        axis, index = int(shown[0] or 0), int(shown[1] or 0)
        if not (0 <= axis < 3 and 0 <= index < image.shape[axis]):
            return False
        half = randomwalker.slab_half_width(
            image.shape, axis, max_voxels=slab_voxels or randomwalker.SLAB_MAX_VOXELS)
        if half is None:
            return False
        section = recipe["filter"]
        t0 = time.perf_counter()
        n = image.shape[axis]
        lo, hi = _slab_bounds(n, index, half)
        if section["name"] == "none":
            sub = np.moveaxis(_take(image, axis, lo, hi), axis, 0)
            std = self._filtered_std(image_id, k["filter"], image)  # the same values
        else:
            reach = _axis_reach(section, axis)
            if reach is None:
                return False  # a global filter: the slab alone would not give its values
            mlo, mhi = max(0, lo - reach), min(n, hi + reach)
            around = np.moveaxis(_take(image, axis, mlo, mhi), axis, 0)
            filtered = _apply_filter(np.asarray(around, dtype=np.float64), section)
            sub = filtered[lo - mlo:hi - mlo]
            std = float(np.std(filtered))  # the slab's: the volume's is not computed yet
        out = self._solve_slab(sub, recipe, index - lo, half, std)
        if out is None:
            return None
        return PreviewResult(filtered=None, mask=out == 2, seconds=time.perf_counter() - t0,
                             slab=(axis, index, lo, hi - 1), quick=True,
                             shown=np.asarray(sub[index - lo]))

    def _quick_coarse(self, image_id, k, image, recipe):
        t0 = time.perf_counter()
        p = recipe["segmentation"]["params"]
        m = recipe["markers"]
        section = recipe["filter"]
        blocks = image.ndim == 2
        budgets = ((randomwalker.COARSE_PREVIEW_PIXELS_2D, randomwalker.COARSE_PREVIEW_PIXELS)
                   if blocks else (randomwalker.COARSE_PREVIEW_PIXELS,))
        tried = set()
        markers = None
        for budget in budgets:
            factor = randomwalker.reduction_factor(image.shape, budget)
            if factor in tried:
                continue
            tried.add(factor)
            if section["name"] == "none":
                # the filtered image is the image: the very preview of _coarse_preview
                graph = self._coarse_graph(image_id, k["filter"], p["beta"],
                                           p["intensity_scale"], factor, lambda: image)
                if blocks:  # the blocks' markers from their extrema: no full-size markers
                    labels = randomwalker.block_preview(
                        graph, block_markers(image, m["vmin"], m["vmax"], factor))
                else:
                    if markers is None:
                        markers = make_markers(image, m["vmin"], m["vmax"], check=False)
                    labels = randomwalker.coarse_preview(graph, markers, factor)
                shown = image if blocks else None
            else:
                reduced = _apply_filter(randomwalker.block_mean(image, factor), section,
                                        factor)
                coarse_markers = make_markers(reduced, m["vmin"], m["vmax"], check=False)
                if not ((coarse_markers == 1).any() and (coarse_markers == 2).any()):
                    continue
                graph = randomwalker.build_graph(reduced / p["intensity_scale"], beta=p["beta"])
                labels = randomwalker.solve(graph, coarse_markers, mode="cg_mg", tol=1e-2)
                if not blocks:
                    labels = randomwalker._prolong(labels, image.shape, factor)
                shown = None  # the page draws no markers from the reduced grid
            if labels is not None:
                return PreviewResult(filtered=None, mask=labels == 2,
                                     seconds=time.perf_counter() - t0, factor=factor,
                                     blocks=blocks, quick=True, shown=shown,
                                     filtered_reduced=section["name"] != "none")
        return None

    def _coarse_preview(self, image_id: str, load_image, recipe: dict):
        """A reduced-grid preview of an image above twice
        :data:`~pipeline.randomwalker.COARSE_PREVIEW_PIXELS` (None if its blocks keep no
        markers of both labels), or False for a smaller image (warm-started instead)."""
        k = stage_keys(recipe)
        filtered = self._filtered_fn(image_id, k["filter"], recipe, load_image)
        if filtered.size <= 2 * randomwalker.COARSE_PREVIEW_PIXELS:
            return False
        t0 = time.perf_counter()
        p = recipe["segmentation"]["params"]
        blocks = filtered.ndim == 2  # a 2D preview is drawn on its own grid
        # 2D: the smaller grid first; if its blocks keep no markers of both labels (markers
        # scattered by noise), the finer one
        budgets = ((randomwalker.COARSE_PREVIEW_PIXELS_2D, randomwalker.COARSE_PREVIEW_PIXELS)
                   if blocks else (randomwalker.COARSE_PREVIEW_PIXELS,))
        markers = recipes.marker_stage(filtered, recipe)
        tried = set()
        for budget in budgets:
            factor = randomwalker.reduction_factor(filtered.shape, budget)
            if factor in tried:
                continue
            tried.add(factor)
            graph = self._coarse_graph(image_id, k["filter"], p["beta"], p["intensity_scale"],
                                       factor, lambda: np.asarray(filtered))
            labels = randomwalker.coarse_preview(graph, markers, factor,
                                                 full_resolution=not blocks)
            if labels is not None:
                return PreviewResult(filtered=filtered, mask=labels == 2,
                                     seconds=time.perf_counter() - t0, factor=factor,
                                     blocks=blocks)
        return None

    def mask(self, image_id: str, load_image, recipe: dict) -> np.ndarray:
        """Object mask of the segmentation stage of a recipe."""
        k = self._computed_keys(image_id, load_image, recipe)
        return self._mask_fn(image_id, k["filter"], k["markers"], k["segmentation"], recipe,
                             load_image)

    def measurements(self, image_id: str, load_image, recipe: dict):
        """Measurements table of a recipe (see :func:`pipeline.recipe.measure_stage`)."""
        k = self._computed_keys(image_id, load_image, recipe)
        return self._measure(image_id, k["filter"], k["markers"], k["segmentation"],
                             k["postprocess"], k["measure"], recipe, load_image, self._labels_fn)

    def histogram(self, image_id: str, load_image, recipe: dict, bins: int = 256):
        """Histogram (counts, edges) of the filtered image of a recipe."""
        k = stage_keys(recipe)
        return self._histogram(image_id, k["filter"], bins,
                               lambda: self.filtered(image_id, load_image, recipe))

    def thresholds(self, image_id: str, load_image, recipe: dict) -> dict:
        """Automatic global thresholds of the filtered image ({method: value or message})."""
        k = stage_keys(recipe)
        return self._thresholds(image_id, k["filter"],
                                lambda: self.filtered(image_id, load_image, recipe))

    def rendered(self, key: str, make):
        """``make()``, cached under `key` (a string naming everything the result depends on).

        For derived views (e.g. PNG overlays of a slice) that are cheap to key but not to
        recompute: a repeated view is a cache hit.
        """
        return self._rendered(key, make)

    def trim(self) -> None:
        """Evict least recently used cache entries beyond ``bytes_limit``."""
        self.memory.reduce_size(bytes_limit=self.bytes_limit)


@contextlib.contextmanager
def exclusive(path, should_stop=None, poll_s: float = 0.01):
    """Hold an exclusive lock on the file `path` (created; removed when released) while the
    block runs, in every thread and process of the machine: a second holder waits.

    Parameters
    ----------
    path : Path
        The lock file (e.g. named by the hash of the work it guards).
    should_stop : callable, optional
        Asked while waiting; True raises :class:`~pipeline.errors.Cancelled`.
    poll_s : float
        Interval between two attempts.

    A holder removes the file before it lets go: a waiter that locked the removed file
    opens the path again, so the folder does not grow with the work done.
    """
    path = Path(path)
    while (fd := try_lock(path)) is None:
        if should_stop is not None and should_stop():
            raise Cancelled("stopped while waiting for the same work elsewhere")
        time.sleep(poll_s)
    try:
        yield
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        os.close(fd)


class TimeLimit:
    """A ``should_stop`` that says True once `seconds` have passed (and whatever `also`
    says): a computation is stopped between its steps (conjugate-gradient iterations, the
    graph and the solve) with :class:`~pipeline.errors.Cancelled`; :attr:`expired` then
    tells a time limit from another reason.

    Parameters
    ----------
    seconds : float
        The limit (> 0), e.g. ``Config.max_work_s``.
    also : callable, optional
        Another ``should_stop`` (e.g. a newer request superseded this one).
    clock : callable, optional
        Monotonic seconds (``time.monotonic``).
    """

    def __init__(self, seconds, also=None, clock=time.monotonic):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                or not math.isfinite(seconds) or seconds <= 0:
            raise InputError(f"seconds must be a positive number, got {seconds!r}")
        self.seconds = float(seconds)
        self.also = also
        self.clock = clock
        self.start = clock()

    @property
    def elapsed(self) -> float:
        """Seconds since the limit started."""
        return self.clock() - self.start

    @property
    def expired(self) -> bool:
        """Whether the limit has passed (whatever stopped the work)."""
        return self.elapsed > self.seconds

    def __call__(self) -> bool:
        return self.expired or bool(self.also is not None and self.also())


def _slab_bounds(n, index, half):
    """[lo, hi) of the slab of `half` slices on each side of `index` among `n`."""
    return max(0, index - half), min(n, index + half + 1)


def _take(array, axis, lo, hi):
    """Slices `lo` to `hi` of `array` along `axis` (a view)."""
    sl = [slice(None)] * array.ndim
    sl[axis] = slice(lo, hi)
    return array[tuple(sl)]


#: Parameters of each filter that are lengths in pixels: divided by the block width when the
#: filter runs on a reduced grid (:meth:`Compute._quick_preview`).
_PIXEL_PARAMS = {"gaussian": ("sigma",), "median": ("radius",),
                 "bilateral": ("sigma_spatial",), "nl_means": ("patch_size", "patch_distance")}


def _axis_reach(section, axis):
    """How far (pixels) along `axis` the filter of `section` reads around a voxel of a
    volume: 0 for none, None for a filter that needs the whole array (no reach)."""
    from .filters import FILTERS

    if section["name"] == "none":
        return 0
    step = FILTERS[section["name"]]
    reach = step.reach_per_axis(step.check(section["params"]), 3)
    if reach is None or reach[axis] is None:
        return None
    return int(reach[axis])


def _apply_filter(image, section, factor=1):
    """The filter of a recipe's `section` on `image` (float64), its lengths in pixels
    divided by `factor` (a reduced grid), within their allowed ranges."""
    from .filters import FILTERS, apply_filter

    step = FILTERS[section["name"]]
    params = step.check(section["params"])
    if factor > 1:
        limits = {p.name: p for p in step.params}
        for name in _PIXEL_PARAMS.get(section["name"], ()):
            p = limits[name]
            value = params[name] / factor
            value = int(round(value)) if p.kind == "int" else value
            if p.min is not None:
                value = max(value, p.min)
            params[name] = value
    return apply_filter(np.asarray(image, dtype=np.float64), section["name"], params)
