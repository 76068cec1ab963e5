"""Discovering algorithms and parameters: the threshold gallery and the parameter sweep.

The gallery is the talk's ``try_all_threshold``, made interactive: every global method drawn
on the histogram and shown as a binarisation, one click adopting its value as vmin or vmax.
The sweep computes a grid of recipes in parallel (joblib threads over the cached stages) and
shows them as small multiples (components.sweep: a grid with the parameters' names and values
on its axes, the current recipe's cell marked); a click on a cell adopts its recipe (through
the undo history).
"""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
from dash import ALL, Input, Output, State, html, no_update
from dash.exceptions import PreventUpdate
from joblib import Parallel, delayed

from components import ids
from components import sweep as sweep_components
from components.docs import doc_url, summary
from components.sweep import sweep_grid
from pipeline import postprocess, render
from pipeline.errors import InputError
from pipeline.measure import count_regions
from pipeline.thresholds import (
    GLOBAL_METHODS,
    LOCAL_METHODS,
    THRESHOLD_FUNCTIONS,
    binarize,
    local_binarization,
)

from .display import base_gray, shown_slice
from .loading import format_value, message_children
from .params import current_recipe, require_current

log = logging.getLogger(__name__)

THUMB = 180  # thumbnail size, pixels
SWEEP_RESULT = "sweep-result"  # class of the sweep's result area (components.panels)
SWEEP_THUMB = 240  # a sweep cell's thumbnail (a grid of at most 6 columns fits the page)
MAX_SWEEP = 36  # combinations at most


def thumbnail(array2d, size=THUMB):
    """Every k-th pixel so that the longest side is at most `size`."""
    k = max(1, math.ceil(max(array2d.shape) / size))
    return array2d[::k, ::k]


def _mask_uri(mask2d):
    return render.png_data_uri(np.where(thumbnail(mask2d), 255, 0).astype(np.uint8))


def _tile(title, body, footer, *, error=False):
    return html.Div(className="tile tile-error" if error else "tile",
                    children=[html.Div(className="tile-title", children=title,
                                       style={"overflowWrap": "anywhere"}), body, footer])


def tile_title(method):
    """A tile's heading: the method's name, and its function (the name after
    ``skimage.filters.``, linked to its API page; the whole name and its summary as the
    link's tooltip), on two lines in every tile (thumbnails aligned). The whole qualified name (skimage.filters.threshold_isodata) did not fit
    a 200 px tile: every title was cut to "skimage.filters.threshold_is" and ran into the
    next tile (issue 10, seen on the page)."""
    qualname = THRESHOLD_FUNCTIONS[method]
    return [html.Strong(method, className="tile-method"), html.Br(),
            html.A(html.Code(qualname.rsplit(".", 1)[-1]), href=doc_url(qualname),
                   target="_blank", rel="noopener noreferrer", className="doc-link",
                   title=f"{qualname} — {summary(qualname)}")]


def threshold_text(value) -> str:
    """A threshold as the text under the slider will write it once adopted (assets/format.js
    pipexNumber): whole numbers with thousands separators (8,695), from 1,000 on one decimal
    (8,695.3), below 4 significant digits (0.4766), tiny values in exponent form. The
    gallery wrote 8695 beside 25,154 on the same 16-bit image (issue 10 item 3)."""
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if v.is_integer() and abs(v) < 1e21:
        return f"{int(v):,}"
    if v != 0 and abs(v) < 1e-3:
        mantissa, exponent = f"{v:.3e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    if abs(v) >= 1000:
        return f"{v:,.1f}".rstrip("0").rstrip(".")
    return f"{float(f'{v:.4g}'):g}"


def gallery(services, session_id, meta, recipe, axis, index, window):
    """Tiles of every automatic threshold (global, then local) on the filtered image."""
    filtered = services.filtered(session_id, meta["id"], recipe)
    values = services.thresholds(session_id, meta["id"], recipe)
    shown = shown_slice(filtered, meta, axis, index)
    tiles = []
    for method in GLOBAL_METHODS:
        value = values.get(method)
        title = tile_title(method)
        if not isinstance(value, float):
            tiles.append(_tile(title, html.Div(className="tile-message", children=str(value)),
                               None, error=True))
            continue
        adopt = [html.Button(f"as {end}", id={"type": ids.ADOPT, "method": method, "as": end,
                                               "value": value}, n_clicks=0)
                 for end in ("vmin", "vmax")]
        # the value on its own line: "8,695.2" and both buttons did not fit one line
        buttons = html.Div([html.Div(threshold_text(value), className="tile-value"),
                            html.Div(adopt, className="tile-buttons")])
        tiles.append(_tile(title, html.Img(src=_mask_uri(binarize(shown, value)),
                                           className="thumb", alt=f"{method} binarisation"),
                           buttons))
    for method in LOCAL_METHODS:
        title = tile_title(method)
        try:
            # Sauvola's r: half the range of the image's type, in its own units
            scale = float(meta.get("scale", 1.0))
            mask = local_binarization(shown, method, window_size=window,
                                      r=0.5 * scale if scale > 1 else None)
        except InputError as exc:
            tiles.append(_tile(title, html.Div(className="tile-message", children=str(exc)),
                               None, error=True))
            continue
        tiles.append(_tile(title, html.Img(src=_mask_uri(mask), className="thumb",
                                           alt=f"{method} binarisation"),
                           html.Div(className="tile-value",
                                    children=f"local, window {window}")))
    return tiles


# --- parameter sweep -----------------------------------------------------------------------

def sweepable(recipe) -> list[dict]:
    """Numeric parameters of the current recipe that a sweep can vary (dropdown options)."""
    options = [{"label": "markers: vmin", "value": "markers.vmin"},
               {"label": "markers: vmax", "value": "markers.vmax"}]
    for stage in ("filter", "segmentation"):
        for name, value in recipe[stage]["params"].items():
            if name == "intensity_scale":  # a property of the image, not a choice
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                options.append({"label": f"{stage} ({recipe[stage]['name']}): {name}",
                                "value": f"{stage}.params.{name}"})
    for i, op in enumerate(recipe["postprocess"]):
        for name, value in op["params"].items():
            if op["name"] == "split_touching" and name == "connectivity":
                continue  # it must be the label step's (the recipe refuses another)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                options.append({"label": f"post-processing ({op['name']}): {name}",
                                "value": f"postprocess.{i}.params.{name}"})
    return options


#: Longest text of sweep values read (a few numbers; refused before splitting it).
MAX_VALUES_TEXT = 2000


def parse_values(text, name="values") -> list[float]:
    """Comma- or space-separated numbers (at most :data:`MAX_SWEEP` of them)."""
    text = str(text or "")
    if len(text) > MAX_VALUES_TEXT:
        raise InputError(f"{name}: at most {MAX_SWEEP} numbers; this text has "
                         f"{len(text):,} characters")
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        raise InputError(f"{name}: give a few numbers, e.g. 70, 80, 90")
    if len(parts) > MAX_SWEEP:
        raise InputError(f"{name}: a sweep has at most {MAX_SWEEP} combinations; "
                         f"{len(parts)} values given")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"{name}: {text!r} is not a list of numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{name}: numbers must be finite")
    return values


def _set(recipe, path, value):
    node = recipe
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[keys[-1]] = value


def sweep_recipes(recipe, param_a, values_a, param_b=None, values_b=None, fmt=None):
    """The grid of recipes of a sweep, row-major (A varies along rows).

    The number of cells is checked before any is built. `fmt(path, value)` writes a value
    in the cells' titles (``{value:g}`` if None)."""
    cells = len(values_a) * (len(values_b) if param_b else 1)
    if cells > MAX_SWEEP:
        raise InputError(f"a sweep has at most {MAX_SWEEP} combinations; this one has "
                         f"{cells:,}")
    fmt = fmt or (lambda _path, v: f"{v:g}")
    grid = []
    for a in values_a:
        for b in (values_b if param_b else [None]):
            r = copy.deepcopy(recipe)
            _set(r, param_a, a)
            label = f"{param_a.split('.')[-1]} = {fmt(param_a, a)}"
            if param_b:
                _set(r, param_b, b)
                label += f", {param_b.split('.')[-1]} = {fmt(param_b, b)}"
            grid.append({"recipe": r, "label": label})
    return grid


def run_sweep(services, session_id, meta, grid, axis, index, n_jobs=2):
    """Compute every cell (in parallel, cached): ``{"label", "recipe", "uri", "n"}`` (its
    thumbnail and its number of regions) or ``{"label", "recipe", "error"}`` per cell."""
    gray = base_gray(services, session_id, meta, axis, index)

    def one(cell):
        try:
            recipe = services.validate(cell["recipe"])
            labels = services.run(session_id, meta["id"], recipe).labels
        except InputError as exc:
            return {"label": cell["label"], "recipe": cell["recipe"], "error": str(exc)}
        lab2d = thumbnail(shown_slice(labels, meta, axis, index), SWEEP_THUMB).astype(np.int32)
        rgba = postprocess.boundaries_overlay(lab2d)
        rgb = render.composite(thumbnail(gray, SWEEP_THUMB), [rgba])
        return {"label": cell["label"], "recipe": recipe, "uri": render.png_data_uri(rgb),
                "n": count_regions(labels)}

    # Threads share this worker's memory-mapped cache; numpy / scipy release the GIL.
    return Parallel(n_jobs=n_jobs, prefer="threads")(delayed(one)(c) for c in grid)


def axis_title(recipe, path) -> str:
    """The name of a swept parameter as the sweep's menus say it ("markers: vmin")."""
    for option in sweepable(recipe):
        if option["value"] == path:
            return option["label"]
    return path


def value_text(path, value, meta) -> str:
    """A swept value as a person reads it: a threshold in the image's units (integers of an
    integer image whole, with thousands separators), other parameters to 4 significant
    digits (callbacks.loading.format_value)."""
    if path.startswith("markers."):
        return format_value(value, meta.get("dtype", "float64"))
    return format_value(value, "int64" if float(value).is_integer() else "float64")


def current_cell(cells, recipe):
    """Index of the first cell whose recipe is `recipe` (the current one), or None."""
    for i, cell in enumerate(cells):
        if "error" not in cell and cell["recipe"] == recipe:
            return i
    return None


def sweep_view(cells, recipe, meta, param_a, values_a, param_b=None, values_b=None):
    """The result grid of computed `cells` (:func:`components.sweep.sweep_grid`): axes named
    by the parameters, values formatted, the current recipe's cell marked."""
    shown = [{**c, "title": c["label"]} for c in cells]
    return sweep_grid(
        shown, axis_title(recipe, param_a), [value_text(param_a, v, meta) for v in values_a],
        axis_title(recipe, param_b) if param_b else None,
        [value_text(param_b, v, meta) for v in values_b] if param_b else None,
        current=current_cell(cells, recipe))


def sweep_update(services, session_id, meta, history, param_a, text_a, param_b, text_b,
                 axis, index):
    """Run a sweep: (the cells' recipes for the adopt buttons, the grid, a message).

    Bad input (values that are not numbers, too many combinations, B equal to A) is refused
    before anything is computed: the previous grid stays and the message says why. A cell
    whose recipe cannot run says why in its place.
    """
    if not meta or not history:
        raise PreventUpdate
    recipe = require_current(meta, history)
    try:
        values_a = parse_values(text_a, "values A")
        values_b = parse_values(text_b, "values B") if param_b else None
        if param_b == param_a:
            raise InputError("parameter B must differ from parameter A")
        valid = {o["value"] for o in sweepable(recipe)}
        for name, path in (("parameter A", param_a), ("parameter B", param_b)):
            if path is not None and path not in valid:
                raise InputError(f"{name}: choose a parameter of the current recipe")
        grid = sweep_recipes(recipe, param_a, values_a, param_b, values_b,
                             fmt=lambda path, v: value_text(path, v, meta))
        cells = run_sweep(services, session_id, meta, grid, axis, index)
    except InputError as exc:
        return no_update, no_update, message_children(f"Sweep: {exc}", "error")
    store = [{"label": c["label"], "recipe": c["recipe"]} for c in cells]
    return store, sweep_view(cells, recipe, meta, param_a, values_a, param_b, values_b), None


#: A new image: the previous image's sweep is hidden and its recipes dropped (its thumbnails
#: were of another image; adopting one would apply it here), in the browser. The cells stay
#: in the page (removing them under the current-cell callback's outputs broke dash-renderer).
CLEAR_JS = """
function (meta, cells) {
    const nu = window.dash_clientside.no_update;
    return cells && cells.length ? ['%(stale)s', null] : [nu, nu];
}
"""

#: Marks the cell of the current recipe when the recipe changes (an adopted cell, an undo, a
#: move onto a swept value), in the browser: no request, the thumbnails stay.
CURRENT_CELL_JS = """
function (history, cells) {
    const dc = window.dash_clientside;
    const outputs = dc.callback_context.outputs_list || [];
    const same = function (a, b) {
        if (a === b) { return true; }
        if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) {
            return false;
        }
        if (Array.isArray(a) !== Array.isArray(b)) { return false; }
        const ka = Object.keys(a), kb = Object.keys(b);
        if (ka.length !== kb.length) { return false; }
        return ka.every(function (k) { return same(a[k], b[k]); });
    };
    const recipe = history && history.recipe;
    let found = false;
    return outputs.map(function (o) {
        const cell = cells && cells[o.id.index];
        const current = Boolean(!found && recipe && cell && same(cell.recipe, recipe));
        found = found || current;
        return current ? '%(current)s' : '%(cell)s';
    });
}
"""


def register(app, services):
    """Wire the gallery and the sweep."""

    @app.callback(
        Output(ids.THRESHOLD_GALLERY, "children"),
        Input(ids.FILTER_SIGNAL, "data"),
        Input(ids.LOCAL_WINDOW, "value"),
        Input(ids.SLICE_INDEX, "value"),
        State(ids.HISTORY, "data"),
        State(ids.SLICE_AXIS, "value"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
    )
    def _gallery(_signal, window, index, history, axis, meta, session_id):
        # the thresholds depend on the filtered image only (FILTER_SIGNAL)
        require_current(meta, history)
        try:
            return gallery(services, session_id, meta, current_recipe(history), axis, index,
                           window)
        except InputError as exc:
            return message_children(f"Threshold discovery failed: {exc}", "error")

    @app.callback(
        Output(ids.SWEEP_PARAM_A, "options"),
        Output(ids.SWEEP_PARAM_A, "value"),
        Output(ids.SWEEP_PARAM_B, "options"),
        Input(ids.FILTER_SIGNAL, "data"),
        Input(ids.SEG_SIGNAL, "data"),
        State(ids.HISTORY, "data"),
        State(ids.SWEEP_PARAM_A, "value"),
    )
    def _sweep_options(_filter, _seg, history, current):
        # the parameters offered depend on the filter and the method, not on vmin / vmax
        if not history:
            raise PreventUpdate
        options = sweepable(current_recipe(history))
        values = [o["value"] for o in options]
        return options, current if current in values else values[0], options

    @app.callback(
        Output(ids.SWEEP_STORE, "data"),
        Output(ids.SWEEP_GRID, "children"),
        Output({"type": ids.STEP_MESSAGE, "stage": "sweep"}, "children"),
        Output(ids.SWEEP_GRID, "className"),
        Input(ids.SWEEP_RUN, "n_clicks"),
        State(ids.SWEEP_PARAM_A, "value"),
        State(ids.SWEEP_VALUES_A, "value"),
        State(ids.SWEEP_PARAM_B, "value"),
        State(ids.SWEEP_VALUES_B, "value"),
        State(ids.HISTORY, "data"),
        State(ids.SLICE_AXIS, "value"),
        State(ids.SLICE_INDEX, "value"),
        State(ids.IMAGE, "data"),
        State(ids.SESSION, "data"),
        prevent_initial_call=True,
    )
    def _sweep(n, param_a, text_a, param_b, text_b, history, axis, index, meta, session_id):
        if not n:
            raise PreventUpdate
        store, grid, message = sweep_update(services, session_id, meta, history, param_a,
                                            text_a, param_b, text_b, axis, index)
        return store, grid, message, no_update if store is no_update else SWEEP_RESULT

    app.clientside_callback(
        CLEAR_JS % {"stale": f"{SWEEP_RESULT} sweep-stale"},
        Output(ids.SWEEP_GRID, "className", allow_duplicate=True),
        Output(ids.SWEEP_STORE, "data", allow_duplicate=True),
        Input(ids.IMAGE, "data"),
        State(ids.SWEEP_STORE, "data"),
        prevent_initial_call=True,
    )

    app.clientside_callback(
        CURRENT_CELL_JS % {"current": sweep_components.CURRENT, "cell": sweep_components.CELL},
        Output({"type": ids.SWEEP_ADOPT, "index": ALL}, "className"),
        Input(ids.HISTORY, "data"),
        State(ids.SWEEP_STORE, "data"),
    )
