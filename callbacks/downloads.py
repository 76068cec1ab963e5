"""Downloads: the label image (TIFF, with provenance) and the overlay of the shown slice (PNG)."""

from __future__ import annotations

import logging
from pathlib import PurePath

import numpy as np
from dash import Input, Output, State, dcc, no_update
from dash.exceptions import PreventUpdate

from components import ids
from pipeline import io, provenance, render
from pipeline.errors import InputError
from pipeline.segment import make_markers

from .display import drawn_markers, result_overlay, shown_slice
from .loading import message_children
from .params import current_recipe

log = logging.getLogger(__name__)


def file_stem(meta):
    """Base of download names: the image's name without folders or extension."""
    return PurePath((meta or {}).get("name") or "image").stem or "image"


def labels_file(services, session_id, meta, history):
    """(bytes, filename) of the label image of the current recipe (after post-processing).

    The TIFF description holds the provenance: the recipe, the input's content hash and the
    library versions.
    """
    recipe = current_recipe(history)
    result = services.run(session_id, meta["id"], recipe)
    info = provenance.record(meta, {"recipe": recipe})
    data = io.labels_to_tiff_bytes(np.asarray(result.labels), metadata=info)
    return data, f"{file_stem(meta)}_labels.tif"


def overlay_file(services, session_id, meta, history, axis, index, style, show_markers,
                 view="labels"):
    """(bytes, filename) of the shown slice with its overlays, as an RGB PNG."""
    recipe = current_recipe(history)
    result = services.run(session_id, meta["id"], recipe)
    image2d = shown_slice(services.image(session_id, meta["id"]), meta, axis, index)
    gray = render.to_uint8(image2d, *meta["display"])
    layers = []
    if show_markers:
        markers = drawn_markers(result.filtered, recipe, meta, axis, index)  # strokes drawn
        if markers is None:
            markers = make_markers(shown_slice(result.filtered, meta, axis, index),
                                   recipe["markers"]["vmin"], recipe["markers"]["vmax"],
                                   check=False)
        layers.append(render.marker_overlay(markers))
    shown = result.labels if view == "labels" else result.mask
    layers.append(result_overlay(shown_slice(shown, meta, axis, index).astype(np.int32), gray,
                                 style))
    rgb = render.composite(gray, layers)
    suffix = f"_slice{axis}-{index}" if meta["ndim"] == 3 else ""
    info = provenance.record(meta, {"recipe": recipe},
                             view={"axis": axis, "index": index, "style": style, "shown": view})
    return io.png_bytes(rgb, metadata=info), f"{file_stem(meta)}_overlay{suffix}.png"


def download_outputs(what, make, *args):
    """(download data, message) of a download button: ``make(*args)`` gives (bytes, file
    name); a failure is said on the page (a bad input as it is, anything else as an
    unexpected error, logged), never answered 500."""
    try:
        data, name = make(*args)
    except InputError as exc:
        return no_update, message_children(f"Download failed: {exc}", "error")
    except Exception as exc:  # noqa: BLE001 - a download never answers 500
        log.exception("%s download failed", what)
        return no_update, message_children(
            f"Download failed: unexpected error ({type(exc).__name__}).", "error")
    return dcc.send_bytes(data, name), no_update


def register(app, services):
    """Wire the download buttons."""

    @app.callback(
        Output(ids.DOWNLOAD_LABELS, "data"),
        Output(ids.SEG_MESSAGE, "children", allow_duplicate=True),
        Input(ids.DOWNLOAD_LABELS_BUTTON, "n_clicks"),
        State(ids.IMAGE, "data"),
        State(ids.HISTORY, "data"),
        State(ids.SESSION, "data"),
        prevent_initial_call=True,
    )
    def _labels(n, meta, history, session_id):
        if not n or not meta or not history:
            raise PreventUpdate
        return download_outputs("labels", labels_file, services, session_id, meta, history)

    @app.callback(
        Output(ids.DOWNLOAD_OVERLAY, "data"),
        Output(ids.SEG_MESSAGE, "children", allow_duplicate=True),
        Input(ids.DOWNLOAD_OVERLAY_BUTTON, "n_clicks"),
        State(ids.IMAGE, "data"),
        State(ids.HISTORY, "data"),
        State(ids.SLICE_AXIS, "value"),
        State(ids.SLICE_INDEX, "value"),
        State(ids.OVERLAY_STYLE, "value"),
        State(ids.SHOW_MARKERS, "value"),
        State(ids.RESULT_VIEW, "value"),
        State(ids.SESSION, "data"),
        prevent_initial_call=True,
    )
    def _overlay(n, meta, history, axis, index, style, show, view, session_id):
        if not n or not meta or not history:
            raise PreventUpdate
        return download_outputs("overlay", overlay_file, services, session_id, meta, history,
                                axis, index, style, "markers" in (show or []),
                                view or "labels")
