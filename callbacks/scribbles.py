"""Markers drawn by hand on the Segmentation graph (the recipe's ``markers.scribbles``).

With "draw markers" on (object or background), the Segmentation graph's dragmode is plotly's
``drawopenpath`` (``DRAGMODE_JS``, a Patch of the figure's layout in the browser; again after
a new figure, i.e. a new image or slice). A finished stroke arrives in the graph's
``relayoutData`` as a path shape; ``STROKE_JS`` takes its SVG path, removes the shape from
the graph and hands the path to :func:`stroke_update` (one request). That converts the path
to image coordinates, appends the stroke to the current recipe's markers and pushes the new
recipe through the history (:func:`callbacks.params.recipe_action`, so undo / redo, the
recipe view and the router work as for every other control): the router
(``callbacks.thresholds.ROUTE_JS``) sees the markers stage changed and redraws the
segmentation, whose markers overlay then shows the stroke as markers
(``pipeline.scribbles.paint_scribbles``, ``skimage.draw``). "Clear scribbles" removes every
stroke in one undoable step.
"""

from __future__ import annotations

import math
import re

import numpy as np
from dash import Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate
from skimage.measure import approximate_polygon

from components import ids
from pipeline import recipe as recipes
from pipeline import render
from pipeline.errors import InputError
from pipeline.scribbles import MAX_POINTS, MAX_WIDTH

from .loading import message_children
from .params import control_values, current_recipe, recipe_action

#: The label each drawing mode paints (pipeline.segment: 1 background, 2 object).
MODE_LABELS = {"background": 1, "object": 2}
#: Longest SVG path accepted from the page, in characters (~20 per point).
MAX_PATH_CHARS = 40 * MAX_POINTS
#: Points of a drawn path closer than this to the simplified line are dropped
#: (``skimage.measure.approximate_polygon``), in image pixels.
SIMPLIFY_PX = 0.5

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PATH_OK = re.compile(rf"^\s*M\s*{_NUMBER}\s*,?\s*{_NUMBER}(?:\s*L\s*{_NUMBER}\s*,?\s*{_NUMBER})*"
                      r"\s*Z?\s*$")


def parse_path(path) -> np.ndarray:
    """Points ``(x, y)`` of a plotly path shape (``"M1.5,2L3,4.25L…"``, from ``drawopenpath``).

    Raises
    ------
    InputError
        If `path` is not a text of move-to / line-to commands, or is too long.
    """
    if not isinstance(path, str) or not path:
        raise InputError("the drawn stroke has no path")
    if len(path) > MAX_PATH_CHARS:
        raise InputError(f"the drawn stroke is too long ({len(path):,} characters of path, "
                         f"the limit is {MAX_PATH_CHARS:,}): draw shorter strokes")
    if not _PATH_OK.match(path):
        raise InputError("the drawn stroke is not a path of straight segments (M … L …)")
    values = np.array([float(v) for v in re.findall(_NUMBER, path)], dtype=np.float64)
    points = values.reshape(-1, 2)
    if not np.isfinite(points).all():
        raise InputError("the drawn stroke has a point that is not a finite number")
    return points


def plane_shape(meta, axis) -> tuple:
    """(rows, cols) of the image plane the Segmentation graph shows."""
    shape = list(meta["shape"])
    if meta["ndim"] == 3:
        del shape[int(axis or 0)]
    return int(shape[0]), int(shape[1])


def stroke_from_path(path, label, width, meta, axis=None, index=None) -> dict:
    """A recipe stroke from a drawn path: points in image pixels, clipped to the image,
    simplified (``skimage.measure.approximate_polygon``, :data:`SIMPLIFY_PX`) and rounded to
    0.1 pixel; with the slice (axis, index) for a 3D image.

    Raises
    ------
    InputError
        If the path cannot be read, or `width` is not a number from 1 to 50.
    """
    if isinstance(width, bool) or not isinstance(width, (int, float)) \
            or not math.isfinite(width) or not 1 <= width <= MAX_WIDTH:
        raise InputError(f"The stroke width must be a number from 1 to {MAX_WIDTH:g} pixels, "
                         f"got {width!r}.")
    points = parse_path(path)
    rows, cols = plane_shape(meta, axis)
    points[:, 0] = np.clip(points[:, 0], -0.5, cols - 0.5)
    points[:, 1] = np.clip(points[:, 1], -0.5, rows - 0.5)
    if len(points) > 2:
        points = approximate_polygon(points, tolerance=SIMPLIFY_PX)
    stroke = {"label": int(label),
              "path": [[round(float(x), 1), round(float(y), 1)] for x, y in points],
              "width": float(width)}
    if meta["ndim"] == 3:
        axis = int(axis or 0)
        stroke["axis"] = axis
        stroke["index"] = int(min(max(int(index or 0), 0), meta["shape"][axis] - 1))
    return stroke


def stroke_update(services, session_id, trigger, drawn, history, meta, axis, index):
    """A stroke drawn (or Clear): the new history pointer and what the controls show.

    Parameters
    ----------
    trigger : str
        ``ids.DRAW_STROKE`` (a stroke in `drawn`) or ``ids.DRAW_CLEAR``.
    drawn : dict or None
        ``{"paths": [svg path, ...], "mode": "object" | "background", "width": px}`` from
        the page (``STROKE_JS``).
    history, meta : dict
        The page's history pointer and image metadata.
    axis, index
        The slice the graph shows (3D images).

    Returns
    -------
    tuple
        (pointer, undo disabled, redo disabled, history text, recipe view, message) in the
        order of :data:`OUTPUTS`.
    """
    if not meta or not history or history.get("image_id") != meta["id"]:
        raise PreventUpdate
    current = current_recipe(history)
    markers = current["markers"]
    strokes = list(markers.get("scribbles", ()))
    try:
        if trigger == ids.DRAW_CLEAR:
            if not strokes:
                raise PreventUpdate
            new = {"vmin": markers["vmin"], "vmax": markers["vmax"]}
        elif trigger == ids.DRAW_STROKE:
            if not isinstance(drawn, dict) or drawn.get("mode") not in MODE_LABELS:
                raise PreventUpdate
            paths = drawn.get("paths")
            if not isinstance(paths, list) or not paths or len(paths) > 10:
                raise PreventUpdate
            label = MODE_LABELS[drawn["mode"]]
            strokes += [stroke_from_path(p, label, drawn.get("width"), meta, axis, index)
                        for p in paths]
            new = {**markers, "scribbles": strokes}
        else:
            raise PreventUpdate
    except InputError as exc:
        return (no_update,) * 5 + (message_children(str(exc), "error"),)
    pointer, full, message = recipe_action(services, session_id, trigger, history, meta,
                                           {"markers": new})
    v = control_values(full, meta)
    return (pointer, v["undo_disabled"], v["redo_disabled"], v["text"],
            no_update if pointer is no_update else recipes.dumps(current_recipe(full)),
            message_children(message, "error") if message else None)


#: Outputs of :func:`stroke_update`, in order.
OUTPUTS = ((ids.HISTORY, "data"), (ids.UNDO, "disabled"), (ids.REDO, "disabled"),
           (ids.HISTORY_TEXT, "children"), (ids.RECIPE_VIEW, "children"),
           (ids.DRAW_MESSAGE, "children"))

# The graph's dragmode follows the Draw control: plotly's open-path drawing in the chosen
# label's marker colour (a Patch of the figure, in the browser), pan when off. Also after a
# new figure (a new image or slice: SEG_BASE), which starts with pan.
DRAGMODE_JS = """
function(mode, width, base) {
    const dc = window.dash_clientside, nu = dc.no_update;
    const trig = (dc.callback_context.triggered || []).map(function (t) { return t.prop_id; });
    const gd = document.querySelector('#%(graph)s .js-plotly-plot');
    if (!gd || !gd.data || !gd.data.length) { return nu; }
    const on = mode === 'object' || mode === 'background';
    if (!on && trig.indexOf('%(mode)s.value') < 0) { return nu; }
    const colors = %(colors)s;
    let px = 3;
    const xa = gd._fullLayout && gd._fullLayout.xaxis;
    if (xa && xa.range && xa._length) {  // the stroke's width on the screen, at this zoom
        px = Math.max(1, Math.min(60, (Number(width) || 5) * xa._length /
                                      Math.abs(xa.range[1] - xa.range[0])));
    }
    const patch = new dc.Patch();
    patch.assign(['layout', 'dragmode'], on ? 'drawopenpath' : 'pan');
    patch.assign(['layout', 'newshape'], {line: {color: on ? colors[mode] : '#ffffff',
                                                 width: px}, opacity: 0.8});
    return patch.build();
}
""" % {"graph": ids.SEG_GRAPH, "mode": ids.DRAW_MODE,
       "colors": '{"object": "%s", "background": "%s"}' % (render.MARKER_HEX[2],
                                                           render.MARKER_HEX[1])}

# A finished stroke: its path goes to the server (DRAW_STROKE), the shape leaves the graph
# (the markers overlay shows the stroke once the segmentation is redrawn). Zoom and pan
# (relayoutData without shapes) send nothing.
STROKE_JS = """
function(rel, mode, width) {
    const nu = window.dash_clientside.no_update;
    if (!rel || !Array.isArray(rel.shapes)) { return nu; }
    const paths = rel.shapes.filter(function (s) {
        return s && s.type === 'path' && typeof s.path === 'string';
    }).map(function (s) { return s.path; });
    if (!paths.length) { return nu; }
    const gd = document.querySelector('#%(graph)s .js-plotly-plot');
    if (gd && window.Plotly) { window.Plotly.relayout(gd, {shapes: []}); }
    if (mode !== 'object' && mode !== 'background') { return nu; }
    return {paths: paths.slice(-10), mode: mode, width: Number(width), t: Date.now()};
}
""" % {"graph": ids.SEG_GRAPH}

# How many strokes the current recipe holds (after a stroke, Clear, undo, a loaded recipe).
INFO_JS = """
function(_signal, history) {
    const m = history && history.recipe && history.recipe.markers;
    const n = m && Array.isArray(m.scribbles) ? m.scribbles.length : 0;
    const text = n ? n + (n === 1 ? ' stroke' : ' strokes') + ' drawn' : '';
    // a move leaves it as it is: nothing set (assets/unchanged.js)
    return window.pipexUnchanged ? window.pipexUnchanged('INFO_ID', 'children', text) : text;
}
""".replace("INFO_ID", ids.DRAW_INFO)


def register(app, services):
    """Wire the Draw markers controls of the Segmentation panel."""
    app.clientside_callback(
        DRAGMODE_JS,
        Output(ids.SEG_GRAPH, "figure", allow_duplicate=True),
        Input(ids.DRAW_MODE, "value"),
        Input(ids.DRAW_WIDTH, "value"),
        Input(ids.SEG_BASE, "data"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        STROKE_JS,
        Output(ids.DRAW_STROKE, "data"),
        Input(ids.SEG_GRAPH, "relayoutData"),
        State(ids.DRAW_MODE, "value"),
        State(ids.DRAW_WIDTH, "value"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        INFO_JS,
        Output(ids.DRAW_INFO, "children"),
        Input(ids.RECIPE_SIGNAL, "data"),
        State(ids.HISTORY, "data"),
    )

    @app.callback(
        *[Output(cid, prop, allow_duplicate=cid != ids.DRAW_MESSAGE) for cid, prop in OUTPUTS],
        Input(ids.DRAW_STROKE, "data"),
        Input(ids.DRAW_CLEAR, "n_clicks"),
        State(ids.HISTORY, "data"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
        State(ids.SLICE_AXIS, "value"),
        State(ids.SLICE_INDEX, "value"),
        prevent_initial_call=True,
    )
    def _stroke(drawn, _clear, history, meta, session_id, axis, index):
        return stroke_update(services, session_id, ctx.triggered_id, drawn, history, meta,
                             axis, index)
