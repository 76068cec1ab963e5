"""Markers drawn by hand in the page (callbacks/scribbles.py), called directly: a drawn path
shape becomes a stroke in a new history state, undo removes it, the segmentation and its
markers overlay change, a vmin / vmax move keeps the strokes, Clear removes them."""

from __future__ import annotations

import base64
import io as stdio
import json

import numpy as np
import pytest
from dash import no_update
from dash.exceptions import PreventUpdate
from PIL import Image
from skimage import draw

from app import create_app
from callbacks import loading, scribbles
from callbacks.display import drawn_markers, segmentation_panel
from callbacks.fastpath import MAX_BODY
from callbacks.params import current_recipe, recipe_action
from components import figures, ids
from pipeline import recipe as R
from pipeline import render
from pipeline.compute import stage_keys
from pipeline.config import Config
from pipeline.store import new_session_id

VIEW = {"axis": 0, "index": 0, "style": "contour", "show": ["markers"], "view": "labels"}
# a vertical background stroke through the coins of the second column (x = 60); the middle
# point is on the line, so it is simplified away
DOWN = "M60,20L60,65.3L60,110"


def _page(tmp_path, sample="coins"):
    app = create_app(Config(state_dir=tmp_path / "state", data_dir=tmp_path / "data"))
    services = app._pipex_services
    sid = new_session_id()
    meta = loading.load_image(services, sid, ids.SAMPLE, sample, None, None, None).meta
    pointer, _, _ = recipe_action(services, sid, ids.IMAGE, None, meta, {})
    return app, services, sid, meta, pointer


@pytest.fixture
def page(tmp_path):
    return _page(tmp_path)


def _stroke(services, sid, meta, pointer, path=DOWN, mode="background", width=9, axis=0,
            index=0):
    return scribbles.stroke_update(services, sid, ids.DRAW_STROKE,
                                   {"paths": [path], "mode": mode, "width": width}, pointer,
                                   meta, axis, index)


def _png(uri):
    return np.asarray(Image.open(stdio.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
                      .convert("RGBA"))


def _markers_overlay(services, sid, meta, recipe):
    fig, summary = segmentation_panel(services, sid, meta, recipe, 0, 0, "contour", True,
                                      "labels", None, True)
    return _png(fig.data[figures.MARKER_TRACE].source), summary


def test_a_drawn_path_becomes_a_stroke_in_a_new_history_state(page):
    _, services, sid, meta, pointer = page
    before = pointer["recipe"]
    out = _stroke(services, sid, meta, pointer)
    new, undo_disabled, redo_disabled, text, view, message = out
    assert message is None
    assert new["index"] == 1 and text == "step 2 of 2" and not undo_disabled and redo_disabled
    assert new["recipe"]["markers"] == {
        **before["markers"],
        "scribbles": [{"label": 1, "path": [[60.0, 20.0], [60.0, 110.0]], "width": 9.0}]}
    # the router fires the segmentation panel: the markers stage changed, nothing drawn yet
    assert new["changed"] == ["markers"] and new["drawn"] is False
    assert json.loads(view)["markers"]["scribbles"][0]["label"] == 1

    # the segmentation changes, and the markers overlay shows the stroke
    plain = services.run(sid, meta["id"], before)
    drawn = services.run(sid, meta["id"], new["recipe"])
    assert (plain.mask != drawn.mask).sum() > 100
    overlay, _ = _markers_overlay(services, sid, meta, new["recipe"])
    bg = render.MARKER_COLORS[1]
    assert tuple(overlay[65, 60, :3]) == bg and tuple(overlay[20:111, 58:63, :3].reshape(-1, 3)
                                                       .min(axis=0)) == bg
    old_overlay, _ = _markers_overlay(services, sid, meta, before)
    assert tuple(old_overlay[65, 60, :3]) != bg  # a coin: an object marker without the stroke

    # a second stroke, an object one, then undo removes it, undo again the first
    second = _stroke(services, sid, meta, new, path="M200,150L230,160", mode="object",
                     width=3)[0]
    assert [s["label"] for s in second["recipe"]["markers"]["scribbles"]] == [1, 2]
    back, _, _ = recipe_action(services, sid, ids.UNDO, second, meta, {})
    assert back["recipe"] == new["recipe"]
    first, _, _ = recipe_action(services, sid, ids.UNDO, back, meta, {})
    assert first["recipe"] == before and "scribbles" not in first["recipe"]["markers"]
    assert stage_keys(first["recipe"]) == stage_keys(before)  # the cached result again
    redo, _, _ = recipe_action(services, sid, ids.REDO, first, meta, {})
    assert redo["recipe"] == new["recipe"]


def test_clear_removes_every_stroke_in_one_step(page):
    _, services, sid, meta, pointer = page
    one = _stroke(services, sid, meta, pointer)[0]
    two = _stroke(services, sid, meta, one, path="M10,10L30,10", mode="object")[0]
    cleared = scribbles.stroke_update(services, sid, ids.DRAW_CLEAR, None, two, meta, 0, 0)[0]
    assert cleared["index"] == 3 and cleared["recipe"] == pointer["recipe"]
    with pytest.raises(PreventUpdate):  # nothing to clear
        scribbles.stroke_update(services, sid, ids.DRAW_CLEAR, None, cleared, meta, 0, 0)


def test_a_threshold_move_keeps_the_strokes_and_draws_their_markers(page):
    app, services, sid, meta, pointer = page
    drawn = _stroke(services, sid, meta, pointer)[0]
    m = drawn["recipe"]["markers"]
    body = {"session": sid, "image": meta["id"], "history": drawn, "base": meta["id"],
            "view": VIEW, "request": {"pair": [m["vmin"] + 3, m["vmax"]], "seq": 1}}
    res = app.server.test_client().post("/_pipex/move", data=json.dumps(body),
                                        content_type="application/json")
    assert res.status_code == 200, res.data
    data = res.get_json()
    moved = data["outputs"]["history-store"]["data"]
    assert moved["recipe"]["markers"] == {**m, "vmin": m["vmin"] + 3}
    # the server's markers overlay holds the stroke (the page does not draw these itself)
    overlay = _png(data["overlays"][str(figures.MARKER_TRACE)])
    assert tuple(overlay[65, 60, :3]) == render.MARKER_COLORS[1]


def test_a_move_with_many_strokes_fits_the_fast_path():
    assert MAX_BODY > 64 * 1024 + 900_000  # the pointer's recipe may be near a recipe's limit


def test_refused_strokes_say_why_and_keep_the_history(page):
    _, services, sid, meta, pointer = page
    out = _stroke(services, sid, meta, pointer, path="M1,2C3,4,5,6,7,8")
    assert out[0] is no_update and "not a path of straight segments" in json.dumps(
        out[-1].to_plotly_json(), default=str)
    out = _stroke(services, sid, meta, pointer, width=80)
    assert out[0] is no_update and "from 1 to 50 pixels" in str(out[-1].to_plotly_json())
    with pytest.raises(PreventUpdate):  # drawing off: nothing to add
        _stroke(services, sid, meta, pointer, mode="off")
    # the recipe's limit on strokes, as a message
    full = pointer
    recipe = current_recipe(pointer)
    many = {**recipe, "markers": {**recipe["markers"], "scribbles": [
        {"label": 1, "path": [[5.0, 5.0]], "width": 1.0}] * 200}}
    full, _, message = recipe_action(services, sid, ids.LOAD_RECIPE, pointer, meta,
                                     {"recipe_text": json.dumps(many)})
    assert message == ""
    out = _stroke(services, sid, meta, full)
    assert out[0] is no_update and "201 strokes, the limit is 200" in str(
        out[-1].to_plotly_json())


def test_points_are_clipped_to_the_image_and_simplified(page):
    meta = page[3]
    _, cols = meta["shape"]
    wiggle = "M-20,5" + "".join(f"L{x},{5 + 0.01 * (x % 2)}" for x in range(200)) \
        + f"L{cols + 40},5"
    stroke = scribbles.stroke_from_path(wiggle, 2, 4, meta)
    assert stroke["path"] == [[-0.5, 5.0], [cols - 0.5, 5.0]]


def test_3d_strokes_name_their_slice(tmp_path):
    _, services, sid, meta, pointer = _page(tmp_path, "blobs3d")
    assert meta["ndim"] == 3
    axis, index = 1, 40
    new = _stroke(services, sid, meta, pointer, path="M10,10L50,12", mode="object", width=3,
                  axis=axis, index=index)[0]
    stroke = new["recipe"]["markers"]["scribbles"][0]
    assert stroke["axis"] == 1 and stroke["index"] == 40
    result = services.run(sid, meta["id"], new["recipe"])
    markers = R.marker_stage(result.filtered, new["recipe"])
    rr, cc = draw.line(10, 10, 12, 50)  # the centre line, on the slice across axis 1
    assert (markers[:, 40, :][rr, cc] == 2).all()
    plain = R.marker_stage(result.filtered, pointer["recipe"])
    assert (markers != plain).any() and (markers[:, :40] == plain[:, :40]).all()
    # the overlay of that slice shows the stroke
    shown = drawn_markers(result.filtered, new["recipe"], meta, axis, index)
    np.testing.assert_array_equal(shown, markers[:, 40, :])


def test_a_loaded_recipe_whose_strokes_do_not_fit_the_image_is_refused(page):
    _, services, sid, meta, pointer = page
    recipe = current_recipe(pointer)
    other = {**recipe, "markers": {**recipe["markers"], "scribbles": [
        {"label": 2, "path": [[900.0, 5.0]], "width": 3.0}]}}
    kept, _, message = recipe_action(services, sid, ids.LOAD_RECIPE, pointer, meta,
                                     {"recipe_text": json.dumps(other)})
    assert kept is no_update
    assert "stroke 1 point 1 (x=900, y=5) is outside the 384 × 303 image" in message
