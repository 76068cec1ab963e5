"""The 3D view tab: orthogonal planes with linked cursors, the regions' surface, voxel size.

Nothing here runs while the tab is closed: a browser-side gate
(``callbacks.visibility.GATE_JS``) turns the
signals that the labels changed (``SEG_SETTLED``: the exact segmentation is shown;
``MEASURE_SIGNAL``: the measurement options, the voxel size among them) into
``VOLUME_SIGNAL`` only when the 3D tab is open, so a threshold move with the tab closed
makes no request here. The planes show the *settled* labels of the current recipe (the
page's ``HISTORY`` pointer, read as the other panels read it, ``Services.run``: a cache hit
once the segmentation panel has drawn it). The surface is computed only when asked for
("Show surface"), bounded by :func:`pipeline.mesh.surface_mesh`'s caps and cached with the
other derived views (:meth:`pipeline.compute.Compute.rendered`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time

import numpy as np
from dash import Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from components import ids
from components.figures import empty_figure
from components.volume import (PLANE_TITLES, UNSELECTED_OPACITY, VIEW_HEIGHT, plane_figure,
                               surface_figure)
from pipeline import mesh, render
from pipeline import recipe as recipes
from pipeline.compute import stage_keys
from pipeline.errors import InputError

from .display import require_live
from .loading import message_children
from .params import current_recipe, load_history, push, require_current, save_history

log = logging.getLogger(__name__)

PLANE_NAMES = ("zy", "zx", "yx")
#: Opacity of the regions' interiors in the "outlines and fill" style.
FILL_ALPHA = 0.3
#: Most regions a surface may draw (the input's max).
MAX_SURFACE_REGIONS = 500


# --- voxel size ------------------------------------------------------------------------------


def metadata_spacing(meta):
    """``(z, y, x)`` of the image's metadata (``meta["voxel_size"]``, the fields of
    :class:`pipeline.io.VoxelSize`), or None."""
    found = (meta or {}).get("voxel_size")
    if not isinstance(found, dict):
        return None
    z, y, x = (found.get(a) for a in "zyx")
    y = y if y is not None else x
    x = x if x is not None else y
    z = z if z is not None else x
    try:
        return mesh.check_spacing([v if v is not None else 1.0 for v in (z, y, x)])
    except InputError:
        return None


def effective_spacing(recipe, meta):
    """(spacing, where it comes from) of the views and the surface: the recipe's voxel size
    (what the measurements use), else the file's metadata, else 1 voxel."""
    spacing = (recipe or {}).get("measure", {}).get("spacing")
    if spacing:
        return tuple(float(v) for v in spacing), "recipe"
    found = metadata_spacing(meta)
    if found is not None:
        return found, "metadata"
    return (1.0, 1.0, 1.0), "default"


def apply_spacing(services, session_id, meta, history, values):
    """Put the voxel size ``values`` (z, y, x; all empty: none) in the recipe's measurement
    step, as a new state of the undo history.

    Returns
    -------
    pointer : dict or no_update
        The page's new history pointer (its ``changed`` names the measure stage: the
        measurements and the 3D view redraw).
    message : str
        Why the voxel size was refused, or "".
    """
    require_current(meta, history)
    if meta.get("ndim") != 3:
        return no_update, ("The voxel size is for 3D stacks: this image is 2D (its pixel size "
                           "is set in 5 · Measurements).")
    if all(v is None or v == "" for v in values):
        spacing = None
    else:
        try:
            spacing = list(mesh.check_spacing(values, 3, name="voxel size (z, y, x)"))
        except InputError as exc:
            return no_update, str(exc)
    store = services.store
    try:
        full = load_history(store, session_id, history)
    except InputError as exc:
        return no_update, str(exc)
    recipe = current_recipe(full)  # the server's copy (the page's went through JSON)
    proposed = copy.deepcopy(recipe)
    if spacing is None:
        proposed["measure"].pop("spacing", None)
    else:
        proposed["measure"]["spacing"] = spacing
    try:
        proposed = services.validate(proposed)
    except InputError as exc:
        return no_update, str(exc)
    if proposed == recipe:
        return no_update, ""
    try:
        new = push(full, proposed)
        pointer = save_history(store, session_id, new, recipe)
        store.put_recipe(session_id, meta["id"], proposed)
    except InputError as exc:
        return no_update, str(exc)
    return pointer, ""


def history_controls(pointer):
    """(undo disabled, redo disabled, history text, recipe view) after a new history pointer,
    as the recipe callback sets them (``callbacks.params.control_values``); ``no_update``
    for each when nothing changed."""
    if pointer is no_update or not pointer:
        return (no_update,) * 4
    index, length = pointer["index"], pointer["length"]
    return (index == 0, index >= length - 1, f"step {index + 1} of {length}",
            recipes.dumps(pointer["recipe"]))


# --- orthogonal planes -----------------------------------------------------------------------


def display_unit(recipe, meta, source):
    """Length unit of the views' axes: the recipe's unit with the recipe's voxel size, the
    file's with the file's, "voxels" otherwise."""
    if source == "recipe":
        return recipe["measure"]["unit"]
    if source == "metadata":
        return (meta.get("voxel_size") or {}).get("unit") or "voxels"
    return "voxels"


def center(meta):
    """The middle voxel ``[z, y, x]`` of a volume."""
    return [int(n) // 2 for n in meta["shape"]]


def cursor_point(meta, cursor):
    """The cursor ``[z, y, x]`` for this image (its centre when the cursor belongs to another
    image or is malformed), clipped to the volume."""
    point = None
    if isinstance(cursor, dict) and cursor.get("image") == meta["id"]:
        point = cursor.get("point")
    if not (isinstance(point, (list, tuple)) and len(point) == 3
            and all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in point)):
        return center(meta)
    return [int(min(max(round(p), 0), n - 1)) for p, n in zip(point, meta["shape"])]


def clicked_point(meta, point, name, click, spacing):
    """The cursor after a click at ``click`` (plotly's clickData point, in physical units)
    in plane `name`: the plane's two axes move, its fixed axis stays."""
    try:
        x, y = float(click["x"]), float(click["y"])
    except (TypeError, KeyError, ValueError):
        return point
    _fixed, row, col = mesh.PLANES[name]
    out = list(point)
    out[row] = round(y / spacing[row])
    out[col] = round(x / spacing[col])
    return [int(min(max(p, 0), n - 1)) for p, n in zip(out, meta["shape"])]


def plane_view(image, labels, meta, name, point, spacing, style, unit):
    """Figure of one plane through `point`: image, regions' outlines, cursor lines.

    The plane is strided to at most :data:`pipeline.mesh.MAX_PLANE_PIXELS` pixels (the title
    says so); `labels` None draws no overlay.
    """
    fixed, row, col = mesh.PLANES[name]
    shape = (meta["shape"][row], meta["shape"][col])
    stride = mesh.plane_stride(shape, mesh.MAX_PLANE_PIXELS)
    gray = render.to_uint8(mesh.plane(image, name, point, stride), *meta["display"])
    if labels is not None:
        overlay = mesh.contour_overlay(mesh.plane(labels, name, point, stride),
                                       fill_alpha=FILL_ALPHA if style == "fill" else 0.0)
    else:
        overlay = np.zeros(gray.shape + (4,), dtype=np.uint8)
    axis = "zyx"[fixed]
    title = f"{PLANE_TITLES[name]} at {axis} = {point[fixed]}"
    if stride > 1:
        title += (f" · shown at 1/{stride} ({shape[0]}×{shape[1]} → "
                  f"{gray.shape[0]}×{gray.shape[1]} pixels)")
    return plane_figure(
        render.png_data_uri(gray), render.png_data_uri(overlay), name=name,
        dx=stride * spacing[col], dy=stride * spacing[row],
        cross=(point[col] * spacing[col], point[row] * spacing[row]), title=title, unit=unit,
        uirevision=f"{meta['id']}-{name}-{spacing}")


def surface_token(image_id, recipe, spacing) -> str:
    """What a surface shows: ``"<image id>:<hash of the labels' stages and voxel size>"``."""
    keys = stage_keys(recipe)
    text = json.dumps([keys["filter"], keys["markers"], keys["segmentation"],
                       keys["postprocess"], [float(v) for v in spacing]])
    return f"{image_id}:{hashlib.blake2b(text.encode(), digest_size=8).hexdigest()}"


def views_update(services, session_id, meta, history, cursor, style, click=None,
                 surface_shown=None):
    """Outputs of the three planes for the current recipe.

    Parameters
    ----------
    cursor : dict or None
        ``VOLUME_CURSOR``: ``{"image", "point"}``.
    style : {"outline", "fill"}
    click : tuple (name, clickData point) or None
        A click in a plane: the cursor moves there first.
    surface_shown : str or None
        The token of the surface on the page (:func:`surface_token`); a note says when it
        no longer matches the labels.

    Returns
    -------
    tuple
        (ZY figure, ZX figure, YX figure, cursor, info line, message, surface note, surface
        figure). The surface of another image is removed (its figure emptied, its note
        cleared); one of other labels or voxel size stays, with a note saying so.
    """
    if not meta:
        raise PreventUpdate
    other_image = bool(surface_shown) and not surface_shown.startswith(f"{meta['id']}:")
    cleared = ("", empty_figure("", height=60)) if other_image else (no_update, no_update)
    if meta.get("ndim") != 3:
        blank = empty_figure("3D view: load a 3D stack (this image is 2D)", height=VIEW_HEIGHT)
        return blank, blank, blank, no_update, "", None, *cleared
    recipe = require_current(meta, history)
    spacing, source = effective_spacing(recipe, meta)
    point = cursor_point(meta, cursor)
    if click is not None:
        point = clicked_point(meta, point, click[0], click[1], spacing)
    image = services.image(session_id, meta["id"])
    message = None
    try:
        labels = services.run(session_id, meta["id"], recipe).labels
    except InputError as exc:
        labels, message = None, message_children(f"3D view: no labels to show: {exc}", "error")
    except Exception as exc:  # noqa: BLE001 - the planes are still worth showing
        log.exception("3D view: labels failed")
        labels, message = None, message_children(
            f"3D view: no labels to show: unexpected error ({type(exc).__name__}).", "error")
    unit = display_unit(recipe, meta, source)
    figures = [plane_view(image, labels, meta, name, point, spacing, style, unit)
               for name in PLANE_NAMES]
    require_live(services, session_id, meta, history)
    shown = " × ".join(f"{v:g}" for v in spacing)
    where = {"recipe": "the recipe's", "metadata": "the file's metadata", "default":
             "none given: 1 voxel"}[source]
    info = (f"cursor z {point[0]}, y {point[1]}, x {point[2]} · voxel size (z, y, x) {shown} "
            f"{unit} ({where})")
    note, surface = cleared
    if (surface_shown and not other_image
            and surface_shown != surface_token(meta["id"], recipe, spacing)):
        note = ("The labels or the voxel size changed since this surface was drawn: "
                "Show surface to draw it again.")
    return (*figures, {"image": meta["id"], "point": point}, info, message, note, surface)


# --- the surface -----------------------------------------------------------------------------


def _max_regions(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise InputError(f"largest regions must be a whole number from 1 to "
                         f"{MAX_SURFACE_REGIONS}, got {value!r}")
    value = int(value)
    if not 1 <= value <= MAX_SURFACE_REGIONS:
        raise InputError(f"largest regions must be from 1 to {MAX_SURFACE_REGIONS}, "
                         f"got {value}")
    return value


def surface_update(services, session_id, meta, history, max_regions, selected=()):
    """(surface figure, cost line, token) of the current labels (the `selected` regions
    highlighted: the others faded).

    The mesh is :func:`pipeline.mesh.surface_mesh` of the settled labels (at most
    :data:`pipeline.mesh.DEFAULT_MAX_TRIANGLES` triangles), cached per labels, voxel size
    and number of regions.
    """
    recipe = require_current(meta, history)
    if meta.get("ndim") != 3:
        return no_update, message_children("The surface is for 3D stacks: this image is 2D.",
                                           "error"), no_update
    spacing, source = effective_spacing(recipe, meta)
    try:
        max_regions = _max_regions(max_regions)
        labels = services.run(session_id, meta["id"], recipe).labels
        token = surface_token(meta["id"], recipe, spacing)
        key = json.dumps(["surface", meta["id"], token, max_regions,
                          mesh.DEFAULT_MAX_TRIANGLES])
        t0 = time.perf_counter()
        found = services.compute.rendered(
            key, lambda: mesh.surface_mesh(labels, spacing, max_regions=max_regions))
        elapsed = time.perf_counter() - t0
    except InputError as exc:
        return no_update, message_children(f"Surface failed: {exc}", "error"), no_update
    require_live(services, session_id, meta, history)
    unit = display_unit(recipe, meta, source)
    if not found.regions:
        return (empty_figure("no region to draw", height=120), "No labelled region: nothing "
                "to draw.", token)
    fig = surface_figure(found.regions, unit=unit, uirevision=f"{meta['id']}-surface",
                         selected=selected)
    shown = (f"largest {found.n_shown} of {found.n_regions:,} regions shown"
             if found.n_shown < found.n_regions else f"all {found.n_regions:,} regions")
    step = ("every voxel" if found.step == 1 else
            f"step {found.step} (1 voxel in {found.step} along each axis; finer for small "
            "regions)")
    cost = (f"{shown} · {found.triangles:,} triangles (estimated "
            f"{found.estimated_triangles:,} at full resolution, cap "
            f"{mesh.DEFAULT_MAX_TRIANGLES:,}) · {step} · marching cubes "
            f"{found.seconds:.2f} s")
    if elapsed < 0.5 * found.seconds:
        cost += " (from cache)"
    if found.skipped:
        cost += f" · {found.skipped} thin region(s) without a surface at this step"
    return fig, cost, token


# --- wiring ----------------------------------------------------------------------------------

#: The voxel-size inputs show the recipe's voxel size (after undo, a loaded recipe...), else
#: the file's, else 1; and say where it comes from. In the browser: no request.
VOXEL_JS = """
function(_signal, meta, history, z, y, x) {
    const nu = window.dash_clientside.no_update;
    if (!history || !history.recipe || !meta) { return [nu, nu, nu, nu]; }
    const m = history.recipe.measure || {};
    const found = meta.voxel_size || null;
    let values = [1, 1, 1], text;
    if (m.spacing) {
        values = m.spacing;
        text = 'in ' + m.unit + ', used by the measurements (the recipe\\'s).';
    } else if (found) {
        const yy = found.y || found.x || 1, xx = found.x || found.y || 1;
        values = [found.z || xx, yy, xx];
        text = 'from the file\\'s metadata (' + found.source + ', ' + found.unit +
               '): Apply to measure with it.';
    } else {
        text = 'none given: 1 voxel. Type it (in ' + m.unit + ') and Apply.';
    }
    if (meta.ndim !== 3) { text = 'for 3D stacks only.'; }
    const same = values[0] === z && values[1] === y && values[2] === x;
    // a move leaves the text as it is: nothing set (assets/unchanged.js)
    const shown = window.pipexUnchanged ?
        window.pipexUnchanged('SOURCE_ID', 'children', text) : text;
    return same ? [nu, nu, nu, shown] : [values[0], values[1], values[2], shown];
}
""".replace("SOURCE_ID", ids.VOXEL_SOURCE)


#: Rows selected in the measurements table: their regions stay opaque in the surface, the
#: others fade (in the browser: the mesh is not sent again).
HIGHLIGHT_JS = """
function(selected, figure) {
    const nu = window.dash_clientside.no_update;
    if (!figure || !figure.data || !figure.data.length) { return nu; }
    const chosen = new Set((selected || []).map(Number));
    const data = figure.data.map(function (t) {
        const faded = chosen.size > 0 && !chosen.has(Number(t.meta));
        return Object.assign({}, t, {opacity: faded ? %(faded)s : 1});
    });
    return Object.assign({}, figure, {data: data});
}
""" % {"faded": UNSELECTED_OPACITY}


#: Which physical axis each plane graph shows on its x and y axes (columns, rows).
PLANE_AXES = {ids.VOLUME_GRAPHS[name]: {"xaxis": name[1], "yaxis": name[0]}
              for name in PLANE_NAMES}

#: Zoom and pan follow across the planes along the axes they share (ZY and ZX share z, ZX
#: and YX x, ZY and YX y: the planes are drawn in physical units). In the browser, as
#: ``callbacks.zoom``: ``Plotly.relayout`` of the other planes, skipped when they show the
#: range already (no ping-pong).
ZOOM_JS = """
function() {
    const nu = window.dash_clientside.no_update;
    const cc = window.dash_clientside.callback_context;
    if (!cc.triggered || !cc.triggered.length || !window.Plotly) { return nu; }
    const axes = %(axes)s;
    const source = cc.triggered[0].prop_id.split('.')[0];
    const rel = cc.triggered[0].value;
    if (!rel || !axes[source]) { return nu; }
    const moved = {};  // physical axis -> [lo, hi], or 'auto'
    for (const ax of ['xaxis', 'yaxis']) {
        let r = null;
        if ((ax + '.range[0]') in rel) { r = [rel[ax + '.range[0]'], rel[ax + '.range[1]']]; }
        else if ((ax + '.range') in rel) { r = rel[ax + '.range']; }
        if (r) { moved[axes[source][ax]] = [Math.min(r[0], r[1]), Math.max(r[0], r[1])]; }
        else if (rel[ax + '.autorange']) { moved[axes[source][ax]] = 'auto'; }
    }
    for (const target in axes) {
        if (target === source) { continue; }
        const holder = document.getElementById(target);
        const gd = holder && holder.querySelector('.js-plotly-plot');
        if (!gd || !gd.layout) { continue; }
        const update = {};
        for (const ax of ['xaxis', 'yaxis']) {
            const m = moved[axes[target][ax]];
            if (m === undefined) { continue; }
            const cur = gd.layout[ax] || {};
            if (m === 'auto') {
                const auto = ax === 'yaxis' ? 'reversed' : true;
                if (cur.autorange !== auto) { update[ax + '.autorange'] = auto; }
                continue;
            }
            const want = ax === 'yaxis' ? [m[1], m[0]] : m;  // the rows' axis is reversed
            const r = cur.range || [];
            if (!(r.length === 2 && Math.abs(r[0] - want[0]) < 1e-6 &&
                  Math.abs(r[1] - want[1]) < 1e-6)) { update[ax + '.range'] = want; }
        }
        if (Object.keys(update).length) { window.Plotly.relayout(gd, update); }
    }
    return nu;
}
""" % {"axes": json.dumps(PLANE_AXES)}


def register(app, services):
    """Wire the 3D view tab."""
    app.clientside_callback(
        ZOOM_JS,
        Output(ids.CLIENT_SINK, "data", allow_duplicate=True),
        *(Input(ids.VOLUME_GRAPHS[name], "relayoutData") for name in PLANE_NAMES),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        VOXEL_JS,
        *(Output(ids.VOXEL_SIZE[a], "value") for a in "zyx"),
        Output(ids.VOXEL_SOURCE, "children"),
        Input(ids.RECIPE_SIGNAL, "data"),
        Input(ids.IMAGE, "data"),
        State(ids.HISTORY, "data"),
        *(State(ids.VOXEL_SIZE[a], "value") for a in "zyx"),
    )

    @app.callback(
        *(Output(ids.VOLUME_GRAPHS[name], "figure") for name in PLANE_NAMES),
        Output(ids.VOLUME_CURSOR, "data"),
        Output(ids.VOLUME_INFO, "children"),
        Output(ids.VOLUME_MESSAGE, "children"),
        Output(ids.SURFACE_COST, "children", allow_duplicate=True),
        Output(ids.SURFACE_GRAPH, "figure", allow_duplicate=True),
        Input(ids.VOLUME_SIGNAL, "data"),
        *(Input(ids.VOLUME_GRAPHS[name], "clickData") for name in PLANE_NAMES),
        Input(ids.VOLUME_STYLE, "value"),
        State(ids.VOLUME_CURSOR, "data"),
        State(ids.SURFACE_COST, "title"),
        State(ids.HISTORY, "data"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
        prevent_initial_call=True,
    )
    def _views(_signal, click_zy, click_zx, click_yx, style, cursor, surface_shown, history,
               meta, session_id):
        click = None
        trigger = ctx.triggered_id
        for name, data in zip(PLANE_NAMES, (click_zy, click_zx, click_yx)):
            if trigger == ids.VOLUME_GRAPHS[name]:
                if not data or not data.get("points"):
                    raise PreventUpdate
                click = (name, data["points"][0])
        try:
            return views_update(services, session_id, meta, history, cursor, style, click,
                                surface_shown)
        except InputError as exc:  # the image left the store
            return (no_update,) * 5 + (message_children(f"3D view: {exc}", "error"),
                                       no_update, no_update)

    @app.callback(
        Output(ids.SURFACE_GRAPH, "figure"),
        Output(ids.SURFACE_COST, "children"),
        Output(ids.SURFACE_COST, "title"),
        Input(ids.SURFACE_BUTTON, "n_clicks"),
        State(ids.SURFACE_REGIONS, "value"),
        State(ids.SELECTED_LABELS, "data"),
        State(ids.HISTORY, "data"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
        prevent_initial_call=True,
        running=[(Output(ids.SURFACE_BUTTON, "disabled"), True, False)],
    )
    def _surface(n_clicks, max_regions, selected, history, meta, session_id):
        if not n_clicks:
            raise PreventUpdate
        return surface_update(services, session_id, meta, history, max_regions, selected)

    app.clientside_callback(
        HIGHLIGHT_JS,
        Output(ids.SURFACE_GRAPH, "figure", allow_duplicate=True),
        Input(ids.SELECTED_LABELS, "data"),
        State(ids.SURFACE_GRAPH, "figure"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output(ids.HISTORY, "data", allow_duplicate=True),
        Output(ids.UNDO, "disabled", allow_duplicate=True),
        Output(ids.REDO, "disabled", allow_duplicate=True),
        Output(ids.HISTORY_TEXT, "children", allow_duplicate=True),
        Output(ids.RECIPE_VIEW, "children", allow_duplicate=True),
        Output(ids.VOLUME_MESSAGE, "children", allow_duplicate=True),
        Input(ids.VOXEL_APPLY, "n_clicks"),
        *(State(ids.VOXEL_SIZE[a], "value") for a in "zyx"),
        State(ids.HISTORY, "data"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
        prevent_initial_call=True,
    )
    def _apply(n_clicks, z, y, x, history, meta, session_id):
        if not n_clicks:
            raise PreventUpdate
        pointer, message = apply_spacing(services, session_id, meta, history, (z, y, x))
        return (pointer, *history_controls(pointer),
                message_children(message, "error") if message else None)
