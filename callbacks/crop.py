"""Try on a crop first (issue 9): tune the recipe on the region the segmentation view shows,
then apply it to the whole image.

"Tune on this view" crops the image to what the Segmentation graph shows (its zoom:
:func:`pipeline.crop.view_box`; a volume keeps every slice along its slicing axis) and makes
the crop the session's image, with the recipe as it is (thresholds included; strokes drawn by
hand are dropped, their coordinates are the image's). Every step is then as fast as the crop
is small. "Apply to the whole image" makes the whole image the session's image again with
the recipe tuned on the crop (its thresholds and every other step): its exact segmentation
runs as usual — as a background job with progress and Cancel when it is long
(:mod:`callbacks.exact_job`). Both are steps of the session, like loading an image: the crop
and the whole image keep their own undo histories.
"""

from __future__ import annotations

import logging

from dash import Input, Output, State, no_update
from dash.exceptions import PreventUpdate

from components import ids
from pipeline import crop as crops
from pipeline import io
from pipeline.errors import InputError

from .loading import LoadOutcome, describe, hashed_meta, message_children

log = logging.getLogger(__name__)

#: The Segmentation graph's displayed ranges when "Tune on this view" is clicked (browser).
VIEW_JS = """
function(n, axis) {
    const nu = window.dash_clientside.no_update;
    const gd = document.querySelector('#%(seg)s .js-plotly-plot');
    const fl = gd && gd._fullLayout;
    if (!n || !fl || !fl.xaxis || !fl.yaxis) { return nu; }
    return {x: fl.xaxis.range.slice(), y: fl.yaxis.range.slice(), axis: axis || 0, n: n};
}
""" % {"seg": ids.SEG_GRAPH}

#: "Apply to the whole image" is shown on a crop only.
APPLY_JS = """
function(meta) {
    const parent = meta && meta.parent;
    return parent ? [{}, 'Apply to the whole image (' + parent.name + ')'] :
                    [{display: 'none'}, ''];
}
"""


def crop_to_view(services, session_id, meta, request) -> LoadOutcome:
    """Make the crop of the current image shown by a view the session's image.

    Parameters
    ----------
    services : Services
    session_id : str
    meta : dict
        The image the page shows.
    request : dict
        ``{"x": [from, to], "y": [from, to], "axis": slicing axis}`` (:data:`VIEW_JS`).

    Returns
    -------
    LoadOutcome
        The crop's metadata (with ``parent``: the whole image, and ``keep_markers``), or a
        message and no metadata (the page keeps its image).
    """
    if not meta or not isinstance(request, dict):
        raise PreventUpdate
    store = services.store
    try:
        axis = int(request.get("axis") or 0) if meta["ndim"] == 3 else 0
        array = store.get_image(session_id, meta["id"])
        rows, cols = crops.view_box(array.shape, request.get("x"), request.get("y"), axis)
        part = crops.crop(array, rows, cols, axis)
        where = f"rows {rows[0]}–{rows[1] - 1}, columns {cols[0]}–{cols[1] - 1}"
        root = meta.get("parent") or {"id": meta["id"], "name": meta["name"]}
        loaded = io.LoadedImage(part, f"{root['name']} · crop ({where})", (
            f"A crop of {root['name']} to tune the recipe on: 'Apply to the whole image' "
            "takes the recipe back to it.",))
        new = hashed_meta(part, loaded)
        image_id = new["id"]
        new.update(parent={"id": root["id"], "name": root["name"]}, keep_markers=True)
        if meta.get("channel"):  # a channel of a colour file: the recipe keeps saying so
            new["channel"] = meta["channel"]
        if meta.get("voxel_size"):
            new["voxel_size"] = meta["voxel_size"]
        removed = store.put_image(session_id, image_id, part, new,
                                  owner=services.owner(session_id))
        store.set_current(session_id, image_id)
    except InputError as exc:
        return LoadOutcome(None, f"Could not crop: {exc}", "error")
    except MemoryError:
        log.exception("out of memory cropping")
        return LoadOutcome(None, "Could not crop: not enough memory on the server.", "error")
    text = (f"Tuning on a crop of {root['name']} ({where}, "
            f"{' × '.join(str(s) for s in part.shape)}): 'Apply to the whole image' takes "
            "the recipe back to it.")
    if removed:
        text += (" To stay within your storage quota, your oldest images were removed from "
                 f"the server: {', '.join(removed)}.")
    return LoadOutcome(new, text, "info")


def apply_to_whole(services, session_id, meta) -> LoadOutcome:
    """Make the whole image of the crop the page shows the session's image again; its new
    history starts from the recipe tuned on the crop (``keep_markers``).

    Returns
    -------
    LoadOutcome
        The whole image's metadata, or a message and no metadata (the page keeps the crop).
    """
    parent = (meta or {}).get("parent")
    if not parent:
        return LoadOutcome(None, "This image is not a crop: there is no whole image to apply "
                                 "the recipe to.", "error")
    store = services.store
    try:
        whole = store.get_meta(session_id, parent["id"])
        if not whole or not store.has_image(session_id, parent["id"]):
            raise InputError("the whole image is no longer on the server: load it again")
        store.set_current(session_id, parent["id"])
    except InputError as exc:
        return LoadOutcome(None, f"Could not apply to the whole image: {exc}", "error")
    return LoadOutcome({**whole, "keep_markers": True},
                       f"The recipe tuned on the crop, on the whole of {whole['name']}.", "info")


def outputs_of(outcome):
    """(image metadata, image info, load message) of a crop or apply outcome."""
    if outcome.meta is None:
        return no_update, no_update, message_children(outcome.message, "error")
    return outcome.meta, describe(outcome.meta), message_children(outcome.message, "info")


def register(app, services):
    """Wire "Tune on this view" and "Apply to the whole image"."""
    app.clientside_callback(
        VIEW_JS,
        Output(ids.CROP_REQUEST, "data"),
        Input(ids.CROP_BUTTON, "n_clicks"),
        State(ids.SLICE_AXIS, "value"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        APPLY_JS,
        Output(ids.APPLY_WHOLE_BUTTON, "style"),
        Output(ids.APPLY_WHOLE_BUTTON, "children"),
        Input(ids.IMAGE, "data"),
    )
    loading = [(Output(ids.APP_ROOT, "className"), "app loading", "app")]

    @app.callback(
        Output(ids.IMAGE, "data", allow_duplicate=True),
        Output(ids.IMAGE_INFO, "children", allow_duplicate=True),
        Output(ids.LOAD_MESSAGE, "children", allow_duplicate=True),
        Input(ids.CROP_REQUEST, "data"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
        prevent_initial_call=True,
        running=loading,
    )
    def _crop(request, meta, session_id):
        return outputs_of(crop_to_view(services, session_id, meta, request))

    @app.callback(
        Output(ids.IMAGE, "data", allow_duplicate=True),
        Output(ids.IMAGE_INFO, "children", allow_duplicate=True),
        Output(ids.LOAD_MESSAGE, "children", allow_duplicate=True),
        Input(ids.APPLY_WHOLE_BUTTON, "n_clicks"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
        prevent_initial_call=True,
        running=loading,
    )
    def _apply(n_clicks, meta, session_id):
        if not n_clicks:
            raise PreventUpdate
        return outputs_of(apply_to_whole(services, session_id, meta))


__all__ = ["VIEW_JS", "apply_to_whole", "crop_to_view", "outputs_of", "register"]
