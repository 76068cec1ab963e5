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
import uuid

import numpy as np
from dash import Input, Output, Patch, State, ctx, no_update
from dash.exceptions import PreventUpdate

from components import figures, ids
from components.forms import param_form, step_doc
from pipeline import postprocess, render
from pipeline.compute import stage_keys
from pipeline.errors import InputError
from pipeline.filters import FILTERS
from pipeline.segment import make_markers
from pipeline.segmentation import SEGMENTERS, agreement

from .loading import message_children
from .params import current_recipe, nearby_states, require_current, set_intensity_scale

log = logging.getLogger(__name__)

MARKER_COLORS = {"background": render.MARKER_HEX[1], "object": render.MARKER_HEX[2]}


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


def _gray_uri(image2d, lo, hi):
    return render.png_data_uri(render.to_uint8(image2d, lo, hi))


def base_gray(services, session_id, meta, axis, index):
    """The displayed slice of the image, scaled to uint8 for display."""
    image = services.image(session_id, meta["id"])
    return render.to_uint8(shown_slice(image, meta, axis, index), *meta["display"])


def base_uri(services, session_id, meta, axis, index):
    """PNG data URI of the displayed slice of the image."""
    return render.png_data_uri(base_gray(services, session_id, meta, axis, index))


def image_panel(services, session_id, meta, axis, index):
    """Figure of the Image panel."""
    uri = base_uri(services, session_id, meta, axis, index)
    return figures.image_figure(uri, uirevision=uirevision(meta, axis))


def filtered_panel(services, session_id, meta, recipe, axis, index):
    """Figure of the filtered image (same display range as the original)."""
    filtered = services.filtered(session_id, meta["id"], recipe)
    uri = _gray_uri(shown_slice(filtered, meta, axis, index), *meta["display"])
    return figures.image_figure(uri, uirevision=uirevision(meta, axis))


def histogram_panel(services, session_id, meta, recipe, log_scale, full):
    """Histogram of the filtered image with vmin / vmax and the automatic thresholds.

    A Patch of the shapes and axis type when `full` is False.
    """
    vmin, vmax = recipe["markers"]["vmin"], recipe["markers"]["vmax"]
    if not full:
        patch = Patch()
        patch["layout"]["shapes"] = figures.threshold_shapes(vmin, vmax, meta["min"],
                                                             meta["max"], MARKER_COLORS)
        patch["layout"]["yaxis"]["type"] = "log" if log_scale else "linear"
        return patch
    counts, edges = services.histogram(session_id, meta["id"], recipe)
    fig = figures.histogram_figure(counts, edges, vmin, vmax, colors=MARKER_COLORS,
                                   log=log_scale, uirevision=meta["id"])
    auto = services.thresholds(session_id, meta["id"], recipe)
    figures.add_threshold_markers(fig, {k: v for k, v in auto.items()
                                        if isinstance(v, float)})
    return fig


def thresholds_text(recipe, meta):
    """Plain-language summary of the thresholds."""
    m = recipe["markers"]
    return (f"background marker: pixels < {m['vmin']:g}   ·   object marker: pixels > "
            f"{m['vmax']:g}   ·   image range {meta['min']:g} … {meta['max']:g}")


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


def overlay_uris(filtered2d, shown2d, recipe, style, show_markers, gray):
    """PNG data URIs of the markers (blank if hidden) and of the result in `style`.

    `gray()` gives the displayed slice; it is read only for the style that blends it
    (label colours).
    """
    if show_markers:
        markers2d = make_markers(filtered2d, recipe["markers"]["vmin"],
                                 recipe["markers"]["vmax"], check=False)
        marker = render.png_data_uri(render.marker_overlay(markers2d))
    else:
        marker = blank_uri()
    image2d = gray() if style == "labels" else None
    return marker, render.png_data_uri(result_overlay(shown2d, image2d, style))


def segmentation_panel(services, session_id, meta, recipe, axis, index, style, show_markers,
                       view, selected, full):
    """Binarization figure (full, or a Patch of the overlays) and a summary line.

    Raises
    ------
    InputError
        If a step fails on this image (the page keeps its previous overlays).
    """
    result = services.run(session_id, meta["id"], recipe)

    def gray():  # read from the store only when a view is drawn, not on a cache hit
        return base_gray(services, session_id, meta, axis, index)

    def overlays():
        shown = result.labels if view == "labels" else result.mask
        marker, seg = overlay_uris(shown_slice(result.filtered, meta, axis, index),
                                   shown_slice(shown, meta, axis, index).astype(np.int32),
                                   recipe, style, show_markers, gray)
        n = int(np.max(result.labels)) if result.labels.size else 0
        fraction = float(np.count_nonzero(result.mask)) / result.mask.size
        return marker, seg, n, fraction

    # A repeated view (undo, a slice seen before) reuses its encoded overlays.
    key = json.dumps([meta["id"], stage_keys(recipe), meta["display"],
                      axis if meta["ndim"] == 3 else None, index if meta["ndim"] == 3 else None,
                      style, view, bool(show_markers)], sort_keys=True)
    marker_uri, seg_uri, n, fraction = services.compute.rendered(key, overlays)
    hl_uri = render.png_data_uri(highlight_overlay(
        shown_slice(result.labels, meta, axis, index), selected)) if selected else blank_uri()
    seg = recipe["segmentation"]
    how = "from cache" if result.cached else f"computed in {result.seconds:.2f} s"
    unit = "voxels" if meta["ndim"] == 3 else "pixels"
    summary = (f"object: {100 * fraction:.1f} % of {unit} · {n} labelled regions · "
               f"{SEGMENTERS[seg['name']].label} {how}")
    if full:
        fig = figures.segmentation_figure(render.png_data_uri(gray()), marker_uri, seg_uri,
                                          uirevision=uirevision(meta, axis), highlight=hl_uri)
        return fig, summary
    patch = Patch()
    patch["data"][figures.MARKER_TRACE]["source"] = marker_uri
    patch["data"][figures.SEG_TRACE]["source"] = seg_uri
    if selected is not None:
        patch["data"][figures.HIGHLIGHT_TRACE]["source"] = hl_uri
    return patch, summary


def recipe_token(recipe) -> str:
    """A short id of a recipe's stages (which preview a settle callback belongs to)."""
    text = json.dumps(stage_keys(recipe), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def preview_panel(services, session_id, meta, recipe, axis, index, style, show_markers, view,
                  nearby):
    """Patch of the overlays from a live preview (see :meth:`Compute.preview`), or None.

    The preview is the object mask of a warm-started approximate solve: it is drawn with
    the post-processing applied (for the "labels" view) but never cached; the canonical
    result follows (:func:`segmentation_update` with ``allow_preview=False``).
    """
    found = services.preview(session_id, meta["id"], recipe, nearby)
    if found is None:
        return None
    mask2d = shown_slice(found.mask, meta, axis, index)
    if view == "labels":
        shown2d = postprocess.run_postprocess(mask2d, recipe["postprocess"]) \
            if meta["ndim"] == 2 else mask2d.astype(np.int32)
    else:
        shown2d = mask2d.astype(np.int32)
    marker_uri, seg_uri = overlay_uris(
        shown_slice(found.filtered, meta, axis, index), shown2d, recipe, style, show_markers,
        lambda: base_gray(services, session_id, meta, axis, index))
    patch = Patch()
    patch["data"][figures.MARKER_TRACE]["source"] = marker_uri
    patch["data"][figures.SEG_TRACE]["source"] = seg_uri
    unit = "voxels" if meta["ndim"] == 3 else "pixels"
    fraction = float(np.count_nonzero(found.mask)) / found.mask.size
    summary = (f"object: {100 * fraction:.1f} % of {unit} · live preview "
               f"({found.seconds:.3f} s, warm-started) · exact random walker running…")
    return patch, summary


def _signal(recipe) -> dict:
    """Store data naming the current recipe; a new token each time, so that it always fires."""
    return {"key": recipe_token(recipe), "token": uuid.uuid4().hex}


def segmentation_update(services, session_id, meta, history, axis, index, style, show, view,
                        *, full, allow_preview, announce=True):
    """Outputs of the segmentation panel for the current state of `history`.

    Parameters
    ----------
    full : bool
        Send a whole figure (new image or slice) rather than a Patch of the overlays.
    allow_preview : bool
        Show a live preview (:func:`preview_panel`) if the exact result is not cached.
    announce : bool, optional
        Signal the panels that depend on the exact segmentation (comparison, measurements)
        once it is shown; False when only the view changed (style, slice).

    Returns
    -------
    tuple
        (figure or Patch, summary, segmentation message, post-processing message, pending,
        settled). `pending` names the recipe whose live preview is shown (the settle
        callback then computes the exact result), `settled` the recipe whose exact result
        is shown (or failed: the dependent panels report the failure on their steps); each
        is ``no_update`` otherwise. On a failure the previous overlays stay and the
        message names the failed stage.
    """
    recipe = current_recipe(history)
    show_markers = "markers" in (show or [])
    settled = _signal(recipe) if announce else no_update
    try:
        if allow_preview and not full:
            shown = preview_panel(services, session_id, meta, recipe, axis, index, style,
                                  show_markers, view, nearby_states(history))
            if shown is not None:
                return (*shown, None, None, _signal(recipe), no_update)
        fig, summary = segmentation_panel(services, session_id, meta, recipe, axis, index,
                                          style, show_markers, view, None, full)
    except Exception as exc:  # noqa: BLE001 - keep the page and the server usable
        stage = failed_stage(services, session_id, meta, recipe)
        message = f"{stage.capitalize()} failed: {_errors(exc)}"
    else:
        return fig, summary, None, None, no_update, settled
    # Keep the previous overlays; on a new image or slice show it without overlays.
    fig = no_update
    if full:
        try:
            uri = base_uri(services, session_id, meta, axis, index)
            fig = figures.segmentation_figure(uri, blank_uri(), blank_uri(),
                                              uirevision=uirevision(meta, axis),
                                              highlight=blank_uri())
        except InputError:
            fig = figures.empty_figure("image not available")
    shown = message_children(message, "error")
    if stage == "post-processing":
        return fig, "", None, shown, no_update, settled
    return fig, "", shown, None, no_update, settled


def settle_update(services, session_id, meta, history, pending, axis, index, style, show,
                  view):
    """After a live preview: the exact (canonical, path-independent) segmentation.

    Returns
    -------
    tuple
        (Patch of the overlays, summary, segmentation message, post-processing message,
        settled), as :func:`segmentation_update`.

    Raises
    ------
    PreventUpdate
        If `pending` belongs to another state than the current one (a newer move shows its
        own preview and settles it).
    """
    require_signal(pending, history)
    out = segmentation_update(services, session_id, meta, history, axis, index, style, show,
                              view, full=False, allow_preview=False)
    return out[:4] + out[5:]


def require_signal(signal, history):
    """PreventUpdate unless `signal` (pending / settled store data) names the current recipe."""
    if not isinstance(signal, dict) or signal.get("key") != recipe_token(current_recipe(history)):
        raise PreventUpdate


def highlight_patch(services, session_id, meta, recipe, axis, index, selected):
    """Patch of the selected-regions overlay only (rows selected in the measurements table)."""
    labels = services.run(session_id, meta["id"], recipe).labels
    patch = Patch()
    patch["data"][figures.HIGHLIGHT_TRACE]["source"] = render.png_data_uri(
        highlight_overlay(shown_slice(labels, meta, axis, index), selected or []))
    return patch


def compare_panel(services, session_id, meta, recipe, method, axis, index, full=True):
    """Figure of another segmentation method from the same markers, and the agreement text.

    A Patch of its overlay when `full` is False (the image shown has not changed)."""
    if method not in SEGMENTERS:
        raise InputError(f"unknown segmentation method {method!r}")
    other = {**recipe, "segmentation": {"name": method, "params": {}}}
    set_intensity_scale(other, meta)
    other = services.validate(other)
    mine = services.mask(session_id, meta["id"], recipe)
    theirs = services.mask(session_id, meta["id"], other)
    overlay = render.png_data_uri(postprocess.boundaries_overlay(
        shown_slice(theirs, meta, axis, index).astype(np.int32)))
    if full:
        fig = figures.segmentation_figure(base_uri(services, session_id, meta, axis, index),
                                          blank_uri(), overlay,
                                          uirevision=uirevision(meta, axis), highlight=blank_uri())
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
    )
    def _image(meta, axis, index, session_id):
        if not meta:
            raise PreventUpdate
        try:
            return image_panel(services, session_id, meta, axis, index)
        except InputError:
            log.warning("image panel", exc_info=True)
            raise PreventUpdate from None

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
        Output(ids.THRESHOLDS_TEXT, "children"),
        Output({"type": ids.STEP_MESSAGE, "stage": "filter"}, "children"),
        Input(ids.HISTORY, "data"),
        Input(ids.HIST_LOG, "value"),
        Input(ids.SLICE_AXIS, "value"),
        Input(ids.SLICE_INDEX, "value"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
    )
    def _filtered(history, log_value, axis, index, meta, session_id):
        require_current(meta, history)
        recipe = current_recipe(history)
        new_filter = _stage_changed(history, "filter") or ctx.triggered_id is None
        slice_moved = ctx.triggered_id in (ids.SLICE_AXIS, ids.SLICE_INDEX)
        log_scale = "log" in (log_value or [])
        try:
            filtered_fig = (filtered_panel(services, session_id, meta, recipe, axis, index)
                            if new_filter or slice_moved else no_update)
            hist = histogram_panel(services, session_id, meta, recipe, log_scale, new_filter)
        except Exception as exc:  # noqa: BLE001 - the page stays usable
            return no_update, no_update, no_update, message_children(
                f"Filtering failed: {_errors(exc)}", "error")
        return filtered_fig, hist, thresholds_text(recipe, meta), None

    seg_states = (State(ids.SLICE_AXIS, "value"), State(ids.SLICE_INDEX, "value"),
                  State(ids.OVERLAY_STYLE, "value"), State(ids.SHOW_MARKERS, "value"),
                  State(ids.RESULT_VIEW, "value"), State(ids.IMAGE, "data"),
                  State(ids.SESSION, "data"))

    seg_outputs = (Output(ids.SEG_GRAPH, "figure", allow_duplicate=True),
                   Output(ids.SEG_SUMMARY, "children", allow_duplicate=True),
                   Output(ids.SEG_MESSAGE, "children", allow_duplicate=True),
                   Output({"type": ids.STEP_MESSAGE, "stage": "postprocess"}, "children",
                          allow_duplicate=True))

    @app.callback(
        Output(ids.SEG_GRAPH, "figure"),
        Output(ids.SEG_SUMMARY, "children"),
        Output(ids.SEG_MESSAGE, "children"),
        Output({"type": ids.STEP_MESSAGE, "stage": "postprocess"}, "children"),
        Output(ids.SEG_PENDING, "data"),
        Output(ids.SEG_SETTLED, "data"),
        Input(ids.HISTORY, "data"),
        Input(ids.SLICE_AXIS, "value"),
        Input(ids.SLICE_INDEX, "value"),
        Input(ids.OVERLAY_STYLE, "value"),
        Input(ids.SHOW_MARKERS, "value"),
        Input(ids.RESULT_VIEW, "value"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
    )
    def _segmentation(history, axis, index, style, show, view, meta, session_id):
        # The selected-regions overlay has its own callback: the segmentation never waits
        # for the measurements table, and the comparison and the measurements wait for the
        # exact segmentation (SEG_SETTLED) instead of competing with it for the CPU.
        require_current(meta, history)
        triggers = {t["prop_id"].split(".")[0] for t in ctx.triggered}
        new_image = len(history["states"]) == 1 and ids.HISTORY in triggers
        full = (new_image or bool(triggers & {ids.SLICE_AXIS, ids.SLICE_INDEX})
                or not ctx.triggered_id)
        return segmentation_update(services, session_id, meta, history, axis, index, style,
                                   show, view, full=full, allow_preview=True,
                                   announce=ids.HISTORY in triggers or not ctx.triggered_id)

    @app.callback(
        *seg_outputs,
        Output(ids.SEG_SETTLED, "data", allow_duplicate=True),
        Input(ids.SEG_PENDING, "data"),
        State(ids.HISTORY, "data"),
        *seg_states,
        prevent_initial_call=True,
    )
    def _settle(pending, history, axis, index, style, show, view, meta, session_id):
        # After a live preview: the exact segmentation (path independent) replaces it.
        require_current(meta, history)
        return settle_update(services, session_id, meta, history, pending, axis, index, style,
                             show, view)

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
        Input(ids.SEG_SETTLED, "data"),
        Input(ids.COMPARE_METHOD, "value"),
        Input(ids.SLICE_AXIS, "value"),
        Input(ids.SLICE_INDEX, "value"),
        State(ids.HISTORY, "data"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
    )
    def _compare(settled, method, axis, index, history, meta, session_id):
        require_current(meta, history)
        if ctx.triggered_id == ids.SEG_SETTLED:
            require_signal(settled, history)
        full = (ctx.triggered_id in (ids.SLICE_AXIS, ids.SLICE_INDEX, None)
                or len(history["states"]) == 1)
        try:
            return compare_panel(services, session_id, meta, current_recipe(history), method,
                                 axis, index, full=full)
        except Exception as exc:  # noqa: BLE001
            return no_update, message_children(f"Comparison failed: {_errors(exc)}", "error")


def _stage_changed(history, stage):
    """Whether `stage` of the current recipe differs from the state before it in history."""
    i = history["index"]
    if len(history["states"]) == 1:
        return True
    states = history["states"]
    here = stage_keys(states[i])[stage]
    neighbours = [states[j] for j in (i - 1, i + 1) if 0 <= j < len(states)]
    return any(stage_keys(s)[stage] != here for s in neighbours)
