"""What the callbacks of one app instance share: configuration, array store, compute cache.

Built once by ``app.create_app`` and passed to every ``register(app, services)``; nothing is
kept at module level, so several apps (tests) and several workers never share Python state.
The store and the cache are on disk and shared between workers.
"""

from __future__ import annotations

import logging

from contextlib import contextmanager
from dataclasses import dataclass

from pipeline import recipe as recipes
from pipeline.admission import Admission
from pipeline.compute import Compute, stage_keys
from pipeline.config import Config
from pipeline.errors import InputError
from pipeline.parallel import Backend
from pipeline.store import ArrayStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    """Configuration, shared array store and cached compute of one app.

    Every computation that can be heavy (all but the bounded live preview) runs in a slot of
    `admission`, of the session's owner: one user never takes all the server's compute slots
    (:meth:`_admitted`; a cached result needs no slot).
    """

    config: Config
    store: ArrayStore
    compute: Compute
    initial: object = None  # a pipeline.io.LoadedImage offered as the sample "array"
    admission: Admission = None

    @classmethod
    def create(cls, config: Config, initial=None, backend=None) -> "Services":
        """Open (creating if needed) the store and cache named by `config`.

        `backend` (a :class:`pipeline.parallel.Backend`) runs the filter stage; default
        ``Backend.from_config(config)``: local threads (``PIPEX_JOBS`` or the CPU limit), or
        the dask scheduler of ``PIPEX_DASK_ADDRESS``. It is connected on first use.
        """
        config.state_dir.mkdir(parents=True, exist_ok=True)
        quota = (None if config.user_quota_gb is None
                 else int(config.user_quota_gb * 1024**3))
        store = ArrayStore(config.store_dir, size_limit=int(config.store_size_gb * 1024**3),
                           quota=quota)
        backend = Backend.from_config(config) if backend is None else backend
        compute = Compute(config.cache_dir, bytes_limit=int(2 * config.store_size_gb * 1024**3),
                          backend=backend,
                          max_job_bytes=int(config.max_job_gb * 1024**3))
        admission = Admission(config.state_dir / "admission", per_owner=config.user_jobs,
                              total=config.max_jobs, wait_s=config.job_wait_s)
        return cls(config=config, store=store, compute=compute, initial=initial,
                   admission=admission)

    def owner(self, session_id) -> str:
        """Whose quota and job slots this session uses: its signed-in user, or the session."""
        return self.store.owner(session_id)

    def _cached(self, stage, image_id, recipe) -> bool:
        """Whether `stage` of this recipe is in the compute cache (nothing to compute)."""
        c, k = self.compute, stage_keys(recipe)
        fk, mk, sk, pk = k["filter"], k["markers"], k["segmentation"], k["postprocess"]
        checks = {
            "filtered": [(c._filtered, (image_id, fk, recipe, None, c.backend))],
            "histogram": [(c._histogram, (image_id, fk, 256, None))],
            "thresholds": [(c._thresholds, (image_id, fk, None))],
            "mask": [(c._segment, (image_id, fk, mk, sk, recipe, None, None, None))],
            "labels": [(c._labels, (image_id, fk, mk, sk, pk, recipe, None, None))],
            "measurements": [(c._measure, (image_id, fk, mk, sk, pk, k["measure"], recipe,
                                           None, None))],
        }
        needed = {"run": ("filtered", "mask", "labels")}.get(stage, (stage,))
        try:
            return all(fn.check_call_in_cache(*args) for name in needed
                       for fn, args in checks[name])
        except Exception:  # noqa: BLE001 - unknown: count it as a computation
            return False

    @contextmanager
    def _admitted(self, stage, session_id, image_id, recipe):
        """Hold a job slot of the session's owner (Busy if none frees up in time) unless the
        result is cached."""
        if self.admission is None:
            yield
            return
        with self.admission.slot(self.owner(session_id),
                                 cached=lambda: self._cached(stage, image_id, recipe)):
            yield

    def loader(self, session_id, image_id):
        """A callable returning this session's image, for cache misses only."""
        store = self.store

        def load():
            return store.get_image(session_id, image_id)

        return load

    def _check_access(self, session_id, image_id):
        # The compute cache is keyed by content hash and shared; only a session that holds
        # the image may read results computed from it.
        if not image_id or not self.store.has_image(session_id, image_id):
            raise InputError(
                "This image is no longer on the server (expired or evicted). Load it again.")

    @staticmethod
    def validate(recipe):
        """A recipe checked and completed (see :func:`pipeline.recipe.validate`)."""
        return recipes.validate(recipe)

    def run(self, session_id, image_id, recipe, should_stop=None, progress=None):
        """Cached pipeline result (filtered, mask, labels) of this session's image;
        `should_stop` may stop the solve, `progress` hears how it advances (see
        :meth:`Compute.run`)."""
        self._check_access(session_id, image_id)
        recipe = recipes.validate(recipe)
        with self._admitted("run", session_id, image_id, recipe):
            result = self.compute.run(image_id, self.loader(session_id, image_id),
                                      recipe, should_stop=should_stop, progress=progress)
        if not result.cached:
            self.trim_cache()
        return result

    #: The compute cache is trimmed to its limit at most this often (seconds), by whichever
    #: worker computes something new first (also on every image load).
    TRIM_EVERY_S = 30.0

    def trim_cache(self) -> bool:
        """Trim the compute cache to its limit if no worker did in the last
        :data:`TRIM_EVERY_S` seconds (the cache grew by 0.2–0.4 GB a minute with 5–20 users
        and was trimmed only when an image was loaded). Returns whether it trimmed."""
        if self.store.recent("compute-cache-trim", self.TRIM_EVERY_S, add=True) != 1:
            return False
        try:
            self.compute.trim()
        except OSError:  # a concurrent trim removed the same entries
            log.warning("cache trim failed", exc_info=True)
        return True

    def preview(self, session_id, image_id, recipe, nearby, shown=None, quick_only=False,
                slab_voxels=None, image=None):
        """Live preview of a random-walker segmentation (see :meth:`Compute.preview`;
        `shown`: ``(axis, index)`` of a volume's slice on the page; `quick_only`: only one
        made from the image itself, before its filter stage; `slab_voxels`: the largest slab
        of a volume's; `image`: the image itself, whose content hash `image_id` is, held by
        the caller — the load that is storing it —, instead of reading it from the store),
        or None."""
        if image is None:
            self._check_access(session_id, image_id)
            load = self.loader(session_id, image_id)
        else:  # the caller has the content: nothing computed from it is another's to hide
            load = lambda: image  # noqa: E731
        return self.compute.preview(image_id, load,
                                    recipes.validate(recipe),
                                    (recipes.validate(r) for r in nearby), shown=shown,
                                    quick_only=quick_only, slab_voxels=slab_voxels)

    def exact_cached(self, session_id, image_id, recipe) -> bool:
        """Whether this session's image's segmentation of `recipe` is cached (nothing is
        computed or read)."""
        self._check_access(session_id, image_id)
        return self.compute.exact_cached(image_id, self.loader(session_id, image_id),
                                         recipes.validate(recipe))

    def filtered(self, session_id, image_id, recipe):
        """Cached filtered image of this session's image."""
        self._check_access(session_id, image_id)
        recipe = recipes.validate(recipe)
        with self._admitted("filtered", session_id, image_id, recipe):
            return self.compute.filtered(image_id, self.loader(session_id, image_id),
                                         recipe)

    def cached_filtered(self, session_id, image_id, recipe):
        """This session's filtered image if it is in the cache already, else None (it is
        never computed here: for views that must not start heavy work)."""
        self._check_access(session_id, image_id)
        return self.compute.cached_filtered(image_id, self.loader(session_id, image_id),
                                            recipes.validate(recipe))

    def filter_run(self, session_id, image_id, recipe):
        """Cached filtered image with how it was computed (see :meth:`Compute.filter_run`)."""
        self._check_access(session_id, image_id)
        recipe = recipes.validate(recipe)
        with self._admitted("filtered", session_id, image_id, recipe):
            return self.compute.filter_run(image_id, self.loader(session_id, image_id),
                                           recipe)

    def mask(self, session_id, image_id, recipe):
        """Cached segmentation mask (before post-processing) of this session's image."""
        self._check_access(session_id, image_id)
        recipe = recipes.validate(recipe)
        with self._admitted("mask", session_id, image_id, recipe):
            return self.compute.mask(image_id, self.loader(session_id, image_id),
                                     recipe)

    def measurements(self, session_id, image_id, recipe):
        """Cached measurements of this session's image."""
        self._check_access(session_id, image_id)
        recipe = recipes.validate(recipe)
        with self._admitted("measurements", session_id, image_id, recipe):
            return self.compute.measurements(image_id, self.loader(session_id, image_id),
                                             recipe)

    def histogram(self, session_id, image_id, recipe):
        """Cached histogram (counts, edges) of the filtered image."""
        self._check_access(session_id, image_id)
        recipe = recipes.validate(recipe)
        with self._admitted("histogram", session_id, image_id, recipe):
            return self.compute.histogram(image_id, self.loader(session_id, image_id),
                                          recipe)

    def thresholds(self, session_id, image_id, recipe):
        """Cached automatic thresholds {method: value or 'failed: ...'} of the filtered image."""
        self._check_access(session_id, image_id)
        recipe = recipes.validate(recipe)
        with self._admitted("thresholds", session_id, image_id, recipe):
            return self.compute.thresholds(image_id, self.loader(session_id, image_id),
                                           recipe)

    def rendered(self, session_id, image_id, key, make):
        """``make()`` of a view of this session's image, cached under `key`
        (:meth:`Compute.rendered`; the cache is shared: only a session holding the image
        reads it)."""
        self._check_access(session_id, image_id)
        return self.compute.rendered(key, make)

    def image(self, session_id, image_id):
        """This session's image (raises InputError if it is not in the store)."""
        if not image_id:
            raise InputError("No image loaded yet.")
        return self.store.get_image(session_id, image_id)
