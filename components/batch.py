"""The Batch tab: run the current recipe over a folder of the data folder or several uploads."""

from __future__ import annotations

from dash import dcc, html

from . import ids
from .common import message

__all__ = ["batch_stores", "batch_tab_body", "jobs_list", "results_table"]


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
        html.Div(id=ids.BATCH_JOBS, className="batch-jobs"),
    ])


def batch_stores():
    """The Batch tab's page-level components (mounted whatever tab is shown).

    This browser's id (``storage_type="local"``: it outlives a reload or a closed tab, set by
    the page when missing), the job the page shows, and the timer that reads the status of a
    job the page re-attached to after a reload (off until then).
    """
    return [
        dcc.Store(id=ids.BATCH_BROWSER, storage_type="local"),
        dcc.Store(id=ids.BATCH_JOB),
        dcc.Interval(id=ids.BATCH_POLL, interval=1000, disabled=True),
    ]


def jobs_list(jobs):
    """The owner's running and recent batches, newest first.

    Parameters
    ----------
    jobs : list of dict
        ``{"job", "when", "source", "state", "text", "href"}`` each: ``href`` is the zip of a
        finished job (None otherwise).
    """
    if not jobs:
        return None
    items = []
    for job in jobs:
        parts = [html.Span(job["when"], className="batch-job-when"), " · ",
                 html.Span(job["source"], className="batch-job-source"), " · ",
                 html.Span(job["text"], className="batch-job-state")]
        if job.get("href"):
            parts += [" · ", html.A("zip", href=job["href"], download="batch_results.zip")]
        items.append(html.Li(parts, className=f"batch-job batch-job-{job['state']}",
                             **{"data-job": job["job"]}))
    return html.Div([html.Div("Your batches (running and recent)", className="caption"),
                     html.Ul(items)])


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
