"""What the panels show: the image, the histogram and the segmentation overlays.

Arrays never leave the server: each callback reads the session's image from the shared store,
computes (or finds in the cache) what it needs, and sends PNG data URIs. A parameter change
replaces only the overlay sources and the histogram shapes (``dash.Patch``), so zoom and pan
survive and the response stays small.
"""

from __future__ import annotations

import logging

import numpy as np
from dash import Input, Output, Patch, State, ctx, no_update
from dash.exceptions import PreventUpdate

from components import figures, ids
from pipeline import render
from pipeline.errors import InputError
from pipeline.segment import OBJECT, SegmentParams, make_markers

from .loading import message_children
from .params import current_params

log = logging.getLogger(__name__)

MARKER_COLORS = {"background": render.MARKER_HEX[1], "object": render.MARKER_HEX[2]}


def slice_settings(meta, axis):
    """Visibility, range and start position of the slice slider for an image."""
    if not meta or meta["ndim"] != 3:
        return {"display": "none"}, 1, 0
    axis = int(axis or 0)
    n = meta["shape"][axis]
    return {"display": "block"}, n - 1, n // 2


def _slice(array, meta, axis, index):
    if meta["ndim"] != 3:
        return array
    axis = int(axis or 0)
    index = int(min(max(index or 0, 0), meta["shape"][axis] - 1))
    return render.take_slice(array, axis, index)


def uirevision(meta, axis):
    """Zoom is kept while the image and the slicing axis stay the same."""
    return f"{meta['id']}-{axis if meta['ndim'] == 3 else ''}"


def base_uri(services, session_id, meta, axis, index):
    """PNG data URI of the displayed slice of the image."""
    image = services.image(session_id, meta["id"])
    lo, hi = meta["display"]
    return render.png_data_uri(render.to_uint8(_slice(image, meta, axis, index), lo, hi))


def image_panel(services, session_id, meta, axis, index):
    """Figure of the Image panel."""
    uri = base_uri(services, session_id, meta, axis, index)
    return figures.image_figure(uri, uirevision=uirevision(meta, axis))


def histogram_panel(services, session_id, meta, params, log_scale, full):
    """Histogram figure, or a Patch of its shapes and axis type when `full` is False."""
    if not full:
        patch = Patch()
        patch["layout"]["shapes"] = figures.threshold_shapes(
            params["vmin"], params["vmax"], meta["min"], meta["max"], MARKER_COLORS)
        patch["layout"]["yaxis"]["type"] = "log" if log_scale else "linear"
        return patch
    counts, edges = services.histogram(session_id, meta["id"])
    return figures.histogram_figure(counts, edges, params["vmin"], params["vmax"],
                                    colors=MARKER_COLORS, log=log_scale, uirevision=meta["id"])


def thresholds_text(params, meta):
    """Plain-language summary of the thresholds."""
    return (f"background marker: pixels < {params['vmin']:g}   ·   object marker: pixels > "
            f"{params['vmax']:g}   ·   image range {meta['min']:g} … {meta['max']:g}")


def segmentation_panel(services, session_id, meta, params, axis, index, style, show_markers,
                       full):
    """Binarization figure (full, or a Patch of the overlays) and a summary line.

    Raises
    ------
    InputError
        If the parameters cannot segment this image (the page keeps its previous overlays).
    """
    seg_params = SegmentParams.from_dict(params)
    image = services.image(session_id, meta["id"])
    result = services.segment(session_id, meta["id"], seg_params)
    image2d = _slice(image, meta, axis, index)
    labels2d = _slice(result.labels, meta, axis, index)
    markers2d = make_markers(image2d, seg_params.vmin, seg_params.vmax, check=False)
    marker_uri = render.png_data_uri(
        render.marker_overlay(markers2d if show_markers else np.zeros_like(markers2d)))
    seg_uri = render.png_data_uri(render.segmentation_overlay(labels2d, style=style))
    fraction = float(np.count_nonzero(result.labels == OBJECT)) / result.labels.size
    how = "from cache" if result.cached else f"computed in {result.seconds:.2f} s"
    summary = (f"object: {100 * fraction:.1f} % of {'voxels' if meta['ndim'] == 3 else 'pixels'}"
               f" · random_walker(beta={seg_params.beta:g}, mode='{seg_params.mode}', "
               f"tol={seg_params.tol:g}) {how}")
    if full:
        lo, hi = meta["display"]
        base = render.png_data_uri(render.to_uint8(image2d, lo, hi))
        fig = figures.segmentation_figure(base, marker_uri, seg_uri,
                                          uirevision=uirevision(meta, axis))
        return fig, summary
    patch = Patch()
    patch["data"][figures.MARKER_TRACE]["source"] = marker_uri
    patch["data"][figures.SEG_TRACE]["source"] = seg_uri
    return patch, summary


def bare_segmentation_figure(services, session_id, meta, axis, index):
    """Binarization figure of the image alone (transparent overlays)."""
    uri = base_uri(services, session_id, meta, axis, index)
    blank = render.png_data_uri(np.zeros((1, 1, 4), dtype=np.uint8))
    return figures.segmentation_figure(uri, blank, blank, uirevision=uirevision(meta, axis))


def register(app, services):
    """Wire the three panels."""

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
            log.warning("image panel: %s", exc_info=True)
            raise PreventUpdate from None

    @app.callback(
        Output(ids.HIST_GRAPH, "figure"),
        Output(ids.THRESHOLDS_TEXT, "children"),
        Input(ids.HISTORY, "data"),
        Input(ids.HIST_LOG, "value"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
    )
    def _histogram(history, log_value, meta, session_id):
        if not meta or not history or history["image_id"] != meta["id"]:
            raise PreventUpdate
        params = current_params(history)
        # A new image resets the history to one state: draw the whole figure then.
        full = len(history["states"]) == 1 and ctx.triggered_id == ids.HISTORY
        try:
            fig = histogram_panel(services, session_id, meta, params, "log" in (log_value or []),
                                  full)
        except InputError:
            raise PreventUpdate from None
        return fig, thresholds_text(params, meta)

    @app.callback(
        Output(ids.SEG_GRAPH, "figure"),
        Output(ids.SEG_SUMMARY, "children"),
        Output(ids.SEG_MESSAGE, "children"),
        Input(ids.HISTORY, "data"),
        Input(ids.SLICE_AXIS, "value"),
        Input(ids.SLICE_INDEX, "value"),
        Input(ids.OVERLAY_STYLE, "value"),
        Input(ids.SHOW_MARKERS, "value"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
    )
    def _segmentation(history, axis, index, style, show, meta, session_id):
        if not meta or not history or history["image_id"] != meta["id"]:
            raise PreventUpdate
        triggers = {t["prop_id"].split(".")[0] for t in ctx.triggered}
        new_image = len(history["states"]) == 1 and ids.HISTORY in triggers
        full = new_image or bool(triggers & {ids.SLICE_AXIS, ids.SLICE_INDEX}) or not ctx.triggered_id
        try:
            fig, summary = segmentation_panel(services, session_id, meta, current_params(history),
                                              axis, index, style, "markers" in (show or []), full)
        except InputError as exc:
            message = f"Segmentation failed: {exc}"
        except Exception as exc:  # noqa: BLE001 - keep the page and the server usable
            log.exception("segmentation failed")
            message = f"Segmentation failed: unexpected error ({type(exc).__name__}: {exc})."
        else:
            return fig, summary, None
        # Keep the previous overlays; on a new image or slice show it without overlays.
        fig = no_update
        if full:
            try:
                fig = bare_segmentation_figure(services, session_id, meta, axis, index)
            except InputError:
                fig = figures.empty_figure("image not available")
        return fig, "", message_children(message, "error")
