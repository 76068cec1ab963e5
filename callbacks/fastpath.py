"""The pixels of a move without dash-renderer's round trip.

A Dash callback's answer goes through dash-renderer's bookkeeping (request queue, one store
update per output, every mounted component's selectors) before plotly draws it: on coins
that cost ≈ 150 ms of a key press's ≈ 200 ms to the first overlay, on a server answering in
25 ms. The page's gate (``callbacks.thresholds.GATE_JS``) therefore asks these routes
directly with ``fetch`` and draws the overlays itself (``Plotly.restyle`` of the two
overlay traces, ``assets/fastmove.js``); then it hands the other outputs to Dash with
``dash_clientside.set_props`` (history pointer, undo / redo, summary, the signals the
comparison and the measurements follow), so the page's state is the one the callbacks would
have set. Any failure falls back to the Dash callbacks (``MOVE_REQUEST``, ``SEG_PENDING``,
``DRAG_REQUEST``).

The routes run exactly the bodies of those callbacks (:func:`move_update`,
:func:`settle_update`, :func:`drag_update`), with the same checks; the session's image
metadata is read from the server's store, not from the request.
"""

from __future__ import annotations

import json
import logging
import time

from dash import Patch, no_update
from dash.exceptions import PreventUpdate
from flask import Response, request
from plotly.io.json import to_json_plotly

from components import figures, ids
from pipeline import render
from pipeline.errors import InputError
from pipeline.recipe import MAX_BYTES as RECIPE_MAX_BYTES

from .display import MARKER_ALPHA, SETTLE_PROPS, display_of, settle_update, shown_slice
from .params import require_current
from .thresholds import (DRAG_PROPS, MOVE_PROPS, drag_update, move_update,
                         prefetch_update)

log = logging.getLogger(__name__)

#: Largest request body accepted (a pointer, a recipe and a few ids: a few kB; the recipe
#: may hold strokes drawn by hand, up to a recipe's limit).
MAX_BODY = 64 * 1024 + RECIPE_MAX_BYTES



def _keyed(props):
    """``(id, property)`` pairs with pattern-matching ids as the page's set_props takes them
    (the JSON of the id dict, keys sorted)."""
    return tuple((json.dumps(cid, sort_keys=True, separators=(",", ":"))
                  if isinstance(cid, dict) else cid, prop) for cid, prop in props)


# The outputs of the callbacks whose bodies the routes run: the same lists as the callbacks'.
MOVE_OUTPUTS = _keyed(MOVE_PROPS)
SETTLE_OUTPUTS = _keyed(SETTLE_PROPS)
DRAG_OUTPUTS = _keyed(DRAG_PROPS)


class BadRequest(Exception):
    """A request the routes cannot take (answered 400)."""


def _view(body):
    view = body.get("view")
    if not isinstance(view, dict):
        raise BadRequest("view is missing")
    return (view.get("axis"), view.get("index"), view.get("style"), view.get("show"),
            view.get("view"))


def _context(services, body):
    """(session id, image metadata from the store, history pointer) of a request body."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    session_id, image_id, history = body.get("session"), body.get("image"), body.get("history")
    if not isinstance(history, dict) or history.get("image_id") != image_id:
        raise BadRequest("history does not belong to this image")
    try:
        meta = services.store.get_meta(session_id, image_id)
    except InputError as exc:
        raise BadRequest(str(exc)) from None
    if not meta:
        raise BadRequest("This image is no longer on the server (expired or evicted). "
                         "Load it again.")
    return session_id, meta, history


#: Properties of an overlay trace the page sets itself (its PNG and where its pixels sit).
OVERLAY_PROPS = ("source", "x0", "y0", "dx", "dy")


def outputs_dict(names, values) -> dict:
    """``{id: {prop: value}}`` of the outputs that are not ``no_update``; a Patch of the
    segmentation figure that only sets overlay traces' sources (and geometry) is given as
    those instead: ``overlays`` ``{trace index: PNG data URI}`` and ``geometry``
    ``{trace index: {x0, y0, dx, dy}}`` (a preview drawn on blocks,
    ``figures.seg_geometry``)."""
    out, overlays, geometry = {}, {}, {}
    for (cid, prop), value in zip(names, values):
        if value is no_update:
            continue
        if isinstance(value, Patch):
            value = value.to_plotly_json()
            if cid == ids.SEG_GRAPH:
                ops = value["operations"]
                mine = [op for op in ops
                        if op["operation"] == "Assign" and len(op["location"]) == 3
                        and op["location"][0] == "data" and op["location"][2] in OVERLAY_PROPS]
                if len(mine) == len(ops):
                    # only overlay traces: sent once, as `overlays` / `geometry` (the page
                    # builds the figure's Patch from them)
                    for op in mine:
                        trace, key = str(op["location"][1]), op["location"][2]
                        if key == "source":
                            overlays[trace] = op["params"]["value"]
                        else:
                            geometry.setdefault(trace, {})[key] = op["params"]["value"]
                    continue
        out.setdefault(cid, {})[prop] = value
    return {"outputs": out, "overlays": overlays, "geometry": geometry,
            "full": ids.SEG_GRAPH in out and not overlays}


def fast_move(services, body) -> dict:
    """The move callback's outputs for a request body (see the module docstring)."""
    session_id, meta, history = _context(services, body)
    values = move_update(services, session_id, meta, history, body.get("request"),
                         *_view(body), body.get("base"))
    return outputs_dict(MOVE_OUTPUTS, values)


def fast_settle(services, body) -> dict:
    """The settle callback's outputs (the exact result after a live preview)."""
    session_id, meta, history = _context(services, body)
    values = settle_update(services, session_id, meta, history, body.get("pending"),
                           *_view(body), body.get("base"))
    return outputs_dict(SETTLE_OUTPUTS, values)


def fast_drag(services, body) -> dict:
    """The drag callback's outputs (a preview of the pair under the handle)."""
    session_id, meta, history = _context(services, body)
    values = drag_update(services, session_id, meta, history, body.get("request"),
                         *_view(body), body.get("base"))
    return outputs_dict(DRAG_OUTPUTS, values)


def fast_prefetch(services, body):
    """Prepare the exact result of the pair the page expects next
    (:func:`callbacks.thresholds.prefetch_update`); nothing is answered (204)."""
    session_id, meta, history = _context(services, body)
    axis, index, style, show, view = _view(body)
    prefetch_update(services, session_id, meta, history, body.get("request"), axis, index,
                    style, show, view)
    raise PreventUpdate


#: Largest slice whose values the page thresholds itself (larger ones: the server's markers).
MAX_VALUE_PIXELS = 4 * 1024 * 1024


def fast_values(services, body) -> dict:
    """The shown slice of the filtered image, packed in a PNG (``render.pack_values16``),
    for the page to draw the markers of a vmin / vmax itself while the server segments.

    Only a filtered image already in the cache is sent (this never starts a filter);
    PreventUpdate (204) otherwise, or when the slice is larger than
    :data:`MAX_VALUE_PIXELS`.
    """
    session_id, meta, history = _context(services, body)
    recipe = require_current(meta, history)
    axis, index, *_ = _view(body)
    filtered = services.cached_filtered(session_id, meta["id"], recipe)
    if filtered is None:
        raise PreventUpdate
    factor = display_of(meta, axis)  # the markers are drawn at the display level
    values2d = render.reduce_nearest(shown_slice(filtered, meta, axis, index), factor)
    if values2d.size > MAX_VALUE_PIXELS:
        raise PreventUpdate
    rgb, lo, scale = render.pack_values16(values2d)
    alpha = round(255 * MARKER_ALPHA)
    return {"values": render.png_data_uri(rgb), "lo": lo, "scale": scale,
            "shape": list(values2d.shape), "factor": factor, "trace": figures.MARKER_TRACE,
            "colors": {str(k): [*rgb_, alpha] for k, rgb_ in render.MARKER_COLORS.items()}}


ROUTES = {"move": fast_move, "settle": fast_settle, "drag": fast_drag, "values": fast_values,
          "prefetch": fast_prefetch}


def register(app, services):
    """Add the routes ``POST /_pipex/<move|settle|drag|values|prefetch>``."""

    @app.server.route("/_pipex/<name>", methods=["POST"])
    def _fast(name):
        handler = ROUTES.get(name)
        if handler is None:
            return Response('{"error": "unknown route"}', 404, mimetype="application/json")
        if (request.content_length or 0) > MAX_BODY:
            return Response('{"error": "request too large"}', 413,
                            mimetype="application/json")
        start = time.perf_counter()
        try:
            body = json.loads(request.get_data(cache=False, as_text=True) or "null")
            result = handler(services, body)
        except PreventUpdate:
            # superseded, or nothing to do: the page keeps its state
            return Response(status=204, headers=_timing(start))
        except (BadRequest, InputError, ValueError, TypeError, KeyError, AttributeError,
                RecursionError) as exc:  # RecursionError: JSON nested too deep
            return Response(json.dumps({"error": str(exc)[:300]}), 400,
                            mimetype="application/json")
        text = to_json_plotly(result)
        return Response(text, 200, mimetype="application/json", headers=_timing(start))


def _timing(start) -> dict:
    """A ``Server-Timing`` header: the handler's time in ms (read by the browser bench and
    the browser's developer tools, to tell the server's part of a move from the network's
    and the page's)."""
    return {"Server-Timing": f"app;dur={(time.perf_counter() - start) * 1000:.1f}"}


__all__ = ["fast_move", "fast_settle", "fast_drag", "fast_values", "fast_prefetch",
           "outputs_dict", "register", "MOVE_OUTPUTS", "SETTLE_OUTPUTS", "DRAG_OUTPUTS"]
