"""The exact segmentation's background job in the Segmentation panel: progress and Cancel.

A slow exact random walker (:mod:`callbacks.exact_job`) runs as a background job while the
live preview stays on the graph; this row shows its progress bar (graph build, set-up, then
the conjugate-gradient iterations), what it is doing and the time left, with a Cancel
button. It is hidden while no job runs (the job callback's ``running=`` shows it). The
Compute button, shown after a cancel or a stop at the time limit, runs the exact result of
the current state again.
"""

from __future__ import annotations

from dash import dcc, html

from . import ids
from .common import message

#: ``max`` of the progress bar: its value is the job's fraction done in thousandths.
PROGRESS_MAX = 1000


def exact_job_row():
    """The job's store, progress bar, its text, Cancel, Compute and the job's message."""
    return html.Div(className="exact-job-row", children=[
        dcc.Store(id=ids.EXACT_JOB),
        dcc.Store(id=ids.EXACT_DONE),
        html.Div(id=ids.EXACT_BOX, className="exact-job", style={"display": "none"},
                 children=[
                     html.Label("exact result", htmlFor=ids.EXACT_PROGRESS),
                     html.Progress(id=ids.EXACT_PROGRESS, value="0", max=str(PROGRESS_MAX)),
                     html.Button("Cancel", id=ids.EXACT_CANCEL, n_clicks=0, disabled=True,
                                 title="Stop computing the exact result (the preview stays)"),
                     html.Span(id=ids.EXACT_PROGRESS_TEXT, className="summary",
                               **{"aria-live": "polite"}),
                 ]),
        html.Button("Compute", id=ids.EXACT_RUN, n_clicks=0, className="exact-job-run",
                    style={"display": "none"},  # shown after a cancel or a stop
                    title="Compute the exact segmentation of the current state"),
        message(ids.EXACT_MESSAGE),
    ])


__all__ = ["PROGRESS_MAX", "exact_job_row"]
