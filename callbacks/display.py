"""What the panels show: image, filtered image, histogram, segmentation and comparison.

Arrays never leave the server: each callback reads the session's image from the shared store,
computes (or finds in the cache) what it needs, and sends PNG data URIs. A change that leaves
the displayed image alone replaces only overlay sources and histogram shapes (``dash.Patch``),
so zoom and pan survive and responses stay small.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
from dash import Input, Output, Patch, State, ctx, no_update
from dash.exceptions import PreventUpdate

from components import figures, ids
from components.forms import param_form, step_doc
from pipeline import postprocess, randomwalker, render
from pipeline.compute import TimeLimit, stage_keys
from pipeline.errors import Cancelled, InputError
from pipeline.filters import FILTERS
from pipeline.measure import count_regions
from pipeline.segment import make_markers
from pipeline.segmentation import SEGMENTERS, agreement

from .loading import message_children
from .params import (current_recipe, initial_history, load_history, nearby_states,
                     require_current, resolve_state, set_intensity_scale)

log = logging.getLogger(__name__)

MARKER_COLORS = {"background": render.MARKER_HEX[1], "object": render.MARKER_HEX[2]}
#: Opacity of the markers overlay (the server's PNG and the page's own drawing alike).
MARKER_ALPHA = 0.45


def blank_uri():
    """A transparent 1×1 PNG (an empty overlay)."""
    return render.png_data_uri(np.zeros((1, 1, 4), dtype=np.uint8))


def slice_settings(meta, axis):
    """Visibility, range and start position of the slice slider for an image."""
    if not meta or meta["ndim"] != 3:
        return {"display": "none"}, 1, 0
    axis = int(axis or 0)
    n = meta["shape"][axis]
    return {"display": "block"}, n - 1, n // 2


def shown_slice(array, meta, axis, index):
    """The displayed 2D slice of `array` (the array itself for a 2D image)."""
    if meta["ndim"] != 3:
        return np.asarray(array)
    axis = int(axis or 0)
    index = int(min(max(index or 0, 0), meta["shape"][axis] - 1))
    return np.asarray(render.take_slice(array, axis, index))


def uirevision(meta, axis):
    """Zoom is kept while the image and the slicing axis stay the same."""
    return f"{meta['id']}-{axis if meta['ndim'] == 3 else ''}"


def display_of(meta, axis) -> int:
    """The display level of the shown slice: blocks of this many pixels a side
    (``render.display_factor``: 1 up to 2 M pixels, e.g. 3 for 4096²). Every view of it
    (image, filtered image, markers, result, selection, comparison) is drawn on these
    blocks; the axes stay in pixels of the image; what is computed, measured and
    downloaded stays at full resolution."""
    shape = [int(n) for n in meta["shape"]]
    if meta["ndim"] == 3:
        del shape[int(axis or 0)]
    return render.display_factor(shape[:2])


def base_gray(services, session_id, meta, axis, index):
    """The displayed slice of the image, scaled to uint8 for display (full resolution)."""
    image = services.image(session_id, meta["id"])
    return render.to_uint8(shown_slice(image, meta, axis, index), *meta["display"])


def base_uri(services, session_id, meta, axis, index, image=None):
    """Data URI of the displayed slice of the image, at its display level
    (:func:`display_of`): a PNG, or above the display level's limit (the means of its
    blocks' values scaled for display, lossy already) a JPEG (``render.jpeg_data_uri``: half the bytes, 20x faster to encode). Encoded
    once per image, slice and display range (the Image panel, the segmentation panel's first
    view and its whole figure share it). `image`: the image itself if at hand (the load's,
    which may not be stored yet), else read from the store."""
    factor = display_of(meta, axis)
    key = json.dumps(["base", meta["id"], meta["display"], factor,
                      base_key(meta, axis, index), "jpeg" if factor > 1 else "png"])

    def make():
        pixels = services.image(session_id, meta["id"]) if image is None else image
        shown = shown_slice(pixels, meta, axis, index)
        if factor == 1:
            return render.png_data_uri(render.to_uint8(shown, *meta["display"]))
        # the block means of the image's values, then scaled for display: the scaling runs
        # on the f² times fewer blocks (4096² uint16: 26 ms instead of 65 ms)
        return render.jpeg_data_uri(render.to_uint8(render.reduce_mean(shown, factor),
                                                    *meta["display"]))

    if image is not None:  # the caller holds the content (the load, maybe storing it now)
        return services.compute.rendered(key, make)
    return services.rendered(session_id, meta["id"], key, make)


def image_panel(services, session_id, meta, axis, index):
    """Figure of the Image panel."""
    uri = base_uri(services, session_id, meta, axis, index)
    return figures.image_figure(uri, uirevision=uirevision(meta, axis),
                                factor=display_of(meta, axis))


#: The segmentation panel's summary while a new image's first overlay is computed.
FIRST_VIEW_SUMMARY = "new image: computing its segmentation…"

#: A new image's first view sent with its load (:func:`load_first_view`) has at most this
#: many pixels: a shown image or slice whose display level (:func:`display_of`) has more is
#: first drawn as a preview on coarser blocks (a JPEG of at most 512² pixels: 60–90 kB
#: instead of 0.6–0.8 MB, decoded and drawn by the page in a fraction of the time), labelled
#: with its resolution, until the segmentation's first whole figure brings the display level.
FIRST_VIEW_MAX_PIXELS = 512 * 512


def first_view_summary(factor: int) -> str:
    """The summary of a first view drawn on blocks of `factor` pixels (1: the display
    level itself, :data:`FIRST_VIEW_SUMMARY`)."""
    if factor <= 1:
        return FIRST_VIEW_SUMMARY
    return f"new image, preview (1/{factor} resolution): computing its segmentation…"


def preview_key(key: str, factor: int) -> str:
    """The ``SEG_BASE`` of a first view drawn as a preview on blocks of `factor` pixels: never
    the :func:`base_key` of a figure at the display level, so that the segmentation callback
    answers a whole figure (the display level's base with its overlays) onto it."""
    return f"{key}|preview-1/{int(factor)}"


def first_view(services, session_id, meta, axis, max_pixels=None, preview=None, image=None):
    """A new image's first view in the segmentation graph, drawn as soon as the image is on
    the server, before any filtering, preview or segmentation: its base (the display level,
    :func:`base_uri`, the PNG the Image panel shows) with empty overlays, and the summary
    saying the overlay is being computed; the shown slice of a volume is the one the slice
    controls start at (:func:`slice_settings`). ``{"key", "figure", "summary"}``: ``key`` is
    the :func:`base_key` the figure shows. The page draws it only while the graph shows
    another base (``FIRST_VIEW_JS``): a preview or a result of this image drawn already is
    never replaced by it.

    With `max_pixels` (:func:`load_first_view`), a display level of more pixels is sent as
    a preview instead: the block means of blocks of ``f`` × ``f`` pixels
    (``render.display_factor(shape, max_pixels)``) scaled for display, a JPEG, its key
    :func:`preview_key` and its summary naming the resolution (``"preview (1/8
    resolution)"``); ``"factor"`` says which (1: the display level).

    `preview`: called once the view's base is made, it gives a :class:`FirstPreview`
    (:func:`first_preview`, e.g. computed meanwhile on another thread) or None; a preview is
    drawn on that view (its overlays instead of empty ones, its summary) and ``"overlaid"``
    says so. `image`: the image itself if at hand (the load's, in memory), else read from
    the store."""
    index = slice_settings(meta, axis)[2]
    factor = display_of(meta, axis)
    key = base_key(meta, axis, index)
    blank = blank_uri()
    shown = factor
    if max_pixels is not None:
        shape = [int(n) for n in meta["shape"]]
        if meta["ndim"] == 3:
            del shape[int(axis or 0)]
        coarse = render.display_factor(shape[:2], max_pixels)
        if coarse > factor:
            shown = coarse
    if image is None:
        def pixels():
            return services.image(session_id, meta["id"])
    else:
        def pixels():
            return image
    if shown > factor:
        gray = render.to_uint8(
            render.reduce_mean(shown_slice(pixels(), meta, axis, index), shown),
            *meta["display"])
        uri = render.jpeg_data_uri(gray, quality=FIRST_VIEW_JPEG_QUALITY)
        key = preview_key(key, shown)
    else:
        uri = base_uri(services, session_id, meta, axis, index, image=image)
    summary = first_view_summary(shown if shown > factor else 1)
    marker_uri = seg_uri = blank
    seg_factor = None
    preview = preview() if preview is not None else None
    if preview is not None:
        drawn = preview_overlays(preview, shown, lambda: render.to_uint8(
            shown_slice(pixels(), meta, axis, index), *meta["display"]))
        if drawn is not None:
            marker_uri, seg_uri, seg_factor = drawn
            summary = first_preview_summary(preview, shown if shown > factor else 1)
    fig = figures.segmentation_figure(uri, marker_uri, seg_uri,
                                      uirevision=uirevision(meta, axis), highlight=blank,
                                      factor=shown, seg_factor=seg_factor)
    return {"key": key, "figure": fig.to_plotly_json(), "summary": summary, "factor": shown,
            "overlaid": seg_factor is not None}


#: JPEG quality of a first view's preview (a few hundred pixels a side, shown briefly).
FIRST_VIEW_JPEG_QUALITY = 85


def load_first_view(services, session_id, meta, axis, history=None, style=None, show=None,
                    image=None):
    """The first view answered by the load itself (``callbacks.loading``: the loader's
    callback has it as an output, so that the page draws it with the new image's metadata,
    with no request behind the load and no wait for the callbacks the new image fires): at
    most :data:`FIRST_VIEW_MAX_PIXELS` (:func:`first_view`). None if it cannot be made (the
    page then gets the first view of :func:`first_view`'s own callback).

    With the page's `history` pointer (before the load), overlay `style` and `show`
    options, a large image's or a volume's first view comes with its first overlay: the
    preview of :func:`first_preview` for the recipe the new image's history will start
    from, computed on a second thread (:func:`start_first_preview`) while the view is made
    (the preview's numpy, scipy and pyamg work and the view's JPEG / PNG encoding release the
    GIL), and drawn on that view. (The loader runs this as soon as the image is described,
    beside the store's write: ``loading.load_image(on_described=…)``.) The chain the new
    image fires (history, filter stage, segmentation) then replaces it as before; a failed
    or inapplicable preview leaves the first view as it was. `image`: the loaded image still
    in memory (pages of the file just stored are slow to map in: on 512×512×128 the
    preview's standard deviation sample took 0.19 s from the file, 5 ms from memory)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = start_first_preview(pool, services, session_id, meta, axis, history,
                                      style, show, image)
        try:
            return first_view(services, session_id, meta, axis,
                              max_pixels=FIRST_VIEW_MAX_PIXELS,
                              preview=None if pending is None else pending.result,
                              image=image)
        except InputError:
            log.warning("first view with the load", exc_info=True)
            return None


def start_first_preview(pool, services, session_id, meta, axis, history, style, show,
                        image=None):
    """Start a new image's :func:`first_preview` on `pool` (an executor) for the recipe its
    history starts from (:func:`first_recipe`): its future, or None without a `style` (the
    page's overlay options unknown) or a recipe."""
    if style is None:
        return None
    recipe = first_recipe(services, session_id, meta, history)
    if recipe is None:
        return None
    return pool.submit(first_preview, services, session_id, meta, axis, recipe, style,
                       "markers" in (show or []), image)


#: The largest slab of a volume's first preview (:func:`first_preview`), half a move's
#: (``randomwalker.SLAB_MAX_VOXELS``): 256³ 3 slices, 512² slices the shown one alone.
FIRST_SLAB_VOXELS = 300_000


class FirstPreview(NamedTuple):
    """A new image's first preview (:func:`first_preview`), with what drawing it needs."""

    found: Any  # pipeline.compute.PreviewResult, quick (made from the image itself)
    recipe: dict
    style: str
    show_markers: bool
    mask2d: np.ndarray  # the shown slice's object mask, on the preview's grid if `blocks`


def first_recipe(services, session_id, meta, history):
    """The recipe a newly loaded image's history starts from (``params.initial_history``
    from the page's `history` before the load, as the history callback will make it), or
    None if it cannot be told."""
    previous = None
    if history:
        try:
            previous = load_history(services.store, session_id, history)
        except InputError:
            previous = None  # evicted or forged: the history callback starts anew too
    try:
        return current_recipe(initial_history(meta, previous))
    except (InputError, KeyError, TypeError, ValueError):
        log.warning("first recipe of a new image", exc_info=True)
        return None


def first_preview(services, session_id, meta, axis, recipe, style, show_markers, image=None):
    """A new image's first preview for `recipe`, made from the image itself before any
    filter stage (``Compute.preview``'s quick route: a volume's shown slice solved on the
    slab around it, a large image on its reduced grid of block means; bounded by those
    sizes whatever the image's), or None: a smaller image (its chain is quick), another
    method than the random walker, strokes drawn by hand, markers of one label, or any
    failure (logged; the first view is drawn without it). `image`: the image itself if at
    hand (the load's, which may not be stored yet), else read from the store."""
    try:
        index = slice_settings(meta, axis)[2]
        shown = (int(axis or 0), index) if meta["ndim"] == 3 else None
        found = services.preview(session_id, meta["id"], recipe, (), shown=shown,
                                 quick_only=True, slab_voxels=FIRST_SLAB_VOXELS,
                                 image=image)
        if found is None:
            return None
        if found.slab is not None or found.blocks:
            mask2d = found.mask
        else:  # a volume previewed on its reduced grid, prolonged to the volume's shape
            mask2d = shown_slice(found.mask, meta, axis, index)
        return FirstPreview(found, recipe, style, bool(show_markers), mask2d)
    except Exception:  # noqa: BLE001 - the load must never fail for its preview
        log.warning("first preview of a new image", exc_info=True)
        return None


def preview_overlays(preview, factor, gray):
    """``(marker URI, segmentation URI, segmentation's block width)`` of a
    :class:`FirstPreview` on a view of blocks of `factor` pixels (`gray()`: the shown slice
    at full resolution, read only for the label-colour style), or None."""
    found = preview.found
    show_markers = preview.show_markers and found.shown is not None
    seg_factor = found.factor if found.blocks else factor
    try:
        marker_uri, seg_uri = overlay_uris(
            found.shown, preview.mask2d.astype(np.int32), preview.recipe, preview.style,
            show_markers, gray, None, factor=found.factor if found.blocks else 1,
            display=factor)
    except Exception:  # noqa: BLE001 - drawn without it
        log.warning("first preview's overlays", exc_info=True)
        return None
    return marker_uri, seg_uri, seg_factor


def first_preview_summary(preview, factor) -> str:
    """The summary of a first view (blocks of `factor` pixels) with its first preview."""
    view = "new image" if factor <= 1 else f"new image, preview (1/{factor} resolution)"
    return f"{view} · {preview_summary(preview.found, preview.recipe)}"


def first_view_sent(meta) -> bool:
    """Whether the load of this image answered its first view already
    (:func:`load_first_view`; its metadata says so in ``"first_view"``): the first-view
    callback fired by the new metadata then has nothing to send."""
    return bool(meta and meta.get("first_view"))


#: The first view of a new image (:func:`first_view`) drawn in the segmentation graph, unless
#: the graph shows that base already (the segmentation callback's whole figure came first:
#: its overlays stay). Sets ``SEG_BASE``, so that the segmentation callback then sends only
#: a Patch of the overlays.
FIRST_VIEW_JS = """
function(first, base) {
    const nu = window.dash_clientside.no_update;
    if (!first || !first.key || !first.figure || base === first.key) { return [nu, nu, nu]; }
    return [first.figure, first.key, first.summary];
}
"""


def filtered_figure(filtered, meta, axis, index):
    """Figure of a filtered image (same display range as the original)."""
    factor = display_of(meta, axis)
    gray = render.to_uint8(shown_slice(filtered, meta, axis, index), *meta["display"])
    uri = render.png_data_uri(render.reduce_mean(gray, factor))
    return figures.image_figure(uri, uirevision=uirevision(meta, axis), factor=factor)


def filtered_panel(services, session_id, meta, recipe, axis, index):
    """Figure of the filtered image (same display range as the original)."""
    return filtered_figure(services.filtered(session_id, meta["id"], recipe), meta, axis, index)


def filter_run_text(recipe, result, backend_message="") -> str:
    """The line under the filtered image: how the filter stage ran.

    E.g. ``Gaussian: 16 blocks on 2 workers (threads), 0.80 s``, ``Gaussian: whole array,
    0.02 s``, or for a cache hit ``from cache · computed as Gaussian: whole array, 0.02 s``.

    Parameters
    ----------
    recipe : dict
        The validated recipe shown.
    result : pipeline.compute.FilterResult
    backend_message : str, optional
        The backend's :attr:`pipeline.parallel.Backend.message` (the dask scheduler could not
        be reached: the work runs locally), added when this run does not say it already.
    """
    if recipe["filter"]["name"] == "none":
        text = "no filter"
    else:
        text = result.report.summary()
        if result.cached:
            text = f"from cache · computed as {text}"
    if backend_message and backend_message not in text:
        text += f" ({backend_message})"
    return text


def histogram_panel(services, session_id, meta, recipe, log_scale):
    """Histogram of the filtered image with vmin / vmax and the automatic thresholds.

    Drawn when the filtered image changes; the vmin / vmax lines then follow the slider in
    the browser (``callbacks.thresholds.GATE_JS`` relayouts the drawn figure's shapes),
    with no request. The figure's ``datarevision`` names its traces' content: dcc.Graph
    hands plotly new copies of the data arrays whenever its figure is patched (the log
    switch), which plotly would otherwise take for new data (a whole recalculation).
    """
    vmin, vmax = recipe["markers"]["vmin"], recipe["markers"]["vmax"]
    counts, edges = services.histogram(session_id, meta["id"], recipe)
    fig = figures.histogram_figure(counts, edges, vmin, vmax, colors=MARKER_COLORS,
                                   log=log_scale, uirevision=meta["id"])
    auto = services.thresholds(session_id, meta["id"], recipe)
    figures.add_threshold_markers(fig, {k: v for k, v in auto.items()
                                        if isinstance(v, float)})
    return figures.with_datarevision(fig)


def _boxes_overlay(labels2d):
    """Bounding boxes of the regions (``regionprops`` bbox), drawn as 1-pixel outlines."""
    out = np.zeros(labels2d.shape + (4,), dtype=np.uint8)
    color = render.SEGMENTATION_COLOR + (255,)
    for _, r0, c0, r1, c1 in postprocess.bounding_boxes(labels2d):
        out[r0, c0:c1] = out[r1 - 1, c0:c1] = color
        out[r0:r1, c0] = out[r0:r1, c1 - 1] = color
    return out


def result_overlay(labels2d, image2d_uint8, style):
    """RGBA overlay of a label (or mask) slice in one of the styles of the result view."""
    if style == "labels":
        return postprocess.label_overlay(labels2d, image2d_uint8)
    if style == "boxes":
        return _boxes_overlay(labels2d)
    if style == "contour":
        return postprocess.boundaries_overlay(labels2d)
    # "fill": the object semi-transparent, as the segmentation overlay draws it
    return render.segmentation_overlay(np.where(labels2d > 0, 2, 1).astype(np.uint8),
                                       style="fill")


def highlight_overlay(labels2d, selected):
    """Selected regions drawn opaque-ish in white, to find the rows selected in the table."""
    out = np.zeros(labels2d.shape + (4,), dtype=np.uint8)
    if selected:
        out[np.isin(labels2d, np.asarray(selected, dtype=labels2d.dtype))] = (255, 255, 255, 150)
    return out


def drawn_markers(filtered, recipe, meta, axis, index):
    """The shown slice of the markers when the recipe holds strokes drawn by hand (the
    recipe's marker stage: vmin / vmax, then the strokes, ``skimage.draw``), else None."""
    if not recipe["markers"].get("scribbles"):
        return None
    m = recipe["markers"]
    return shown_slice(make_markers(filtered, m["vmin"], m["vmax"], check=False,
                                    scribbles=m["scribbles"]), meta, axis, index)


def overlay_uris(filtered2d, shown2d, recipe, style, show_markers, gray, markers2d=None,
                 factor=1, display=1):
    """PNG data URIs of the markers (blank if hidden) and of the result in `style`.

    `gray()` gives the displayed slice; it is read only for the style that blends it
    (label colours). `markers2d`: the shown markers when they hold strokes drawn by hand
    (:func:`drawn_markers`); else they are made from vmin / vmax on `filtered2d`.
    `factor` > 1: `shown2d` is on a grid of `factor`-wide blocks (``figures.seg_geometry``).
    `display` > 1: the display level (:func:`display_of`): the markers, and a full
    resolution `shown2d`, are drawn on its blocks (the pixel nearest each block's centre;
    contours are found at that resolution).
    """
    if show_markers and markers2d is None:
        markers2d = make_markers(render.reduce_nearest(filtered2d, display),
                                 recipe["markers"]["vmin"], recipe["markers"]["vmax"],
                                 check=False)
    elif show_markers:
        markers2d = render.reduce_nearest(markers2d, display)
    if show_markers:
        marker = render.png_data_uri(render.marker_overlay(markers2d, alpha=MARKER_ALPHA))
    else:
        marker = blank_uri()
    image2d = gray() if style == "labels" else None
    if factor == 1 and display > 1:
        shown2d = render.reduce_nearest(shown2d, display)
        factor = display
    if image2d is not None and factor > 1:  # a pixel of each block, as the labels'
        image2d = image2d[::factor, ::factor][:shown2d.shape[0], :shown2d.shape[1]]
    return marker, render.png_data_uri(result_overlay(shown2d, image2d, style))


def base_key(meta, axis, index) -> str:
    """Which base image a figure shows: the image, and for a volume the slice."""
    if meta["ndim"] != 3:
        return meta["id"]
    return f"{meta['id']}:{int(axis or 0)}:{int(index or 0)}"


def segmentation_panel(services, session_id, meta, recipe, axis, index, style, show_markers,
                       view, selected, full, should_stop=None, progress=None, job_seconds=None):
    """Binarization figure (full, or a Patch of the overlays) and a summary line.

    `progress` hears how a random walker being computed advances (see
    :meth:`pipeline.compute.Compute.run`); the solve's time per undecided pixel is
    remembered for the next estimate (:func:`exact_estimate`). `job_seconds`: the result
    was just computed by a background job in that many seconds (the summary says so).

    Raises
    ------
    InputError
        If a step fails on this image (the page keeps its previous overlays).
    Cancelled
        If `should_stop` stopped the solve (a newer request superseded this one, or a
        :class:`~pipeline.compute.TimeLimit` expired).
    """
    timer = _SolveTimer(progress)
    display = display_of(meta, axis)
    result = services.run(session_id, meta["id"], recipe, should_stop=should_stop,
                          progress=timer)
    if not result.cached:
        remember_exact_seconds(services, session_id, meta, recipe, result.seconds)
        if timer.seconds is not None:
            remember_solve_rate(services, session_id, meta, recipe, timer.seconds,
                                result.filtered)

    def gray():  # read from the store only when a view is drawn, not on a cache hit
        return base_gray(services, session_id, meta, axis, index)

    def overlays():
        shown = result.labels if view == "labels" else result.mask
        marker, seg = overlay_uris(shown_slice(result.filtered, meta, axis, index),
                                   shown_slice(shown, meta, axis, index).astype(np.int32),
                                   recipe, style, show_markers, gray,
                                   drawn_markers(result.filtered, recipe, meta, axis, index)
                                   if show_markers else None, display=display)
        n = count_regions(result.labels)
        fraction = float(np.count_nonzero(result.mask)) / result.mask.size
        return marker, seg, n, fraction

    # A repeated view (undo, a slice seen before) reuses its encoded overlays.
    key = json.dumps([meta["id"], stage_keys(recipe), meta["display"],
                      axis if meta["ndim"] == 3 else None, index if meta["ndim"] == 3 else None,
                      style, view, bool(show_markers), display], sort_keys=True)
    marker_uri, seg_uri, n, fraction = services.compute.rendered(key, overlays)
    hl_uri = render.png_data_uri(highlight_overlay(render.reduce_nearest(
        shown_slice(result.labels, meta, axis, index), display), selected)) \
        if selected else blank_uri()
    seg = recipe["segmentation"]
    how = "from cache" if result.cached else f"computed in {result.seconds:.2f} s"
    if result.cached and isinstance(job_seconds, (int, float)) and job_seconds >= 0:
        how = f"computed in {job_seconds:.2f} s (background job)"
    unit = "voxels" if meta["ndim"] == 3 else "pixels"
    summary = (f"object: {100 * fraction:.1f} % of {unit} · {n:,} labelled "
               f"region{'' if n == 1 else 's'} · "
               f"{SEGMENTERS[seg['name']].label} {how}")
    if full:
        fig = figures.segmentation_figure(base_uri(services, session_id, meta, axis, index),
                                          marker_uri, seg_uri,
                                          uirevision=uirevision(meta, axis), highlight=hl_uri,
                                          factor=display)
        return fig, summary
    patch = overlay_patch(marker_uri, seg_uri, display)
    if selected is not None:
        patch["data"][figures.HIGHLIGHT_TRACE]["source"] = hl_uri
    return patch, summary


def overlay_patch(marker_uri, seg_uri, factor=1):
    """Patch of the segmentation figure's markers and result overlays (the result's
    geometry set each time: a preview may have drawn it on blocks, ``figures.seg_geometry``)."""
    patch = Patch()
    patch["data"][figures.MARKER_TRACE]["source"] = marker_uri
    patch["data"][figures.SEG_TRACE]["source"] = seg_uri
    for key, value in figures.seg_geometry(factor).items():
        patch["data"][figures.SEG_TRACE][key] = value
    return patch


def _as_floats(obj):
    """Every number as a float: a recipe that went through the browser's JSON (where 83.0
    comes back as 83) names the same state as the server's."""
    if isinstance(obj, dict):
        return {k: _as_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_as_floats(v) for v in obj]
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return float(obj)
    return obj


def recipe_token(recipe) -> str:
    """A short id of a recipe's stages (which preview a settle callback belongs to)."""
    text = json.dumps(stage_keys(_as_floats(recipe)), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def preview_panel(services, session_id, meta, recipe, axis, index, style, show_markers, view,
                  nearby, full=False):
    """Patch of the overlays from a live preview (see :meth:`Compute.preview`), or None.

    The preview is the object mask of a warm-started approximate solve: it is drawn with
    the post-processing applied (for the "labels" view) but never cached; the canonical
    result follows (:func:`segmentation_update` with ``allow_preview=False``). A 2D
    preview on a reduced grid is drawn at that grid's resolution (a small PNG, the
    overlay's pixels stretched over their blocks), before post-processing.
    """
    shown = (int(axis or 0), int(index or 0)) if meta["ndim"] == 3 else None
    found = services.preview(session_id, meta["id"], recipe, nearby, shown=shown)
    if found is None or (full and found.factor == 1 and found.slab is None):
        return None
    if found.slab is not None:  # a volume's shown slice, solved on the slab around it
        mask2d = found.mask
        shown2d = mask2d.astype(np.int32)
    elif found.blocks:  # 2D, on the reduced grid: drawn at that resolution, before
        # post-processing (its sizes are in pixels of the image)
        mask2d = found.mask
        shown2d = mask2d.astype(np.int32)
    elif view == "labels":
        mask2d = shown_slice(found.mask, meta, axis, index)
        shown2d = postprocess.run_postprocess(mask2d, recipe["postprocess"]) \
            if meta["ndim"] == 2 else mask2d.astype(np.int32)
    else:
        shown2d = shown_slice(found.mask, meta, axis, index).astype(np.int32)
    display = display_of(meta, axis)
    factor = found.factor if found.blocks else display
    if found.quick:  # made before the filter stage: its own filtered slice, if any
        filtered2d = found.shown
        markers2d = None
    else:
        filtered2d = shown_slice(found.filtered, meta, axis, index)
        markers2d = drawn_markers(found.filtered, recipe, meta, axis, index) \
            if show_markers else None
    marker_uri, seg_uri = overlay_uris(
        filtered2d, shown2d, recipe, style, show_markers and filtered2d is not None,
        lambda: base_gray(services, session_id, meta, axis, index), markers2d,
        factor=found.factor if found.blocks else 1, display=display)
    summary = preview_summary(found, recipe)
    if full:  # a new image or slice: the whole figure, the preview's overlays on it
        fig = figures.segmentation_figure(base_uri(services, session_id, meta, axis, index),
                                          marker_uri, seg_uri,
                                          uirevision=uirevision(meta, axis),
                                          highlight=blank_uri(), seg_factor=factor,
                                          factor=display)
        return fig, summary
    return overlay_patch(marker_uri, seg_uri, factor), summary


def preview_summary(found, recipe) -> str:
    """The summary line of a live preview (:meth:`Compute.preview`'s result `found`)."""
    unit = "voxels" if found.mask.ndim == 3 else "pixels"
    fraction = float(np.count_nonzero(found.mask)) / found.mask.size
    how = (f"at 1/{found.factor} resolution" if found.factor > 1 else "warm-started")
    if found.filtered_reduced:
        how += ", filtered at that resolution"
    if found.slab is not None:
        _, _, first, last = found.slab
        unit = "this slice's pixels"
        how = ("this slice solved alone" if first == last
               else f"slices {first}–{last} around this one")
    if (found.blocks or found.slab is not None) and recipe["postprocess"]:
        how += ", before post-processing"
    return (f"object: {100 * fraction:.1f} % of {unit} · live preview "
            f"({how}, {found.seconds:.3f} s) · exact random walker running…")


# A committed move whose exact result is expected within ``Config.quick_exact_s`` (0.25 s)
# draws the exact result at once instead of a live preview followed by it: one request and
# one redraw less, and the first overlay is the exact one (coins: ≈ 0.08 s). Longer solves
# show a preview first.
EXACT_SECONDS = "exact-seconds"


def _solver_key(recipe) -> str:
    """What a solve's time depends on besides the markers: the filter and the method."""
    recipe = _as_floats(recipe)
    seg = recipe["segmentation"]
    return json.dumps([recipe["filter"], seg["name"], seg["params"],
                       recipe["postprocess"]], sort_keys=True, default=str)


def remember_exact_seconds(services, session_id, meta, recipe, seconds) -> None:
    """Record how long the exact result of `recipe` took (see :func:`exact_is_quick`)."""
    try:
        known = services.store.get(session_id, meta["id"], EXACT_SECONDS) or {}
        known = {k: v for k, v in known.items() if k != _solver_key(recipe)}
        known[_solver_key(recipe)] = float(seconds)
        # a handful of methods per image: the most recent 16 are enough
        services.store.put(session_id, meta["id"], EXACT_SECONDS, dict(list(known.items())[-16:]))
    except InputError:
        pass  # the image was evicted meanwhile: nothing to remember


def exact_is_quick(services, session_id, meta, recipe) -> bool:
    """Whether the last exact result with this filter and method came within
    ``Config.quick_exact_s`` (then a move computes it directly, without a preview)."""
    limit = services.config.quick_exact_s
    if limit <= 0:
        return False
    try:
        known = services.store.get(session_id, meta["id"], EXACT_SECONDS) or {}
    except InputError:
        return False
    seconds = known.get(_solver_key(recipe))
    return seconds is not None and seconds <= limit


def exact_cached(services, session_id, meta, recipe) -> bool:
    """Whether the exact segmentation of `recipe` is cached (a pair solved before, or
    prepared by :func:`callbacks.thresholds.prefetch_update`): then a move draws it at once,
    without a live preview first."""
    try:
        return services.exact_cached(session_id, meta["id"], recipe)
    except (InputError, KeyError):
        return False


#: Seconds per undecided pixel of this session's last exact solves, by filter and method.
SOLVE_RATE = "exact-solve-rate"


class _SolveTimer:
    """A ``progress`` hook that times a random walker's solve (from its graph to its end)
    and passes every call on to `inner`."""

    def __init__(self, inner=None, clock=time.perf_counter):
        self.inner, self.clock = inner, clock
        self.start = self.seconds = None

    def __call__(self, stage, fraction):
        if stage == "graph" and fraction >= 1.0:
            self.start = self.clock()
        elif stage == "solve" and fraction >= 1.0 and self.start is not None:
            self.seconds = self.clock() - self.start
        if self.inner is not None:
            self.inner(stage, fraction)


#: Solves shorter than this (seconds) say little about the rate and are not recorded.
SOLVE_RATE_MIN_S = 0.05


def remember_solve_rate(services, session_id, meta, recipe, seconds, filtered) -> None:
    """Record the seconds per undecided pixel of an exact solve of `recipe` that took
    `seconds` (solves shorter than :data:`SOLVE_RATE_MIN_S` are not recorded)."""
    if seconds < SOLVE_RATE_MIN_S or recipe["segmentation"]["name"] != "random_walker":
        return
    try:
        unknown = int(np.count_nonzero(make_markers(
            filtered, recipe["markers"]["vmin"], recipe["markers"]["vmax"], check=False,
            scribbles=recipe["markers"].get("scribbles")) == 0))
        if unknown <= 0:
            return
        known = services.store.get(session_id, meta["id"], SOLVE_RATE) or {}
        known = {k: v for k, v in known.items() if k != _solver_key(recipe)}
        known[_solver_key(recipe)] = float(seconds) / unknown
        services.store.put(session_id, meta["id"], SOLVE_RATE, dict(list(known.items())[-16:]))
    except InputError:
        pass  # the image was evicted meanwhile: nothing to remember


def exact_estimate(services, session_id, meta, recipe):
    """Expected seconds of the exact segmentation of `recipe` on this session's image, before
    anything runs: 0.0 when it is cached, None when it is not a random walker or the image
    is not on the server (the run says why), else
    :meth:`pipeline.compute.Compute.exact_seconds` (image size, method and solver, the
    undecided pixels, whether the graph is cached; the solve at this session's measured rate
    when it solved with this filter and method before)."""
    try:
        if not services.store.has_image(session_id, meta["id"]):
            return None
        recipe = services.validate(recipe)
        known = services.store.get(session_id, meta["id"], SOLVE_RATE) or {}
        return services.compute.exact_seconds(meta["id"], services.loader(session_id, meta["id"]),
                                              recipe, meta["shape"],
                                              known.get(_solver_key(recipe)))
    except InputError:
        return None


def runs_as_job(services, session_id, meta, recipe) -> bool:
    """Whether the exact segmentation of `recipe` is expected to take longer than
    ``Config.job_after_s``: then it runs as a background job (:mod:`callbacks.exact_job`),
    with a progress bar and a Cancel button, not inside a request.

    An image too small for that even at the worst (every pixel undecided, the graph to
    build: coins, 0.4 s) is answered at once, without reading the caches."""
    limit = services.config.job_after_s
    seg = recipe.get("segmentation") or {}
    if seg.get("name") != "random_walker":
        return False
    try:
        worst = randomwalker.estimate_seconds(meta["shape"], (seg.get("params") or {}).get(
            "mode", "cg_mg"), unknown=math.prod(int(n) for n in meta["shape"]))
    except (InputError, KeyError, TypeError, ValueError):
        worst = math.inf
    if worst <= limit / 2:
        return False
    seconds = exact_estimate(services, session_id, meta, recipe)
    return seconds is not None and seconds > 0 and seconds > limit


def time_limited(services, should_stop=None) -> TimeLimit:
    """``should_stop`` of an exact solve: `should_stop`, or ``Config.max_work_s`` passed."""
    return TimeLimit(services.config.max_work_s, also=should_stop)


def time_limit_message(services) -> str:
    """What the page says when a segmentation ran into ``PIPEX_MAX_WORK_S``."""
    return (f"the exact segmentation was stopped after {services.config.max_work_s:g} s, "
            f"this server's limit for one computation (PIPEX_MAX_WORK_S). Crop or downsample "
            f"the image, narrow the undecided range between vmin and vmax, or use a faster "
            f"method (a threshold, watershed).")


def _signal(recipe, history=None) -> dict:
    """Store data naming the current recipe; a new token each time, so that it always fires."""
    out = {"key": recipe_token(recipe), "token": uuid.uuid4().hex}
    if history and "rev" in history:
        out["rev"] = history["rev"]
    return out


def nearby_recipes(services, session_id, history):
    """Warm starts of a preview: the states around the current one, read from the server's
    history only if a preview is attempted (a lazy iterable)."""
    full = load_history(services.store, session_id, history)
    for state in nearby_states(full):
        yield resolve_state(services.store, session_id, full["image_id"], state)


def segmentation_update(services, session_id, meta, history, axis, index, style, show, view,
                        *, base, allow_preview, announce=True, recipe=None, nearby=None,
                        should_stop=None, defer_slow=True, progress=None, job_seconds=None):
    """Outputs of the segmentation panel for the current state of `history`.

    Parameters
    ----------
    base : str or None
        Which base image the page's figure shows (``SEG_BASE``): a whole figure is sent
        when it is not this image and slice (:func:`base_key`), a Patch of the overlays
        otherwise.
    allow_preview : bool
        Show a live preview (:func:`preview_panel`) if the exact result is not cached and
        not expected within ``Config.quick_exact_s`` (:func:`exact_is_quick`). A drag too:
        where the exact result is quick (coins) each pair under the handle is solved exactly
        and cached, so the release finds the result of the pair it ends on.
    announce : bool, optional
        Signal the panels that depend on the exact segmentation (comparison, measurements)
        once it is shown; False when only the view changed (style, slice) or for a drag.
    recipe : dict, optional
        Draw this recipe instead of the history's current one (a handle being dragged).
    nearby : iterable of dict, optional
        Warm starts of the preview (default: the states around the current one).
    should_stop : callable, optional
        Asked during the exact solve: True stops it and nothing is answered
        (PreventUpdate), e.g. when a newer move of the page has arrived. The solve is
        also stopped after ``Config.max_work_s`` (then the message says so).
    defer_slow : bool, optional
        When the recipe changed (`announce`, not a handle being dragged) and its exact
        result is expected to take longer than ``Config.job_after_s``
        (:func:`runs_as_job`), it is not computed here: `pending` is answered (the settle
        then starts it as a background job, :mod:`callbacks.exact_job`), over the preview
        shown, or the image with no overlays on a new figure. False: compute it here
        (the job itself, or a settle that checked already).
    progress : callable, optional
        Hears how the exact solve advances (:meth:`pipeline.compute.Compute.run`).
    job_seconds : float, optional
        The exact result was computed by a background job in that many seconds.

    Returns
    -------
    tuple
        (figure or Patch, summary, segmentation message, post-processing message, pending,
        settled, base). `pending` names the recipe whose live preview is shown (the settle
        callback then computes the exact result), `settled` the recipe whose exact result
        is shown (or failed: the dependent panels report the failure on their steps); each
        is ``no_update`` otherwise. `base` is the new ``SEG_BASE`` (``no_update`` when a
        Patch is sent). On a failure the previous overlays stay and the message names the
        failed stage.
    """
    drafted = recipe  # a handle being dragged: never deferred
    recipe = recipe or current_recipe(history)
    show_markers = "markers" in (show or [])
    limit = None
    key = base_key(meta, axis, index)
    full = base != key
    new_base = key if full else no_update
    settled = _signal(recipe, history) if announce else no_update
    try:
        if allow_preview and not exact_is_quick(services, session_id, meta, recipe) \
                and not exact_cached(services, session_id, meta, recipe):
            # a new image or slice (full) has a preview only on a reduced grid
            if nearby is None:
                nearby = () if full else nearby_recipes(services, session_id, history)
            shown = preview_panel(services, session_id, meta, recipe, axis, index, style,
                                  show_markers, view, nearby, full=full)
            if shown is not None:
                pending = _signal(recipe, history) if announce else no_update
                return (*shown, None, None, pending, no_update, new_base)
        if defer_slow and announce and drafted is None \
                and runs_as_job(services, session_id, meta, recipe):
            return _deferred(services, session_id, meta, recipe, history, axis, index, full,
                             new_base)
        limit = time_limited(services, should_stop)
        fig, summary = segmentation_panel(services, session_id, meta, recipe, axis, index,
                                          style, show_markers, view, None, full,
                                          should_stop=limit, progress=progress,
                                          job_seconds=job_seconds)
    except Cancelled:
        if limit is None or not limit.expired:
            raise PreventUpdate from None  # superseded: the newer request draws
        stage, message = "segmentation", f"Segmentation stopped: {time_limit_message(services)}"
    except Exception as exc:  # noqa: BLE001 - keep the page and the server usable
        stage = failed_stage(services, session_id, meta, recipe)
        message = f"{stage.capitalize()} failed: {_errors(exc)}"
    else:
        return fig, summary, None, None, no_update, settled, new_base
    # Keep the previous overlays; on a new image or slice show it without overlays.
    fig = no_update
    if full:
        try:
            uri = base_uri(services, session_id, meta, axis, index)
            fig = figures.segmentation_figure(uri, blank_uri(), blank_uri(),
                                              uirevision=uirevision(meta, axis),
                                              highlight=blank_uri(),
                                              factor=display_of(meta, axis))
        except InputError:
            fig, new_base = figures.empty_figure("image not available"), no_update
    shown = message_children(message, "error")
    if stage == "post-processing":
        return fig, "", None, shown, no_update, settled, new_base
    return fig, "", shown, None, no_update, settled, new_base


def _deferred(services, session_id, meta, recipe, history, axis, index, full, new_base):
    """The answer of a recipe change whose exact result runs as a job: the preview (or the
    drag's) stays; a new figure shows the image without overlays. `pending` is answered:
    the settle starts the job."""
    fig, summary = no_update, no_update
    if full:
        uri = base_uri(services, session_id, meta, axis, index)
        fig = figures.segmentation_figure(uri, blank_uri(), blank_uri(),
                                          uirevision=uirevision(meta, axis),
                                          highlight=blank_uri(),
                                          factor=display_of(meta, axis))
        summary = "exact random walker running as a background job…"
    return fig, summary, None, None, _signal(recipe, history), no_update, new_base


def settle_update(services, session_id, meta, history, pending, axis, index, style, show,
                  view, base, job_ok=True):
    """After a live preview: the exact (canonical, path-independent) segmentation, or, when
    it is expected to take longer than ``Config.job_after_s`` (:func:`runs_as_job`), the
    signal that starts it as a background job (``EXACT_JOB``, :mod:`callbacks.exact_job`;
    the preview stays meanwhile). The job, done, names its state again (``EXACT_DONE``,
    with the ``seconds`` it took; `job_ok` False): the result is cached, and drawn here in
    the page's view of now.

    Returns
    -------
    tuple
        (figure or Patch, summary, segmentation message, post-processing message, settled,
        base, job), as :func:`segmentation_update` and ``job``: the ``EXACT_JOB`` data
        (``no_update`` when the exact result was computed here).

    Raises
    ------
    PreventUpdate
        If `pending` belongs to another state than the current one (a newer move shows its
        own preview and settles it), in the page or on the server (the session moved on).
    """
    require_signal(pending, history)
    require_live(services, session_id, meta, history)
    recipe = current_recipe(history)
    if job_ok and runs_as_job(services, session_id, meta, recipe):
        return (no_update,) * 6 + (_signal(recipe, history),)
    out = segmentation_update(services, session_id, meta, history, axis, index, style, show,
                              view, base=base, allow_preview=False, defer_slow=False,
                              job_seconds=pending.get("seconds"))
    require_live(services, session_id, meta, history)
    return out[:4] + out[5:] + (no_update,)


def require_signal(signal, history):
    """PreventUpdate unless `signal` (pending / settled store data) names the current recipe."""
    if not isinstance(signal, dict) or signal.get("key") != recipe_token(current_recipe(history)):
        raise PreventUpdate


def require_live(services, session_id, meta, history):
    """PreventUpdate if the session has moved on to another image or history version on the
    server (a response for a state the user has left is never drawn)."""
    try:
        live = services.store.is_current(session_id, meta["id"], (history or {}).get("rev"))
    except InputError:
        raise PreventUpdate from None
    if not live:
        raise PreventUpdate


def highlight_patch(services, session_id, meta, recipe, axis, index, selected):
    """Patch of the selected-regions overlay only (rows selected in the measurements table)."""
    labels = services.run(session_id, meta["id"], recipe).labels
    patch = Patch()
    patch["data"][figures.HIGHLIGHT_TRACE]["source"] = render.png_data_uri(
        highlight_overlay(render.reduce_nearest(shown_slice(labels, meta, axis, index),
                                                display_of(meta, axis)), selected or []))
    return patch


def compare_panel(services, session_id, meta, recipe, method, axis, index, full=True):
    """Figure of another segmentation method from the same markers, and the agreement text.

    A Patch of its overlay when `full` is False (the figure shows this image and slice
    already, see ``COMPARE_BASE``)."""
    if method not in SEGMENTERS:
        raise InputError(f"unknown segmentation method {method!r}")
    other = {**recipe, "segmentation": {"name": method, "params": {}}}
    set_intensity_scale(other, meta)
    other = services.validate(other)
    mine = services.mask(session_id, meta["id"], recipe)
    theirs = services.mask(session_id, meta["id"], other)
    display = display_of(meta, axis)
    overlay = render.png_data_uri(postprocess.boundaries_overlay(render.reduce_nearest(
        shown_slice(theirs, meta, axis, index), display).astype(np.int32)))
    if full:
        fig = figures.segmentation_figure(base_uri(services, session_id, meta, axis, index),
                                          blank_uri(), overlay,
                                          uirevision=uirevision(meta, axis), highlight=blank_uri(),
                                          factor=display)
    else:
        fig = Patch()
        fig["data"][figures.SEG_TRACE]["source"] = overlay
    pct = 100 * agreement(np.asarray(mine), np.asarray(theirs))
    a, b = SEGMENTERS[recipe["segmentation"]["name"]].label, SEGMENTERS[method].label
    text = (f"{b} vs {a}: the object masks agree on {pct:.2f} % of "
            f"{'voxels' if meta['ndim'] == 3 else 'pixels'} (same markers, before "
            f"post-processing).")
    return fig, text


def failed_stage(services, session_id, meta, recipe):
    """Which stage of a failed run failed: "segmentation" or "post-processing"."""
    try:
        services.mask(session_id, meta["id"], recipe)
    except Exception:  # noqa: BLE001 - the segmentation stage (or before) fails
        return "segmentation"
    return "post-processing"


def _errors(exc):
    if isinstance(exc, InputError):
        return str(exc)
    log.exception("unexpected error", exc_info=exc)
    return f"unexpected error ({type(exc).__name__}: {exc})"


def register(app, services):
    """Wire the panels."""

    @app.callback(
        Output(ids.SLICE_CONTROLS, "style"),
        Output(ids.SLICE_INDEX, "max"),
        Output(ids.SLICE_INDEX, "value"),
        Input(ids.IMAGE, "data"),
        Input(ids.SLICE_AXIS, "value"),
    )
    def _slices(meta, axis):
        if not meta:
            raise PreventUpdate
        return slice_settings(meta, axis)

    @app.callback(
        Output(ids.IMAGE_GRAPH, "figure"),
        Input(ids.IMAGE, "data"),
        Input(ids.SLICE_AXIS, "value"),
        Input(ids.SLICE_INDEX, "value"),
        State(ids.SESSION, "data"),
        running=[(Output("image-panel", "className"), "panel busy", "panel")],
    )
    def _image(meta, axis, index, session_id):
        if not meta:
            raise PreventUpdate
        try:
            return image_panel(services, session_id, meta, axis, index)
        except InputError:
            log.warning("image panel", exc_info=True)
            raise PreventUpdate from None

    @app.callback(
        Output(ids.SEG_FIRST_VIEW, "data", allow_duplicate=True),  # the load's own first
        Input(ids.IMAGE, "data"),  # alone: not after the slice controls
        State(ids.SLICE_AXIS, "value"),
        State(ids.SESSION, "data"),
        prevent_initial_call=True,
    )
    def _first_view(meta, axis, session_id):
        # a load answers its first view itself (callbacks.loading); a channel or a crop
        # (new metadata of their own) come here
        if not meta or first_view_sent(meta):
            raise PreventUpdate
        try:
            return first_view(services, session_id, meta, axis)
        except InputError:
            log.warning("first view", exc_info=True)
            raise PreventUpdate from None

    app.clientside_callback(
        FIRST_VIEW_JS,
        Output(ids.SEG_GRAPH, "figure", allow_duplicate=True),
        Output(ids.SEG_BASE, "data", allow_duplicate=True),
        Output(ids.SEG_SUMMARY, "children", allow_duplicate=True),
        Input(ids.SEG_FIRST_VIEW, "data"),
        State(ids.SEG_BASE, "data"),
        prevent_initial_call=True,
    )

    for stage, steps, method_id, doc_id in (
            ("filter", FILTERS, ids.FILTER_METHOD, ids.FILTER_DOC),
            ("segmentation", SEGMENTERS, ids.SEG_METHOD, ids.SEG_DOC)):

        @app.callback(
            Output({"type": ids.PARAM_FORM, "stage": stage}, "children"),
            Output(doc_id, "children"),
            Input(method_id, "value"),
            State(ids.HISTORY, "data"),
        )
        def _form(method, history, stage=stage, steps=steps):
            if method not in steps:
                raise PreventUpdate
            values = None
            if history:
                step = current_recipe(history)[stage]
                values = step["params"] if step["name"] == method else None
            return param_form(stage, steps[method], values), step_doc(steps[method])

    @app.callback(
        Output(ids.FILTERED_GRAPH, "figure"),
        Output(ids.HIST_GRAPH, "figure"),
        Output(ids.FILTER_RUN, "children"),
        Output({"type": ids.STEP_MESSAGE, "stage": "filter"}, "children"),
        Input(ids.FILTER_SIGNAL, "data"),
        Input(ids.SLICE_AXIS, "value"),
        Input(ids.SLICE_INDEX, "value"),
        State(ids.HIST_LOG, "value"),
        State(ids.HISTORY, "data"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
        running=[(Output("filter-panel", "className"), "panel busy", "panel"),
                 (Output("histogram-panel", "className"), "panel busy", "panel")],
    )
    def _filtered(_signal, axis, index, log_value, history, meta, session_id):
        # The filter stage changed (or a new image): the filtered image and its histogram.
        # A slice change redraws the filtered image only. The vmin / vmax lines follow the
        # slider in the browser.
        return filter_update(services, session_id, meta, history, axis, index, log_value,
                             histogram=fired(ids.FILTER_SIGNAL))

    @app.callback(
        *outputs(SEG_PROPS),
        Output(ids.SEG_PENDING, "data"),
        Output(ids.SEG_SETTLED, "data"),
        Output(ids.SEG_BASE, "data"),
        Input(ids.SEG_SIGNAL, "data"),
        Input(ids.SLICE_AXIS, "value"),
        Input(ids.SLICE_INDEX, "value"),
        Input(ids.OVERLAY_STYLE, "value"),
        Input(ids.SHOW_MARKERS, "value"),
        Input(ids.RESULT_VIEW, "value"),
        State(ids.HISTORY, "data"),
        State(ids.SEG_BASE, "data"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
        running=[(Output("binarization-panel", "className"), "panel busy", "panel")],
    )
    def _segmentation(_signal, axis, index, style, show, view, history, base, meta,
                      session_id):
        # A change the threshold move did not draw itself (undo, a filter, a method, a new
        # image: see callbacks.thresholds), or a new view of the result. The comparison
        # and the measurements wait for the exact segmentation (SEG_SETTLED).
        require_current(meta, history)
        recipe_changed = fired(ids.SEG_SIGNAL)
        out = segmentation_update(services, session_id, meta, history, axis, index, style,
                                  show, view, base=base, allow_preview=True,
                                  announce=recipe_changed)
        require_live(services, session_id, meta, history)
        return out

    @app.callback(
        *outputs(SETTLE_PROPS, duplicate=True),
        Input(ids.SEG_PENDING, "data"),
        State(ids.HISTORY, "data"),
        *states(VIEW_PROPS),
        prevent_initial_call=True,
        running=[(Output("binarization-panel", "className"), "panel busy", "panel")],
    )
    def _settle(pending, history, axis, index, style, show, view, base, meta, session_id):
        # After a live preview: the exact segmentation (path independent) replaces it.
        require_current(meta, history)
        return settle_update(services, session_id, meta, history, pending, axis, index, style,
                             show, view, base)

    @app.callback(
        Output(ids.SEG_GRAPH, "figure", allow_duplicate=True),
        Input(ids.SELECTED_LABELS, "data"),
        State(ids.HISTORY, "data"),
        State(ids.SLICE_AXIS, "value"),
        State(ids.SLICE_INDEX, "value"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
        prevent_initial_call=True,
    )
    def _selected_regions(selected, history, axis, index, meta, session_id):
        recipe = require_current(meta, history)
        try:
            return highlight_patch(services, session_id, meta, recipe, axis, index, selected)
        except Exception:  # noqa: BLE001 - a highlight is never worth an error
            log.warning("highlight failed", exc_info=True)
            raise PreventUpdate from None

    @app.callback(
        Output(ids.COMPARE_GRAPH, "figure"),
        Output(ids.COMPARE_TEXT, "children"),
        Output(ids.COMPARE_BASE, "data"),
        Input(ids.COMPARE_SETTLED, "data"),  # SEG_SETTLED, once the panel is in view
        Input(ids.COMPARE_METHOD, "value"),
        Input(ids.SLICE_AXIS, "value"),
        Input(ids.SLICE_INDEX, "value"),
        State(ids.HISTORY, "data"),
        State(ids.COMPARE_BASE, "data"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
        running=[(Output("compare-panel", "className"), "panel busy", "panel")],
    )
    def _compare(settled, method, axis, index, history, base, meta, session_id):
        require_current(meta, history)
        by_settled = bool(ctx.triggered_id) and fired(ids.COMPARE_SETTLED)
        if by_settled:
            require_signal(settled, history)
        return compare_update(services, session_id, meta, history, method, axis, index, base,
                              settled=by_settled)

    from . import exact_job  # the exact result as a background job (imports this module)

    exact_job.register(app, services)


def fired(component_id) -> bool:
    """Whether `component_id` is among the triggers of the running callback (or it is the
    initial call). Several inputs can fire at once (a new image sets the slice too)."""
    if not ctx.triggered_id:
        return True
    return any(t["prop_id"].split(".")[0] == component_id for t in ctx.triggered)


#: The segmentation panel's outputs, written by every callback that draws it (and by the
#: fast path, callbacks.fastpath, from the same lists).
SEG_PROPS = ((ids.SEG_GRAPH, "figure"), (ids.SEG_SUMMARY, "children"),
             (ids.SEG_MESSAGE, "children"),
             ({"type": ids.STEP_MESSAGE, "stage": "postprocess"}, "children"))
#: Outputs of the settle callback (:func:`settle_update`), in order.
SETTLE_PROPS = (*SEG_PROPS, (ids.SEG_SETTLED, "data"), (ids.SEG_BASE, "data"),
                (ids.EXACT_JOB, "data"))
#: The segmentation panel's view and the page: States of the callbacks that draw it.
VIEW_PROPS = ((ids.SLICE_AXIS, "value"), (ids.SLICE_INDEX, "value"),
              (ids.OVERLAY_STYLE, "value"), (ids.SHOW_MARKERS, "value"),
              (ids.RESULT_VIEW, "value"), (ids.SEG_BASE, "data"), (ids.IMAGE, "data"),
              (ids.SESSION, "data"))


def outputs(props, duplicate=False):
    """Dash Outputs of ``(id, property)`` pairs."""
    kw = {"allow_duplicate": True} if duplicate else {}
    return tuple(Output(cid, prop, **kw) for cid, prop in props)


def states(props):
    """Dash States of ``(id, property)`` pairs."""
    return tuple(State(cid, prop) for cid, prop in props)


class FilterOutputs(NamedTuple):
    """The outputs of the filter callback, in the order of its ``Output``s."""

    figure: Any  # the filtered image's figure
    histogram: Any  # the histogram's figure, or no_update (a slice change)
    run: Any  # how the filter stage ran (:func:`filter_run_text`), or no_update
    message: Any  # the Filtering panel's message: None, or why the filter failed


def filter_update(services, session_id, meta, history, axis, index, log_value, *, histogram):
    """:class:`FilterOutputs` of the current recipe.

    `histogram` is true when the filter stage (or the image) changed: the histogram and the
    line saying how the filter ran are drawn too; false for a new slice (the filtered image
    only). On a failure the figures stay, the line is emptied and the message says why.
    """
    require_current(meta, history)
    recipe = current_recipe(history)
    log_scale = "log" in (log_value or [])
    try:
        result = services.filter_run(session_id, meta["id"], recipe)
        filtered_fig = filtered_figure(result.filtered, meta, axis, index)
        hist = (histogram_panel(services, session_id, meta, recipe, log_scale) if histogram
                else no_update)
    except Exception as exc:  # noqa: BLE001 - the page stays usable
        return FilterOutputs(no_update, no_update, "", message_children(
            f"Filtering failed: {_errors(exc)}", "error"))
    require_live(services, session_id, meta, history)
    run = (filter_run_text(recipe, result, services.compute.backend.message) if histogram
           else no_update)
    return FilterOutputs(filtered_fig, hist, run, None)


#: What the comparison says while the exact segmentation it compares is not drawn yet.
COMPARE_WAITS = "The comparison follows once the exact segmentation is drawn."


def compare_update(services, session_id, meta, history, method, axis, index, base,
                   settled=True):
    """(figure or Patch, agreement text, new COMPARE_BASE) of the comparison panel.

    `settled`: run by the exact segmentation being drawn (``SEG_SETTLED``). Run by anything
    else (a new image's slice, the method menu) it never computes the exact segmentation
    itself: a random walker on a large image is a background job with a progress bar
    (:mod:`callbacks.exact_job`), not work for this request; until it is drawn the panel
    says it waits (the signal of the exact result then runs it).
    """
    key = base_key(meta, axis, index)
    recipe = current_recipe(history)
    if not settled and recipe["segmentation"]["name"] == "random_walker" \
            and not exact_cached(services, session_id, meta, recipe):
        fig = (figures.empty_figure("waiting for the exact segmentation")
               if base != key else no_update)
        return fig, message_children(COMPARE_WAITS, "info"), no_update
    try:
        fig, text = compare_panel(services, session_id, meta, recipe, method, axis, index,
                                  full=base != key)
    except Exception as exc:  # noqa: BLE001
        return no_update, message_children(f"Comparison failed: {_errors(exc)}", "error"), \
            no_update
    require_live(services, session_id, meta, history)
    return fig, text, key if base != key else no_update


