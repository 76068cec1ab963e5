"""Parameters and their undo history.

One callback owns every parameter control: a slider move, a click or a line drag on the
histogram, a new beta / mode / tol, undo and redo all go through :func:`next_state`, which
returns the new history and the values the controls must show. Keeping this in one callback
lets undo set the controls without the controls pushing a new history entry.
"""

from __future__ import annotations

import re

from dash import Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from components import ids
from components.figures import BG_RANGE, OBJ_RANGE, VMAX_LINE, VMIN_LINE
from pipeline.errors import InputError
from pipeline.segment import SegmentParams

MAX_HISTORY = 500
_SHAPE_KEY = re.compile(r"^shapes\[(\d+)\]\.(x0|x1)$")


def initial_history(meta, previous=None, mode_default="cg_mg") -> dict:
    """History of a newly loaded image: its default thresholds and the current solver settings."""
    solver = {"beta": 130.0, "mode": mode_default, "tol": 1e-3}
    if previous and previous.get("states"):
        current = current_params(previous)
        solver = {k: current[k] for k in solver}
    params = SegmentParams(vmin=meta["vmin"], vmax=meta["vmax"], **solver).to_dict()
    return {"image_id": meta["id"], "states": [params], "index": 0}


def current_params(history) -> dict:
    """Parameters at the current position of the history."""
    return history["states"][history["index"]]


def push(history, params) -> dict:
    """History with `params` appended after the current position (dropping the redo tail)."""
    states = history["states"][: history["index"] + 1] + [params]
    states = states[-MAX_HISTORY:]
    return {**history, "states": states, "index": len(states) - 1}


def move(history, step) -> dict:
    """History moved `step` positions (negative: undo), clipped to its ends."""
    index = min(max(history["index"] + step, 0), len(history["states"]) - 1)
    return {**history, "index": index}


def thresholds_from_click(params, click_data):
    """Move the threshold nearest to the clicked intensity onto it."""
    try:
        x = float(click_data["points"][0]["x"])
    except (TypeError, KeyError, IndexError, ValueError):
        return None
    vmin, vmax = params["vmin"], params["vmax"]
    if abs(x - vmin) <= abs(x - vmax):
        return x, vmax
    return vmin, x


def thresholds_from_relayout(params, relayout):
    """New (vmin, vmax) from a dragged line or shaded range of the histogram, or None."""
    if not isinstance(relayout, dict):
        return None
    vmin, vmax = params["vmin"], params["vmax"]
    moved = False
    for key, value in relayout.items():
        m = _SHAPE_KEY.match(key)
        if not m:
            continue
        index, end = int(m.group(1)), m.group(2)
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if index == VMIN_LINE or (index == BG_RANGE and end == "x1"):
            vmin, moved = value, True
        elif index == VMAX_LINE or (index == OBJ_RANGE and end == "x0"):
            vmax, moved = value, True
    return (vmin, vmax) if moved else None


def _snap(value, meta):
    step = meta.get("step") or 1.0
    lo = meta["min"]
    return round(lo + round((value - lo) / step) * step, 10)


def check_markers_possible(params, meta):
    """Raise if these thresholds leave a marker label empty on this image."""
    if params["vmin"] <= meta["min"]:
        raise InputError(
            f"No background marker: no pixel is below vmin = {params['vmin']:g} (the darkest "
            f"pixel is {meta['min']:g}). Keeping the previous thresholds."
        )
    if params["vmax"] >= meta["max"]:
        raise InputError(
            f"No object marker: no pixel is above vmax = {params['vmax']:g} (the brightest "
            f"pixel is {meta['max']:g}). Keeping the previous thresholds."
        )


def next_state(trigger, history, meta, controls, click_data=None, relayout=None,
               mode_default="cg_mg"):
    """The new history after one user action, and a message for the user.

    Parameters
    ----------
    trigger : str or None
        Id of the control that changed.
    history : dict or None
        Current history.
    meta : dict or None
        Current image metadata.
    controls : dict
        Values of the controls: ``thresholds`` (list of two), ``beta``, ``mode``, ``tol``.
    click_data, relayout : dict, optional
        Histogram events.

    Returns
    -------
    history : dict
        The new history (the same object if nothing changed).
    message : str
        Why a change was refused, or "".
    """
    if not meta:
        raise PreventUpdate
    if trigger == ids.IMAGE or not history or history.get("image_id") != meta["id"]:
        return initial_history(meta, history, mode_default), ""
    if trigger == ids.UNDO:
        return move(history, -1), ""
    if trigger == ids.REDO:
        return move(history, +1), ""
    current = current_params(history)
    proposed = dict(current)
    if trigger == ids.HIST_GRAPH + ".clickData":
        pair = thresholds_from_click(current, click_data)
    elif trigger == ids.HIST_GRAPH + ".relayoutData":
        pair = thresholds_from_relayout(current, relayout)
    elif trigger == ids.THRESHOLDS:
        values = controls.get("thresholds") or []
        pair = tuple(values) if len(values) == 2 else None
    else:
        pair = None
        proposed.update({k: controls.get(k) for k in ("beta", "mode", "tol")})
    if pair is not None:
        proposed["vmin"], proposed["vmax"] = (_snap(float(v), meta) for v in pair)
    try:
        params = SegmentParams.from_dict(proposed).to_dict()
        check_markers_possible(params, meta)
    except InputError as exc:
        return history, str(exc)
    if params == current:
        return history, ""
    return push(history, params), ""


def control_values(history, meta):
    """What the parameter controls show for the current history position."""
    params = current_params(history)
    return {
        "thresholds": [params["vmin"], params["vmax"]],
        "min": meta["min"],
        "max": meta["max"],
        "step": meta["step"],
        "beta": params["beta"],
        "mode": params["mode"],
        "tol": params["tol"],
        "undo_disabled": history["index"] == 0,
        "redo_disabled": history["index"] >= len(history["states"]) - 1,
        "text": f"step {history['index'] + 1} of {len(history['states'])}",
    }


def register(app, services, mode_default="cg_mg"):
    """Wire the parameter controls, the histogram interactions and undo / redo."""

    @app.callback(
        Output(ids.HISTORY, "data"),
        Output(ids.THRESHOLDS, "value"),
        Output(ids.THRESHOLDS, "min"),
        Output(ids.THRESHOLDS, "max"),
        Output(ids.THRESHOLDS, "step"),
        Output(ids.BETA, "value"),
        Output(ids.MODE, "value"),
        Output(ids.TOL, "value"),
        Output(ids.UNDO, "disabled"),
        Output(ids.REDO, "disabled"),
        Output(ids.HISTORY_TEXT, "children"),
        Output(ids.PARAM_MESSAGE, "children"),
        Input(ids.IMAGE, "data"),
        Input(ids.THRESHOLDS, "value"),
        Input(ids.BETA, "value"),
        Input(ids.MODE, "value"),
        Input(ids.TOL, "value"),
        Input(ids.UNDO, "n_clicks"),
        Input(ids.REDO, "n_clicks"),
        Input(ids.HIST_GRAPH, "clickData"),
        Input(ids.HIST_GRAPH, "relayoutData"),
        State(ids.HISTORY, "data"),
    )
    def _params(meta, thresholds, beta, mode, tol, _undo, _redo, click, relayout, history):
        trigger = ctx.triggered_id
        if trigger == ids.HIST_GRAPH:
            trigger = ctx.triggered[0]["prop_id"]
        controls = {"thresholds": thresholds, "beta": beta, "mode": mode, "tol": tol}
        new, message = next_state(trigger, history, meta, controls, click, relayout, mode_default)
        v = control_values(new, meta)
        return (
            new if new is not history else no_update,
            v["thresholds"], v["min"], v["max"], v["step"], v["beta"], v["mode"], v["tol"],
            v["undo_disabled"], v["redo_disabled"], v["text"],
            message or None,
        )
