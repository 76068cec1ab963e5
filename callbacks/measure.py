"""Measurements: the regionprops table, linked both ways with the image, and its plot.

The grid (components.measurements) pages on the server: AG Grid's infinite row model asks
for a block of rows (``getRowsRequest``) and :func:`rows_update` answers it from the table
cached by image id and recipe (``services.measurements``), sorted and filtered by
:func:`pipeline.measure.page`. The first block of a new table, sort or filter also brings
the columns, the caption, the distributions binned on the server
(:func:`pipeline.measure.distributions`) and the implausible-count warning. A settled
segmentation makes the grid drop its rows (``RELOAD_JS``, in the browser): one request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from dash import Input, Output, State, ctx, dcc, no_update
from dash.exceptions import PreventUpdate

from components import ids
from pipeline import measure as measures
from pipeline import provenance
from pipeline.errors import InputError

from .display import shown_slice
from .downloads import file_stem
from .loading import format_value, message_children
from .params import current_recipe

log = logging.getLogger(__name__)


#: Significant digits of a column's typical (median) value in the measurements grid.
SIGNIFICANT = 4
#: The most decimals a column gets (its values below 1e-6 of a unit are better rescaled).
MOST_DECIMALS = 10


def column_decimals(values) -> int:
    """How many decimals a measurements column is written with, one number for the whole
    column (so that its values line up: 3.77 above 489.15, not 3.76923 above 489.154):
    none when every value is whole (areas in pixels, bounding boxes, min / max intensity of
    an integer image), else enough for :data:`SIGNIFICANT` digits of the column's median
    magnitude (perimeters ~50: 2 decimals; eccentricities ~0.5: 4; centroids ~150: 1)."""
    values = np.asarray(values, dtype=float).ravel()
    finite = values[np.isfinite(values)]
    if finite.size == 0 or np.array_equal(finite, np.round(finite)):
        return 0
    magnitude = float(np.median(np.abs(finite[finite != 0])))
    return int(min(MOST_DECIMALS,
                   max(0, SIGNIFICANT - 1 - int(np.floor(np.log10(magnitude))))))


def number_format(decimals: int) -> str:
    """The AG Grid valueFormatter of a numeric column: `decimals` decimals, thousands
    separators, never an exponent (1,014,260, not 1.01426e+6); a missing value (NaN is sent
    as null, which d3.format would write as "0") is an empty cell. The cell's value stays
    the number, so sorting and filtering stay numeric; the CSV keeps full precision."""
    return f"params.value == null ? '' : d3.format(',.{int(decimals)}f')(params.value)"


def _width(values, header, decimals):
    """A column's width in pixels: its widest value as the grid formats it (`decimals`
    decimals, thousands separators) or its header's longest word (headers wrap), 60 to
    112."""
    values = np.asarray(values)
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    chars = (max(len(f"{float(v):,.{decimals}f}") for v in (finite.min(), finite.max()))
             if finite.size else 3)
    word = max(len(w) for w in header.replace("_", "_ ").split())
    return int(min(112, max(60, 7 * max(chars, min(word, 9)) + 20)))


def columns_of(m):
    """AG Grid column definitions of a measurement table (units in the headers, each column
    as wide as its values need: more columns fit the panel; each numeric column written
    with its own number of decimals, :func:`column_decimals`)."""
    columns = []
    for name in m.columns:
        unit = m.units.get(name, "")
        values = np.asarray(m.columns[name])
        numeric = values.dtype.kind in "iuf"
        decimals = column_decimals(values) if numeric else 0
        column = {"field": name, "headerName": f"{name} [{unit}]" if unit else name,
                  "width": _width(values, name, decimals)}
        if name == "label":
            # a region's name, written as the hover line and the CSV write it (region 1234)
            column.update(pinned="left")
        elif numeric:
            column["valueFormatter"] = {"function": number_format(decimals)}
        columns.append(column)
    return columns


def table(services, session_id, meta, recipe):
    """(every row, column definitions, notes) of the measurements table of the current recipe
    (the grid itself is served by :func:`grid_page`, a block at a time)."""
    m = services.measurements(session_id, meta["id"], recipe)
    return measures.rows_of(m, np.arange(m.n_objects)), columns_of(m), list(m.notes)


def _models(request):
    request = request if isinstance(request, dict) else {}
    return request.get("sortModel") or None, request.get("filterModel") or None


def noise_warning(services, session_id, meta, recipe, n_regions):
    """The implausible-count warning of a table of `n_regions` (None when plausible)."""
    if n_regions < measures.NOISE_MIN_REGIONS:
        return None
    labels = np.asarray(services.run(session_id, meta["id"], recipe).labels)
    sizes = np.bincount(labels.ravel())[1:]
    sizes = sizes[sizes > 0]
    return measures.region_count_warning(n_regions, int(labels.size),
                                         float(np.median(sizes)) if sizes.size else None)


@dataclass(frozen=True)
class GridPage:
    """What the server answers to one ``getRowsRequest`` of the measurements grid.

    Attributes
    ----------
    response : dict
        ``getRowsResponse``: ``rowData`` (the block's rows) and ``rowCount`` (rows passing
        the filter).
    columns : list of dict
        Column definitions.
    notes : list of str
    total : int
        Rows of the whole table.
    bins : dict or None
        :func:`pipeline.measure.distributions` of the rows passing the filter, for the first
        block only (a new table, sort or filter); None for the next blocks.
    warning : str or None
        The implausible-count warning (first block only).
    """

    response: dict
    columns: list
    notes: list
    total: int
    bins: dict | None
    warning: str | None


def grid_page(services, session_id, meta, recipe, request):
    """One block of the measurements grid: sorted, filtered and cut on the server from the
    table cached by image id and recipe (``services.measurements``).

    Raises
    ------
    InputError
        When the request is malformed (rows, sort or filter model) or the table cannot be
        measured.
    """
    if not isinstance(request, dict):
        raise InputError(f"getRowsRequest must be a dict, got {request!r}")
    sort_model, filter_model = _models(request)
    m = services.measurements(session_id, meta["id"], recipe)
    start = request.get("startRow", 0)
    rows, count = measures.page(m, start, request.get("endRow", 0), sort_model, filter_model)
    first = start == 0
    return GridPage(
        response={"rowData": rows, "rowCount": count},
        columns=columns_of(m), notes=list(m.notes), total=m.n_objects,
        bins=(measures.distributions(m, np.flatnonzero(measures.filter_mask(m, filter_model)))
              if first else None),
        warning=noise_warning(services, session_id, meta, recipe, m.n_objects) if first
        else None)


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
    region 7" (intensity in the image's own units, written as the image info writes its
    range: ``loading.format_value``; region 0 is the background)."""
    try:
        x, y = int(round(point["x"])), int(round(point["y"]))
    except (TypeError, KeyError, ValueError):
        return ""
    image = shown_slice(services.image(session_id, meta["id"]), meta, axis, index)
    if not (0 <= y < image.shape[0] and 0 <= x < image.shape[1]):
        return ""
    label = label_at(services, session_id, meta, recipe, axis, index, point)
    value = image[y, x]
    # as a person reads it (issue 10 item 3): 65,535 on a 16-bit image, 0.291 on a float
    # one (was .6g: 65535, 0.291016)
    dtype = str(meta.get("dtype") or image.dtype)
    shown = ", ".join(format_value(v, dtype) for v in np.ravel(value))
    where = f"x {x}, y {y}" + (f", slice {int(index or 0)}" if meta["ndim"] == 3 else "")
    region = f"region {label}" if label else "background"
    return f"{where} · intensity {shown} · {region}"


def row_highlight(label):
    """Row style rules highlighting the row of `label` (AG Grid ``getRowStyle``; rows of a
    block still loading have no data)."""
    conditions = []
    if label:
        conditions.append({"condition": f"params.data && params.data.label === {int(label)}",
                           "style": {"backgroundColor": "#fff3b0", "fontWeight": "bold"}})
    return {"styleConditions": conditions}


def scroll_to(services, session_id, meta, recipe, label, request):
    """``scrollTo`` of the grid showing the row of `label` (its position under the grid's
    sort and filter, found on the server: the row may not be loaded yet), or None."""
    if not label:
        return None
    sort_model, filter_model = _models(request)
    m = services.measurements(session_id, meta["id"], recipe)
    try:
        row = measures.position(m, label, sort_model, filter_model)
    except InputError:
        return None
    return None if row is None else {"rowIndex": row, "rowPosition": "middle"}


def caption(page, name, filtered):
    """The line above the table: how many regions, and how many pass the filter."""
    text = f"{page.total:,} regions of {name}"
    if filtered:
        text += f" · {page.response['rowCount']:,} pass the filter"
    return text + " · sorted and filtered on the server"


# The grid drops its rows and asks the server again (one request: the first block, which
# brings the columns, the caption and the distributions too) when a new table is settled.
RELOAD_JS = """
function(settled, measureSignal) {
    // getApi throws until the grid is initialised; a grid initialised later asks the
    // server for its first block itself, so there is nothing to reload then.
    let api = null;
    try { api = window.dash_ag_grid && window.dash_ag_grid.getApi('GRID_ID'); } catch (e) {}
    if (!api || (!settled && !measureSignal)) { return window.dash_clientside.no_update; }
    if (api.getSelectedRows().length) { api.deselectAll(); }  // the labels are new
    if (api.getDisplayedRowCount() > 0) { api.ensureIndexVisible(0, 'top'); }
    api.purgeInfiniteCache();
    return Date.now();
}
""".replace("GRID_ID", ids.MEASURE_TABLE)

# The distribution of one column from the server's bins (counts per bin): a bar chart.
PLOT_JS = """
function(column, bins) {
    if (!column || !bins || !bins[column]) { return window.dash_clientside.no_update; }
    const b = bins[column], n = b.counts.length, w = n ? (b.hi - b.lo) / n : 1;
    const x = [];
    for (let i = 0; i < n; i++) { x.push(b.lo + (i + 0.5) * w); }
    return {data: [{type: 'bar', x: x, y: b.counts, width: w, marker: {color: '#0b6bcb'},
                    hovertemplate: '%{x}: %{y} regions<extra></extra>'}],
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


def rows_update(services, session_id, meta, history, request, column, columns, options):
    """Outputs of the grid's ``getRowsRequest`` callback: (getRowsResponse, columnDefs,
    column options, column, message, caption, caption title, bins, warning).

    A block after the first changes the rows only; the first block of a new table, sort or
    filter brings the columns, the caption, the distributions and the warning too (outputs
    that did not change are ``no_update``: nothing downstream fires). An error is answered
    with no rows and a message beside the table (the grid never waits for ever)."""
    empty = {"rowData": [], "rowCount": 0}
    if not meta or not history or history.get("image_id") != meta["id"]:
        return (empty,) + (no_update,) * 8
    try:
        page = grid_page(services, session_id, meta, current_recipe(history), request)
    except InputError as exc:
        return (empty,) + (no_update,) * 3 + (
            message_children(f"Measurements failed: {exc}", "error"),) + (no_update,) * 4
    except Exception as exc:  # noqa: BLE001
        log.exception("measurements failed")
        return (empty,) + (no_update,) * 3 + (message_children(
            f"Measurements failed: unexpected error ({type(exc).__name__}).", "error"),) + \
            (no_update,) * 4
    if page.bins is None:
        return (page.response,) + (no_update,) * 8
    new_options = [{"label": c["headerName"], "value": c["field"]} for c in page.columns
                   if c["field"] != "label"]
    values = [o["value"] for o in new_options]
    new_column = column if column in values else ("area" if "area" in values else
                                                  (values[0] if values else None))
    note = message_children(" ".join(page.notes), "info") if page.notes else None
    filtered = bool(_models(request)[1])
    return (page.response,
            page.columns if page.columns != columns else no_update,
            new_options if new_options != options else no_update,
            new_column if new_column != column else no_update,
            note, caption(page, meta["name"], filtered), meta["id"], page.bins,
            message_children(page.warning, "warning"))


def csv_file(services, session_id, meta, history):
    """(text, filename) of the measurements CSV with provenance header lines."""
    recipe = current_recipe(history)
    m = services.measurements(session_id, meta["id"], recipe)
    info = provenance.record(meta, {"recipe": recipe})
    return measures.to_csv(m, info), f"{file_stem(meta)}_measurements.csv"


def register(app, services):
    """Wire the measurements panel."""

    # A new table (the exact segmentation is shown, or the measurement options changed):
    # the grid drops its rows and asks for the first block (one request).
    app.clientside_callback(
        RELOAD_JS,
        Output(ids.MEASURE_RELOAD, "data"),
        Input(ids.MEASURE_SETTLED, "data"),  # SEG_SETTLED, once the panel is in view
        Input(ids.MEASURE_SIGNAL, "data"),
    )

    @app.callback(
        Output(ids.MEASURE_TABLE, "getRowsResponse"),
        Output(ids.MEASURE_TABLE, "columnDefs"),
        Output(ids.MEASURE_COLUMN, "options"),
        Output(ids.MEASURE_COLUMN, "value"),
        Output({"type": ids.STEP_MESSAGE, "stage": "measure"}, "children"),
        Output(ids.MEASURE_CAPTION, "children"),
        Output(ids.MEASURE_CAPTION, "title"),
        Output(ids.MEASURE_BINS, "data"),
        Output(ids.MEASURE_WARNING, "children"),
        Input(ids.MEASURE_TABLE, "getRowsRequest"),
        State(ids.HISTORY, "data"),
        State(ids.MEASURE_COLUMN, "value"),
        State(ids.MEASURE_TABLE, "columnDefs"),
        State(ids.MEASURE_COLUMN, "options"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
        prevent_initial_call=True,
        running=[(Output("measure-panel", "className"), "panel busy", "panel")],
    )
    def _rows(request, history, column, columns, options, meta, session_id):
        # a block of rows the grid asks for (scrolling, a sort, a filter, a new table)
        if not request:
            raise PreventUpdate
        return rows_update(services, session_id, meta, history, request, column, columns,
                           options)

    # The distribution plot (from the server's bins) and the selection run in the browser.
    app.clientside_callback(
        PLOT_JS,
        Output(ids.MEASURE_PLOT, "figure"),
        Input(ids.MEASURE_COLUMN, "value"),
        Input(ids.MEASURE_BINS, "data"),
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
        State(ids.MEASURE_TABLE, "getRowsRequest"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
    )
    def _highlight(click, hover, history, axis, index, request, meta, session_id):
        data = click if ctx.triggered_id and "clickData" in ctx.triggered[0]["prop_id"] else hover
        if not meta or not history or not data or not data.get("points"):
            raise PreventUpdate
        recipe = current_recipe(history)
        point = data["points"][0]
        try:
            label = label_at(services, session_id, meta, recipe, axis, index, point)
            text = hover_text(services, session_id, meta, recipe, axis, index, point)
            scroll = scroll_to(services, session_id, meta, recipe, label, request)
        except InputError:
            raise PreventUpdate from None
        return row_highlight(label), scroll or no_update, text
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
