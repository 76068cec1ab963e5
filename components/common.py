"""Small building blocks shared by the panels."""

from __future__ import annotations

from dash import html

from .docs import doc_link


def panel(title, function, body, *, panel_id, header_extra=None):
    """A titled panel; its header names (and links) the function the step runs."""
    header = [html.H2(title)]
    if header_extra is not None:
        header.append(header_extra)
    if function:
        header.append(doc_link(function))
    return html.Section(
        className="panel",
        id=panel_id,
        children=[
            html.Header(className="panel-header", children=header),
            html.Div(className="panel-body", children=body),
        ],
    )


def message(component_id):
    """An area for a step's messages (errors are announced to screen readers)."""
    return html.Div(id=component_id, className="message", role="alert", **{"aria-live": "polite"})


def graph_config():
    """Plotly config of the image graphs: scroll zoom, no selection tools."""
    return {"displaylogo": False, "scrollZoom": True,
            "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"]}
