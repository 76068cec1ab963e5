"""Parameter forms built from a step's :class:`pipeline.steps.Param` list."""

from __future__ import annotations

from dash import dcc, html

from . import ids
from .docs import doc_link, summary


def _input(stage, method, param, value):
    pid = {"type": ids.PARAM, "stage": stage, "method": method, "name": param.name}
    if param.kind == "choice":
        return dcc.Dropdown(id=pid, options=[{"label": str(c), "value": c} for c in param.choices],
                            value=value, clearable=False, className="param-dropdown")
    if param.kind == "bool":
        return dcc.Dropdown(id=pid, options=[{"label": "yes", "value": True},
                                             {"label": "no", "value": False}],
                            value=value, clearable=False, className="param-dropdown")
    return dcc.Input(id=pid, type="number", value=value, min=param.min, max=param.max,
                     step=1 if param.kind == "int" else "any", debounce=True,
                     className="number-input")


#: Parameters that follow from the image, not choices: no input (the segmentation panel shows
#: the random walker's intensity scale as information, components.panels.intensity_info);
#: recipes and scripts keep their value.
INFO_PARAMS = frozenset({"intensity_scale"})


def param_form(stage, step, values=None):
    """Labelled inputs for every parameter of `step` but :data:`INFO_PARAMS`, filled with
    `values` (or defaults)."""
    values = {**step.defaults(), **(values or {})}
    rows = []
    for p in step.params:
        if p.name in INFO_PARAMS:
            continue
        rows.append(html.Div(className="param", children=[
            html.Label(p.name, title=p.doc),
            _input(stage, step.key, p, values[p.name]),
        ]))
    return rows


def step_doc(step):
    """The function a step runs, linked to its docs, with the first line of its docstring."""
    if not step.function:
        return html.Div(className="step-doc", children="no function: the image is used as it is")
    children = [doc_link(step.function), html.Span(" — " + summary(step.function),
                                                   className="doc-summary")]
    for url in step.examples:
        children += [" ", html.A("gallery example", href=url, target="_blank",
                                 rel="noopener noreferrer", className="doc-link")]
    return html.Div(className="step-doc", children=children)
