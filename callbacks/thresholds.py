"""A vmin / vmax move: the fast path from a key press or a drag to the pixels.

What a move costs is what a person feels, so a move is choreographed (docs/architecture.md
draws it):

* In the browser, with no request: the vmin / vmax lines and shaded ranges of the histogram
  and the text under the slider follow the handle (``GATE_JS``); a histogram click or a
  dragged line sets the slider (``HIST_JS``); the log-counts switch patches the axis.
* A committed value (key press, release of a drag, histogram click) sends one request,
  :func:`move_update`: the history is pushed on the server and the same response brings
  the segmentation overlay (a live preview, or the exact result when it is cached) as a
  ``Patch`` of the overlay traces, never the base image.
* While a handle is dragged, :func:`drag_update` previews the pair under the handle: at
  most one drag request is in flight (the gate queues the latest pair and sends it when the
  answer arrives), and the server drops a request that a later one has superseded before
  computing it (``ArrayStore.bump``). Nothing is pushed on the history.
* Then the settle callback (``callbacks.display``) draws the exact result, and the
  comparison and the measurements follow it. A change the move did not draw (undo, a
  filter, a method) is routed by ``ROUTE_JS`` to only the panels that depend on it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math

from dash import Input, Output, State, no_update
from dash.exceptions import PreventUpdate

from components import figures, ids
from pipeline import recipe as recipes
from pipeline.admission import Busy
from pipeline.compute import TimeLimit
from pipeline.errors import Cancelled, InputError

from .display import (MARKER_COLORS, SEG_PROPS, VIEW_PROPS, exact_estimate, nearby_recipes,
                      outputs, require_live, segmentation_panel, segmentation_update, states)
from .params import (_with_pair, check_fits_image, control_values, current_recipe,
                     placed_messages, recipe_action, require_current)

#: Outputs of :func:`move_update`, in order (the Dash callback and the fast path).
MOVE_PROPS = ((ids.HISTORY, "data"), (ids.THRESHOLDS, "value"), (ids.PARAM_MESSAGE, "children"),
              (ids.UNDO, "disabled"), (ids.REDO, "disabled"), (ids.HISTORY_TEXT, "children"),
              (ids.RECIPE_VIEW, "children"), *SEG_PROPS, (ids.SEG_PENDING, "data"),
              (ids.SEG_SETTLED, "data"), (ids.SEG_BASE, "data"))
#: Outputs of :func:`drag_update`, in order.
DRAG_PROPS = (*SEG_PROPS, (ids.SEG_BASE, "data"), (ids.DRAG_ACK, "data"))

#: The request streams share one sequence: a committed move supersedes every drag before it.
STREAM = "thresholds"


def _request(request):
    """(pair, seq) of a move / drag request, or PreventUpdate if malformed."""
    if not isinstance(request, dict):
        raise PreventUpdate
    pair, seq = request.get("pair"), request.get("seq")
    if (not isinstance(pair, (list, tuple)) or len(pair) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v) for v in pair)
            or not isinstance(seq, int) or isinstance(seq, bool) or seq < 0):
        raise PreventUpdate
    return [float(pair[0]), float(pair[1])], seq


def pair_key(pair) -> str:
    """What a threshold request asks for, as the stream records it (:func:`superseded`)."""
    return json.dumps([float(v) for v in pair])


def superseded(services, session_id, seq, pair=None):
    """``should_stop`` of a move's or a drag's solve: a later request of this page's
    threshold stream has arrived (checked in the shared store, so across workers) — unless
    it asks for the same `pair`: the release of a drag on the pair being solved, a key press
    on the pair being prepared then wait for this solve (:func:`pipeline.compute.exclusive`)
    instead of starting it again."""
    store = services.store
    mine = None if pair is None else pair_key(pair)

    def should_stop():
        try:
            if store.latest(session_id, STREAM) <= seq:
                return False
            return mine is None or store.latest_what(session_id, STREAM) != mine
        except InputError:
            return False

    return should_stop


def move_update(services, session_id, meta, history, request, axis, index, style, show, view,
                base):
    """A committed vmin / vmax: push it on the history and draw the segmentation.

    Parameters
    ----------
    request : dict
        ``{"pair": [vmin, vmax], "seq": n, "exact": bool}`` from the page's gate; ``exact``
        (the release of a drag, whose preview is on the screen) skips the live preview.
    history : dict
        The page's pointer to the history.
    axis, index, style, show, view, base
        The segmentation panel's view (see :func:`callbacks.display.segmentation_update`).

    Returns
    -------
    tuple
        (history pointer, slider value, message, undo disabled, redo disabled, history text,
        recipe text, then the 7 outputs of ``segmentation_update``). A refused pair keeps
        the history, puts the slider back and says why; the overlays stay.
    """
    pair, seq = _request(request)
    require_current(meta, history)
    if not services.store.bump(session_id, STREAM, seq, pair_key(pair)):
        raise PreventUpdate  # a later move or drag of this page is on its way
    pointer, full, message = recipe_action(services, session_id, ids.THRESHOLDS, history,
                                           meta, {"thresholds": pair}, drawn=True)
    v = control_values(full, meta)
    controls = (v["undo_disabled"], v["redo_disabled"], v["text"])
    if message or pointer is no_update:
        return (no_update, v["thresholds"], placed_messages(ids.THRESHOLDS, message)[0],
                *controls, no_update,
                *(no_update,) * 7)
    seg = segmentation_update(services, session_id, meta, pointer, axis, index, style, show,
                              view, base=base, allow_preview=request.get("exact") is not True,
                              announce=True, should_stop=superseded(services, session_id, seq))
    slider = v["thresholds"] if v["thresholds"] != pair else no_update
    return (pointer, slider, None, *controls, recipes.dumps(current_recipe(full)), *seg)


def drag_update(services, session_id, meta, history, request, axis, index, style, show, view,
                base):
    """A handle being dragged: a preview of the pair under it (nothing pushed on the history).

    Returns
    -------
    tuple
        (figure or Patch, summary, segmentation message, post-processing message, base,
        acknowledgement). Only the acknowledgement is sent when the request was superseded
        (before or while computing) or the pair is refused.
    """
    pair, seq = _request(request)
    ack = {"seq": seq}
    nothing = (no_update,) * 5 + (ack,)
    require_current(meta, history)
    store = services.store
    if not store.bump(session_id, STREAM, seq, pair_key(pair)):
        return nothing  # superseded before it started: not computed
    current = current_recipe(history)
    try:
        proposed = recipes.validate(_with_pair(copy.deepcopy(current), pair, meta))
        check_fits_image(proposed, meta)
    except InputError:
        return nothing  # the release says why (move_update)

    def nearby():
        yield current
        yield from nearby_recipes(services, session_id, history)

    try:
        out = segmentation_update(services, session_id, meta, history, axis, index, style,
                                  show, view, base=base, allow_preview=True, announce=False,
                                  recipe=proposed, nearby=nearby(),
                                  should_stop=superseded(services, session_id, seq, pair))
    except PreventUpdate:
        return nothing  # superseded while solving: stopped, never drawn
    if store.latest(session_id, STREAM) > seq:
        return nothing  # superseded while computing: never drawn
    require_live(services, session_id, meta, history)
    fig, summary, seg_message, post_message, _pending, _settled, new_base = out
    if summary and "live preview" in summary:
        summary = summary.replace("exact random walker running…",
                                  "the exact result follows on release")
    return fig, summary, seg_message, post_message, new_base, ack


def prefetch_update(services, session_id, meta, history, request, axis, index, style, show,
                    view) -> bool:
    """Prepare the exact result of the pair a person is expected to step to next.

    After a key press has moved a handle and its exact result is drawn, the page asks for
    the next step in the same direction (``assets/fastmove.js``): a person nudging a
    threshold presses the same key again, or goes back to a pair already solved. Its
    segmentation and its overlays (in the page's view) are computed into the caches, so
    the next key press is answered from them: one round trip, no solve.

    Bounded: only when the exact result is expected within ``Config.prefetch_s`` (from the
    session's measured solve rate), in a free job slot of the session's owner, and only on a
    server otherwise idle: every other job slot stays free (never waiting for one),
    stopped by any newer request of the page's threshold stream for another pair (it never
    supersedes one itself; a key press on this very pair waits for this solve,
    :func:`pipeline.compute.exclusive`) and after a few times its estimate. Nothing is
    pushed on the history and nothing is answered to the page.

    Parameters
    ----------
    request : dict
        ``{"pair": [vmin, vmax], "seq": n}``: `seq` the page's latest request's.
    axis, index, style, show, view
        The segmentation panel's view, so that the next move finds its overlays encoded.

    Returns
    -------
    bool
        Whether the pair was computed now (False: cached already, refused, not worth it,
        no free slot, or stopped).
    """
    limit = services.config.prefetch_s
    pair, seq = _request(request)
    require_current(meta, history)
    if limit <= 0:
        return False
    store = services.store
    try:
        proposed = recipes.validate(_with_pair(copy.deepcopy(current_recipe(history)), pair,
                                               meta))
        check_fits_image(proposed, meta)
    except InputError:
        return False  # out of range, vmin above vmax: the person cannot step there
    seconds = exact_estimate(services, session_id, meta, proposed)
    if seconds is None or seconds <= 0 or seconds > limit:
        return False  # not a random walker, cached already, or too long to guess at
    latest = store.latest(session_id, STREAM)
    if latest > seq:
        return False  # the page has moved on

    def moved_on():  # a newer request of the page, for another pair (superseded())
        try:
            return (store.latest(session_id, STREAM) > latest
                    and store.latest_what(session_id, STREAM) != pair_key(pair))
        except InputError:
            return False

    admission = services.admission
    try:
        # only on a server otherwise idle: every other slot stays free for people's work
        slot = (admission.slot(services.owner(session_id), wait_s=0,
                               spare=admission.total - 1)
                if admission is not None else contextlib.nullcontext())
        with slot:
            segmentation_panel(services, session_id, meta, proposed, axis, index, style,
                               "markers" in (show or []), view, None, False,
                               should_stop=TimeLimit(max(4 * seconds, 0.5), also=moved_on))
    except (Busy, Cancelled, InputError):
        return False
    return True


_SHAPES = json.dumps(figures.threshold_shapes(0, 1, 0, 1, MARKER_COLORS))

# The gate: every slider change draws the histogram lines and the text at once; a committed
# value different from the recipe's sends a move; a drag sends a preview request when none
# is in flight (else it queues the pair: the acknowledgement sends it).
GATE_JS = """
function(value, dragValue, history, meta, session, axis, index, style, show, view, base) {
    const dc = window.dash_clientside, nu = dc.no_update;
    const st = window.pipexMove = window.pipexMove ||
        {seq: 0, dragging: false, inflight: 0, queued: null};
    const trig = (dc.callback_context.triggered || []).map(function (t) { return t.prop_id; });
    const committed = trig.indexOf('%(slider)s.value') >= 0;
    const pair = committed ? value : (dragValue || value);
    if (!pair || pair.length !== 2 || !meta) { return [nu, nu, nu]; }
    // the histogram's lines and the text under the slider (assets/fastmove.js; a key press
    // on a handle does the same there, without this callback)
    const fast = window.pipexFast && window.fetch ? window.pipexFast : null;
    window.pipexFast.drawLines(JSON.parse('%(shapes)s'), pair, meta);
    const text = window.pipexFast.pairText(pair, meta);
    let move = nu, drag = nu;
    const cur = history && history.recipe && history.image_id === meta.id ?
        history.recipe.markers : null;
    // the fast path (assets/fastmove.js) draws the answer itself; the Dash callbacks
    // (MOVE_REQUEST, DRAG_REQUEST) are the fallback
    const ctx = {session: session, image: meta.id, history: history, base: base,
                 view: {axis: axis, index: index, style: style, show: show, view: view}};
    if (cur && committed) {
        st.queued = null;
        if (pair[0] !== cur.vmin || pair[1] !== cur.vmax) {
            // the release of a drag: its preview is on the screen, go straight to the exact
            const dragged = st.dragged && st.dragged[0] === pair[0] && st.dragged[1] === pair[1];
            // sent by the key-press or the release trigger of assets/fastmove.js within
            // the last second
            const sent = st.sent && st.sent[0] === pair[0] && st.sent[1] === pair[1] &&
                performance.now() - st.sentAt < 1000;
            if (sent) {
                // already on its way: a key press or a release starts the move before
                // this gate runs
                // (and its sequence number is the page's latest: assets/fastmove.js
                // prepares the next step only for the latest request)
                st.dragged = null;
                return [move, drag, text];
            }
            const request = {pair: pair.slice(), seq: ++st.seq, exact: Boolean(dragged)};
            if (fast) {
                st.sent = pair.slice();
                st.sentAt = performance.now();
                fast.move(request, ctx);
            }
            else { move = request; }
        }
        st.dragged = null;
    } else if (cur && st.dragging) {
        st.dragged = pair.slice();
        if (fast) { fast.markers(pair, ctx); }  // at once, drawn by the page itself
        if (st.inflight && performance.now() - st.inflight < 5000) {
            st.queued = pair.slice();
        } else {
            const request = {pair: pair.slice(), seq: ++st.seq};
            if (fast) { fast.drag(request, ctx); } else {
                st.inflight = performance.now();
                drag = request;
            }
        }
    }
    return [move, drag, text];
}
""" % {"slider": ids.THRESHOLDS, "shapes": _SHAPES}

# The page's context of a move, mirrored for the fast path's key-press trigger
# (assets/fastmove.js starts a move before dash-renderer runs the gate).
CONTEXT_JS = """
function(history, meta, session, axis, index, style, show, view, base) {
    const st = window.pipexMove = window.pipexMove ||
        {seq: 0, dragging: false, inflight: 0, queued: null};
    st.ctx = meta && history && history.image_id === meta.id ?
        {session: session, image: meta.id, history: history, base: base,
         view: {axis: axis, index: index, style: style, show: show, view: view}} : null;
    // the values the page draws the markers from (assets/fastmove.js)
    if (st.ctx && window.pipexFast) { window.pipexFast.prefetch(st.ctx); }
    return window.dash_clientside.no_update;
}
"""

# An answered drag request: send the queued pair, if the handle is still held. It is set
# from a timer, as a user's change would be: dash-renderer does not re-run a callback chain
# from inside itself (returning the request from this callback sends nothing).
ACK_JS = """
function(ack) {
    const dc = window.dash_clientside, st = window.pipexMove;
    if (!st) { return dc.no_update; }
    st.inflight = 0;
    if (!st.queued || !st.dragging) { st.queued = null; return dc.no_update; }
    const pair = st.queued;
    st.queued = null;
    st.inflight = performance.now();
    const request = {pair: pair, seq: ++st.seq};
    setTimeout(function () { dc.set_props('%(drag)s', {data: request}); }, 0);
    return dc.no_update;
}
""" % {"drag": ids.DRAG_REQUEST}

# The histogram: a click moves the nearest threshold there, a dragged line or range moves
# its threshold; both set the slider (snapped to its step), which the gate then commits.
HIST_JS = """
function(click, relayout, value, step, lo) {
    const dc = window.dash_clientside, nu = dc.no_update;
    const trig = (dc.callback_context.triggered || []).map(function (t) { return t.prop_id; });
    if (!value || value.length !== 2) { return nu; }
    let vmin = value[0], vmax = value[1], moved = false;
    if (trig.indexOf('%(hist)s.clickData') >= 0) {
        const x = click && click.points && click.points.length ? Number(click.points[0].x) : NaN;
        if (!isFinite(x)) { return nu; }
        if (Math.abs(x - vmin) <= Math.abs(x - vmax)) { vmin = x; } else { vmax = x; }
        moved = true;
    } else if (relayout) {
        for (const key in relayout) {
            const m = /^shapes\\[(\\d+)\\]\\.(x0|x1)$/.exec(key);
            const v = Number(relayout[key]);
            if (!m || !isFinite(v)) { continue; }
            const i = Number(m[1]), end = m[2];
            if (i === %(vmin_line)d || (i === %(bg_range)d && end === 'x1')) { vmin = v; moved = true; }
            else if (i === %(vmax_line)d || (i === %(obj_range)d && end === 'x0')) { vmax = v; moved = true; }
        }
    }
    if (!moved) { return nu; }
    const s = step || 1, base = lo || 0;
    const snap = function (v) { return Number((base + Math.round((v - base) / s) * s).toFixed(10)); };
    return [snap(vmin), snap(vmax)];
}
""" % {"hist": ids.HIST_GRAPH, "vmin_line": figures.VMIN_LINE, "vmax_line": figures.VMAX_LINE,
       "bg_range": figures.BG_RANGE, "obj_range": figures.OBJ_RANGE}

LOG_JS = """
function(value) {
    const dc = window.dash_clientside;
    const log = (value || []).indexOf('log') >= 0;
    // the count axis has an explicit range of either type (layout.meta.clip and
    // meta.logclip, components.figures.histogram_figure): its counts end below the
    // threshold names' band, the linear one clipped above dominant bins
    const gd = document.querySelector('#%(hist)s .js-plotly-plot');
    const meta = (gd && gd.layout && gd.layout.meta) || {};
    const range = log ? meta.logclip : meta.clip;
    const patch = new dc.Patch().assign(['layout', 'yaxis', 'type'], log ? 'log' : 'linear');
    if (gd && gd.layout && gd.layout.shapes) {  // the lines GATE_JS drew, not the figure's
        patch.assign(['layout', 'shapes'], JSON.parse(JSON.stringify(gd.layout.shapes)));
    }
    if (range) {
        patch.assign(['layout', 'yaxis', 'range'], range)
             .assign(['layout', 'yaxis', 'autorange'], false);
    } else if (meta.clip) {  // log counts of a histogram without a pixel
        patch.assign(['layout', 'yaxis', 'range'], null)
             .assign(['layout', 'yaxis', 'autorange'], true);
    }
    if (meta.y) {
        // the dominant bins' bars: up to the clip level on the linear axis, whole on the
        // log one; a new datarevision so that plotly takes the new heights (it otherwise
        // trusts the figure's digest, components.figures.with_datarevision)
        const rev = String(gd.layout.datarevision || '').split(':')[0];
        patch.assign(['data', 0, 'y'], meta.y[log ? 'log' : 'linear'])
             .assign(['layout', 'datarevision'], rev + (log ? ':log' : ':linear'));
    }
    return patch.build();
}
""" % {"hist": ids.HIST_GRAPH}

# The router: after a change of the recipe, fire only the panels that depend on what changed.
ROUTE_JS = """
function(history) {
    const nu = window.dash_clientside.no_update;
    if (!history || !history.rev) { return [nu, nu, nu, nu]; }
    const ch = history.changed || [];
    const has = function (s) { return ch.indexOf(s) >= 0; };
    const sig = {rev: history.rev, t: Date.now()};
    const image = has('image');
    const filter = image || has('filter') ? sig : nu;
    const segStages = image || has('filter') || has('markers') || has('segmentation') ||
        has('postprocess');
    const seg = segStages && !history.drawn ? sig : nu;
    const measure = has('measure') && !segStages ? sig : nu;
    // a vmin / vmax move drawn by the page changes nothing the RECIPE_SIGNAL panels show
    // (intensity scale, strokes drawn, voxel size): they are not run on every key press
    const thresholdsOnly = history.drawn && ch.length === 1 && has('markers');
    return [filter, seg, measure, thresholdsOnly ? nu : sig];
}
"""

# A new image: every panel says it is updating until its callback has drawn the new image.
BUSY_JS = """
function(meta) {
    const n = %(n)d;
    const out = [];
    for (let i = 0; i < n; i++) { out.push(meta ? 'panel busy' : window.dash_clientside.no_update); }
    return out;
}
""" % {"n": len(ids.PANEL_IDS)}


#: What a move needs of the page besides the pair: the history pointer, the image, the
#: session and the segmentation panel's view (arguments of GATE_JS and CONTEXT_JS, in order).
CONTEXT_PROPS = ((ids.HISTORY, "data"), (ids.IMAGE, "data"), (ids.SESSION, "data"),
                 (ids.SLICE_AXIS, "value"), (ids.SLICE_INDEX, "value"),
                 (ids.OVERLAY_STYLE, "value"), (ids.SHOW_MARKERS, "value"),
                 (ids.RESULT_VIEW, "value"), (ids.SEG_BASE, "data"))


def register(app, services):
    """Wire the move's fast path: the browser's gate and router, the move and the drag."""
    app.clientside_callback(
        GATE_JS,
        Output(ids.MOVE_REQUEST, "data"),
        Output(ids.DRAG_REQUEST, "data"),
        Output(ids.THRESHOLDS_TEXT, "children"),
        Input(ids.THRESHOLDS, "value"),
        Input(ids.THRESHOLDS, "drag_value"),
        *(State(*p) for p in CONTEXT_PROPS),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        CONTEXT_JS,
        Output(ids.CLIENT_SINK, "data", allow_duplicate=True),
        *(Input(*p) for p in CONTEXT_PROPS),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ACK_JS,
        Output(ids.CLIENT_SINK, "data", allow_duplicate=True),  # the request is set from a timer
        Input(ids.DRAG_ACK, "data"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        HIST_JS,
        Output(ids.THRESHOLDS, "value", allow_duplicate=True),
        Input(ids.HIST_GRAPH, "clickData"),
        Input(ids.HIST_GRAPH, "relayoutData"),
        State(ids.THRESHOLDS, "value"),
        State(ids.THRESHOLDS, "step"),
        State(ids.THRESHOLDS, "min"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        LOG_JS,
        Output(ids.HIST_GRAPH, "figure", allow_duplicate=True),
        Input(ids.HIST_LOG, "value"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        ROUTE_JS,
        Output(ids.FILTER_SIGNAL, "data"),
        Output(ids.SEG_SIGNAL, "data"),
        Output(ids.MEASURE_SIGNAL, "data"),
        Output(ids.RECIPE_SIGNAL, "data"),
        Input(ids.HISTORY, "data"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        BUSY_JS,
        *[Output(panel, "className", allow_duplicate=True) for panel in ids.PANEL_IDS],
        Input(ids.IMAGE, "data"),
        prevent_initial_call=True,
    )

    @app.callback(
        *outputs(MOVE_PROPS, duplicate=True),
        Input(ids.MOVE_REQUEST, "data"),
        State(ids.HISTORY, "data"),
        *states(VIEW_PROPS),
        prevent_initial_call=True,
    )
    def _move(request, history, axis, index, style, show, view, base, meta, session_id):
        return move_update(services, session_id, meta, history, request, axis, index, style,
                           show, view, base)

    @app.callback(
        *outputs(DRAG_PROPS[:-1], duplicate=True),
        *outputs(DRAG_PROPS[-1:]),  # DRAG_ACK: written by this callback only
        Input(ids.DRAG_REQUEST, "data"),
        State(ids.HISTORY, "data"),
        *states(VIEW_PROPS),
        prevent_initial_call=True,
    )
    def _drag(request, history, axis, index, style, show, view, base, meta, session_id):
        return drag_update(services, session_id, meta, history, request, axis, index, style,
                           show, view, base)
