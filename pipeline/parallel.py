"""Parallel execution: a step over overlapping blocks of an array, a function over many items.

This module is the one place that decides where and how work runs in parallel. It is built on
joblib (``Parallel`` and ``parallel_config``); it schedules nothing itself.

* :func:`apply_step` runs a filter or post-processing step (:class:`pipeline.steps.Step`). A
  *local* step (one that declares its ``reach``) on an array large enough for it to pay
  (:attr:`Backend.min_pixels`, 2**20 pixels by default: never coins' 303 x 384) is cut into
  blocks; each block is computed with its overlap (the reach, on every side where the block
  is not at the array's edge) and its core is written into the result. The stitched result
  is identical, bit for bit, to the whole-array call (``tests/test_parallel.py``). A step that
  is not local, or whose blockwise result would differ on this array (``Step.blocks`` says
  why), runs whole. A *separable* step (``Step.separable``: the Gaussian, whose whole call is
  one 1-D pass per axis) on a volume runs as those passes instead: the pass along axis 0 on
  blocks cut along the other axes, then the passes along axes 1 and 2 in place on slabs cut
  along axis 0; every block is whole along the axes it filters, so there is no overlap, and
  the values are the whole call's (:data:`SEPARABLE_NDIM`; images still use overlapping
  blocks, as fast there). Each block runs its passes tile by tile in two small buffers
  that stay in the core's cache (:data:`PASS_TILE_BYTES`), and its first round checks the
  input's finiteness as it reads it (no serial pass over the whole array first).
* :func:`map_items` maps a function over many items (the images of a batch, the cells of a
  sweep) with the same backend, with progress and cancellation.
* :func:`filter_stage` and :func:`postprocess_stage` are :func:`pipeline.recipe.filter_stage`
  and :func:`pipeline.recipe.postprocess_stage` through :func:`apply_step` (the Gaussian and
  the median over blocks read the image as it is, without its float64 copy).

Where the work runs is a :class:`Backend`: local threads (the default for blocks: the filters
release the GIL for most of their run, and threads read the input and write their cores into
the output without copies), local loky processes (blocks through memory maps of the input and
the output; the better choice for a batch of whole recipes, whose Python parts hold the GIL:
the Batch tab uses them, and ``python -m pipeline run`` forks them from itself, after its
imports, instead of starting new interpreters: ``Backend(start="fork")``), or a
dask.distributed scheduler (``PIPEX_DASK_ADDRESS``, ``--dask``) through joblib's ``"dask"``
backend, where blocks are sent to the workers and their cores come back. See
``bench/README.md`` for the measurements. An unreachable scheduler is reported (in the
:class:`RunReport` and the log) and the work runs locally. The number of local workers is
``PIPEX_JOBS`` when set, otherwise the CPUs this process may use (:func:`cpu_limit`: affinity
and cgroup quota). BLAS libraries are kept at one thread inside the workers (threadpoolctl in
this process for threads and for forked processes, which inherit it; loky's
``inner_max_num_threads`` for its processes; dask's nanny sets them to one in its workers).

Memory: the output plus, per worker, one block with its overlap and the step's scratch for
it (never the whole array's scratch). A dask worker needs this package installed (functions
travel by reference), not access to this machine's files (blocks and items travel with the
tasks).

Every call returns a :class:`RunReport` saying how it ran, e.g. ``Gaussian: 16 blocks on 2
workers (threads), 0.80 s``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from joblib import Parallel, ParallelBackendBase, delayed, parallel_config

from .errors import InputError
from .npyfile import map_npy

__all__ = [
    "MIN_PIXELS",
    "Backend",
    "apply_blocks",
    "Block",
    "Cancelled",
    "Failed",
    "RunReport",
    "apply_step",
    "auto_chunks",
    "cpu_limit",
    "default_jobs",
    "filter_stage",
    "map_items",
    "plan_blocks",
    "postprocess_stage",
    "stop_local_workers",
]

log = logging.getLogger(__name__)

#: Arrays with fewer pixels (voxels) run whole: splitting them costs more than it saves.
MIN_PIXELS = 2**20
#: Blocks per worker an automatic chunking aims at (some slack for a noisy machine).
BLOCKS_PER_WORKER = 2
#: Largest block (with its overlap) of an automatic chunking, in bytes of the input.
MAX_BLOCK_BYTES = 64 * 2**20
#: Blocks (with their overlap) an automatic chunking cuts down to, in bytes of the input,
#: while the overlap stays within :data:`MAX_OVERLAP`: a memory-bound filter runs faster on
#: small blocks even on one core (the Gaussian's pass along axis 0 reads one value per row
#: at a time: on 4096² float64, 1.4-1.7x faster in blocks of 2-4 MiB than whole; see the
#: README's Speed section).
CACHE_BLOCK_BYTES = 4 * 2**20
#: Most volume the overlap of cuts made for :data:`CACHE_BLOCK_BYTES` may add, as a fraction
#: of the array's (a compute-bound filter pays it in full).
MAX_OVERLAP = 0.1
#: Dimensions on which a separable step (the Gaussian) runs as its 1-D passes over blocks
#: without overlap (:func:`apply_step`) rather than over overlapping blocks. Volumes only: a
#: 256³ Gaussian sigma=2 on 2 threads took 0.27-0.29 s as passes, 0.36 s over overlapping
#: slabs (whole 0.51 s); on a 4096² image the slabs (cut for the cache) were as fast or
#: faster (0.37-0.39 s against 0.35-0.50 s), their pass along axis 0 reading short columns.
SEPARABLE_NDIM = (3,)
#: Blocks per worker in each round of a separable step's passes (:func:`apply_step`).
PASS_BLOCKS_PER_WORKER = 4
#: Bytes (of the output's dtype) of the tiles a separable step's block is staged through
#: (:func:`_passes_into`): each tile is copied into a small buffer whose rows do not start
#: at a power-of-two stride, its passes run there (in the core's cache) and it is copied
#: back. A 256³ float64 Gaussian sigma=2 on one core: 0.40 s (the pass along axis 0 read in
#: place, 512 KiB apart per value, was 0.22 s of the whole call's 0.50 s; 0.15 s staged).
PASS_TILE_BYTES = 512 * 2**10
#: A block whose smallest tile (one line of cuts) would be larger runs its passes in place,
#: without staging: no cache to gain, only copies.
PASS_TILE_MAX_BYTES = 2 * 2**20
#: Seconds before a scheduler that could not be reached is tried again.
RETRY_AFTER = 60.0

_PREFER = ("threads", "processes")
_START = ("loky", "fork")


# --------------------------------------------------------------------------------------------
# How many workers


def _cgroup_cpus(root: Path) -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max``, else v1 ``cfs_quota``), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max" and float(period) > 0:
            return float(quota) / float(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = float((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = float((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def cpu_limit(cgroup_root="/sys/fs/cgroup") -> int:
    """The number of CPUs this process may use.

    The smaller of the CPUs in its affinity mask (``os.sched_getaffinity``, or
    ``os.cpu_count()`` where there is none) and the container's cgroup CPU quota (v2
    ``cpu.max``, or v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``), rounded up; at least 1.

    Parameters
    ----------
    cgroup_root : str or Path, optional
        Where the cgroup files are (tests point it elsewhere).

    Returns
    -------
    int
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpus(Path(cgroup_root))
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def _check_jobs(value, name: str) -> int:
    if isinstance(value, bool):
        raise InputError(f"{name} must be a whole number of workers (1 or more), got {value!r}")
    try:
        number = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number of workers (1 or more), "
                         f"got {value!r}") from None
    if isinstance(value, float) and value != number:
        raise InputError(f"{name} must be a whole number of workers (1 or more), got {value!r}")
    if number < 1:
        raise InputError(f"{name} must be at least 1, got {value!r}")
    return number


def default_jobs(env=None) -> int:
    """Local workers: ``PIPEX_JOBS`` when set, otherwise :func:`cpu_limit`.

    Parameters
    ----------
    env : mapping, optional
        Environment to read (``os.environ`` by default).

    Raises
    ------
    InputError
        If ``PIPEX_JOBS`` is not a whole number of at least 1.
    """
    env = os.environ if env is None else env
    raw = env.get("PIPEX_JOBS")
    if raw is None or str(raw).strip() == "":
        return cpu_limit()
    return _check_jobs(raw, "PIPEX_JOBS")


# --------------------------------------------------------------------------------------------
# Reports


@dataclass(frozen=True)
class RunReport:
    """How a step or a batch ran.

    Attributes
    ----------
    label : str
        What ran (the step's label, e.g. ``"Gaussian"``, or ``"batch"``).
    backend : str
        ``"whole"`` (one call on the whole array, in this process), ``"threads"``,
        ``"processes"``, ``"sequential"`` (one local worker) or ``"dask"``.
    blocks : int
        Blocks (or items) the work was cut into.
    workers : int
        Workers available to it.
    seconds : float
        Wall-clock time.
    chunks : tuple of int, optional
        Core shape of the blocks.
    reach : tuple, optional
        Overlap of each axis (None: the axis was not cut).
    done : int
        Blocks or items finished (fewer than ``blocks`` after a cancellation).
    failed : int
        Items that raised (:func:`map_items` with ``on_error="return"``).
    cancelled : bool
        Whether ``should_stop`` stopped the run.
    pids : tuple of int
        The processes that ran the blocks or items (a dask worker's pid, a loky worker's, or
        this process's for threads).
    message : str
        Why it ran as it did, when that is not the obvious (e.g. the scheduler could not be
        reached, or a step is not local); empty otherwise.
    passes : tuple
        For a separable step run as its 1-D passes (:func:`apply_step`): one entry per round
        of blocks, ``(axes, blocks, chunks)``: the axes its passes filter (in order), its
        number of blocks and their shape (whole along those axes, no overlap). ``blocks`` is
        then the total of the rounds' blocks and ``chunks`` the first round's. Empty
        otherwise.
    """

    label: str
    backend: str
    blocks: int
    workers: int
    seconds: float
    chunks: tuple | None = None
    reach: tuple | None = None
    done: int = 0
    failed: int = 0
    cancelled: bool = False
    pids: tuple = ()
    message: str = ""
    passes: tuple = ()

    def summary(self) -> str:
        """One line for people, e.g. ``Gaussian: 16 blocks on 2 workers (threads), 0.80 s``,
        ``Gaussian: 3 separable passes (axis 0 in 32 blocks, axes 1-2 in 16) on 2 workers
        (threads), 0.30 s``."""
        if self.backend == "whole":
            text = f"{self.label}: whole array, {self.seconds:.2f} s"
        elif self.passes:
            rounds = []
            for k, (axes, blocks, _) in enumerate(self.passes):
                where = (f"axis {axes[0]}" if len(axes) == 1 else
                         f"axes {axes[0]}-{axes[-1]}" if list(axes) == list(
                             range(axes[0], axes[-1] + 1)) else
                         f"axes {', '.join(str(a) for a in axes)}")
                rounds.append(f"{where} in {blocks}" + (" blocks" if k == 0 else ""))
            n = sum(len(axes) for axes, _, _ in self.passes)
            text = (f"{self.label}: {n} separable pass{'es' if n != 1 else ''} "
                    f"({', '.join(rounds)}) on {self.workers} "
                    f"worker{'s' if self.workers != 1 else ''} ({self.backend}), "
                    f"{self.seconds:.2f} s")
        else:
            unit = "block" if self.chunks is not None else "item"
            text = (f"{self.label}: {self.blocks} {unit}{'s' if self.blocks != 1 else ''} on "
                    f"{self.workers} worker{'s' if self.workers != 1 else ''} "
                    f"({self.backend}), {self.seconds:.2f} s")
        if self.failed:
            text += f", {self.failed} failed"
        if self.cancelled:
            text += f", cancelled after {self.done}"
        if self.message:
            text += f" ({self.message})"
        return text


@dataclass(frozen=True)
class Failed:
    """The result slot of an item that did not give a result (:func:`map_items`).

    Attributes
    ----------
    error : str
        The reason, for people (an :class:`InputError`'s message as it is; otherwise
        ``"TypeName: message"``); ``"cancelled"`` for an item that was not run.
    kind : {'error', 'cancelled'}
    """

    error: str
    kind: str = "error"


class Cancelled(Exception):
    """Raised by :func:`apply_step` when ``should_stop()`` became true: no result."""


# --------------------------------------------------------------------------------------------
# Backend


class Backend:
    """Where parallel work runs.

    Parameters
    ----------
    jobs : int, optional
        Local workers; default :func:`default_jobs` (``PIPEX_JOBS`` or the CPU limit).
    prefer : {'threads', 'processes'}, optional
        Local threads (default) or loky processes.
    dask_address : str, optional
        Address of a dask.distributed scheduler (e.g. ``"tcp://10.0.0.5:8786"``): blocks and
        items then run on its workers. Connected on first use; if it cannot be reached within
        `connect_timeout` seconds the work runs locally and the report says so (tried again
        after :data:`RETRY_AFTER` seconds).
    connect_timeout : float, optional
        Seconds to wait for the scheduler.
    min_pixels : int, optional
        Arrays with fewer pixels run whole (:data:`MIN_PIXELS`).
    start : {'loky', 'fork'}, optional
        How the worker processes of :func:`map_items` start (``prefer="processes"``):

        * ``'loky'`` (default): joblib's loky workers, new interpreters kept between calls;
          each imports what its first item needs (the batch's code: ~0.5 s of CPU each).
        * ``'fork'``: for each call, workers forked from this process, which has imported
          what the items need: they import nothing again, and are killed at the call's end.
          Only for a process that runs no other thread (the command line): a fork copies
          every lock in the state it is in, and another thread may hold one. When another
          thread is running, the call runs on loky workers instead.

        Blocks (:func:`apply_blocks` on processes) always run on loky workers: their memory
        maps travel by joblib's loky reducers.

    Notes
    -----
    A backend holds its dask client (if any): make one per app or command and
    :meth:`close` it (or use it as a context manager).
    """

    def __init__(self, jobs=None, *, prefer: str = "threads", dask_address: str | None = None,
                 connect_timeout: float = 5.0, min_pixels: int = MIN_PIXELS,
                 start: str = "loky"):
        self.jobs = default_jobs() if jobs is None else _check_jobs(jobs, "jobs")
        if prefer not in _PREFER:
            raise InputError(f"prefer must be one of {', '.join(_PREFER)}, got {prefer!r}")
        self.prefer = prefer
        if start not in _START:
            raise InputError(f"start must be one of {', '.join(_START)}, got {start!r}")
        self.start = start
        if dask_address is not None:
            if not isinstance(dask_address, str) or not dask_address.strip():
                raise InputError(f"dask_address must be a scheduler address such as "
                                 f"'tcp://127.0.0.1:8786', got {dask_address!r}")
            dask_address = dask_address.strip()
        self.dask_address = dask_address
        if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float)) \
                or not 0 < connect_timeout < 600:
            raise InputError(f"connect_timeout must be a number of seconds above 0, "
                             f"got {connect_timeout!r}")
        self.connect_timeout = float(connect_timeout)
        if isinstance(min_pixels, bool) or not isinstance(min_pixels, int) or min_pixels < 0:
            raise InputError(f"min_pixels must be a whole number >= 0, got {min_pixels!r}")
        self.min_pixels = min_pixels
        self._client = None
        self._failed_at = None
        self._failure = ""
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config, **overrides) -> "Backend":
        """The backend of a :class:`pipeline.config.Config` (``jobs``, ``dask_address``)."""
        kwargs = {"jobs": getattr(config, "jobs", None),
                  "dask_address": getattr(config, "dask_address", None)}
        kwargs.update(overrides)
        return cls(**kwargs)

    def __repr__(self) -> str:
        where = f", dask_address={self.dask_address!r}" if self.dask_address else ""
        start = f", start={self.start!r}" if self.start != "loky" else ""
        return f"Backend(jobs={self.jobs}, prefer={self.prefer!r}{start}{where})"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Close the dask client, if one was opened."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=self.connect_timeout)

    def client(self):
        """The dask client, connected on first use; None when local (see :attr:`message`)."""
        if self.dask_address is None:
            return None
        with self._lock:
            if self._client is not None and self._client.status == "running":
                return self._client
            if self._failed_at is not None and \
                    time.monotonic() - self._failed_at < RETRY_AFTER:
                return None
            try:
                from distributed import Client
            except ImportError:  # pragma: no cover - dask[distributed] is a dependency
                self._fail("dask.distributed is not installed")
                return None
            try:
                self._client = Client(self.dask_address, timeout=self.connect_timeout,
                                      set_as_default=False)
            except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, bad address...
                self._fail(f"{type(exc).__name__}: {exc}")
                return None
            self._failed_at, self._failure = None, ""
            return self._client

    def _fail(self, reason: str) -> None:
        self._client = None
        self._failed_at = time.monotonic()
        self._failure = (f"dask scheduler {self.dask_address} could not be reached ({reason}); "
                         "ran locally")
        log.warning("%s", self._failure)

    @property
    def message(self) -> str:
        """Why work runs locally although a scheduler is configured ('' otherwise)."""
        return self._failure if self._client is None else ""

    def status(self) -> dict:
        """Where work runs, without connecting: ``{"jobs": n, "prefer": ...}`` and, with a
        scheduler configured, its address and state ("connected", "unreachable" with the
        reason, or "not used yet")."""
        out = {"jobs": self.jobs, "prefer": self.prefer}
        if self.dask_address is not None:
            client = self._client
            if client is not None and getattr(client, "status", "") == "running":
                state = "connected"
            elif self._failure:
                state = "unreachable"
            else:
                state = "not used yet"
            out["dask"] = {"address": self.dask_address, "state": state}
            if state == "unreachable":
                out["dask"]["reason"] = self._failure
        return out

    @contextlib.contextmanager
    def _session(self, n_tasks: int, items: bool = False):
        """joblib configuration for `n_tasks` tasks (the items of :func:`map_items` when
        `items`, else blocks): yields (kind, workers, message)."""
        client = self.client()
        if client is not None:
            workers = max(1, sum(client.ncores().values()))
            with parallel_config(backend="dask", client=client, n_jobs=-1,
                                 wait_for_workers_timeout=self.connect_timeout):
                yield "dask", workers, ""
            return
        message = self.message
        jobs = min(self.jobs, max(1, n_tasks))
        if jobs == 1:
            with parallel_config(backend="sequential", n_jobs=1):
                yield "sequential", 1, message
        elif self.prefer == "threads":
            with parallel_config(backend="threading", n_jobs=jobs), _one_blas_thread():
                yield "threads", jobs, message
        elif items and self.start == "fork" and threading.active_count() == 1:
            # BLAS at one thread here while the workers are forked: they inherit the setting
            with parallel_config(backend=_ForkedProcesses(), n_jobs=jobs), _one_blas_thread():
                yield "processes", jobs, message
        else:
            with parallel_config(backend="loky", n_jobs=jobs, inner_max_num_threads=1):
                yield "processes", jobs, message


@contextlib.contextmanager
def _one_blas_thread():
    """BLAS / OpenMP at one thread in this process while the local workers run."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    with threadpool_limits(limits=1):
        yield


class _ForkedProcesses(ParallelBackendBase):
    """joblib backend: a loky executor of its own per call, whose workers are forked from this
    process instead of being new interpreters (:class:`Backend`'s ``start="fork"``); they are
    killed when the call ends (its tasks have finished, or it was cancelled).

    Built on joblib's backend interface (``submit`` / ``retrieve_result_callback``, as its loky
    backend) and loky's ``ProcessPoolExecutor``: joblib's ``Parallel`` schedules the tasks.
    """

    supports_retrieve_callback = True  # results as they come (return_as="generator...")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._workers = None

    def effective_n_jobs(self, n_jobs):
        if n_jobs is None or n_jobs < 1:
            raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
        return n_jobs

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None, **kwargs):
        import multiprocessing

        from joblib.externals.loky import ProcessPoolExecutor

        n_jobs = self.effective_n_jobs(n_jobs)
        # loky forks its workers at the first task, before it starts its own threads
        self._workers = ProcessPoolExecutor(max_workers=n_jobs,
                                            context=multiprocessing.get_context("fork"))
        self.parallel = parallel
        return n_jobs

    def submit(self, func, callback=None):
        future = self._workers.submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future):
        return future.result()

    def terminate(self):
        workers, self._workers = self._workers, None
        if workers is not None:
            # no more work for them (the call's tasks are done, or it was cancelled): killed
            # now rather than asked to stop and waited for
            workers.shutdown(wait=True, kill_workers=True)

    def abort_everything(self, ensure_ready=True):
        self.terminate()
        if ensure_ready:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel)


def stop_local_workers() -> None:
    """Stop joblib's local worker processes now, without waiting for them to finish.

    joblib keeps its loky workers between calls (a next call finds them ready), and a
    process that exits waits for them to shut down (0.1-0.3 s: each unloads its imports). A
    command that has no more work for them calls this instead: they are killed at once. Any
    work still running on them is lost, so only a process that runs nothing else in parallel
    may call it (the command line, after its batch); later calls start new workers.
    """
    from joblib.externals.loky import get_reusable_executor, reusable_executor

    if getattr(reusable_executor, "_executor", None) is None:
        return  # none was made (asking for one would start loky's resource tracker)
    # reuse=True: the executor joblib made, whatever its settings
    get_reusable_executor(reuse=True).shutdown(wait=True, kill_workers=True)


def _resolve(backend) -> Backend:
    if backend is None:
        return Backend()
    if isinstance(backend, Backend):
        return backend
    raise InputError(f"backend must be a pipeline.parallel.Backend or None, "
                     f"got {type(backend).__name__}")


def _check_callable(value, name: str, *, optional: bool = True):
    if value is None and optional:
        return None
    if not callable(value):
        raise InputError(f"{name} must be callable, got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------------------------
# Running tasks (the one joblib loop of this module)


def _task(fn, index, args):
    """Run `fn(*args)` in a worker: (index, value, pid)."""
    return index, fn(*args), os.getpid()


def _run(backend: Backend, fn, argsets, n: int, on_result, progress, should_stop,
         items: bool = False):
    """Run ``fn(*args)`` for each of `argsets` (an iterable of `n` tuples, consumed lazily).

    Calls ``on_result(index, value)`` in this thread as results arrive (in any order).
    Returns (kind, workers, message, done, cancelled, pids).
    """
    done, pids, cancelled = 0, set(), False
    if progress is not None:
        progress(0, n)
    if should_stop is not None and should_stop():
        return "none", 0, backend.message, 0, True, ()
    with backend._session(n, items) as (kind, workers, message):
        tasks = (delayed(_task)(fn, i, args) for i, args in enumerate(argsets))
        # one task per item or block: joblib's automatic batching groups items shorter
        # than 0.2 s (a coins image of a batch: 0.15 s) and a worker then waits at the end
        # (48 tasks of 0.15 s CPU on 2 loky workers: 11.8 s against 9.0 s one per task, a
        # loaded machine); a task's own cost (~1 ms) is small beside an item's
        results = Parallel(return_as="generator_unordered", pre_dispatch="2*n_jobs",
                           batch_size=1)(tasks)
        try:
            for index, value, pid in results:
                on_result(index, value)
                pids.add(pid)
                done += 1
                if progress is not None:
                    progress(done, n)
                if done < n and should_stop is not None and should_stop():
                    cancelled = True
                    break
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "tasks ... executed but not used"
                results.close()
    return kind, workers, message, done, cancelled, tuple(sorted(pids))


# --------------------------------------------------------------------------------------------
# Blocks


@dataclass(frozen=True)
class Block:
    """One block of an array cut for a local step.

    Attributes
    ----------
    core : tuple of slice
        The part of the result this block gives, in array coordinates.
    outer : tuple of slice
        The part of the input it reads: the core and its overlap, clipped to the array.
    inner : tuple of slice
        The core within the outer region.
    edges : tuple of (bool, bool)
        Per axis, whether the outer region touches the array's start and end (where the
        step's own boundary handling applies, as in the whole call).
    """

    core: tuple
    outer: tuple
    inner: tuple
    edges: tuple


def _normalize_reach(reach, ndim: int) -> tuple:
    if isinstance(reach, (int, np.integer)) and not isinstance(reach, bool):
        reach = (int(reach),) * ndim
    try:
        reach = tuple(reach)
    except TypeError:
        raise InputError(f"reach must be an int or one value per axis, got {reach!r}") from None
    if len(reach) != ndim:
        raise InputError(f"reach must have one value per axis ({ndim}), got {reach!r}")
    for r in reach:
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, np.integer))
                              or r < 0):
            raise InputError(f"reach must hold whole numbers >= 0 (or None: axis not cut), "
                             f"got {reach!r}")
    return tuple(None if r is None else int(r) for r in reach)


def _normalize_chunks(chunks, shape: tuple, reach: tuple) -> tuple:
    ndim = len(shape)
    if isinstance(chunks, (int, np.integer)) and not isinstance(chunks, bool):
        chunks = (int(chunks),) * ndim
    try:
        chunks = tuple(chunks)
    except TypeError:
        raise InputError(f"chunks must be an int or one size per axis, got {chunks!r}") \
            from None
    if len(chunks) != ndim:
        raise InputError(f"chunks must have one size per axis ({ndim}), got {chunks!r}")
    out = []
    for c, n, r in zip(chunks, shape, reach):
        if c is None or r is None:
            out.append(n)  # an axis the step must not cut stays whole
            continue
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1:
            raise InputError(f"chunks must hold whole numbers >= 1 (or None: whole axis), "
                             f"got {chunks!r}")
        out.append(min(int(c), n))
    return tuple(out)


def plan_blocks(shape, reach, chunks) -> list:
    """Cut an array of `shape` into blocks of core shape `chunks` with overlap `reach`.

    Parameters
    ----------
    shape : tuple of int
    reach : int or tuple of (int or None)
        Overlap per axis; None: that axis is not cut.
    chunks : int or tuple of (int or None)
        Core size per axis (the last block of an axis may be smaller); None: the whole axis.
        A chunk may be smaller than the reach.

    Returns
    -------
    list of Block
        In C order of their cores, which tile the array exactly.
    """
    shape = tuple(int(n) for n in shape)
    reach = _normalize_reach(reach, len(shape))
    chunks = _normalize_chunks(chunks, shape, reach)
    per_axis = []
    for n, c, r in zip(shape, chunks, reach):
        r = r or 0
        axis = []
        for start in range(0, n, c):
            stop = min(start + c, n)
            lo, hi = max(0, start - r), min(n, stop + r)
            axis.append((slice(start, stop), slice(lo, hi), slice(start - lo, stop - lo),
                         (lo == 0, hi == n)))
        per_axis.append(axis)
    blocks = []
    for combo in np.ndindex(*[len(a) for a in per_axis]):
        parts = [per_axis[axis][k] for axis, k in enumerate(combo)]
        blocks.append(Block(core=tuple(p[0] for p in parts), outer=tuple(p[1] for p in parts),
                            inner=tuple(p[2] for p in parts), edges=tuple(p[3] for p in parts)))
    return blocks


def auto_chunks(shape, reach, workers: int, itemsize: int = 8,
                max_block_bytes: int = MAX_BLOCK_BYTES,
                cache_block_bytes: int = CACHE_BLOCK_BYTES,
                max_overlap: float = MAX_OVERLAP) -> tuple:
    """A chunk shape for `workers`: at least :data:`BLOCKS_PER_WORKER` blocks each, blocks
    of cache size where their overlap costs little.

    Axes are split one cut at a time, each time where the overlap adds the least volume
    (axis 0 first on ties: blocks are then contiguous slabs), until there are
    ``BLOCKS_PER_WORKER * workers`` blocks and none is larger than `max_block_bytes`; then
    further while the blocks are larger than `cache_block_bytes` and the overlap adds at
    most `max_overlap` of the array's volume; the last cuts are then taken back until the
    number of blocks is a multiple of `workers` (not below ``BLOCKS_PER_WORKER * workers``
    blocks, none larger than `max_block_bytes`), so that the workers finish together. An
    axis is not cut into pieces thinner than twice its reach (or 16 pixels).

    Returns
    -------
    tuple of int
        One core size per axis.
    """
    shape = tuple(int(n) for n in shape)
    reach = _normalize_reach(reach, len(shape))
    for name, value in (("workers", workers), ("itemsize", itemsize),
                        ("max_block_bytes", max_block_bytes),
                        ("cache_block_bytes", cache_block_bytes)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} must be a whole number >= 1, got {value!r}")
    if isinstance(max_overlap, bool) or not isinstance(max_overlap, (int, float)) or \
            not 0 <= max_overlap < math.inf:
        raise InputError(f"max_overlap must be a fraction >= 0 (0.1: 10 %), "
                         f"got {max_overlap!r}")
    counts = [1] * len(shape)

    def padded(counts):
        return math.prod(n + 2 * (r or 0) * (c - 1) for n, c, r in zip(shape, counts, reach))

    def block_bytes(counts):
        return math.prod(math.ceil(n / c) + 2 * (r or 0)
                         for n, c, r in zip(shape, counts, reach)) * itemsize

    target = BLOCKS_PER_WORKER * workers
    volume = math.prod(shape)
    cuts = []  # the axis of each cut, in order
    while True:
        needed = math.prod(counts) < target or block_bytes(counts) > max_block_bytes
        if not needed and block_bytes(counts) <= cache_block_bytes:
            break
        best = None
        for axis, (n, r) in enumerate(zip(shape, reach)):
            if r is None or n / (counts[axis] + 1) < max(2 * r, 16):
                continue
            trial = counts.copy()
            trial[axis] += 1
            cost = padded(trial)
            if best is None or cost < best[0]:
                best = (cost, axis)
        if best is None or (not needed and best[0] > (1 + max_overlap) * volume):
            break
        counts[best[1]] += 1
        cuts.append(best[1])
    # a count of blocks the workers share evenly: the cuts made for the cache size only are
    # taken back until it is a multiple of `workers` (5 slabs of a 256³ median on 2 workers
    # ran 3 + 2: 1.55×; 4 slabs 2 + 2)
    while cuts and math.prod(counts) % workers:
        trial = counts.copy()
        trial[cuts[-1]] -= 1
        if math.prod(trial) < target or block_bytes(trial) > max_block_bytes:
            break
        counts = trial
        cuts.pop()
    return tuple(math.ceil(n / c) for n, c in zip(shape, counts))


def _compute_block(run, block, edges):
    if not block.flags.writeable:
        # a read-only memory map (loky workers): some Cython filters (e.g. the bilateral)
        # refuse read-only buffers
        block = np.array(block)
    out = np.asarray(run(block, edges))
    if out.shape != block.shape:
        raise ValueError(f"a block of shape {block.shape} gave a result of shape {out.shape}")
    return out


def _block_task(run, block, edges, inner):
    """A block's core, returned (dask workers: the result travels back)."""
    return np.ascontiguousarray(_compute_block(run, block, edges)[inner])


def _block_into(run, block, edges, inner, out, core):
    """A block's core written into the output (threads: the array itself; loky: a memory map
    of it), so that no result travels back: returns its dtype only."""
    result = _compute_block(run, block, edges)
    if result.dtype != out.dtype:
        raise ValueError(f"a block gave {result.dtype}, the first one {out.dtype}")
    out[core] = result[inner]
    return None


def _probe_dtype(run, array, reach):
    """The dtype of ``run``'s result, from a small corner of the array (the steps' result
    types do not depend on the values)."""
    corner = tuple(slice(0, min(n, 2 * (r or 4) + 3)) for n, r in zip(array.shape, reach))
    block = np.array(array[corner])
    edges = tuple((True, c.stop == n) for c, n in zip(corner, array.shape))
    return _compute_block(run, block, edges).dtype


def _shared_folder(nbytes: int) -> str | None:
    """/dev/shm when it has room for twice `nbytes` (a container's is often 64 MB), else the
    temporary folder."""
    try:
        stat = os.statvfs("/dev/shm")
        if stat.f_bavail * stat.f_frsize >= 2 * nbytes:
            return "/dev/shm"
    except OSError:
        pass
    return None


@contextlib.contextmanager
def _shared_arrays(array: np.ndarray, dtype, shared: bool):
    """(input, output) as the local workers see them.

    Threads share this process's memory: the input itself and a new output array. loky
    workers get memory maps of a copy of the input and of the output (joblib pickles a memory
    map, and any view of one, as a reference to its file), so that neither blocks nor results
    are copied through pipes; the output is copied out of its map at the end. The maps are
    opened by :func:`pipeline.npyfile.map_npy`, not ``np.load``, whose header parse
    (``ast.literal_eval``) is not safe from several threads at once under CPython 3.11.
    """
    if not shared:
        yield array, np.empty(array.shape, dtype=dtype)
        return
    folder = tempfile.mkdtemp(prefix="pipex-blocks-",
                              dir=_shared_folder(array.nbytes + array.size * dtype.itemsize))
    try:
        source = array
        if not isinstance(array, np.memmap):
            mapped = np.lib.format.open_memmap(os.path.join(folder, "input.npy"), mode="w+",
                                               dtype=array.dtype, shape=array.shape)
            mapped[...] = array
            mapped.flush()
            del mapped
            source = map_npy(os.path.join(folder, "input.npy"), mode="r")
        out = np.lib.format.open_memmap(os.path.join(folder, "output.npy"), mode="w+",
                                        dtype=dtype, shape=array.shape)
        del out
        yield source, map_npy(os.path.join(folder, "output.npy"), mode="r+")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def apply_blocks(run, array, reach, chunks=None, *, backend=None, label="blocks",
                 progress=None, should_stop=None):
    """Apply a local function over overlapping blocks of `array` and stitch the cores.

    Parameters
    ----------
    run : callable
        ``run(block, edges) -> ndarray`` of the block's shape (see :class:`Block`).
    array : ndarray, 2D or 3D
    reach : int or tuple of (int or None)
        Overlap per axis (None: axis not cut).
    chunks : int or tuple, optional
        Core shape of the blocks; default :func:`auto_chunks` for the backend's workers.
    backend : Backend, optional
    label : str, optional
        Name in the report.
    progress : callable, optional
        ``progress(done, total)`` after each block (and ``(0, total)`` first).
    should_stop : callable, optional
        Checked after each block; when it returns true, :class:`Cancelled` is raised.

    Returns
    -------
    result : ndarray
    report : RunReport

    Raises
    ------
    Cancelled
        If `should_stop` asked to stop.
    """
    backend = _resolve(backend)
    _check_callable(run, "run", optional=False)
    _check_callable(progress, "progress")
    _check_callable(should_stop, "should_stop")
    array = _check_array(array, "array")
    reach = _normalize_reach(reach, array.ndim)
    t0 = time.perf_counter()
    client = backend.client()
    if chunks is None:
        workers = max(1, sum(client.ncores().values())) if client is not None \
            else backend.jobs
        chunks = auto_chunks(array.shape, reach, workers, array.dtype.itemsize)
    blocks = plan_blocks(array.shape, reach, chunks)
    chunks = _normalize_chunks(chunks, array.shape, reach)
    if client is not None:
        # dask workers may be on other machines: blocks go there, cores come back
        result = {}

        def on_result(index, value):
            out = result.get("out")
            if out is None:
                out = result["out"] = np.empty(array.shape, dtype=value.dtype)
            elif value.dtype != out.dtype:
                raise ValueError(f"blocks gave different dtypes ({out.dtype}, {value.dtype})")
            out[blocks[index].core] = value

        argsets = ((run, array[b.outer], b.edges, b.inner) for b in blocks)
        kind, workers, message, done, cancelled, pids = _run(
            backend, _block_task, argsets, len(blocks), on_result, progress, should_stop)
        out = result.get("out")
    else:
        # local workers write their cores into the output: no result is held or copied, the
        # memory is the output plus one block (and the step's scratch) per worker
        dtype = _probe_dtype(run, array, reach)
        shared = backend.prefer == "processes" and backend.jobs > 1 and len(blocks) > 1
        with _shared_arrays(array, dtype, shared) as (source, target):
            argsets = ((run, source[b.outer], b.edges, b.inner, target, b.core)
                       for b in blocks)
            kind, workers, message, done, cancelled, pids = _run(
                backend, _block_into, argsets, len(blocks), lambda i, v: None, progress,
                should_stop)
            out = np.array(target) if shared and not cancelled else target
    if cancelled:
        raise Cancelled(f"{label}: cancelled after {done} of {len(blocks)} blocks")
    return out, RunReport(
        label=label, backend=kind, blocks=len(blocks), workers=workers,
        seconds=time.perf_counter() - t0, chunks=chunks, reach=reach, done=done, pids=pids,
        message=message)


# --------------------------------------------------------------------------------------------
# Separable steps: 1-D passes over blocks that are whole along the axis they filter


def _pass_rounds(axes, ndim: int):
    """The rounds of blocks for passes along `axes` (in order): the first pass alone, on
    blocks cut across its axis; then the others together, on blocks cut along the first
    pass's axis only (whole along all of theirs). None when that does not hold (an axis
    filtered twice) or an axis would never be cut."""
    axes = tuple(axes)
    if not axes or len(set(axes)) != len(axes) or ndim < 2:
        return None
    rounds = [(axes[:1], tuple(a for a in range(ndim) if a != axes[0]))]
    if len(axes) > 1:
        rounds.append((axes[1:], (axes[0],)))
    return rounds


def _round_reach(ndim: int, cut) -> tuple:
    """A round's reach: 0 (no overlap) on the axes it cuts, None (whole) on the others."""
    return tuple(0 if a in cut else None for a in range(ndim))


def _pass_tiles(core, cut, itemsize: int):
    """The tiles of a block (`core`, slices in array coordinates) for its passes: the block
    cut further along the round's `cut` axes only (never along an axis a pass filters), one
    index thick along each but the last, which is cut to :data:`PASS_TILE_BYTES` of
    `itemsize`; None when a tile one index thick along all of them would be larger than
    :data:`PASS_TILE_MAX_BYTES` (or the round cuts nothing)."""
    cut = sorted(a for a in cut if a < len(core))
    if not cut:
        return None
    extents = [s.stop - s.start for s in core]
    line = itemsize * math.prod(n for a, n in enumerate(extents) if a not in cut)
    if line > PASS_TILE_MAX_BYTES:
        return None
    last = cut[-1]
    step = max(1, min(extents[last], PASS_TILE_BYTES // max(1, line)))
    ranges = []
    for axis, s in enumerate(core):
        if axis == last:
            ranges.append([slice(i, min(i + step, s.stop)) for i in range(s.start, s.stop, step)])
        elif axis in cut:
            ranges.append([slice(i, i + 1) for i in range(s.start, s.stop)])
        else:
            ranges.append([s])
    tiles = [()]
    for options in ranges:
        tiles = [t + (o,) for t in tiles for o in options]
    return tiles


def _staging(shape, dtype):
    """A buffer for tiles of up to `shape`: its last axis padded to an odd number of 64-byte
    lines, so that the rows of a tile (a pass along axis 0 reads one value per row) fall in
    different cache sets rather than all in one as at a power-of-two stride."""
    dtype = np.dtype(dtype)
    lines = -(-shape[-1] * dtype.itemsize // 64)
    lines += 1 - lines % 2
    length = max(shape[-1], lines * 64 // dtype.itemsize)
    return np.empty(tuple(shape[:-1]) + (length,), dtype=dtype)


def _finite(values) -> bool:
    return values.dtype.kind != "f" or bool(np.isfinite(values).all())


def _passes_into(runs, source, out, core, cut=(), check_finite=False):
    """One block of a round: its passes in order, from `source` (the input in the first
    round, else the output itself) into the output's block, as the whole call runs them (the
    first into the output, the next ones in place).

    The block is staged tile by tile (:func:`_pass_tiles`): a tile of `source` is copied as
    it is (same dtype: the pass reads it into doubles as it would read the array) into a
    buffer, the first pass runs from it into a second buffer, the next ones in place there,
    and the tile is copied into the output. Each line a pass filters lies whole in a tile,
    and a pass computes each line on its own from its values: the same values as the whole
    call. A block too large to stage runs its passes on the arrays themselves.

    Returns whether the block's `source` values are all finite (checked tile by tile when
    `check_finite`, else True): the output is shared (threads: the array; loky: a memory
    map of it), nothing else comes back.
    """
    finite = True
    tiles = _pass_tiles(core, cut, out.dtype.itemsize)
    if tiles is None:
        target = out[core]
        values = source[core]
        if check_finite:
            finite = _finite(values)
        for run in runs:
            run(values, target)
            values = target
        return finite
    largest = tuple(max(t[a].stop - t[a].start for t in tiles) for a in range(out.ndim))
    staged_in, staged_out = _staging(largest, source.dtype), _staging(largest, out.dtype)
    for tile in tiles:
        within = tuple(slice(0, s.stop - s.start) for s in tile)
        values, target = staged_in[within], staged_out[within]
        values[...] = source[tile]
        if check_finite and finite:
            finite = _finite(values)
        for run in runs:
            run(values, target)
            values = target
        out[tile] = target
    return finite


def _separable_passes(step, params, array):
    """The step's 1-D passes on `array` (``step.separable``), or why they cannot run: a step
    that declares none, a reason it gives, passes that do not split into rounds of blocks, or
    a version of scipy / scikit-image whose whole call they do not reproduce on a probe."""
    if step.separable is None:
        return "not separable"
    passes = step.separable(array, **params)
    if isinstance(passes, str):
        return passes
    passes = tuple(passes)
    if _pass_rounds([axis for axis, _ in passes], array.ndim) is None:
        return "its passes do not split into rounds of blocks"
    if not _separable_probe(step.key, array.ndim):
        return "its passes differ from the whole call with this scipy / scikit-image"
    return passes


_PROBES: dict = {}


def _separable_probe(key: str, ndim: int) -> bool:
    """Whether a step's passes, run one after the other on a small probe array (fractional
    and integer values, float64 and uint8), give its whole call bit for bit (once per
    process): a guard against a scipy or scikit-image whose whole call changed."""
    from .filters import FILTERS

    found = _PROBES.get((key, ndim))
    if found is None:
        step = FILTERS[key]
        rng = np.random.default_rng(0)
        shape = (11, 9, 13)[:ndim] if ndim == 3 else (23, 19)
        params = step.check({p.name: p.default for p in step.params})
        found = True
        for probe in (rng.random(shape) * 255, rng.integers(0, 256, shape).astype(np.uint8)):
            whole = step.apply(probe.astype(np.float64), **params)
            out = np.empty(shape, dtype=whole.dtype)
            values = probe
            for _, run in step.separable(probe, **params):
                run(values, out)
                values = out
            found = found and out.dtype == whole.dtype and np.array_equal(out, whole)
        _PROBES[(key, ndim)] = found
    return found


def _apply_passes(passes, source, *, dtype=np.float64, chunks=None, backend=None,
                  label="passes", reach=None, progress=None, should_stop=None,
                  check_finite=False):
    """Run 1-D passes (``(axis, run)``, in order) over blocks whole along their axes.

    The first pass runs on blocks cut across its axis (``source`` → the output), the others
    together on blocks cut along the first pass's axis (in place in the output): each block
    holds whole lines along the axes it filters, so there is no overlap and every value is
    computed as in the whole call. Within a block the passes run tile by tile in small
    buffers (:func:`_passes_into`). Local workers only (threads, or loky processes through
    memory maps): the output is written in place between the rounds.

    With `check_finite`, the first round's blocks check that their values of `source` are
    finite as they read them (a filter's input: :func:`pipeline.filters._check_image`),
    instead of a serial pass over the whole array first; :class:`InputError` (the whole
    call's) after that round if one is not.

    Returns (result, report); raises :class:`Cancelled` (no result) if `should_stop` asked.
    """
    backend = _resolve(backend)
    t0 = time.perf_counter()
    ndim = source.ndim
    rounds = _pass_rounds([axis for axis, _ in passes], ndim)
    if rounds is None:
        raise ValueError("passes that do not split into rounds of blocks")
    runs = [run for _, run in passes]
    plans = []
    done_runs = 0
    for axes, cut in rounds:
        round_reach = _round_reach(ndim, cut)
        if chunks is None:
            # blocks without overlap are views (no copy, no scratch beyond scipy's line
            # buffers): cutting them to cache size saved no time (CPU time of the 256³ passes
            # the same in 4 to 32 blocks), and each task costs ~0.4 ms in joblib: a few per
            # worker, for slack on a shared machine
            nbytes = math.prod(source.shape) * np.dtype(dtype).itemsize
            round_chunks = auto_chunks(
                source.shape, round_reach, backend.jobs, np.dtype(dtype).itemsize,
                cache_block_bytes=max(1, nbytes // (PASS_BLOCKS_PER_WORKER * backend.jobs)))
        else:
            round_chunks = chunks
        blocks = plan_blocks(source.shape, round_reach, round_chunks)
        plans.append((axes, tuple(runs[done_runs:done_runs + len(axes)]), blocks,
                      _normalize_chunks(round_chunks, source.shape, round_reach), cut))
        done_runs += len(axes)
    total = sum(len(blocks) for _, _, blocks, _, _ in plans)
    finished = 0
    kinds, workers_seen, pids_seen, message = [], 0, set(), ""
    not_finite = []

    def on_result(index, finite):
        if not finite:
            not_finite.append(index)

    def round_progress(done, n):
        if progress is not None and (done or not finished):
            progress(finished + done, total)

    shared = backend.prefer == "processes" and backend.jobs > 1 and total > len(plans)
    with _shared_arrays(source, np.dtype(dtype), shared) as (src, target):
        for k, (axes, round_runs, blocks, _, cut) in enumerate(plans):
            values = src if k == 0 else target
            check = check_finite and k == 0
            argsets = ((round_runs, values, target, b.core, cut, check) for b in blocks)
            kind, workers, message, done, cancelled, pids = _run(
                backend, _passes_into, argsets, len(blocks), on_result,
                round_progress, should_stop)
            finished += done
            kinds.append(kind)
            workers_seen = max(workers_seen, workers)
            pids_seen.update(pids)
            if cancelled:
                raise Cancelled(f"{label}: cancelled after {finished} of {total} blocks "
                                f"(round {k + 1} of {len(plans)})")
            if not_finite:
                from .filters import _NOT_FINITE

                raise InputError(_NOT_FINITE)
        out = np.array(target) if shared else target
    kind = next((k for k in kinds if k not in ("sequential", "none")), kinds[0])
    return out, RunReport(
        label=label, backend=kind, blocks=total, workers=workers_seen,
        seconds=time.perf_counter() - t0, chunks=plans[0][3], reach=reach, done=finished,
        pids=tuple(sorted(pids_seen)), message=message,
        passes=tuple((axes, len(blocks), chunks_) for axes, _, blocks, chunks_, _ in plans))


def _check_array(array, name: str) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise InputError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.ndim not in (2, 3) or array.size == 0:
        raise InputError(f"{name} must be a non-empty 2D image or 3D volume, got shape "
                         f"{array.shape}")
    return array


# --------------------------------------------------------------------------------------------
# Steps


def _lookup_step(step):
    from .filters import FILTERS
    from .postprocess import POSTPROCESS
    from .steps import Step

    if isinstance(step, Step):
        if step.stage not in ("filter", "postprocess"):
            raise InputError(f"step: {step.label} is a {step.stage} step; apply_step runs "
                             "filters and post-processing steps")
        return step
    if isinstance(step, str):
        found = FILTERS.get(step) or POSTPROCESS.get(step)
        if found is None:
            raise InputError(f"step: unknown step {step!r}; choose among "
                             f"{', '.join(list(FILTERS) + list(POSTPROCESS))}")
        return found
    raise InputError(f"step must be a pipeline.steps.Step or a step name, "
                     f"got {type(step).__name__}")


def apply_step(step, params, array, *, backend=None, chunks=None, progress=None,
               should_stop=None):
    """Run a filter or post-processing step, over blocks when that is exact and pays.

    Parameters
    ----------
    step : Step or str
        A step of :data:`pipeline.filters.FILTERS` or :data:`pipeline.postprocess.POSTPROCESS`
        (or its key).
    params : dict or None
        Its parameters (checked; missing ones take their defaults).
    array : ndarray, 2D or 3D
        A filter's input is float64 (as :func:`pipeline.recipe.filter_stage` makes it); a
        post-processing step's is the mask or labels it works on.
    backend : Backend, optional
        Where blocks run (default: a local :class:`Backend`).
    chunks : int or tuple, optional
        Core shape of the blocks. Given, it forces blockwise execution of a local step even
        on a small array; by default a local step is cut (:func:`auto_chunks`) only when the
        array has at least ``backend.min_pixels`` pixels and there are several workers.
    progress : callable, optional
        ``progress(done, total)`` as blocks finish.
    should_stop : callable, optional
        Checked after each block; when it returns true, :class:`Cancelled` is raised.

    Returns
    -------
    result : ndarray
        Identical (values and dtype) to ``step.apply(array, **params)``.
    report : RunReport

    Raises
    ------
    InputError
        For a bad step, parameters, array or option, or what the step itself raises.
    Cancelled
        If `should_stop` asked to stop.
    """
    from . import filters as _filters

    step = _lookup_step(step)
    if params is not None and not isinstance(params, dict):
        raise InputError(f"{step.label}: parameters must be a mapping such as "
                         f"{step.defaults()}, got {params!r}")
    params = step.check(params)
    backend = _resolve(backend)
    _check_callable(progress, "progress")
    _check_callable(should_stop, "should_stop")
    filtering = step.stage == "filter"
    if filtering:
        # finiteness: checked by the separable passes' blocks as they read them, else below
        array = _filters._check_image(array, finite=False)
    else:
        array = _check_array(array, "array")
    reach = step.reach_per_axis(params, array.ndim)
    message = ""
    run = None
    blockwise = False
    if reach is None:
        message = "not local: runs whole"
    elif all(r is None for r in reach):
        message = "no axis can be cut"
    elif not _cutting_pays(array, chunks, backend):
        message = ""  # small, or one worker: splitting would not pay
    else:
        blockwise = True
        passes = _local_passes(step, params, array, backend)
        if passes is not None:
            return _apply_passes(passes, array, dtype=np.float64, chunks=chunks,
                                 backend=backend, label=step.label, reach=reach,
                                 progress=progress, should_stop=should_stop,
                                 check_finite=filtering)
    if filtering:
        _filters._check_image(array)  # the NaN check the passes' blocks make as they read
    if blockwise:
        if step.blocks is not None:
            run = step.blocks(array, **params)
            if isinstance(run, str):
                message, run = f"blockwise not exact: {run}; ran whole", None
        else:
            run = _ApplyBlock(step.apply, params)
    if run is None:
        t0 = time.perf_counter()
        if progress is not None:
            progress(0, 1)
        result = step.apply(array, **params)
        seconds = time.perf_counter() - t0
        if progress is not None:
            progress(1, 1)
        return result, RunReport(label=step.label, backend="whole", blocks=1, workers=1,
                                 seconds=seconds, reach=reach, done=1, pids=(os.getpid(),),
                                 message=message)
    result, report = apply_blocks(run, array, reach, chunks, backend=backend,
                                  label=step.label, progress=progress, should_stop=should_stop)
    return result, report


def _cutting_pays(array, chunks, backend) -> bool:
    """Whether a local step runs over blocks: `chunks` given, or an array of at least
    ``backend.min_pixels`` pixels and several workers (or a dask scheduler)."""
    return chunks is not None or (array.size >= backend.min_pixels and
                                  (backend.jobs > 1 or backend.dask_address is not None))


def _local_passes(step, params, array, backend):
    """A separable step's passes when they run here (:func:`_apply_passes`): local workers
    (a dask scheduler gets the overlapping blocks, which travel whole), an array of
    :data:`SEPARABLE_NDIM` dimensions, passes that reproduce the whole call; else None."""
    if step.separable is None or array.ndim not in SEPARABLE_NDIM or \
            backend.client() is not None:
        return None
    passes = _separable_passes(step, params, array)
    if isinstance(passes, str):
        if "differ" in passes:
            log.warning("%s: %s; ran over overlapping blocks", step.label, passes)
        return None
    return passes


@dataclass(frozen=True)
class _ApplyBlock:
    """``apply(block, **params)``: a picklable block function for steps without ``blocks``."""

    apply: Callable
    params: dict = field(default_factory=dict)

    def __call__(self, block, edges):
        return self.apply(block, **self.params)


# --------------------------------------------------------------------------------------------
# Stages


def filter_stage(image, recipe, *, backend=None, progress=None, should_stop=None):
    """:func:`pipeline.recipe.filter_stage` through :func:`apply_step`.

    Returns
    -------
    filtered : ndarray of float64
        Identical to ``pipeline.recipe.filter_stage(image, recipe)``.
    reports : list of RunReport
        One (the filter's).
    """
    from . import recipe as _recipe

    recipe = _recipe.validate(recipe)
    image = np.asarray(image)
    if image.dtype.kind not in "biuf":
        raise InputError(f"filter: the image must hold real numbers, got {image.dtype}")
    _recipe.check_cost(recipe, image.shape)  # refused before any work (issue 11)
    section = recipe["filter"]
    backend = _resolve(backend)
    direct = _direct_stage(image, section, backend, progress, should_stop)
    if direct is not None:
        return direct
    result, report = apply_step(section["name"], section["params"], image.astype(np.float64),
                                backend=backend, progress=progress, should_stop=should_stop)
    return result, [report]


def _direct_stage(image, section, backend, progress, should_stop):
    """The filter stage over blocks without the image's float64 copy, when that is exact:
    a separable filter on a volume as its passes (:func:`_local_passes`), whose first reads
    the image as it is (uint8, float32, ...: scipy reads each line into doubles, the values of
    ``image.astype(np.float64)``); a local filter whose blocks need nothing of the whole array
    (no ``Step.blocks``: the Gaussian on an image, the median) over overlapping blocks, each
    converted to float64 in its worker. No converted copy is made: a whole pass and a whole
    float64 array less. None otherwise (the caller converts the image and runs
    :func:`apply_step`, which also raises what the whole call raises for a bad image)."""
    from .filters import FILTERS

    step = FILTERS.get(section["name"])
    if step is None or image.dtype not in _DIRECT_DTYPES or image.ndim not in (2, 3) or \
            image.size == 0:
        return None
    params = step.check(section["params"])
    reach = step.reach_per_axis(params, image.ndim)
    if reach is None or all(r is None for r in reach) or \
            not _cutting_pays(image, None, backend):
        return None
    _check_callable(progress, "progress")
    _check_callable(should_stop, "should_stop")
    passes = _local_passes(step, params, image, backend)
    if passes is None and step.blocks is not None:
        return None  # its blocks need the whole float64 array (its checks, global values)
    if passes is not None:
        # a NaN or an infinity: the blocks of the first round see it, InputError as the
        # whole path's
        result, report = _apply_passes(passes, image, dtype=np.float64, backend=backend,
                                       label=step.label, reach=reach, progress=progress,
                                       should_stop=should_stop, check_finite=True)
    else:
        if image.dtype.kind == "f" and not np.isfinite(image).all():
            return None  # (a NaN or an infinity: the whole path says so)
        # the blocks the float64 image would get (auto_chunks counts bytes of the input)
        client = backend.client()
        workers = max(1, sum(client.ncores().values())) if client is not None else \
            backend.jobs
        chunks = auto_chunks(image.shape, reach, workers, np.dtype(np.float64).itemsize)
        result, report = apply_blocks(_ConvertedBlock(step.apply, params), image, reach,
                                      chunks, backend=backend, label=step.label,
                                      progress=progress, should_stop=should_stop)
    return result, [report]


@dataclass(frozen=True)
class _ConvertedBlock:
    """``apply(block.astype(np.float64), **params)``: a block of the loaded image converted
    in its worker (the filter stage's conversion is elementwise: the same values as the
    block of the converted image)."""

    apply: Callable
    params: dict = field(default_factory=dict)

    def __call__(self, block, edges):
        return self.apply(block.astype(np.float64), **self.params)


#: Image dtypes the filter stage reads as they are (:func:`_direct_stage`; scipy.ndimage
#: reads each line into doubles: the same values as the float64 copy); others (float16,
#: non-native byte order) are converted first.
_DIRECT_DTYPES = frozenset(np.dtype(t) for t in (
    "bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
    "float32", "float64"))


def postprocess_stage(mask, recipe, *, backend=None, should_stop=None):
    """:func:`pipeline.recipe.postprocess_stage` through :func:`apply_step`.

    Closing and opening may run blockwise; the other operations run whole.

    Returns
    -------
    labels : ndarray of int32
        Identical to ``pipeline.recipe.postprocess_stage(mask, recipe)``.
    reports : list of RunReport
        One per operation.
    """
    from . import postprocess as _postprocess
    from . import recipe as _recipe

    recipe = _recipe.validate(recipe)
    steps = _postprocess._check_ops(recipe["postprocess"])
    array = _postprocess._check_mask(np.asarray(mask))
    _recipe.check_cost(recipe, array.shape)
    reports = []
    for step, params in steps:
        array, report = apply_step(step, params, array, backend=backend,
                                   should_stop=should_stop)
        reports.append(report)
    return array.astype(np.int32, copy=False), reports


# --------------------------------------------------------------------------------------------
# Items


def _guarded(fn, item):
    """``fn(item)``, or a :class:`Failed` naming what it raised."""
    try:
        return fn(item)
    except InputError as exc:
        return Failed(str(exc))
    except MemoryError:
        return Failed("not enough memory")
    except Exception as exc:  # noqa: BLE001 - one failing item must not stop the others
        return Failed(f"{type(exc).__name__}: {exc}")


def map_items(fn, items, *, backend=None, label="batch", progress=None, should_stop=None,
              on_error="raise", on_result=None, total=None):
    """``[fn(item) for item in items]``, in parallel on the backend.

    Parameters
    ----------
    fn : callable
        ``fn(item)``. With loky processes or dask it must be picklable (a module-level
        function, or a closure cloudpickle can send).
    items : iterable
        The items (images of a batch, cells of a sweep, ...). A sequence, or any iterable
        when `total` is given: it is then consumed lazily, a few items ahead of the workers
        (e.g. a generator reading files one by one).
    backend : Backend, optional
    label : str, optional
        Name in the report.
    progress : callable, optional
        ``progress(done, total)``, called in this thread with ``(0, total)`` first and after
        each item (items finish in any order).
    should_stop : callable, optional
        Checked after each item; when it returns true no further item is started, running
        ones are abandoned, and their slots hold ``Failed("cancelled", kind="cancelled")``.
    on_error : {'raise', 'return'}
        ``'raise'``: the first exception propagates. ``'return'``: a failing item's slot holds
        a :class:`Failed` with the reason and the others still run.
    on_result : callable, optional
        ``on_result(index, value)``, called in this thread as each item finishes (in any
        order), e.g. to write its output at once; what it raises propagates.
    total : int, optional
        The number of items, for an iterable without ``len``.

    Returns
    -------
    results : list
        In the order of `items`.
    report : RunReport
        ``blocks`` is the number of items; ``done``, ``failed`` and ``cancelled`` say how far
        it went.
    """
    backend = _resolve(backend)
    _check_callable(fn, "fn", optional=False)
    _check_callable(progress, "progress")
    _check_callable(should_stop, "should_stop")
    if on_error not in ("raise", "return"):
        raise InputError(f"on_error must be 'raise' or 'return', got {on_error!r}")
    _check_callable(on_result, "on_result")
    if total is None:
        try:
            items = list(items)
        except TypeError:
            raise InputError(f"items must be a sequence, got {type(items).__name__}") from None
        n = len(items)
    else:
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise InputError(f"total must be a whole number >= 0, got {total!r}")
        if not hasattr(items, "__iter__"):
            raise InputError(f"items must be iterable, got {type(items).__name__}")
        n = total
    results: list[Any] = [Failed("cancelled", kind="cancelled")] * n
    t0 = time.perf_counter()
    if n == 0:
        return [], RunReport(label=label, backend="none", blocks=0, workers=0, seconds=0.0)

    def store(index, value):
        results[index] = value
        if on_result is not None:
            on_result(index, value)

    call = _GuardedCall(fn) if on_error == "return" else fn
    argsets = ((call, item) for _, item in zip(range(n), items))
    kind, workers, message, done, cancelled, pids = _run(
        backend, _call, argsets, n, store, progress, should_stop, items=True)
    failed = sum(isinstance(r, Failed) and r.kind == "error" for r in results)
    return results, RunReport(label=label, backend=kind, blocks=n, workers=workers,
                              seconds=time.perf_counter() - t0, done=done, failed=failed,
                              cancelled=cancelled, pids=pids, message=message)


def _call(fn, item):
    return fn(item)


@dataclass(frozen=True)
class _GuardedCall:
    fn: Callable

    def __call__(self, item):
        return _guarded(self.fn, item)
