"""The measurements panel: a regionprops table paged from the server, its distribution plot
and the CSV download.

The table (dash-ag-grid) uses AG Grid's infinite row model: the grid asks for blocks of
:data:`BLOCK_ROWS` rows (``getRowsRequest``) and the server answers them, sorted and filtered
(``getRowsResponse``, :mod:`callbacks.measure`); a segmentation of tens of thousands of
regions never travels to the browser whole.
"""

from __future__ import annotations

import dash_ag_grid as dag
from dash import dcc, html

from . import ids
from .common import message, panel

#: Rows per block the grid asks the server for (one request fills the visible rows).
BLOCK_ROWS = 100
#: Height of a row and of the header rows, in pixels (a compact table shows more rows).
ROW_HEIGHT = 26


def measurements_grid():
    """The measurements table: infinite row model, sorted and filtered on the server."""
    return dag.AgGrid(
        id=ids.MEASURE_TABLE, rowModelType="infinite", columnDefs=[],
        getRowId="params.data.label",
        defaultColDef={"sortable": True, "filter": "agNumberColumnFilter",
                       "floatingFilter": True, "resizable": True, "minWidth": 56,
                       "wrapHeaderText": True, "autoHeaderHeight": True,
                       "filterParams": {"buttons": ["reset"], "maxNumConditions": 2}},
        dashGridOptions={
            "rowSelection": {"mode": "multiRow", "headerCheckbox": False},
            "selectionColumnDef": {"width": 34, "pinned": "left", "resizable": False,
                                   "suppressHeaderMenuButton": True},
            "animateRows": False, "rowHeight": ROW_HEIGHT, "floatingFiltersHeight": 30,
            "cacheBlockSize": BLOCK_ROWS, "maxBlocksInCache": 20,
            # one request at a time: dash-ag-grid answers the grid's latest request
            "maxConcurrentDatasourceRequests": 1, "infiniteInitialRowCount": 1,
            "blockLoadDebounceMillis": 50,
            },
        selectedRows=[], style={"height": "452px"}, className="measure-table")


def measurements_panel(properties):
    """Measurements: a regionprops table linked with the image, a distribution, CSV."""
    return panel("5 · Measurements", "skimage.measure.regionprops_table", [
        html.Div(className="param-form", children=[
            html.Div(className="param", children=[
                html.Label("pixel size", htmlFor=ids.PIXEL_SIZE),
                dcc.Input(id=ids.PIXEL_SIZE, type="number", value=1, min=0, step="any",
                          debounce=True, className="number-input")]),
            html.Div(className="param", children=[
                html.Label("unit", htmlFor=ids.PIXEL_UNIT),
                dcc.Input(id=ids.PIXEL_UNIT, type="text", value="px", debounce=True,
                          maxLength=16, className="number-input")]),
            html.Button("Download CSV", id=ids.DOWNLOAD_CSV_BUTTON, n_clicks=0,
                        title="every row, with units and provenance"),
            dcc.Download(id=ids.DOWNLOAD_CSV),
        ]),
        html.Div(className="param param-wide", children=[
            html.Label("properties", htmlFor=ids.MEASURE_PROPERTIES),
            dcc.Dropdown(id=ids.MEASURE_PROPERTIES, multi=True,
                         options=[{"label": p, "value": p} for p in properties])]),
        message({"type": ids.STEP_MESSAGE, "stage": "measure"}),
        html.Div(id=ids.MEASURE_CAPTION, className="measure-caption"),
        html.Div(id=ids.MEASURE_WARNING, className="message measure-warning", role="status"),
        measurements_grid(),
        html.Div(className="measure-plot", children=[
            html.Label("distribution of", htmlFor=ids.MEASURE_COLUMN),
            dcc.Dropdown(id=ids.MEASURE_COLUMN, clearable=False),
            dcc.Graph(id=ids.MEASURE_PLOT, config={"displaylogo": False},
                      style={"height": "220px"}),
        ]),
        dcc.Store(id=ids.SELECTED_LABELS, data=[]),
        dcc.Store(id=ids.MEASURE_BINS),
        dcc.Store(id=ids.MEASURE_RELOAD),
    ], panel_id="measure-panel")
