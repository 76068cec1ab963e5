"""The Batch tab: run the current recipe over a folder of the data folder or several uploads."""

from __future__ import annotations

from dash import dcc, html

from . import ids
from .common import message


def batch_tab_body(max_files: int | None = None):
    """Body of the Batch tab: source, uploads, run / cancel, progress, results.

    Parameters
    ----------
    max_files : int, optional
        The largest batch (shown in the hint).
    """
    limit = f" (at most {max_files} files)" if max_files else ""
    return html.Div(className="tab-body batch", children=[
        html.P(className="hint", children=[
            "Run the current recipe over many images" + limit + ": a folder of the lab's data "
            "folder, or files you upload here. Images run in parallel; a file that fails is "
            "listed with its reason and the others go on. The results come as one zip: a "
            "label image (TIFF) and a measurements CSV per file, a combined CSV with one "
            "summary row per image, the recipe (JSON) and the exported script."]),
        html.Div(className="param-form", children=[
            html.Div(className="param param-wide", children=[
                html.Label("images", htmlFor=ids.BATCH_SOURCE),
                dcc.Dropdown(id=ids.BATCH_SOURCE, clearable=False, options=[],
                             placeholder="a folder of the data folder, or the uploads")]),
            html.Button("Refresh list", id=ids.BATCH_REFRESH, n_clicks=0),
            dcc.Upload(id=ids.BATCH_UPLOAD, multiple=True, className="upload upload-small",
                       children=html.Div(["Upload images: drop or ", html.A("choose")])),
            html.Button("Clear uploads", id=ids.BATCH_CLEAR_UPLOADS, n_clicks=0),
        ]),
        dcc.Store(id=ids.BATCH_UPLOADS, data=[]),
        html.Div(className="buttons", children=[
            html.Button("Run batch", id=ids.BATCH_RUN, n_clicks=0),
            html.Button("Cancel", id=ids.BATCH_CANCEL, n_clicks=0, disabled=True),
        ]),
        html.Div(className="batch-progress", children=[
            html.Progress(id=ids.BATCH_PROGRESS, value="0", max="1",
                          style={"width": "100%"}),
            html.Div(id=ids.BATCH_PROGRESS_TEXT, className="summary",
                     **{"aria-live": "polite"}),
        ]),
        message(ids.BATCH_MESSAGE),
        html.Div(id=ids.BATCH_SUMMARY, className="summary"),
        html.Div(id=ids.BATCH_DOWNLOAD),
        html.Div(id=ids.BATCH_TABLE),
    ])


def results_table(rows):
    """The per-file result table: file, regions, status (with the reason of a failure).

    Parameters
    ----------
    rows : list of dict
        ``{"file", "regions", "status", "message"}`` each.
    """
    if not rows:
        return None
    head = html.Thead(html.Tr([html.Th("file"), html.Th("regions"), html.Th("status")]))
    body = []
    for row in rows:
        status = row["status"] if not row.get("message") else f"{row['status']}: {row['message']}"
        regions = "" if row.get("regions") is None else str(row["regions"])
        body.append(html.Tr(className=f"batch-row batch-{row['status']}", children=[
            html.Td(row["file"]), html.Td(regions), html.Td(status)]))
    return html.Table(className="batch-table", children=[head, html.Tbody(body)])
