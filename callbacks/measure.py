"""Measurements: the regionprops table, linked both ways with the image, and its plot."""

from __future__ import annotations

import logging

import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, State, ctx, dcc, no_update
from dash.exceptions import PreventUpdate

from components import ids
from pipeline import measure as measures
from pipeline import provenance
from pipeline.errors import InputError

from .display import fired, require_live, require_signal, shown_slice
from .downloads import file_stem
from .loading import message_children
from .params import current_recipe, require_current

log = logging.getLogger(__name__)


def table(services, session_id, meta, recipe):
    """(rows, column definitions, notes) of the measurements table of the current recipe."""
    m = services.measurements(session_id, meta["id"], recipe)
    names = list(m.columns)
    columns = []
    for name in names:
        unit = m.units.get(name, "")
        column = {"field": name, "headerName": f"{name} [{unit}]" if unit else name}
        if name == "label":
            column.update(pinned="left", checkboxSelection=False, maxWidth=110)
        elif np.issubdtype(np.asarray(m.columns[name]).dtype, np.floating):
            # 6 significant digits with thousands separators, never an exponent for the
            # areas of large regions (1,014,260, not 1.01426e+6)
            column["valueFormatter"] = {"function": "d3.format(',.6~r')(params.value)"}
        columns.append(column)
    n = len(m.columns[names[0]]) if names else 0
    rows = []
    for i in range(n):
        row = {}
        for name in names:
            value = m.columns[name][i]
            row[name] = value.item() if isinstance(value, np.generic) else value
        rows.append(row)
    return rows, columns, list(m.notes)


def distribution(rows, column, unit=""):
    """Histogram of one measurement over the regions shown in the table (the figure that
    ``PLOT_JS`` builds in the browser)."""
    values = [r[column] for r in rows or [] if isinstance(r.get(column), (int, float))]
    fig = go.Figure(go.Histogram(x=values, marker=dict(color="#0b6bcb")),
                    layout=go.Layout(margin=dict(l=40, r=10, t=10, b=40), height=220,
                                     xaxis=dict(title=column), yaxis=dict(title="regions"),
                                     bargap=0.05))
    return fig


PLOT_JS = """
function(column, rows) {
    if (!column) { return window.dash_clientside.no_update; }
    const x = [];
    for (const r of rows || []) {
        const v = r[column];
        if (typeof v === 'number' && isFinite(v)) { x.push(v); }
    }
    return {data: [{type: 'histogram', x: x, marker: {color: '#0b6bcb'}}],
            layout: {margin: {l: 40, r: 10, t: 10, b: 40}, height: 220,
                     xaxis: {title: {text: column}}, yaxis: {title: {text: 'regions'}},
                     bargap: 0.05}};
}
"""

SELECTED_JS = """
function(rows, previous) {
    const out = [];
    for (const r of rows || []) { if (r && r.label !== undefined) { out.push(Number(r.label)); } }
    out.sort(function (a, b) { return a - b; });
    if (JSON.stringify(out) === JSON.stringify(previous || [])) {
        return window.dash_clientside.no_update;
    }
    return out;
}
"""


def label_at(services, session_id, meta, recipe, axis, index, point):
    """Label of the region under a clicked / hovered pixel of the result view (0: none)."""
    try:
        x, y = int(round(point["x"])), int(round(point["y"]))
    except (TypeError, KeyError, ValueError):
        return 0
    labels = shown_slice(services.run(session_id, meta["id"], recipe).labels, meta, axis, index)
    if not (0 <= y < labels.shape[0] and 0 <= x < labels.shape[1]):
        return 0
    return int(labels[y, x])


def hover_text(services, session_id, meta, recipe, axis, index, point):
    """What the pointer is on in the segmentation view: "x 120, y 45 · intensity 131 ·
    region 7" (intensity in the image's own units; region 0 is the background)."""
    try:
        x, y = int(round(point["x"])), int(round(point["y"]))
    except (TypeError, KeyError, ValueError):
        return ""
    image = shown_slice(services.image(session_id, meta["id"]), meta, axis, index)
    if not (0 <= y < image.shape[0] and 0 <= x < image.shape[1]):
        return ""
    label = label_at(services, session_id, meta, recipe, axis, index, point)
    value = image[y, x]
    shown = (", ".join(f"{float(v):.6g}" for v in np.ravel(value)) if np.ndim(value)
             else f"{float(value):.6g}")
    where = f"x {x}, y {y}" + (f", slice {int(index or 0)}" if meta["ndim"] == 3 else "")
    region = f"region {label}" if label else "background"
    return f"{where} · intensity {shown} · {region}"


def row_highlight(label):
    """Row style rules highlighting the row of `label` (AG Grid ``getRowStyle``)."""
    conditions = []
    if label:
        conditions.append({"condition": f"params.data.label === {int(label)}",
                           "style": {"backgroundColor": "#fff3b0", "fontWeight": "bold"}})
    return {"styleConditions": conditions}


def csv_file(services, session_id, meta, history):
    """(text, filename) of the measurements CSV with provenance header lines."""
    recipe = current_recipe(history)
    m = services.measurements(session_id, meta["id"], recipe)
    info = provenance.record(meta, {"recipe": recipe})
    return measures.to_csv(m, info), f"{file_stem(meta)}_measurements.csv"


def register(app, services):
    """Wire the measurements panel."""

    @app.callback(
        Output(ids.MEASURE_TABLE, "rowData"),
        Output(ids.MEASURE_TABLE, "columnDefs"),
        Output(ids.MEASURE_TABLE, "selectedRows"),
        Output(ids.MEASURE_COLUMN, "options"),
        Output(ids.MEASURE_COLUMN, "value"),
        Output({"type": ids.STEP_MESSAGE, "stage": "measure"}, "children"),
        Output(ids.MEASURE_CAPTION, "children"),
        Output(ids.MEASURE_CAPTION, "title"),
        Input(ids.MEASURE_SETTLED, "data"),  # SEG_SETTLED, once the panel is in view
        Input(ids.MEASURE_SIGNAL, "data"),
        State(ids.HISTORY, "data"),
        State(ids.MEASURE_COLUMN, "value"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
        running=[(Output("measure-panel", "className"), "panel busy", "panel")],
    )
    def _table(settled, _measure, history, column, meta, session_id):
        # after the exact segmentation is shown (not competing with it for the CPU), or a
        # change of the measurement options alone
        require_current(meta, history)
        if not fired(ids.MEASURE_SIGNAL):
            require_signal(settled, history)
        try:
            rows, columns, notes = table(services, session_id, meta, current_recipe(history))
        except InputError as exc:
            return (no_update,) * 5 + (message_children(f"Measurements failed: {exc}",
                                                        "error"), no_update, no_update)
        except Exception as exc:  # noqa: BLE001
            log.exception("measurements failed")
            return (no_update,) * 5 + (message_children(
                f"Measurements failed: unexpected error ({type(exc).__name__}).", "error"),
                no_update, no_update)
        options = [{"label": c["headerName"], "value": c["field"]} for c in columns
                   if c["field"] != "label"]
        values = [o["value"] for o in options]
        column = column if column in values else ("area" if "area" in values else
                                                  (values[0] if values else None))
        note = message_children(" ".join(notes), "info") if notes else None
        require_live(services, session_id, meta, history)
        caption = f"{len(rows):,} regions of {meta['name']}"
        return rows, columns, [], options, column, note, caption, meta["id"]

    # The distribution plot and the selection run in the browser: no request per table.
    app.clientside_callback(
        PLOT_JS,
        Output(ids.MEASURE_PLOT, "figure"),
        Input(ids.MEASURE_COLUMN, "value"),
        Input(ids.MEASURE_TABLE, "virtualRowData"),
    )
    app.clientside_callback(
        SELECTED_JS,
        Output(ids.SELECTED_LABELS, "data"),
        Input(ids.MEASURE_TABLE, "selectedRows"),
        State(ids.SELECTED_LABELS, "data"),
    )

    @app.callback(
        Output(ids.MEASURE_TABLE, "getRowStyle"),
        Output(ids.MEASURE_TABLE, "scrollTo"),
        Output(ids.SEG_HOVER, "children"),
        Input(ids.SEG_GRAPH, "clickData"),
        Input(ids.SEG_GRAPH, "hoverData"),
        State(ids.HISTORY, "data"),
        State(ids.SLICE_AXIS, "value"),
        State(ids.SLICE_INDEX, "value"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
    )
    def _highlight(click, hover, history, axis, index, meta, session_id):
        data = click if ctx.triggered_id and "clickData" in ctx.triggered[0]["prop_id"] else hover
        if not meta or not history or not data or not data.get("points"):
            raise PreventUpdate
        recipe = current_recipe(history)
        point = data["points"][0]
        try:
            label = label_at(services, session_id, meta, recipe, axis, index, point)
            text = hover_text(services, session_id, meta, recipe, axis, index, point)
        except InputError:
            raise PreventUpdate from None
        scroll = {"rowId": str(label), "rowPosition": "middle"} if label else no_update
        return row_highlight(label), scroll, text

    @app.callback(
        Output(ids.DOWNLOAD_CSV, "data"),
        Output({"type": ids.STEP_MESSAGE, "stage": "measure"}, "children",
               allow_duplicate=True),
        Input(ids.DOWNLOAD_CSV_BUTTON, "n_clicks"),
        State(ids.IMAGE, "data"),
        State(ids.HISTORY, "data"),
        State(ids.SESSION, "data"),
        prevent_initial_call=True,
    )
    def _csv(n, meta, history, session_id):
        if not n or not meta or not history:
            raise PreventUpdate
        try:
            text, name = csv_file(services, session_id, meta, history)
        except InputError as exc:
            return no_update, message_children(f"Download failed: {exc}", "error")
        return dcc.send_string(text, name), no_update
