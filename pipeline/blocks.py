"""The random walker solved by overlapping blocks, for images above the memory budget.

A whole random-walker solve needs :func:`pipeline.randomwalker.estimate_bytes` of memory
(≈ 300 bytes per pixel for ``'cg_mg'``). When that is above the budget of one job
(``PIPEX_MAX_JOB_GB``), the image is cut into blocks (:func:`plan_blocks`) whose solves fit:

* **Blocks.** The block cores tile the image (:func:`pipeline.parallel.plan_blocks`; the last
  block of an axis may be smaller). Each block is solved with a margin of ``margin`` pixels
  (voxels) of context on every side not at the image's edge, and only its core is kept: a
  pixel's label then comes from a solve that saw at least ``margin`` pixels around it. The
  core size is the largest for which :data:`BLOCKS_IN_FLIGHT` blocks with their margins, plus
  the whole-image arrays of the job (:data:`IMAGE_BYTES_PER_PIXEL`), fit the budget (one block
  at a time if two would leave cores narrower than twice the margin); the cores are then
  evened out (``ceil(n / blocks)`` per axis).
* **The same solve as a whole one, per block.** A block's graph is built by
  :func:`pipeline.randomwalker.build_graph` with the *whole* image's standard deviation (the
  edge weights are those of the whole image's graph) and solved by
  :func:`pipeline.randomwalker.solve` with the same mode, beta and tol: a block's labels are
  exactly what a whole solve of that block gives, and a plan of one block (an image that
  fits) gives the whole solve's labels bit for bit.
* **Blocks without markers of both labels.** A block whose region (core and margin) holds
  markers of one label only takes that label for its undecided pixels (the random walker's
  answer when only one label can be reached). A block with no marker at all takes its
  neighbours' answer: once every block with markers is decided, it is solved with the
  labels its margin received from the neighbouring cores as markers (a walker leaving the
  block meets what the neighbours decided), pass after pass outwards from the decided
  blocks: a pass takes the blocks whose margin a decided core reaches, each sees the cores
  decided *before* the pass only (so that fronts coming from both labels meet in the
  middle, and the result does not depend on the order blocks finish in); one label in its
  margin gives that label, both a solve. The image holds markers of both labels, so every
  block is reached.
* **Parallel, within the budget.** The first pass runs on local threads
  (:func:`pipeline.parallel.map_items`), at most as many at once as fit the budget
  (:attr:`BlockPlan.in_flight`); every block writes its core into the result in place.
* **Cancellable between blocks** (``should_stop``, also asked inside each solve's
  conjugate-gradient iterations) and reporting ``progress("blocks", done / total)``.
* **Agreement measured.** The whole solve of a big image does not fit; :func:`agreement`
  solves, whole, a window as large as the budget allows (at most a quarter of the image, at
  least one block), centred on the block corner nearest the image's centre (so that the
  seams cross it), and compares it with the blockwise labels on the window's inner part (the
  window shrunk by the margin where it is not at the image's edge: there the window's own
  solve lacks context). The fraction of equal labels, of all pixels and of the undecided
  ones, is reported with the result (:class:`BlockReport`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import parallel
from . import randomwalker as rw
from .errors import Cancelled, InputError

__all__ = [
    "BLOCKS_IN_FLIGHT",
    "DEFAULT_MARGIN",
    "IMAGE_BYTES_PER_PIXEL",
    "BlockPlan",
    "BlockReport",
    "agreement",
    "needs_blocks",
    "plan_blocks",
    "random_walker_blocks",
    "undecided_scale",
]

#: Bytes per pixel of the *whole* image a blockwise job holds beside its blocks: the markers
#: (1), the labels (1), the object mask (1) and one spare (a comparison's temporary). The
#: image itself is read block by block (from the cache's memory map, in the app) and never
#: converted whole.
IMAGE_BYTES_PER_PIXEL = 4
#: Context around each block's core, pixels (2D) or voxels (3D), by dimension. With these,
#: measured against whole solves (2026-12-01, 'cg_mg' unless said): coins upscaled 4x
#: (1212 × 1536, 12 blocks) 99.89 % of pixels; noisy 2048² synthetics and camera (9 blocks)
#: 99.998-99.9999 % ('cg_j' 99.999 %); 4096² (9 blocks) 99.9999 %; 160³ (27 blocks of 54³)
#: 99.9999 %; markers from scribbles only on 2048² (16 blocks, one without markers)
#: 99.92 %.
DEFAULT_MARGIN = {2: 64, 3: 16}
#: Blocks solved at once when the budget allows cores of at least twice the margin.
BLOCKS_IN_FLIGHT = 2
#: Share of the budget the plan's estimate may use. The per-pixel estimate is the growth of
#: a fresh process's peak memory for one whole solve; blocks solved in two threads one after
#: the other grew the peak by up to 1.43x the plan's estimate (coins upscaled 4x, 256 MB
#: budget: +302 MB for an estimate of 211 MB; 0.3-0.8x on 2048², 4096² and 160³): freed
#: blocks' memory is not all returned at once. Planning for 70 % keeps the peak below the
#: budget.
BUDGET_SHARE = 0.7
#: Narrowest core (pixels per axis) a plan may use before it refuses.
MIN_CORE = 8
#: Narrowest default margin a tight budget may bring it down to (:func:`plan_blocks`).
MIN_MARGIN = 4
#: The agreement window holds at most this fraction of the image's pixels (its whole solve
#: is extra work: a quarter keeps it near a quarter of the blockwise solve's time).
WINDOW_FRACTION = 0.25


def _percent(fraction) -> str:
    """``99.8 %``; never ``100.0 %`` for a fraction below 1 (``99.97 %``, ``> 99.99 %``)."""
    text = f"{100 * fraction:.1f}"
    if fraction < 1 and text == "100.0":
        text = f"{100 * fraction:.2f}"
        if text == "100.00":
            return "> 99.99 %"
    return f"{text} %"


def _size_text(shape) -> str:
    """``1024²``, ``64³`` or ``60 × 512 × 512``."""
    shape = tuple(int(s) for s in shape)
    if len(set(shape)) == 1:
        return f"{shape[0]}{'²' if len(shape) == 2 else '³'}"
    return " × ".join(map(str, shape))


@dataclass(frozen=True)
class BlockPlan:
    """How an image is cut for a blockwise random walker (:func:`plan_blocks`).

    Attributes
    ----------
    shape : tuple of int
        The image's shape.
    mode : str
        The random walker's solver.
    chunks : tuple of int
        Core shape of the blocks (the last block of an axis may be smaller).
    margin : int
        Context around each core, on every side not at the image's edge.
    blocks : tuple of pipeline.parallel.Block
        The blocks, in C order of their cores.
    in_flight : int
        Blocks solved at once.
    block_bytes : int
        Estimated peak memory of the largest block's solve.
    peak_bytes : int
        Estimated peak of the job: the whole image's arrays plus `in_flight` blocks (at most
        :data:`BUDGET_SHARE` of the budget when the plan chose the blocks).
    budget_bytes : int or None
        The budget the plan was made for.
    """

    shape: tuple
    mode: str
    chunks: tuple
    margin: int
    blocks: tuple
    in_flight: int
    block_bytes: int
    peak_bytes: int
    budget_bytes: int | None

    @property
    def n_blocks(self) -> int:
        """Number of blocks."""
        return len(self.blocks)

    def key(self) -> dict:
        """What the result depends on besides the image, markers and solver (a cache key)."""
        return {"chunks": list(self.chunks), "margin": self.margin,
                "budget": self.budget_bytes, "version": 1}


@dataclass(frozen=True)
class BlockReport:
    """How a blockwise solve ran, and how well it agrees with a whole solve.

    Attributes
    ----------
    blocks : int
        Blocks the image was cut into.
    chunks : tuple of int
        Core shape of the blocks.
    margin : int
        Context around each core.
    in_flight : int
        Blocks solved at once.
    peak_bytes : int
        Estimated peak memory of the job.
    budget_bytes : int or None
        The budget.
    solved : int
        Blocks solved with their own markers.
    one_label : int
        Blocks whose region held markers of one label only (that label taken).
    from_neighbours : int
        Blocks without any marker, solved with their neighbours' labels as markers.
    markers_only : int
        Blocks whose core was all markers (nothing to solve).
    seconds : float
        Wall-clock time of the blockwise solve (without the agreement).
    agreement : dict or None
        :func:`agreement`'s measurement, or None if not measured.
    """

    blocks: int
    chunks: tuple
    margin: int
    in_flight: int
    peak_bytes: int
    budget_bytes: int | None
    solved: int = 0
    one_label: int = 0
    from_neighbours: int = 0
    markers_only: int = 0
    seconds: float = 0.0
    agreement: dict | None = field(default=None)

    def as_dict(self) -> dict:
        """A JSON-able dict (cached with the result)."""
        out = asdict(self)
        out["chunks"] = list(self.chunks)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> BlockReport:
        """The report of :meth:`as_dict` (unknown keys dropped)."""
        known = set(cls.__dataclass_fields__)
        data = {k: v for k, v in dict(data).items() if k in known}
        data["chunks"] = tuple(data.get("chunks", ()))
        return cls(**data)

    def summary(self, ndim: int | None = None) -> str:
        """One line for people, e.g. ``solved in 12 blocks of 1024² with 64 px overlap
        (image above the 2.0 GB per-job limit); agreement with a whole solve on a 2048²
        window: 99.8 % of pixels (99.1 % of the undecided)``."""
        ndim = len(self.chunks) if ndim is None else ndim
        unit = "voxel" if ndim == 3 else "px"
        text = (f"solved in {self.blocks} block{'s' if self.blocks != 1 else ''} of "
                f"{_size_text(self.chunks)} with {self.margin} {unit} overlap")
        if self.budget_bytes is not None:
            text += f" (image above the {rw.memory_text(self.budget_bytes)} per-job limit)"
        a = self.agreement
        if a:
            text += (f"; agreement with a whole solve on a {_size_text(a['window'])} window: "
                     f"{_percent(a['pixels'])} of pixels")
            if a.get("undecided") is not None:
                text += f" ({_percent(a['undecided'])} of the undecided)"
        else:
            text += "; agreement with a whole solve not measured"
        return text


# --------------------------------------------------------------------------- checks


def _check_shape(shape):
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be 2 or 3 positive lengths, got {shape!r}") from None
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise InputError(f"shape must be 2 or 3 positive lengths, got {shape}")
    return shape


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _check_budget(budget_bytes):
    if budget_bytes is None:
        return None
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, (int, float, np.number)) \
            or not math.isfinite(budget_bytes) or budget_bytes <= 0:
        raise InputError(f"budget_bytes must be a positive number of bytes (or None), "
                         f"got {budget_bytes!r}")
    return int(budget_bytes)


def _check_chunks(chunks, shape):
    if isinstance(chunks, (int, np.integer)) and not isinstance(chunks, bool):
        chunks = (int(chunks),) * len(shape)
    try:
        chunks = tuple(chunks)
    except TypeError:
        raise InputError(f"chunks must be a whole number or one per axis, got {chunks!r}") \
            from None
    if len(chunks) != len(shape):
        raise InputError(f"chunks must have one size per axis ({len(shape)}), got {chunks!r}")
    return tuple(min(_check_int("chunks", c, 1), n) for c, n in zip(chunks, shape))


# --------------------------------------------------------------------------- plan


def needs_blocks(shape, mode, budget_bytes) -> bool:
    """Whether a whole solve of an image of `shape` is above `budget_bytes` (None: never).

    Parameters
    ----------
    shape : tuple of int
        The image's shape.
    mode : {'cg_mg', 'cg_j', 'bf'}
        The random walker's solver.
    budget_bytes : int or None
        Memory one job may take.
    """
    budget_bytes = _check_budget(budget_bytes)
    return budget_bytes is not None and rw.estimate_bytes(_check_shape(shape), mode) \
        > budget_bytes


def _outer(shape, chunks, margin):
    """The largest block (core and margin) of a plan, per axis."""
    return tuple(min(n, c + 2 * margin) for n, c in zip(shape, chunks))


def _largest_core(shape, mode, room, margin):
    """The largest cubic core (clipped to the shape) whose block fits `room` bytes, or 0."""
    lo, hi = 0, max(shape)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        chunks = tuple(min(n, mid) for n in shape)
        if rw.estimate_bytes(_outer(shape, chunks, margin), mode) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo


def plan_blocks(shape, mode="cg_mg", budget_bytes=None, *, margin=None, chunks=None,
                workers=BLOCKS_IN_FLIGHT) -> BlockPlan:
    """Cut an image of `shape` into overlapping blocks whose random-walker solves fit.

    Parameters
    ----------
    shape : tuple of int
        Shape of the 2D image or 3D volume.
    mode : {'cg_mg', 'cg_j', 'bf'}, optional
        The random walker's solver (its bytes per pixel, :data:`pipeline.randomwalker.BYTES_PER_PIXEL`).
    budget_bytes : int, optional
        Memory the whole job may take. Required unless `chunks` is given.
    margin : int, optional
        Context around each core (default :data:`DEFAULT_MARGIN` for the dimension, halved
        down to :data:`MIN_MARGIN` while a budget too tight for it would leave cores
        narrower than twice the margin).
    chunks : int or tuple of int, optional
        Core shape; default the largest that fits the budget (see the module docstring).
    workers : int, optional
        Most blocks solved at once (the plan may allow fewer: the budget).

    Returns
    -------
    BlockPlan

    Raises
    ------
    InputError
        If an argument is invalid, neither `budget_bytes` nor `chunks` is given, or not even
        one block of :data:`MIN_CORE` pixels per axis fits the budget beside the whole
        image's arrays (the message says how much is needed).
    """
    shape = _check_shape(shape)
    mode = rw._check_mode(mode)
    budget_bytes = _check_budget(budget_bytes)
    ndim = len(shape)
    default_margin = margin is None
    margin = DEFAULT_MARGIN[ndim] if margin is None else _check_int("margin", margin, 0)
    workers = _check_int("workers", workers, 1)
    overhead = IMAGE_BYTES_PER_PIXEL * math.prod(shape)
    if chunks is None:
        if budget_bytes is None:
            raise InputError("plan_blocks needs budget_bytes or chunks")
        room = BUDGET_SHARE * budget_bytes - overhead
        core = 0
        for k in range(max(workers, 1), 0, -1):
            core = _largest_core(shape, mode, room / k, margin) if room > 0 else 0
            if core >= max(2 * margin, MIN_CORE) or core >= max(shape) or k == 1:
                break
        # a budget so tight that one block's core would be narrower than twice the default
        # margin: a narrower margin (down to MIN_MARGIN) rather than blocks mostly margin
        while default_margin and margin > MIN_MARGIN and core < 2 * margin \
                and core < max(shape) and room > 0:
            margin = max(MIN_MARGIN, margin // 2)
            core = _largest_core(shape, mode, room, margin)
        if core < min(MIN_CORE, max(shape)):
            smallest = tuple(min(n, MIN_CORE) for n in shape)
            need = (overhead + rw.estimate_bytes(_outer(shape, smallest, margin), mode)) \
                / BUDGET_SHARE
            raise InputError(
                f"Random walker ({mode}) by blocks on {' × '.join(map(str, shape))} "
                f"{'voxels' if ndim == 3 else 'pixels'} needs at least ≈ "
                f"{rw.memory_text(need)} (the image's own arrays and one block), above this "
                f"server's limit of {rw.memory_text(budget_bytes)} per job (PIPEX_MAX_JOB_GB). "
                f"Crop or downsample the image.")
        counts = [-(-n // min(n, core)) for n in shape]
        chunks = tuple(-(-n // c) for n, c in zip(shape, counts))  # evened out
    else:
        chunks = _check_chunks(chunks, shape)
    blocks = tuple(parallel.plan_blocks(shape, margin, chunks))
    block_bytes = rw.estimate_bytes(_outer(shape, chunks, margin), mode)
    in_flight = min(workers, len(blocks))
    if budget_bytes is not None:
        usable = BUDGET_SHARE * budget_bytes
        fit = int((usable - overhead) // block_bytes) if usable > overhead else 0
        in_flight = max(1, min(in_flight, fit))
    return BlockPlan(shape=shape, mode=mode, chunks=chunks, margin=margin, blocks=blocks,
                     in_flight=in_flight, block_bytes=int(block_bytes),
                     peak_bytes=int(overhead + in_flight * block_bytes),
                     budget_bytes=budget_bytes)


# --------------------------------------------------------------------------- solve


def _fill(labels_core, markers_core, label):
    out = np.where(markers_core == 0, label, markers_core).astype(np.uint8)
    labels_core[...] = out


class _BlockSolver:
    """Solves one block of a plan into `labels` (threads: cores are disjoint)."""

    def __init__(self, image, scale, lab, labels, plan, beta, mode, tol, spacing, std,
                 should_stop):
        self.image, self.scale, self.lab, self.labels, self.plan = image, scale, lab, labels, plan
        self.beta, self.mode, self.tol, self.spacing, self.std = beta, mode, tol, spacing, std
        self.should_stop = should_stop

    def solve_region(self, outer, markers):
        graph = rw.build_graph(_region(self.image, outer, self.scale), beta=self.beta,
                               spacing=self.spacing, std=self.std)
        return rw.solve(graph, markers, mode=self.mode, tol=self.tol,
                        should_stop=self.should_stop)

    def __call__(self, index):
        """Solve block `index` from its own markers: 'solved', 'one_label',
        'markers_only' or 'deferred' (no marker in its region)."""
        block = self.plan.blocks[index]
        core_markers = self.lab[block.core]
        if not (core_markers == 0).any():
            self.labels[block.core] = core_markers
            return "markers_only"
        markers = self.lab[block.outer]
        has_bg = bool((markers == rw.BACKGROUND).any())
        has_obj = bool((markers == rw.OBJECT).any())
        if has_bg and has_obj:
            self.labels[block.core] = self.solve_region(block.outer, markers)[block.inner]
            return "solved"
        if has_bg or has_obj:
            _fill(self.labels[block.core], core_markers,
                  rw.BACKGROUND if has_bg else rw.OBJECT)
            return "one_label"
        return "deferred"

    def _ring(self, index):
        """(outer, inner) of a block without markers: its region with at least one pixel of
        margin, so that its neighbours' labels reach it even with ``margin=0``."""
        block = self.plan.blocks[index]
        width = max(self.plan.margin, 1)
        outer = tuple(slice(max(0, c.start - width), min(n, c.stop + width))
                      for c, n in zip(block.core, self.plan.shape))
        inner = tuple(slice(c.start - o.start, c.stop - o.start)
                      for c, o in zip(block.core, outer))
        return outer, inner

    def from_neighbours(self, item):
        """Solve a block without markers from the labels its margin received from the
        neighbouring cores decided before this pass (`item`: the block's index and the
        indices of the blocks decided in this pass, whose cores are ignored)."""
        index, this_pass = item
        block = self.plan.blocks[index]
        outer, inner = self._ring(index)
        markers = np.array(self.labels[outer])
        for other in this_pass:  # as before the pass, whatever ran first
            hit = _intersect(self.plan.blocks[other].core, outer)
            if hit is not None:
                markers[hit] = 0
        markers[inner] = 0
        has_bg = bool((markers == rw.BACKGROUND).any())
        has_obj = bool((markers == rw.OBJECT).any())
        if has_bg and has_obj:
            self.labels[block.core] = self.solve_region(outer, markers)[inner]
        else:
            self.labels[block.core] = rw.BACKGROUND if has_bg else rw.OBJECT
        return "from_neighbours"

    def reached(self, index):
        """Whether a neighbouring core decided so far reaches this block's margin."""
        return bool(self.labels[self._ring(index)[0]].any())


def _intersect(core, outer):
    """`core` (image coordinates) within the region `outer`, as slices of it; None if they
    do not meet."""
    out = []
    for c, o in zip(core, outer):
        lo, hi = max(c.start, o.start), min(c.stop, o.stop)
        if lo >= hi:
            return None
        out.append(slice(lo - o.start, hi - o.start))
    return tuple(out)


def _check_source(image):
    """The image as an array (not converted: blocks are converted one by one)."""
    if isinstance(image, np.ndarray):
        arr = image
    else:
        try:
            arr = np.asarray(image)
        except Exception:  # noqa: BLE001  # pragma: no cover - exotic array-likes
            raise InputError("image must be an array of numbers") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                   or arr.dtype == np.bool_):
        raise InputError(f"image must be an array of real numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError("image must be real-valued, got a complex array")
    if arr.ndim not in (2, 3):
        raise InputError(f"image must be a 2D image or a 3D volume (grayscale), got "
                         f"{arr.ndim} dimension(s) with shape {arr.shape}")
    if arr.size < 2:
        raise InputError(f"image must have at least 2 pixels, got shape {arr.shape}")
    return arr


def _region(image, region, scale):
    """A region of the image as the whole solve sees it: ``image / scale`` converted by
    :func:`pipeline.randomwalker.build_graph`'s rules (float64)."""
    part = np.asarray(image[region])
    if scale is not None:
        part = part / scale
    return rw._check_image(part)


#: Rows (of axis 0) converted at a time when the whole image's standard deviation is
#: computed (the image is never converted whole).
_STD_SLAB_PIXELS = 2**22


def _whole_std(image, scale):
    """Standard deviation of the converted image, slab by slab (two passes, float64)."""
    n = image.size
    step = max(1, _STD_SLAB_PIXELS // max(1, n // image.shape[0]))
    slabs = [slice(i, min(i + step, image.shape[0])) for i in range(0, image.shape[0], step)]
    if len(slabs) == 1:
        return float(_region(image, slabs[0], scale).std())
    total = sum(float(_region(image, s, scale).sum()) for s in slabs)
    mean = total / n
    squares = sum(float(((_region(image, s, scale) - mean) ** 2).sum()) for s in slabs)
    return math.sqrt(squares / n)


def _prepare(image, markers, beta, mode, tol, spacing, std, scale):
    image = _check_source(image)
    lab, _ = rw._check_markers(markers, image.shape)
    lab = lab.reshape(image.shape)
    beta = rw._number("beta", beta, positive=True)
    mode = rw._check_mode(mode)
    tol = rw._check_tol(tol)
    spacing = rw._check_spacing(spacing, image.ndim)
    if scale is not None:
        scale = rw._number("scale", scale, positive=True)
    if std is not None:
        std = rw._number("std", std, positive=True)
    return image, lab, beta, mode, tol, spacing, std, scale


def random_walker_blocks(image, markers, *, beta=130.0, mode="cg_mg", tol=1e-3, spacing=None,
                         std=None, scale=None, budget_bytes=None, plan=None, margin=None, chunks=None,
                         workers=BLOCKS_IN_FLIGHT, measure=True, should_stop=None,
                         progress=None):
    """Two-label random walker solved by overlapping blocks (see the module docstring).

    Parameters
    ----------
    image : (M, N) or (P, M, N) array_like
        Grayscale image or volume, e.g. memory-mapped: it is never converted whole, each
        block is read and converted as :func:`pipeline.randomwalker.build_graph` converts
        (divided by `scale` first when given).
    markers : ndarray of int, same shape as `image`
        0 = undecided, 1 = background marker, 2 = object marker; both labels present.
    beta : float, optional
        As for :func:`pipeline.randomwalker.build_graph`.
    mode : {'cg_mg', 'cg_j', 'bf'}, optional
        As for :func:`pipeline.randomwalker.solve`.
    tol : float, optional
        As for :func:`pipeline.randomwalker.solve`.
    spacing : sequence of float, optional
        Pixel spacing per axis.
    std : float, optional
        Standard deviation that scales beta (default: the converted image's own, as a
        whole solve; computed slab by slab unless one block covers the image).
    scale : float, optional
        The image is solved as ``image / scale`` (the recipe's intensity scale), block by
        block.
    budget_bytes : int, optional
        Memory the job may take: the plan's blocks and the agreement window are sized for
        it (see :func:`plan_blocks`).
    plan : BlockPlan, optional
        A plan for this image's shape (default :func:`plan_blocks` with `budget_bytes`,
        `margin`, `chunks`, `workers`).
    margin, chunks, workers : optional
        Passed to :func:`plan_blocks` when `plan` is not given.
    measure : bool, optional
        Measure the agreement with a whole solve on a window (:func:`agreement`).
    should_stop : callable, optional
        Asked between blocks (and inside each solve): True stops with
        :class:`~pipeline.errors.Cancelled`.
    progress : callable, optional
        ``progress("blocks", done / total)`` as blocks finish, then
        ``progress("agreement", 0.0)`` and ``("agreement", 1.0)`` around the agreement's
        whole solve.

    Returns
    -------
    labels : ndarray of uint8
        1 (background) or 2 (object), the image's shape; markers keep their label.
    report : BlockReport

    Raises
    ------
    InputError
        If an argument is invalid (see :func:`pipeline.randomwalker.solve` and
        :func:`plan_blocks`), or `plan` is for another shape.
    Cancelled
        If `should_stop` said so.
    """
    image, lab, beta, mode, tol, spacing, std, scale = _prepare(image, markers, beta, mode,
                                                                tol, spacing, std, scale)
    if plan is None:
        plan = plan_blocks(image.shape, mode, budget_bytes, margin=margin, chunks=chunks,
                           workers=workers)
    elif not isinstance(plan, BlockPlan):
        raise InputError(f"plan must be a BlockPlan from plan_blocks, got "
                         f"{type(plan).__name__}")
    if plan.shape != image.shape:
        raise InputError(f"plan is for shape {plan.shape}, the image is {image.shape}")
    for name, fn in (("should_stop", should_stop), ("progress", progress)):
        if fn is not None and not callable(fn):
            raise InputError(f"{name} must be callable, got {type(fn).__name__}")
    t0 = time.perf_counter()
    if std is None and plan.n_blocks > 1:
        std = _whole_std(image, scale)  # one block: build_graph's own, as the whole solve
        if not std > 0:
            raise InputError("image is constant: the random walker needs intensity "
                             "differences between pixels")
    labels = np.zeros(image.shape, dtype=np.uint8)
    solver = _BlockSolver(image, scale, lab, labels, plan, beta, mode, tol, spacing, std,
                          should_stop)
    total = plan.n_blocks

    def first_pass_progress(done, n):
        if progress is not None:
            progress("blocks", done / total)

    seeded = [i for i, b in enumerate(plan.blocks) if lab[b.outer].any()]
    # the estimate per pixel grows with the undecided share (see undecided_scale): as many
    # blocks at once as fit with the most undecided block's
    worst = max((undecided_scale(float(np.count_nonzero(lab[b.outer] == 0))
                                 / math.prod(s.stop - s.start for s in b.outer))
                 for b in plan.blocks), default=1.0)
    in_flight, peak = plan.in_flight, plan.peak_bytes
    if plan.budget_bytes is not None:
        overhead = IMAGE_BYTES_PER_PIXEL * math.prod(plan.shape)
        fit = int((BUDGET_SHARE * plan.budget_bytes - overhead) // (plan.block_bytes * worst))
        in_flight = max(1, min(in_flight, fit))
        peak = int(overhead + in_flight * plan.block_bytes * worst)
    backend = parallel.Backend(jobs=in_flight, prefer="threads")
    statuses, run = parallel.map_items(solver, seeded, backend=backend,
                                       label="random walker blocks",
                                       progress=first_pass_progress, should_stop=should_stop)
    if run.cancelled:
        raise Cancelled(f"random walker by blocks: cancelled after {run.done} of {total} "
                        f"blocks")
    deferred = sorted(set(range(total)) - set(seeded))
    done = len(seeded)
    neighbours = 0
    while deferred:  # outwards from the decided blocks, one ring of blocks per pass
        ready = [i for i in deferred if solver.reached(i)]
        if not ready:  # pragma: no cover - the image holds markers: never
            raise InputError("random walker by blocks: blocks without markers could not be "
                             "decided from their neighbours")
        items = [(i, ready) for i in ready]
        base = done

        def pass_progress(count, n, base=base):
            if progress is not None:
                progress("blocks", (base + count) / total)

        _, run = parallel.map_items(solver.from_neighbours, items, backend=backend,
                                    label="random walker blocks (from neighbours)",
                                    progress=pass_progress, should_stop=should_stop)
        if run.cancelled:
            raise Cancelled(f"random walker by blocks: cancelled after {done + run.done} of "
                            f"{total} blocks")
        done += len(ready)
        neighbours += len(ready)
        deferred = [i for i in deferred if i not in set(ready)]
    seconds = time.perf_counter() - t0
    counts = {s: statuses.count(s) for s in ("solved", "one_label", "markers_only")}
    measured = None
    if measure:
        if progress is not None:
            progress("agreement", 0.0)
        measured = agreement(image, lab, labels, plan, beta=beta, mode=mode, tol=tol,
                             spacing=spacing, std=std, scale=scale, should_stop=should_stop)
        if progress is not None:
            progress("agreement", 1.0)
    report = BlockReport(blocks=total, chunks=plan.chunks, margin=plan.margin,
                         in_flight=in_flight, peak_bytes=peak,
                         budget_bytes=plan.budget_bytes, from_neighbours=neighbours,
                         seconds=round(seconds, 3), agreement=measured, **counts)
    return labels, report


# --------------------------------------------------------------------------- agreement


def undecided_scale(fraction) -> float:
    """How much more memory per pixel than :data:`pipeline.randomwalker.BYTES_PER_PIXEL`
    (measured with ≈ 30 % of the pixels undecided) a solve takes with `fraction` of them
    undecided: ``max(1, 0.69 + 1.03 * fraction)``, from 'cg_mg' on 2048²: 300 bytes per pixel
    at 30 % (the constant), 512 at 98.5 % (scribbles only: +2050 MB for 4.2 M pixels)."""
    return max(1.0, 0.69 + 1.03 * float(fraction))


def _window_shape(plan, undecided=0.3):
    """The agreement window: the largest box (cube-like, clipped to the image) whose whole
    solve fits the budget beside the image's arrays (its estimate scaled by
    :func:`undecided_scale` of the image's `undecided` share), at most
    :data:`WINDOW_FRACTION` of the image and at least the largest block."""
    shape = plan.shape
    n = math.prod(shape)
    outer = _outer(shape, plan.chunks, plan.margin)
    cap = max(WINDOW_FRACTION * n, math.prod(outer))
    room = None if plan.budget_bytes is None else \
        BUDGET_SHARE * plan.budget_bytes - IMAGE_BYTES_PER_PIXEL * n
    scale = undecided_scale(undecided)

    def fits(side):
        box = tuple(min(s, side) for s in shape)
        if math.prod(box) > cap:
            return False
        return room is None or rw.estimate_bytes(box, plan.mode) * scale <= room

    lo, hi = 0, max(shape)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        return None
    return tuple(min(s, lo) for s in shape)


def _window(plan, wshape):
    """Slices of the window: centred on the block corner nearest the image's centre."""
    out = []
    for n, c, w in zip(plan.shape, plan.chunks, wshape):
        count = -(-n // c)
        corner = n // 2
        if count > 1:
            corner = min(max(c * round(n / 2 / c), c), c * (count - 1))
        start = min(max(corner - w // 2, 0), n - w)
        out.append(slice(start, start + w))
    return tuple(out)


def agreement(image, markers, labels, plan, *, beta=130.0, mode="cg_mg", tol=1e-3,
              spacing=None, std=None, scale=None, should_stop=None):
    """Agreement of blockwise labels with a whole solve, on a window that fits the budget.

    Parameters
    ----------
    image : ndarray
        The image (as given to :func:`random_walker_blocks`).
    markers : ndarray of int
        Its markers.
    labels : ndarray of uint8
        The blockwise labels (:func:`random_walker_blocks`).
    plan : BlockPlan
        The plan they were solved with (its budget sizes the window).
    beta, mode, tol, spacing, std, scale : optional
        As for :func:`random_walker_blocks` (the same as the blockwise solve).
    should_stop : callable, optional
        Asked inside the window's solve.

    Returns
    -------
    dict or None
        ``window`` (its shape), ``start`` (its first pixel), ``compared`` (the shape of its
        inner part that is compared), ``pixels`` (fraction of equal labels there),
        ``undecided`` (the same among the undecided pixels, None if there are none),
        ``seconds``; None if no window fits or the window's markers lack a label.
    """
    image, lab, beta, mode, tol, spacing, std, scale = _prepare(image, markers, beta, mode,
                                                                tol, spacing, std, scale)
    labels = np.asarray(labels)
    if labels.shape != image.shape:
        raise InputError(f"labels must have the image's shape {image.shape}, "
                         f"got {labels.shape}")
    if not isinstance(plan, BlockPlan) or plan.shape != image.shape:
        raise InputError("plan must be the BlockPlan the labels were solved with")
    t0 = time.perf_counter()
    wshape = _window_shape(plan, float(np.count_nonzero(lab == 0)) / lab.size)
    if wshape is None:
        return None
    window = _window(plan, wshape)
    wmarkers = lab[window]
    if not ((wmarkers == rw.BACKGROUND).any() and (wmarkers == rw.OBJECT).any()):
        return None
    if std is None and wshape != image.shape:
        std = _whole_std(image, scale)
    graph = rw.build_graph(_region(image, window, scale), beta=beta, spacing=spacing,
                           std=std)
    whole = rw.solve(graph, wmarkers, mode=mode, tol=tol, should_stop=should_stop)
    del graph
    inner = []
    for sl, n in zip(window, image.shape):
        lo = 0 if sl.start == 0 else plan.margin
        hi = (sl.stop - sl.start) if sl.stop == n else (sl.stop - sl.start) - plan.margin
        if hi <= lo:
            return None
        inner.append(slice(lo, hi))
    inner = tuple(inner)
    mine = labels[window][inner]
    theirs = whole[inner]
    equal = mine == theirs
    undecided = wmarkers[inner] == 0
    n_und = int(np.count_nonzero(undecided))
    return {"window": list(wshape), "start": [s.start for s in window],
            "compared": list(equal.shape), "pixels": float(equal.mean()),
            "undecided": float(equal[undecided].mean()) if n_und else None,
            "seconds": round(time.perf_counter() - t0, 3)}
