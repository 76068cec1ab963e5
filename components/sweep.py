"""The parameter sweep's result: a grid of thumbnails with labelled axes (small multiples).

Rows are the values of parameter A, columns the values of parameter B (a sweep of one
parameter is one row, its values along the columns). Each axis says the parameter's name and
each row / column its value; the cell of the current recipe is marked; a click on a cell
adopts its recipe (``{"type": SWEEP_ADOPT, "index": i}``, callbacks.params).
"""

from __future__ import annotations

from dash import html

from . import ids

#: Class of a cell, and of the cell of the current recipe (also set in the browser,
#: callbacks.discovery.CURRENT_CELL_JS, when the current recipe changes).
CELL = "sweep-cell"
CURRENT = "sweep-cell sweep-current"


def _at(row, column, row_span=1, column_span=1):
    return {"gridRow": f"{row} / span {row_span}", "gridColumn": f"{column} / span {column_span}"}


def _cell(i, cell, row, column, current):
    """One result: its thumbnail and region count (a button adopting it), or its error."""
    where = _at(row, column)
    if "error" in cell:
        return html.Div(className="sweep-cell sweep-error", style=where, title=cell["title"],
                        children=html.Div(cell["error"], className="sweep-message"))
    count = f"{cell['n']:,} region{'' if cell['n'] == 1 else 's'}"
    return html.Button(
        id={"type": ids.SWEEP_ADOPT, "index": i}, n_clicks=0, style=where,
        className=CURRENT if current else CELL,
        title=f"{cell['title']}: {count}. Click to adopt these values.",
        children=[html.Img(src=cell["uri"], alt=cell["title"], className="sweep-thumb"),
                  html.Span(count, className="sweep-count")])


def sweep_grid(cells, axis_a, values_a, axis_b=None, values_b=None, current=None):
    """The sweep's result as a grid with labelled axes.

    Parameters
    ----------
    cells : list of dict
        Row-major (A along rows, B along columns): ``{"title", "uri", "n"}`` of a computed
        cell (its thumbnail as a PNG data URI and its region count) or ``{"title", "error"}``.
    axis_a, axis_b : str
        Names of the parameters (``axis_b`` None for a sweep of one parameter).
    values_a, values_b : list of str
        Their values as a person reads them, in the order of `cells`.
    current : int or None
        Index of the cell whose recipe is the current one (marked).

    Returns
    -------
    dash.html.Div
        A CSS grid: the column axis's name, the column values, then one row per value of A
        (its value, then the cells), the row axis's name along the rows.
    """
    if axis_b is None:  # one parameter: its values along the columns, one row
        columns, column_values, rows, row_values = axis_a, values_a, None, [None]
    else:
        columns, column_values, rows, row_values = axis_b, values_b, axis_a, values_a
    n_columns = len(column_values)
    if len(cells) != n_columns * len(row_values):
        raise ValueError(f"{len(cells)} cells for a {len(row_values)} x {n_columns} grid")
    first = 3  # grid columns 1 and 2: the row axis's name and the row values
    children = [
        html.Div(columns, className="sweep-axis sweep-axis-columns",
                 style=_at(1, first, column_span=n_columns)),
        *[html.Div(value, className="sweep-value sweep-value-column", style=_at(2, first + j))
          for j, value in enumerate(column_values)],
    ]
    if rows is not None:
        children.append(html.Div(html.Span(rows), className="sweep-axis sweep-axis-rows",
                                 style=_at(3, 1, row_span=len(row_values))))
    for r, value in enumerate(row_values):
        if value is not None:
            children.append(html.Div(value, className="sweep-value sweep-value-row",
                                     style=_at(3 + r, 2)))
        for j in range(n_columns):
            i = r * n_columns + j
            children.append(_cell(i, cells[i], 3 + r, first + j, i == current))
    return html.Div(className="sweep-grid", children=children, style={
        "gridTemplateColumns": f"auto auto repeat({n_columns}, minmax(72px, 240px))"})
