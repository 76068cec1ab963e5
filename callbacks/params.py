"""The recipe and its undo history.

The whole pipeline state is a recipe (docs/recipe.md). One callback owns every control that
changes it: thresholds (slider, histogram click or line drag, a threshold adopted from the
gallery), filter and segmentation methods and their parameters, post-processing, measurement
options, a recipe file loaded, a sweep result adopted, undo and redo. Each action goes through
:func:`next_state`, which validates the proposed recipe and pushes it on the history; the
callback then sets every control from the current recipe. Keeping this in one callback lets
undo set the controls without the controls pushing a new history entry.
"""

from __future__ import annotations

import base64
import copy
import math

from dash import ALL, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from components import ids
from pipeline import recipe as recipes
from pipeline.channels import describe as channels_describe
from pipeline.compute import stage_keys
from pipeline.errors import InputError
from pipeline.measure import PROPERTIES_2D_ONLY
from pipeline.scribbles import check_fit

from .loading import format_value, message_children

MAX_HISTORY = 500
#: Post-processing operations in pipeline order; "label" is always there.
POST_ORDER = ("closing", "opening", "fill_holes", "label", "remove_small_objects",
              "split_touching", "clear_border", "relabel_sequential")
_POST_PARAM = {"closing": "radius", "opening": "radius", "remove_small_objects": "min_size",
               "label": "connectivity"}


def initial_history(meta, previous=None) -> dict:
    """History of a newly loaded image: its default thresholds, the other steps kept."""
    if previous and previous.get("states"):
        recipe = copy.deepcopy(current_recipe(previous))
        kept = recipe.get("markers") or {}
        if meta.get("keep_markers") and "vmin" in kept and "vmax" in kept:
            # a crop, or the whole image after tuning on its crop (callbacks/crop.py): the
            # thresholds go along (strokes drawn by hand do not: their coordinates are the
            # other image's)
            recipe["markers"] = {"vmin": kept["vmin"], "vmax": kept["vmax"]}
        else:
            recipe["markers"] = {"vmin": meta["vmin"], "vmax": meta["vmax"]}
        if meta.get("ndim") == 3:
            # a volume keeps no 2D-only measurement (skimage refuses them; solidity's convex
            # hull per region wrote thousands of qhull warnings and took seconds)
            dropped = set(PROPERTIES_2D_ONLY) | {"solidity"}
            recipe["measure"]["properties"] = [
                p for p in recipe["measure"]["properties"] if p not in dropped]
        try:
            recipe = recipes.validate(recipe)
        except InputError:
            recipe = recipes.default_recipe(meta["vmin"], meta["vmax"])
    else:
        recipe = recipes.default_recipe(meta["vmin"], meta["vmax"])
        if meta.get("ndim") == 3 and recipe["segmentation"]["name"] == "random_walker":
            # cg_mg's multigrid setup is never amortised in 3D: Jacobi-CG is ~3x faster there
            recipe["segmentation"]["params"]["mode"] = "cg_j"
        if meta.get("ndim") == 3:
            # solidity needs a convex hull per region: on 128^3 with 4,000 regions 2.3 s of
            # the table's 2.8 s. Offered in the properties list, not measured by default.
            recipe["measure"]["properties"] = [
                p for p in recipe["measure"]["properties"] if p != "solidity"]
    recipe.pop("image", None)
    if meta.get("channel"):  # a channel of a colour file (callbacks.channels): the recipe says so
        recipe = recipes.validate({**recipe, "image": meta["channel"]})
    set_intensity_scale(recipe, meta)
    return {"image_id": meta["id"], "states": [recipe], "index": 0}


def set_intensity_scale(recipe, meta):
    """Give the random walker the image type's scale (beta then means what it does in skimage)."""
    if recipe["segmentation"]["name"] == "random_walker":
        recipe["segmentation"]["params"]["intensity_scale"] = float(meta.get("scale", 1.0))


#: The segmentation panel's intensity-scale line (components.panels.intensity_info), in the
#: browser from the page's history pointer and the image's metadata (no request on a move):
#: the recipe's value, and whether it is the image type's (meta["scale"]) or a loaded
#: recipe's. Hidden for another method than the random walker.
INTENSITY_JS = """
function (_signal, meta, history) {
    const nu = window.dash_clientside.no_update;
    const recipe = history && history.recipe;
    if (!recipe || !meta || history.image_id !== meta.id) { return [nu, nu]; }
    const seg = recipe.segmentation || {};
    const scale = seg.params && seg.params.intensity_scale;
    if (seg.name !== 'random_walker' || typeof scale !== 'number') {
        const keep0 = window.pipexUnchanged || function (i, p, v) { return v; };
        return [keep0('VALUE_ID', 'children', ''),
                keep0('INFO_ID', 'className', 'intensity-info hidden')];
    }
    const fmt = (window.dccFunctions && window.dccFunctions.pipexNumber) || String;
    const own = Number(meta.scale || 1);
    const kind = meta.dtype && meta.dtype.indexOf('int') >= 0 ?
        'the maximum of ' + meta.dtype : 'a ' + meta.dtype + ' image: used as it is';
    const text = scale === own ? fmt(scale) + ' (' + kind + ')' :
        fmt(scale) + ' (from the loaded recipe; this ' + meta.dtype + ' image would give ' +
        fmt(own) + ')';
    // a move leaves both as they are: nothing set (assets/unchanged.js)
    const keep = window.pipexUnchanged || function (i, p, v) { return v; };
    return [keep('VALUE_ID', 'children', text), keep('INFO_ID', 'className', 'intensity-info')];
}
""".replace("VALUE_ID", ids.INTENSITY_VALUE).replace("INFO_ID", ids.INTENSITY_INFO)


def current_recipe(history) -> dict:
    """Recipe at the current position of the history (a full history or a page pointer)."""
    if "recipe" in history:
        return history["recipe"]
    return history["states"][history["index"]]


def nearby_states(history, limit=4) -> list:
    """Up to `limit` recipes around the current one in the history, nearest first
    (before, then after, at each distance): warm starts for a live preview."""
    i, states = history["index"], history["states"]
    out = []
    for d in range(1, len(states)):
        out += [states[j] for j in (i - d, i + d) if 0 <= j < len(states)]
        if len(out) >= limit:
            break
    return out[:limit]


# --- the page holds a pointer, the server the history ----------------------------------------
#
# The undo history lives in the shared store (``ArrayStore.put_history``), one immutable
# version per change. The page's ``HISTORY`` store holds a pointer: the image, the version
# (``rev``), the position, the current recipe (about 1 kB: what the panels' callbacks need),
# which stages the last change touched (``changed``: the page's router fires only the panels
# that depend on them) and whether the segmentation was already drawn with the change
# (``drawn``). A move therefore sends the same few hundred bytes after 300 moves as after one.

STAGES = ("filter", "markers", "segmentation", "postprocess", "measure")


def changed_stages(before, after) -> list:
    """Stages whose key differs between two recipes (all of them, and "image", if `before`
    is None: a new image)."""
    if before is None:
        return ["image", *STAGES]
    a, b = stage_keys(before), stage_keys(after)
    return [s for s in STAGES if a[s] != b[s]]


def is_pointer(history) -> bool:
    """Whether `history` is the page's pointer (as opposed to a full history)."""
    return isinstance(history, dict) and "rev" in history and "states" not in history


def load_history(store, session_id, history) -> dict:
    """The full history behind `history` (returned as is if it is already a full one).

    Only the current recipe is read from the store; the other states stay the hashes of
    stored recipes (:func:`resolve_state` reads one): pushing a state, undo and redo cost the
    same after 500 states as after one.
    """
    if not is_pointer(history):
        return history
    return store.get_history(session_id, history["image_id"], history["rev"],
                             current_only=True)


def resolve_state(store, session_id, image_id, state) -> dict:
    """A state of a loaded history as a recipe (it may be the hash of a stored one)."""
    if isinstance(state, str):
        return store.get_recipe(session_id, image_id, state)
    return state


def _resolve_current(store, session_id, full) -> dict:
    """`full` with its current state read from the store if it is a hash (after undo / redo)."""
    i = full["index"]
    if not isinstance(full["states"][i], str):
        return full
    states = list(full["states"])
    states[i] = resolve_state(store, session_id, full["image_id"], states[i])
    return {**full, "states": states}


def save_history(store, session_id, full, before, *, drawn=False) -> dict:
    """Store a new version of `full` and return the page's pointer to it.

    Parameters
    ----------
    store : pipeline.store.ArrayStore
    session_id : str
    full : dict
        ``{"image_id", "states", "index"}``.
    before : dict or None
        The recipe the page showed before (None for a new image): which stages changed.
    drawn : bool
        The segmentation panel is updated by the same response (the router skips it).
    """
    rev = store.put_history(session_id, full["image_id"], full["states"], full["index"])
    store.set_current(session_id, full["image_id"], rev)
    recipe = current_recipe(full)
    return {"image_id": full["image_id"], "rev": rev, "index": full["index"],
            "length": len(full["states"]), "recipe": recipe,
            "changed": changed_stages(before, recipe), "drawn": bool(drawn)}


def require_current(meta, history) -> dict:
    """The current recipe, or PreventUpdate while the image and its history disagree
    (a new image is loading: the history is reset right after)."""
    if not meta or not history or history.get("image_id") != meta["id"]:
        raise PreventUpdate
    return current_recipe(history)


def push(history, recipe) -> dict:
    """History with `recipe` appended after the current position (dropping the redo tail)."""
    states = history["states"][: history["index"] + 1] + [recipe]
    states = states[-MAX_HISTORY:]
    return {**history, "states": states, "index": len(states) - 1}


def move(history, step) -> dict:
    """History moved `step` positions (negative: undo), clipped to its ends."""
    index = min(max(history["index"] + step, 0), len(history["states"]) - 1)
    return {**history, "index": index}


def slider_bounds(meta) -> tuple[float, float]:
    """The threshold slider's (min, max): meta's ``slider`` (round bounds of a float image,
    :func:`pipeline.segment.threshold_range`), else the image's range (older metadata)."""
    bounds = meta.get("slider")
    if isinstance(bounds, (list, tuple)) and len(bounds) == 2:
        return float(bounds[0]), float(bounds[1])
    return float(meta["min"]), float(meta["max"])


def integer_image(meta) -> bool:
    """Whether the image holds integers (its thresholds are whole numbers). Older metadata
    without a dtype: a step of 1 over whole bounds."""
    dtype = meta.get("dtype")
    if dtype:
        return str(dtype).startswith(("int", "uint", "bool"))
    lo, hi = slider_bounds(meta)
    return (meta.get("step") or 1.0) == 1.0 and float(lo).is_integer() and float(hi).is_integer()


def _snap(value, meta):
    """A threshold as the recipe holds it: a whole number on an integer image (99.6 -> 100);
    on a float image the value itself, as typed (0.12345 stays 0.12345 whatever the slider's
    step: issue 10 item 2), only float noise removed (0.30000000000000004 -> 0.3). The
    slider's keys, drags and histogram clicks arrive on its step grid already."""
    if integer_image(meta):
        return float(math.floor(value + 0.5))  # half up, as the slider rounds
    return float(f"{value:.15g}")


def threshold_text(value, dtype) -> str:
    """A threshold in a message: as the person typed it when it has at most 6 significant
    digits (vmin = 0.12345, as the text under the slider writes it: assets/format.js), else
    as the image info writes values (``loading.format_value``: 0.2910)."""
    v = float(value)
    digits = len(repr(abs(v)).split("e")[0].replace(".", "").strip("0"))  # shortest repr
    if math.isfinite(v) and not v.is_integer() and 1e-3 <= abs(v) < 1e15 and digits <= 6:
        whole, _, fraction = repr(abs(v)).partition(".")
        return ("-" if v < 0 else "") + f"{int(whole):,}" + (f".{fraction}" if fraction else "")
    return format_value(v, dtype)


def check_fits_image(recipe, meta):
    """Raise if the recipe cannot work on this image, before computing anything.

    A recipe whose image stage (channel) is not the one of the image shown (a recipe loaded
    for another channel: the Channel menu makes that image first); a minimum object size
    larger than the image; thresholds that leave a marker label empty
    (checked on the loaded image's range for the unfiltered image: a filter narrows the
    range, and the segmentation step reports the remaining cases).
    """
    wanted, shown = recipe.get("image"), meta.get("channel")
    if wanted != shown:
        what = channels_describe(wanted)
        if not meta.get("channels"):
            raise InputError(f"This recipe segments the {what} of a colour image; this image "
                             "has no colour channels: load a colour image first.")
        raise InputError(f"This recipe segments the {what}; the page shows the "
                         f"{channels_describe(shown)}: choose the {what} in the Channel menu "
                         "(by the image's name), then load the recipe again.")
    pixels = 1
    for n in meta.get("shape", ()):
        pixels *= n
    for op in recipe["postprocess"]:
        size = op["params"].get("min_size")
        if size is not None and meta.get("shape") and size > pixels:
            raise InputError(f"Remove small objects: min size {size} is larger than the image "
                             f"({pixels} pixels): every object would be removed.")
    vmin, vmax = recipe["markers"]["vmin"], recipe["markers"]["vmax"]
    drawn = {s["label"] for s in recipe["markers"].get("scribbles", ())}  # 1, 2: by hand
    if drawn and meta.get("shape"):  # strokes of another image (a loaded recipe)
        check_fit(recipe["markers"]["scribbles"], meta["shape"])
    if recipe["filter"]["name"] != "none":
        return
    dtype = meta.get("dtype", "float64")
    if vmin <= meta["min"] and 1 not in drawn:
        raise InputError(
            f"No background marker: no pixel is below vmin = {threshold_text(vmin, dtype)} (the "
            f"darkest pixel is {format_value(meta['min'], dtype)}). Keeping the previous "
            "thresholds.")
    if vmax >= meta["max"] and 2 not in drawn:
        raise InputError(
            f"No object marker: no pixel is above vmax = {threshold_text(vmax, dtype)} (the "
            f"brightest pixel is {format_value(meta['max'], dtype)}). Keeping the previous "
            "thresholds.")


def postprocess_from_controls(ops, values) -> list:
    """The recipe's post-processing list from the checklist and its parameter inputs."""
    chosen = set(ops or ()) | {"label"}
    out = []
    for name in POST_ORDER:
        if name not in chosen:
            continue
        if name == "split_touching":  # two inputs; its connectivity is the label step's
            split = values.get(name) or {}
            out.append({"name": name, "params": {"min_distance": split.get("min_distance"),
                                                 "sigma": split.get("sigma")}})
            continue
        param = _POST_PARAM.get(name)
        out.append({"name": name, "params": {param: values.get(name)} if param else {}})
    return out


def _proposal(trigger, current, meta, c):
    """The recipe a user action asks for (not validated yet), or None for no change."""
    proposed = copy.deepcopy(current)
    pair = None
    if trigger == ids.THRESHOLDS:
        values = c.get("thresholds") or []
        pair = tuple(values) if len(values) == 2 else None
    elif isinstance(trigger, dict) and trigger.get("type") == ids.ADOPT:
        value = float(trigger["value"])
        pair = ((value, current["markers"]["vmax"]) if trigger["as"] == "vmin"
                else (current["markers"]["vmin"], value))
        return _with_pair(proposed, pair, meta, snap=False)
    elif trigger == ids.FILTER_METHOD:
        proposed["filter"] = {"name": c["filter_method"], "params": {}}
    elif trigger == ids.SEG_METHOD:
        proposed["segmentation"] = {"name": c["seg_method"], "params": {}}
        set_intensity_scale(proposed, meta)
    elif isinstance(trigger, dict) and trigger.get("type") == ids.PARAM:
        stage = trigger["stage"]
        if current[stage]["name"] != trigger["method"]:
            return None  # a form of another method, being replaced
        proposed[stage]["params"] = {**current[stage]["params"], **c["params"].get(stage, {})}
    elif trigger in (ids.POST_OPS, ids.POST_CLOSING, ids.POST_OPENING, ids.POST_MIN_SIZE,
                     ids.POST_CONNECTIVITY, ids.POST_SPLIT_DISTANCE, ids.POST_SPLIT_SIGMA):
        proposed["postprocess"] = postprocess_from_controls(c.get("post_ops"), c.get("post", {}))
    elif trigger in (ids.MEASURE_PROPERTIES, ids.PIXEL_SIZE, ids.PIXEL_UNIT):
        proposed["measure"] = {**current["measure"], "properties": c.get("properties"),
                               "pixel_size": c.get("pixel_size"), "unit": c.get("unit")}
    elif trigger in (ids.DRAW_STROKE, ids.DRAW_CLEAR):  # drawn markers (callbacks.scribbles)
        proposed["markers"] = c["markers"]
    elif trigger == ids.LOAD_RECIPE:
        # the image series is the loader's (the Series menu), not the loaded recipe's: the
        # page's recipes never hold an input section (recipe_io adds the one shown on save)
        return recipes.with_series(recipes.loads(c["recipe_text"]), None)
    elif isinstance(trigger, dict) and trigger.get("type") == ids.SWEEP_ADOPT:
        cells = c.get("sweep") or []
        index = int(trigger["index"])
        if not 0 <= index < len(cells):
            return None
        return cells[index]["recipe"]
    else:
        return None
    if pair is not None:
        return _with_pair(proposed, pair, meta)
    return proposed


def _with_pair(recipe, pair, meta, snap=True):
    """`recipe` with the thresholds `pair`, each snapped (:func:`_snap`) unless it is the
    recipe's own value: a threshold adopted from a method (li on coins, 94.63159073954759)
    stays whole when the other one is typed, dragged or stepped (it was rounded to 95 on an
    integer image)."""
    vmin, vmax = (float(v) for v in pair)
    if snap:
        held = recipe["markers"]
        vmin = vmin if vmin == held["vmin"] else _snap(vmin, meta)
        vmax = vmax if vmax == held["vmax"] else _snap(vmax, meta)
    recipe["markers"] = {**recipe["markers"], "vmin": vmin, "vmax": vmax}  # strokes kept
    return recipe


def next_state(trigger, history, meta, controls):
    """The new history after one user action, and a message for the user.

    Parameters
    ----------
    trigger : str, dict or None
        Id of the control that changed (``"histogram-graph.clickData"`` style for the
        histogram's events; the id dict for pattern-matching controls).
    history : dict or None
        Current history.
    meta : dict or None
        Current image metadata.
    controls : dict
        Values of the controls (see ``register``).

    Returns
    -------
    history : dict
        The new history (the same object if nothing changed).
    message : str
        Why a change was refused, or "".
    """
    if not meta:
        raise PreventUpdate
    if trigger == ids.IMAGE or not history or history.get("image_id") != meta["id"]:
        return initial_history(meta, history), ""
    if trigger == ids.UNDO:
        return move(history, -1), ""
    if trigger == ids.REDO:
        return move(history, +1), ""
    current = current_recipe(history)
    try:
        proposed = _proposal(trigger, current, meta, controls)
        if proposed is None:
            return history, ""
        recipe = recipes.validate(proposed)
        check_fits_image(recipe, meta)
    except InputError as exc:
        return history, str(exc)
    if recipe == current:
        return history, ""
    return push(history, recipe), ""


def control_values(history, meta) -> dict:
    """What every control shows for the current history position."""
    r = current_recipe(history)
    post = {op["name"]: op["params"] for op in r["postprocess"]}
    return {
        "thresholds": [r["markers"]["vmin"], r["markers"]["vmax"]],
        "min": slider_bounds(meta)[0],
        "max": slider_bounds(meta)[1],
        "step": meta["step"],
        "filter_method": r["filter"]["name"],
        "seg_method": r["segmentation"]["name"],
        "post_ops": [name for name in POST_ORDER if name in post and name != "label"],
        "closing": post.get("closing", {}).get("radius", no_update),
        "opening": post.get("opening", {}).get("radius", no_update),
        "min_size": post.get("remove_small_objects", {}).get("min_size", no_update),
        "connectivity": post["label"]["connectivity"],
        "split_distance": post.get("split_touching", {}).get("min_distance", no_update),
        "split_sigma": post.get("split_touching", {}).get("sigma", no_update),
        "properties": list(r["measure"]["properties"]),
        "pixel_size": r["measure"]["pixel_size"],
        "unit": r["measure"]["unit"],
        "undo_disabled": history["index"] == 0,
        "redo_disabled": history["index"] >= len(history["states"]) - 1,
        "text": f"step {history['index'] + 1} of {len(history['states'])}",
    }


def param_values(history, param_ids):
    """Values of the dynamic parameter inputs present on the page, from the current recipe."""
    r = current_recipe(history)
    out = []
    for pid in param_ids:
        step = r.get(pid["stage"], {})
        if step.get("name") == pid["method"] and pid["name"] in step.get("params", {}):
            out.append(step["params"][pid["name"]])
        else:
            out.append(no_update)
    return out


def register(app, services):
    """Wire the recipe controls, the histogram interactions and undo / redo."""
    # The history lives in the browser (small JSON); the server remembers the current recipe
    # of each session's image, which `app.explore` hands back to Python.
    param_pattern = {"type": ids.PARAM, "stage": ALL, "method": ALL, "name": ALL}

    app.clientside_callback(
        INTENSITY_JS,
        Output(ids.INTENSITY_VALUE, "children"),
        Output(ids.INTENSITY_INFO, "className"),
        Input(ids.RECIPE_SIGNAL, "data"),
        Input(ids.IMAGE, "data"),
        State(ids.HISTORY, "data"),
    )

    @app.callback(
        Output(ids.HISTORY, "data"),
        Output(ids.THRESHOLDS, "value"),
        Output(ids.THRESHOLDS, "min"),
        Output(ids.THRESHOLDS, "max"),
        Output(ids.THRESHOLDS, "step"),
        Output(ids.FILTER_METHOD, "value"),
        Output(ids.SEG_METHOD, "value"),
        Output(ids.POST_OPS, "value"),
        Output(ids.POST_CLOSING, "value"),
        Output(ids.POST_OPENING, "value"),
        Output(ids.POST_MIN_SIZE, "value"),
        Output(ids.POST_CONNECTIVITY, "value"),
        Output(ids.MEASURE_PROPERTIES, "value"),
        Output(ids.PIXEL_SIZE, "value"),
        Output(ids.PIXEL_UNIT, "value"),
        Output(param_pattern, "value"),
        Output(ids.UNDO, "disabled"),
        Output(ids.REDO, "disabled"),
        Output(ids.HISTORY_TEXT, "children"),
        Output(ids.PARAM_MESSAGE, "children"),
        Output(ids.LOAD_RECIPE, "contents"),
        Output(ids.RECIPE_VIEW, "children"),
        Output(ids.POST_SPLIT_DISTANCE, "value"),
        Output(ids.POST_SPLIT_SIGMA, "value"),
        Output(ids.RECIPE_MESSAGE, "children"),
        Input(ids.IMAGE, "data"),
        Input({"type": ids.ADOPT, "method": ALL, "as": ALL, "value": ALL}, "n_clicks"),
        Input(ids.FILTER_METHOD, "value"),
        Input(ids.SEG_METHOD, "value"),
        Input(param_pattern, "value"),
        Input(ids.POST_OPS, "value"),
        Input(ids.POST_CLOSING, "value"),
        Input(ids.POST_OPENING, "value"),
        Input(ids.POST_MIN_SIZE, "value"),
        Input(ids.POST_CONNECTIVITY, "value"),
        Input(ids.MEASURE_PROPERTIES, "value"),
        Input(ids.PIXEL_SIZE, "value"),
        Input(ids.PIXEL_UNIT, "value"),
        Input(ids.LOAD_RECIPE, "contents"),
        Input({"type": ids.SWEEP_ADOPT, "index": ALL}, "n_clicks"),
        Input(ids.UNDO, "n_clicks"),
        Input(ids.REDO, "n_clicks"),
        Input(ids.POST_SPLIT_DISTANCE, "value"),
        Input(ids.POST_SPLIT_SIGMA, "value"),
        State(ids.HISTORY, "data"),
        State(ids.SWEEP_STORE, "data"),
        State(ids.SESSION, "data"),
    )
    def _recipe(meta, adopt_clicks, filter_method, seg_method, param_vals, post_ops, closing,
                opening, min_size, connectivity, properties, pixel_size, unit, recipe_contents,
                sweep_clicks, _undo, _redo, split_distance, split_sigma, history, sweep,
                session_id):
        # Every recipe control but the vmin / vmax slider (callbacks.thresholds: the fast
        # path of a move). The slider's value is an output only: undo sets it.
        trigger = ctx.triggered_id
        if isinstance(trigger, dict) and trigger.get("type") in (ids.ADOPT, ids.SWEEP_ADOPT):
            # a button appearing in the page is not a click
            if not any(t["value"] for t in ctx.triggered):
                raise PreventUpdate
        param_ids = [o["id"] for o in ctx.outputs_list[15]]
        params = {}
        for pid, value in zip([i["id"] for i in ctx.inputs_list[4]], param_vals):
            params.setdefault(pid["stage"], {})[pid["name"]] = value
        controls = {
            "filter_method": filter_method, "seg_method": seg_method, "params": params,
            "post_ops": post_ops,
            "post": {"closing": closing, "opening": opening, "remove_small_objects": min_size,
                     "label": connectivity,
                     "split_touching": {"min_distance": split_distance, "sigma": split_sigma}},
            "properties": properties, "pixel_size": pixel_size, "unit": unit,
            "recipe_text": _recipe_text(recipe_contents), "sweep": sweep,
        }
        if trigger == ids.LOAD_RECIPE and recipe_contents is None:
            raise PreventUpdate
        pointer, full, message = recipe_action(services, session_id, trigger, history, meta,
                                               controls)
        v = control_values(full, meta)
        param_message, recipe_message = placed_messages(trigger, message)
        return (
            pointer,
            v["thresholds"], v["min"], v["max"], v["step"], v["filter_method"], v["seg_method"],
            v["post_ops"], v["closing"], v["opening"], v["min_size"], v["connectivity"],
            v["properties"], v["pixel_size"], v["unit"],
            param_values(full, param_ids),
            v["undo_disabled"], v["redo_disabled"], v["text"],
            param_message,
            None if trigger == ids.LOAD_RECIPE else no_update,
            no_update if pointer is no_update else recipes.dumps(current_recipe(full)),
            v["split_distance"], v["split_sigma"], recipe_message,
        )


def placed_messages(trigger, message):
    """(Markers panel message, Recipe tab message) of an action: each message appears beside
    the control that caused it, styled by severity. A recipe loaded in the Recipe tab is
    reported there (refused: an error; loaded: a note), the other actions in the Markers
    panel (the thresholds and steps it shows)."""
    if trigger == ids.LOAD_RECIPE:
        if message:
            return None, message_children(
                f"Could not load the recipe: {message} The current recipe is kept.", "error")
        return None, message_children(
            "Recipe loaded: every step is set from it (Undo goes back).", "info")
    return (message_children(message, "error") if message else None), no_update


def recipe_action(services, session_id, trigger, history, meta, controls, *, drawn=False):
    """Apply one user action to the session's history, on the server.

    Parameters
    ----------
    services : Services
    session_id : str
    trigger, meta, controls
        As :func:`next_state`.
    history : dict or None
        The page's pointer (or a full history, in tests).
    drawn : bool
        The caller draws the segmentation itself (see :func:`save_history`).

    Returns
    -------
    pointer : dict or no_update
        The page's new pointer; ``no_update`` if nothing changed.
    full : dict
        The full history after the action (the controls are set from it).
    message : str
        Why the action was refused, or "".
    """
    if not meta:
        raise PreventUpdate
    store = services.store
    full = None
    if history:
        try:
            full = load_history(store, session_id, history)
        except InputError:
            full = None  # evicted: start again from the image's defaults
    if full is not None and full.get("image_id") != meta["id"] and trigger != ids.IMAGE:
        full = None
    new, message = next_state(trigger, full, meta, controls)
    if new is full and full is not None:
        return no_update, full, message
    try:
        new = _resolve_current(store, session_id, new)
    except InputError:  # the history's recipes were evicted: start again from the defaults
        new = next_state(ids.IMAGE, None, meta, controls)[0]
    same_image = full is not None and full.get("image_id") == meta["id"]
    before = current_recipe(full) if same_image else None
    try:
        pointer = save_history(store, session_id, new, before, drawn=drawn)
        store.put_recipe(session_id, meta["id"], current_recipe(new))
    except InputError:  # a forged session id
        raise PreventUpdate from None
    return pointer, new, message


def _recipe_text(contents):
    """Text of an uploaded recipe file (a data URL), or None."""
    if not contents:
        return None
    try:
        header, data = contents.split(",", 1)
        raw = base64.b64decode(data, validate=False)
        if len(raw) > 1_000_000:
            return "x" * 1_000_001  # recipes.loads refuses it with the size message
        return raw.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return "\0not text"
